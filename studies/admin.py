"""The studies admin: regions, studies, patients with their photos, photos, field-day imports."""

from django.contrib import admin, messages
from django.core.exceptions import ValidationError
from django.db.models import QuerySet
from django.forms.models import BaseInlineFormSet
from django.http import HttpResponseRedirect
from django.template.defaultfilters import filesizeformat
from django.urls import path, reverse
from django.utils.html import format_html, format_html_join

from . import selectors, services, views
from .forms import PatientForm
from .models import Image, ImageImport, Patient, Region, Study


def thumbnail_html(image: Image, size: int = 80):
    return format_html(
        '<a href="{}" target="_blank" rel="noopener"><img src="{}" alt="{}" class="gc-thumb" '
        'style="max-width:{}px;max-height:{}px" loading="lazy"></a>',
        image.file.url,
        image.thumbnail.url,
        f"{image.get_eye_display()} eye",
        size,
        size,
    )


@admin.register(Region)
class RegionAdmin(admin.ModelAdmin):
    list_display = ["name", "country", "study_count"]
    search_fields = ["name", "country"]
    list_filter = ["country"]

    def get_queryset(self, request):
        return selectors.regions_with_counts()

    @admin.display(description="studies", ordering="study_count")
    def study_count(self, region: Region) -> int:
        return region.study_count


@admin.register(Study)
class StudyAdmin(admin.ModelAdmin):
    list_display = ["name", "region", "patient_count", "image_count", "is_active", "created_at"]
    list_filter = ["is_active", "region"]
    search_fields = ["name", "description", "region__name"]
    filter_horizontal = ["graders"]
    readonly_fields = ["created_by", "created_at"]
    fieldsets = [
        (None, {"fields": ["name", "region", "description", "is_active"]}),
        (
            "Grading rules",
            {
                "fields": [
                    "graders",
                    "masked_codes",
                    "randomized_order",
                    "graders_per_patient",
                    "repeat_share",
                    "repeat_gap_min",
                ]
            },
        ),
        ("Record", {"fields": ["created_by", "created_at"]}),
    ]
    change_form_template = "admin/studies/study/change_form.html"

    def get_queryset(self, request):
        return selectors.studies_with_counts()

    def formfield_for_manytomany(self, db_field, request, **kwargs):
        if db_field.name == "graders":
            from django.contrib.auth import get_user_model

            kwargs["queryset"] = get_user_model().objects.filter(is_active=True).order_by("username")
        return super().formfield_for_manytomany(db_field, request, **kwargs)

    def save_model(self, request, obj, form, change):
        if not change:
            obj.created_by = request.user
        super().save_model(request, obj, form, change)

    @admin.display(description="patients", ordering="patient_count")
    def patient_count(self, study: Study):
        url = reverse("admin:studies_patient_changelist") + f"?study__id__exact={study.pk}"
        return format_html('<a href="{}">{}</a>', url, study.patient_count)

    @admin.display(description="photos", ordering="image_count")
    def image_count(self, study: Study):
        url = reverse("admin:studies_image_changelist") + f"?study__id__exact={study.pk}"
        return format_html('<a href="{}">{}</a>', url, study.image_count)

    def get_urls(self):
        wrap = self.admin_site.admin_view
        return [
            path("<int:study_id>/import/", wrap(views.import_page(self)), name="studies_study_import"),
            path(
                "<int:study_id>/import/start/",
                wrap(views.import_start),
                name="studies_study_import_start",
            ),
        ] + super().get_urls()


class ImageInlineFormSet(BaseInlineFormSet):
    def delete_existing(self, obj, commit=True):
        if commit:
            services.images_delete(images=[obj])


class ImageInline(admin.TabularInline):
    model = Image
    formset = ImageInlineFormSet
    fk_name = "patient"
    extra = 0
    fields = ["preview", "eye", "original_name", "dimensions", "size", "uploaded_at"]
    readonly_fields = ["preview", "original_name", "dimensions", "size", "uploaded_at"]
    ordering = ["eye", "uploaded_at", "id"]
    show_change_link = True

    def has_add_permission(self, request, obj=None):
        return False  # photos are added with the upload field above, checked as a batch

    @admin.display(description="photo")
    def preview(self, image: Image):
        return thumbnail_html(image, 120)

    @admin.display(description="pixels")
    def dimensions(self, image: Image) -> str:
        return f"{image.width} x {image.height}"

    @admin.display(description="size")
    def size(self, image: Image) -> str:
        return filesizeformat(image.bytes)


