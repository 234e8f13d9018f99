"""The studies admin's parts: regions, studies, patients with their photos, photos, field-day imports.

Nothing is registered here: admin_site.py registers every model once, composing the study and patient
pages from these classes and the parts grading and exports add to them.
"""

import json

from django.contrib import admin, messages
from django.contrib.admin.views.main import ChangeList
from django.core.exceptions import ValidationError
from django.core.paginator import Paginator
from django.db import connections, router
from django.db.models import Count, IntegerField, OuterRef, QuerySet, Subquery, Value
from django.db.models.functions import Coalesce
from django.forms.models import BaseInlineFormSet
from django.http import HttpResponseRedirect
from django.template.defaultfilters import filesizeformat
from django.urls import path, reverse
from django.utils.functional import cached_property
from django.utils.html import format_html, format_html_join

from . import selectors, services, views
from .forms import PatientForm, StudyForm
from .models import Image, ImageImport, Patient, Region, Study

# Lists that stay fast at any size ------------------------------------------------------------------
# After healthchecks' PingsAdmin: no full result count, PostgreSQL's row estimate instead of a count
# where the rows are many, counts only for the rows shown, orderings an index gives.

EXACT_UP_TO = 10_000  # rows counted exactly; above, PostgreSQL's estimate (within a few percent) is shown


def estimated_count(queryset: QuerySet) -> tuple[int, bool]:
    """The rows of `queryset` and whether that is an estimate: PostgreSQL's plan estimate when it says
    more than EXACT_UP_TO rows (counting them would read them all), else the exact count."""
    queryset = queryset.order_by()  # a count never needs the model's default ordering (and its joins)
    if connections[queryset.db].vendor == "postgresql":
        plan = json.loads(queryset.explain(format="json"))
        estimate = int(plan[0]["Plan"]["Plan Rows"])
        if estimate > EXACT_UP_TO:
            return estimate, True
    return queryset.count(), False


class EstimatedCountPaginator(Paginator):
    """Pages of a list whose count is PostgreSQL's estimate once the list is large."""

    @cached_property
    def count(self) -> int:
        return estimated_count(self.object_list)[0]


class LargeListMixin:
    """A list that grows without bound: an estimated count, and no second count of the whole table."""

    show_full_result_count = False
    paginator = EstimatedCountPaginator


def count_html(number: int, url: str, *, estimated: bool = False):
    if estimated:
        return format_html('<a href="{}" title="an estimate">~{}</a>', url, f"{number:,}")
    return format_html('<a href="{}">{}</a>', url, f"{number:,}")


def count_of(rows: QuerySet) -> Coalesce:
    """A count subquery of `rows` (filtered on an OuterRef, grouped by it with `.values(...)`) for the
    rows shown: PostgreSQL runs it after the list's LIMIT, never for the whole table."""
    counted = rows.order_by().annotate(n=Count("pk")).values("n")
    return Coalesce(Subquery(counted, output_field=IntegerField()), Value(0))


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


class RegionAdmin(admin.ModelAdmin):
    list_display = ["name", "country", "study_count"]
    search_fields = ["name", "country"]
    list_filter = ["country"]

    def get_queryset(self, request):
        return selectors.regions_with_counts()

    @admin.display(description="studies", ordering="study_count")
    def study_count(self, region: Region) -> int:
        return region.study_count


def counts_by_study(model, study_ids: list[int]) -> dict[int, tuple[int, bool]]:
    """Each study's rows of `model` (which has a `study` key) and whether that is an estimate, in two
    queries: PostgreSQL's column statistics for the large studies, an exact count for the others."""
    estimates = {
        study: rows
        for study, rows in _study_estimates(model).items()
        if study in study_ids and rows > EXACT_UP_TO
    }
    exact = (
        model.objects.filter(study_id__in=[pk for pk in study_ids if pk not in estimates])
        .order_by()
        .values_list("study_id")
        .annotate(n=Count("pk"))
    )
    counts = {study: (0, False) for study in study_ids}
    counts.update({study: (n, False) for study, n in exact})
    counts.update({study: (rows, True) for study, rows in estimates.items()})
    return counts