@admin.register(Patient)
class PatientAdmin(admin.ModelAdmin):
    form = PatientForm
    inlines = [ImageInline]
    list_display = [
        "code",
        "study",
        "age_years",
        "sex",
        "image_count",
        "right_count",
        "left_count",
        "created_at",
    ]
    list_filter = ["study", "sex"]
    search_fields = ["code", "study__name"]
    list_select_related = ["study"]
    fieldsets = [
        (None, {"fields": ["study", "code", "age_years", "sex"]}),
        ("Add photos", {"fields": ["new_images_eye", "new_images"], "classes": ["gc-upload"]}),
    ]
    change_form_template = "admin/studies/patient/change_form.html"

    def get_queryset(self, request):
        return selectors.patients_with_counts()

    def get_inlines(self, request, obj):
        return self.inlines if obj is not None else []  # a new patient has no photos or grades yet

    def get_readonly_fields(self, request, obj=None):
        # A patient's photos belong to its study; moving it would break duplicate checks.
        return ["study"] if obj is not None else []

    def get_fieldsets(self, request, obj=None):
        fieldsets = super().get_fieldsets(request, obj)
        if not request.user.has_perm("studies.add_image"):
            return fieldsets[:1]
        return fieldsets

    def changeform_view(self, request, object_id=None, form_url="", extra_context=None):
        try:
            return super().changeform_view(request, object_id, form_url, extra_context)
        except ValidationError as refused:
            # Raised while storing the photos (the store failed, or another upload added the same file
            # at that moment): the page's transaction has rolled back, patient and photos alike.
            text = " ".join(refused.messages)
            if isinstance(refused, services.BatchRefused):
                text = f"Nothing was stored; {len(refused.refusals)} file(s) refused: {text}"
            self.message_user(request, text, messages.ERROR)
            return HttpResponseRedirect(request.get_full_path())

    def save_related(self, request, form, formsets, change):
        super().save_related(request, form, formsets, change)
        stored = form.images_store(patient=form.instance, uploaded_by=request.user)
        if stored:
            self.message_user(request, f"{stored} photo(s) added to {form.instance.code}.", messages.SUCCESS)

    @admin.display(description="photos", ordering="image_count")
    def image_count(self, patient: Patient) -> int:
        return patient.image_count

    @admin.display(description="right", ordering="right_count")
    def right_count(self, patient: Patient) -> int:
        return patient.right_count

    @admin.display(description="left", ordering="left_count")
    def left_count(self, patient: Patient) -> int:
        return patient.left_count


class PatientOfStudyFilter(admin.SimpleListFilter):
    """Patients of the chosen study only: a list of every patient would not scale."""

    title = "patient"
    parameter_name = "patient"

    def lookups(self, request, model_admin):
        study = request.GET.get("study__id__exact")
        if not study or not study.isdigit():
            return []
        return [(p.pk, p.code) for p in Patient.objects.filter(study_id=study).only("pk", "code")[:500]]

    def queryset(self, request, queryset):
        if self.value() and self.value().isdigit():
            return queryset.filter(patient_id=self.value())
        return queryset


@admin.register(Image)
class ImageAdmin(admin.ModelAdmin):
    list_display = ["preview", "__str__", "patient_link", "study", "eye", "dimensions", "size", "uploaded_at"]
    list_display_links = ["__str__"]
    list_filter = ["study", PatientOfStudyFilter, "eye", "uploaded_at"]
    search_fields = ["patient__code", "original_name", "=sha256"]
    fields = [
        "large_preview", "patient", "study", "eye", "original_name", "dimensions", "size",
        "sha256", "file", "uploaded_by", "uploaded_at",
    ]  # fmt: skip
    readonly_fields = [
        "large_preview", "patient", "study", "original_name", "dimensions", "size",
        "sha256", "file", "uploaded_by", "uploaded_at",
    ]  # fmt: skip
    list_per_page = 50

    def get_queryset(self, request):
        return selectors.images_listed()

    def has_add_permission(self, request):
        return False  # photos are added on their patient's page, checked as a batch

    def delete_model(self, request, obj):
        services.images_delete(images=[obj])

    def delete_queryset(self, request, queryset: QuerySet[Image]):
        services.images_delete(images=queryset)

    @admin.display(description="photo")
    def preview(self, image: Image):
        return thumbnail_html(image)

    @admin.display(description="photo")
    def large_preview(self, image: Image):
        return format_html(
            '<a href="{}" target="_blank" rel="noopener">'
            '<img src="{}" style="max-width:100%;max-height:480px"></a>',
            image.file.url,
            image.file.url,
        )

    @admin.display(description="patient", ordering="patient__code")
    def patient_link(self, image: Image):
        url = reverse("admin:studies_patient_change", args=[image.patient_id])
        return format_html('<a href="{}">{}</a>', url, image.patient.code)

    @admin.display(description="pixels")
    def dimensions(self, image: Image) -> str:
        return f"{image.width} x {image.height}"

    @admin.display(description="size", ordering="bytes")
    def size(self, image: Image) -> str:
        return filesizeformat(image.bytes)


@admin.register(ImageImport)
class ImageImportAdmin(admin.ModelAdmin):
    list_display = [
        "__str__",
        "study",
        "source",
        "status",
        "progress",
        "patients_created",
        "images_created",
        "created_by",
        "created_at",
    ]
    list_filter = ["status", "study"]
    list_select_related = ["study", "created_by"]
    readonly_fields = [
        "study", "source", "status", "progress", "bytes_expected", "patients_created",
        "images_created", "refusals", "created_by", "created_at", "finished_at",
    ]  # fmt: skip
    fields = readonly_fields

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def get_urls(self):
        wrap = self.admin_site.admin_view
        return [
            path("<int:import_id>/part/", wrap(views.import_part), name="studies_imageimport_part"),
            path("<int:import_id>/finish/", wrap(views.import_finish), name="studies_imageimport_finish"),
            path("<int:import_id>/status/", wrap(views.import_status), name="studies_imageimport_status"),
        ] + super().get_urls()

    @admin.display(description="progress")
    def progress(self, image_import: ImageImport):
        return f"{image_import.files_done} / {image_import.files_total} files"

    @admin.display(description="refused files")
    def refusals(self, image_import: ImageImport):
        if not image_import.errors:
            return "-"
        return format_html(
            "<ul>{}</ul>",
            format_html_join(
                "", "<li><b>{}</b>: {}</li>", ((e["file"], e["reason"]) for e in image_import.errors)
            ),
        )