def _study_estimates(model) -> dict[int, int]:
    """The rows per study PostgreSQL expects from its statistics (the studies frequent enough to be
    among the column's most common values): the planner's own estimate for `WHERE study_id = ...`."""
    connection = connections[router.db_for_read(model)]
    if connection.vendor != "postgresql":
        return {}
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT s.most_common_vals::text, s.most_common_freqs, c.reltuples FROM pg_stats s "
            "JOIN pg_class c ON c.relname = s.tablename "
            "JOIN pg_namespace n ON n.oid = c.relnamespace AND n.nspname = s.schemaname "
            "WHERE s.schemaname = current_schema() AND s.tablename = %s AND s.attname = %s",
            [model._meta.db_table, model._meta.get_field("study").column],
        )
        row = cursor.fetchone()
    if row is None or row[0] is None:
        return {}
    values, frequencies, rows = row
    studies = [int(value) for value in values.strip("{}").split(",")]
    return {study: round(frequency * rows) for study, frequency in zip(studies, frequencies, strict=True)}


class StudyFilter(admin.RelatedFieldListFilter):
    """Every study, listed from the (small) studies table, and shown even while there is only one
    (Django hides a filter with a single choice)."""

    def has_output(self):
        return True


class StudyChangeList(ChangeList):
    """Counts the shown studies' patients and photos: exactly when few, by estimate when many."""

    def get_results(self, request):
        super().get_results(request)
        shown = [study.pk for study in self.result_list]
        patients, images = counts_by_study(Patient, shown), counts_by_study(Image, shown)
        for study in self.result_list:
            study.patient_count, study.patients_estimated = patients[study.pk]
            study.image_count, study.images_estimated = images[study.pk]


class StudyAdminBase(admin.ModelAdmin):
    """The study page; grading adds grade types, rules and reports, exports the export button."""

    form = StudyForm
    list_display = ["name", "region", "patient_count", "image_count", "is_active", "created_at"]
    list_filter = ["is_active", "region"]
    search_fields = ["name", "description", "region__name"]
    list_select_related = ["region"]
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
        return super().get_queryset(request).select_related("region", "created_by")

    def get_changelist(self, request, **kwargs):
        return StudyChangeList

    def formfield_for_dbfield(self, db_field, request, **kwargs):
        formfield = super().formfield_for_dbfield(db_field, request, **kwargs)
        if db_field.name == "graders" and hasattr(formfield.widget, "widget"):
            # No "+": a user added from here would not be in the Graders group, so not offered.
            formfield.widget = formfield.widget.widget
        return formfield

    def save_model(self, request, obj, form, change):
        if not change:
            obj.created_by = request.user
        super().save_model(request, obj, form, change)

    @admin.display(description="patients")
    def patient_count(self, study: Study):
        url = reverse("admin:studies_patient_changelist") + f"?study__id__exact={study.pk}"
        return count_html(study.patient_count, url, estimated=study.patients_estimated)

    @admin.display(description="photos")
    def image_count(self, study: Study):
        url = reverse("admin:studies_image_changelist") + f"?study__id__exact={study.pk}"
        return count_html(study.image_count, url, estimated=study.images_estimated)

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

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("patient")  # each row is named by its patient

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


class PatientAdminBase(LargeListMixin, admin.ModelAdmin):
    """The patient page with its photos; grading adds the grade history, exports import and export."""

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
    list_filter = [("study", StudyFilter), "sex"]
    # A prefix of the code: an index finds it (grading's migration 0004 adds it on PostgreSQL).
    search_fields = ["^code"]
    search_help_text = "The patient's code, or its beginning."
    list_select_related = ["study"]
    ordering = ["study_id", "code"]  # the order of the (study, code) unique index
    fieldsets = [
        (None, {"fields": ["study", "code", "age_years", "sex"]}),
        ("Add photos", {"fields": ["new_images_eye", "new_images"], "classes": ["gc-upload"]}),
    ]
    change_form_template = "admin/studies/patient/change_form.html"

    def get_queryset(self, request):
        photos = Image.objects.filter(patient=OuterRef("pk")).values("patient")
        return (
            super()
            .get_queryset(request)
            .select_related("study")
            .annotate(
                image_count=count_of(photos),
                right_count=count_of(photos.filter(eye="R")),
                left_count=count_of(photos.filter(eye="L")),
            )
        )

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

    # Counted for the rows shown only, so not sortable: sorting would count every patient's photos.
    @admin.display(description="photos")
    def image_count(self, patient: Patient) -> int:
        return patient.image_count

    @admin.display(description="right")
    def right_count(self, patient: Patient) -> int:
        return patient.right_count

    @admin.display(description="left")
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
        patients = Patient.objects.filter(study_id=study).order_by("code")  # along the (study, code) index
        return list(patients.values_list("pk", "code")[:500])

    def queryset(self, request, queryset):
        if self.value() and self.value().isdigit():
            return queryset.filter(patient_id=self.value())
        return queryset


class ImageChangeList(ChangeList):
    """Numbers each shown photo among its patient's photos of the same eye ("photo 2 of 3")."""

    def get_results(self, request):
        super().get_results(request)
        shown = {(image.patient_id, image.eye) for image in self.result_list}
        if not shown:
            return
        patients = {patient for patient, _ in shown}
        siblings: dict[tuple[int, str], list[int]] = {}
        rows = Image.objects.filter(patient_id__in=patients).order_by("uploaded_at", "id")
        for patient, eye, pk in rows.values_list("patient_id", "eye", "pk"):
            siblings.setdefault((patient, eye), []).append(pk)
        for image in self.result_list:
            same_eye = siblings.get((image.patient_id, image.eye), [image.pk])
            image.number_of = (same_eye.index(image.pk) + 1, len(same_eye))


def image_label(image: Image) -> str:
    """'AM-0001, left eye, photo 2 of 3' where a list numbered it, else with the original file name."""
    eye = f"{image.get_eye_display().lower()} eye" if image.eye != "U" else "eye unknown"
    number_of = getattr(image, "number_of", None)
    if number_of:
        return f"{image.patient.code}, {eye}, photo {number_of[0]} of {number_of[1]}"
    return f"{image.patient.code}, {eye}, {image.original_name}"


class ImageAdminBase(LargeListMixin, admin.ModelAdmin):
    """The photos list; exports adds the export button."""

    list_display = ["preview", "label", "patient_link", "study", "eye", "dimensions", "size", "uploaded_at"]
    list_display_links = ["label"]
    list_filter = [("study", StudyFilter), PatientOfStudyFilter, "eye", "uploaded_at"]
    search_fields = ["^patient__code", "^original_name", "=sha256"]
    search_help_text = "A patient's code or a file name (or their beginning), or a file's SHA-256."
    list_select_related = ["patient", "study"]
    ordering = ["-id"]  # newest first, along the primary key
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
        return super().get_queryset(request).select_related("patient", "study", "uploaded_by")

    def get_changelist(self, request, **kwargs):
        return ImageChangeList

    def has_add_permission(self, request):
        return False  # photos are added on their patient's page, checked as a batch

    def delete_model(self, request, obj):
        services.images_delete(images=[obj])

    def delete_queryset(self, request, queryset: QuerySet[Image]):
        services.images_delete(images=queryset)

    @admin.display(description="photo", ordering="id")
    def label(self, image: Image) -> str:
        return image_label(image)

    @admin.display(description="thumbnail")
    def preview(self, image: Image):
        return thumbnail_html(image)

    @admin.display(description="photo")
    def large_preview(self, image: Image):
        return format_html(
            '<a href="{}" target="_blank" rel="noopener">'
            '<img src="{}" alt="{}" style="max-width:100%;max-height:480px"></a>',
            image.file.url,
            image.file.url,
            image_label(image),
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


class ImageImportAdmin(LargeListMixin, admin.ModelAdmin):
    list_display = [
        "__str__",
        "study",
        "source",
        "status",
        "progress",
        "size",
        "patients_created",
        "images_created",
        "created_by",
        "created_at",
    ]
    list_filter = ["status", ("study", StudyFilter)]
    list_select_related = ["study", "created_by"]
    ordering = ["-id"]  # newest first, along the primary key
    readonly_fields = [
        "study", "source", "status", "progress", "size", "patients_created",
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

    @admin.display(description="size", ordering="bytes_expected")
    def size(self, image_import: ImageImport) -> str:
        return filesizeformat(image_import.bytes_expected)

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
