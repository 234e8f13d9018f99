"""The grading admin's parts: grade types defined on one page, grades with history, consensus, and what
grading adds to the study page (grade types, rules, agreement and certification reports) and to the
patient page (grade history).

Nothing is registered here: admin_site.py registers every model once, composing the pages.
"""

import csv
import json

from django.contrib import admin, messages
from django.contrib.admin import DateFieldListFilter
from django.contrib.auth import get_user_model
from django.core.exceptions import PermissionDenied, ValidationError
from django.db.models import Case, F, Prefetch, Q, Value, When
from django.http import HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, redirect
from django.template.response import TemplateResponse
from django.urls import path
from django.utils.html import format_html_join

from accounts import roles
from studies.admin import LargeListMixin, PatientAdminBase, StudyAdminBase, StudyFilter
from studies.models import Patient, Study

from . import consensus, selectors, services
from .certification import CERTIFICATION_COLUMNS, certification_report, certification_rows
from .forms import GradeFieldForm, GradeTypeImportForm, StudyGradingForm
from .models import Consensus, Grade, GradeEntry, GradeField, GradeType
from .reports import (
    AGREEMENT_COLUMNS,
    Ungradable,
    agreement_chart_data,
    agreement_page_fields,
    agreement_report,
    agreement_rows,
)


class GradeFieldInline(admin.StackedInline):
    model = GradeField
    form = GradeFieldForm
    extra = 1
    fields = [("name", "order", "required"), "help_text", "options_text"]
    ordering = ["order", "id"]

    def get_queryset(self, request):
        return super().get_queryset(request).prefetch_related("options")


class GradeTypeAdmin(admin.ModelAdmin):
    list_display = ["name", "unit", "is_active", "field_names", "study_names"]
    list_filter = ["is_active"]
    search_fields = ["name", "description"]
    fields = ["name", "description", "unit", "is_active"]
    inlines = [GradeFieldInline]
    actions = ["export_json"]
    change_list_template = "admin/grading/gradetype/change_list.html"

    def get_queryset(self, request):
        return super().get_queryset(request).prefetch_related("fields", "studies")

    def get_readonly_fields(self, request, obj=None):
        # Grades already given say what they grade: the unit no longer changes.
        return ["unit"] if obj is not None and obj.grades.exists() else []

    def save_formset(self, request, form, formset, change):
        if formset.model is not GradeField:
            return super().save_formset(request, form, formset, change)
        fields = formset.save()
        for inline_form in formset.forms:
            if (
                inline_form.instance.pk
                and inline_form.cleaned_data
                and not inline_form.cleaned_data.get("DELETE")
            ):
                # GradeFieldForm has refused removing an option used in grades.
                services.grade_field_options_set(
                    grade_field=inline_form.instance, options=inline_form.cleaned_data["options_text"]
                )
        return fields

    @admin.display(description="fields")
    def field_names(self, grade_type: GradeType) -> str:
        return ", ".join(f.name for f in grade_type.fields.all())

    @admin.display(description="studies")
    def study_names(self, grade_type: GradeType) -> str:
        return ", ".join(s.name for s in grade_type.studies.all()) or "-"

    @admin.action(description="Export as JSON")
    def export_json(self, request, queryset):
        data = [
            selectors.grade_type_as_dict(t)
            for t in selectors.grade_types_for_export(list(queryset.values_list("pk", flat=True)))
        ]
        response = HttpResponse(json.dumps(data, indent=2), content_type="application/json")
        response["Content-Disposition"] = 'attachment; filename="grade-types.json"'
        return response

    def get_urls(self):
        return [
            path("import/", self.admin_site.admin_view(self.import_view), name="grading_gradetype_import"),
        ] + super().get_urls()

    def import_view(self, request):
        if not self.has_add_permission(request):
            raise PermissionDenied
        form = GradeTypeImportForm(request.POST or None, request.FILES or None)
        if request.method == "POST" and form.is_valid():
            try:
                data = json.load(form.cleaned_data["file"])
                created = services.grade_types_import(data=data)
            except (ValueError, UnicodeDecodeError):
                form.add_error("file", "This file is not JSON.")
            except ValidationError as error:
                form.add_error("file", error.messages)
            else:
                names = ", ".join(t.name for t in created)
                self.message_user(
                    request, f"Imported {len(created)} grade type(s): {names}.", messages.SUCCESS
                )
                return redirect("admin:grading_gradetype_changelist")
        context = {
            **self.admin_site.each_context(request),
            "title": "Import grade types",
            "opts": self.model._meta,
            "form": form,
        }
        return TemplateResponse(request, "admin/grading/gradetype/import.html", context)


class GradeFieldAdmin(admin.ModelAdmin):
    list_display = ["name", "grade_type", "order", "required"]
    list_filter = ["grade_type", "required"]
    list_select_related = ["grade_type"]
    search_fields = ["name", "help_text"]


class GradeOptionAdmin(admin.ModelAdmin):
    list_display = ["value", "label", "field", "order", "ungradable"]
    list_filter = ["field__grade_type", "ungradable"]
    list_select_related = ["field__grade_type"]
    search_fields = ["value", "label"]


def _answers_html(grade: Grade):
    return format_html_join(
        " ",
        '<span class="badge bg-secondary" title="{}">{}={}</span>',
        (
            (e.option.label if e.option else "blank", e.field.name, e.option.value if e.option else "-")
            for e in grade.entries.all()
        ),
    )


ENTRIES = Prefetch("entries", queryset=GradeEntry.objects.select_related("field", "option"))


class GraderFilter(admin.RelatedFieldListFilter):
    """Those who grade (the Graders and Adjudicators groups, and every study's graders), listed from the
    users table rather than from every grade."""

    def field_choices(self, field, request, model_admin):
        users = get_user_model().objects.filter(
            Q(groups__name__in=[roles.GRADERS, roles.ADJUDICATORS]) | Q(graded_studies__isnull=False)
        )
        return list(users.distinct().order_by("username").values_list("pk", "username"))


class CurrentFilter(admin.SimpleListFilter):
    title = "current or superseded"
    parameter_name = "current"

    def lookups(self, request, model_admin):
        return [("yes", "Current"), ("no", "Superseded")]

    def queryset(self, request, queryset):
        if self.value() in ("yes", "no"):
            return queryset.filter(is_current=self.value() == "yes")
        return queryset


class GradeAdminBase(LargeListMixin, admin.ModelAdmin):
    """Grades with their answers; a grader sees their own, masked as on the grading pages. Exports adds
    the export button."""

    list_display = [
        "pk",
        "patient_code",
        "study",
        "grade_type",
        "eye",
        "grader",
        "kind",
        "is_current",
        "answers",
        "seconds_spent",
        "created_at",
    ]
    list_display_links = ["pk"]
    search_fields = ["patient__code", "note"]
    ordering = ["-id"]  # newest first, along the primary key
    readonly_fields = [
        "patient",
        "grade_type",
        "eye",
        "grader",
        "kind",
        "is_current",
        "superseded_by",
        "answers",
        "seconds_spent",
        "note",
        "created_at",
    ]
    fields = readonly_fields

    def get_queryset(self, request):
        # The patient's label follows the one masking rule, decided per request in the query itself.
        sort_key = F("patient__code")
        if not selectors.sees_patient_codes(viewer=request.user):
            sort_key = Case(
                When(patient__study__masked_codes=True, then=Value("")), default=F("patient__code")
            )
        return (
            selectors.grades_visible_to(user=request.user)
            .annotate(
                patient_label=selectors.patient_label_annotation(viewer=request.user), patient_sort=sort_key
            )
            .prefetch_related(ENTRIES)
        )

    def get_fields(self, request, obj=None):
        if selectors.sees_patient_codes(viewer=request.user):
            return self.fields
        # A grader sees their own grades with the patient as masked as on the grading pages.
        return ["patient_code", *[f for f in self.fields if f != "patient"]]

    def get_readonly_fields(self, request, obj=None):
        return self.get_fields(request, obj)

    def get_search_fields(self, request):
        return self.search_fields if selectors.sees_patient_codes(viewer=request.user) else ["note"]

    def get_sortable_by(self, request):
        if selectors.sees_patient_codes(viewer=request.user):
            return super().get_sortable_by(request)
        return [name for name in self.list_display if name != "patient_code"]

    def get_list_filter(self, request):
        filters = [
            ("patient__study", StudyFilter), "grade_type", "eye", "kind", CurrentFilter,
            ("created_at", DateFieldListFilter),
        ]  # fmt: skip
        if selectors.sees_patient_codes(viewer=request.user):
            filters.insert(1, ("grader", GraderFilter))
        return filters

    def has_add_permission(self, request):
        return False  # grades are given on the grading page

    def has_change_permission(self, request, obj=None):
        return False  # history is kept: a re-grade supersedes, nothing is edited

    def has_delete_permission(self, request, obj=None):
        return False

    def history_view(self, request, object_id, extra_context=None):
        # Refused before the lookup, as on the change page: the filtered queryset would answer "deleted?".
        if not self.has_view_or_change_permission(request):
            raise PermissionDenied
        return super().history_view(request, object_id, extra_context)

    # Sorting by this column sorts masked rows by nothing (see get_queryset), never by the real code.
    @admin.display(description="patient", ordering="patient_sort")
    def patient_code(self, grade: Grade) -> str:
        return grade.patient_label

    @admin.display(description="study", ordering="patient__study__name")
    def study(self, grade: Grade) -> str:
        return grade.patient.study.name

    @admin.display(description="answers")
    def answers(self, grade: Grade):
        return _answers_html(grade)


class GradeEntryAdmin(LargeListMixin, admin.ModelAdmin):
    """Single answers, for those who may see every grade (graders see theirs under Grades)."""

    list_display = ["grade", "field", "option"]
    list_filter = ["field__grade_type", "field"]
    ordering = ["-id"]  # newest first, along the primary key
    list_select_related = [
        "grade__patient__study", "grade__grade_type", "grade__grader", "field__grade_type", "option",
    ]  # fmt: skip

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    def has_view_permission(self, request, obj=None):
        return request.user.is_superuser or request.user.has_perm("grading.view_all_grades")

    def has_module_permission(self, request):
        return self.has_view_permission(request)


class GradeHistoryInline(admin.TabularInline):
    """Every grade of the patient, current and superseded, for those who may see all grades."""

    model = Grade
    fk_name = "patient"
    extra = 0
    can_delete = False
    verbose_name_plural = "grade history"
    fields = ["created_at", "grader", "grade_type", "kind", "is_current", "answers", "note"]
    readonly_fields = fields
    ordering = ["-created_at"]

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("grader", "grade_type").prefetch_related(ENTRIES)

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_view_permission(self, request, obj=None):
        return request.user.is_superuser or request.user.has_perm("grading.view_all_grades")

    @admin.display(description="answers")
    def answers(self, grade: Grade):
        return _answers_html(grade)


def _as_attachment(response: HttpResponse, filename: str) -> HttpResponse:
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    response["Cache-Control"] = "no-store"
    return response


def _csv_download(columns: list[str], rows, filename: str) -> HttpResponse:
    response = HttpResponse(content_type="text/csv; charset=utf-8")
    writer = csv.writer(response)
    writer.writerow(columns)
    writer.writerows(rows)
    return _as_attachment(response, f"{filename}.csv")


def _listed(field: str) -> str:
    return "grade_type_names" if field == "grade_types" else field


class GradingStudyMixin:
    """What grading adds to the study page: grade types and certification in the form, the rules'
    consequences on save, and the agreement and certification report pages."""

    form = StudyGradingForm
    fieldsets = [
        *StudyAdminBase.fieldsets[:1],
        ("Grading", {"fields": ["grade_types", *StudyAdminBase.fieldsets[1][1]["fields"]]}),
        ("Certification", {"fields": ["is_certification", "pass_kappa", "certification_required"]}),
        *StudyAdminBase.fieldsets[2:],
    ]
    readonly_fields = [*StudyAdminBase.readonly_fields, "grade_type_names"]

    def get_fieldsets(self, request, obj=None):
        fieldsets = super().get_fieldsets(request, obj)
        if obj is None or self.has_change_permission(request, obj):
            return fieldsets
        # Read-only, the admin cannot display the reverse relation `grade_types`: list them by name.
        return [
            (name, {**options, "fields": [_listed(f) for f in options["fields"]]})
            for name, options in fieldsets
        ]

    @admin.display(description="grade types")
    def grade_type_names(self, study: Study) -> str:
        return ", ".join(t.name for t in study.grade_types.order_by("name")) or "-"

    def save_related(self, request, form, formsets, change):
        super().save_related(request, form, formsets, change)
        services.study_grade_types_set(study=form.instance, grade_types=form.cleaned_data["grade_types"])
        rules = {"graders_per_patient", "repeat_share", "randomized_order", "repeat_gap_min"}
        if change and rules & set(form.changed_data):
            services.queues_refresh(study=form.instance)
        if change and "graders_per_patient" in form.changed_data:
            consensus.study_refresh(study=form.instance)

    def get_urls(self):
        agreement = self.admin_site.admin_view(self.agreement_view)
        return [
            path("<int:object_id>/agreement/", agreement, name="studies_study_agreement"),
            path(
                "<int:object_id>/certification/",
                self.admin_site.admin_view(self.certification_view),
                name="studies_study_certification",
            ),
        ] + super().get_urls()

    def _report_study(self, request, object_id) -> tuple[Study, str]:
        """The study of a report page, for those who may see every grade or adjudicate, and how ungradable
        counts."""
        user = request.user
        if not (
            user.is_superuser
            or user.has_perm("grading.view_all_grades")
            or user.has_perm("grading.adjudicate_grade")
        ):
            raise PermissionDenied
        study = get_object_or_404(Study, pk=object_id)
        ungradable = request.GET.get("ungradable", Ungradable.EXCLUDED)
        return study, ungradable if ungradable in Ungradable.CHOICES else Ungradable.EXCLUDED

    def _report_page(self, request, template: str, *, title: str, study, ungradable: str, **extra):
        context = {
            **self.admin_site.each_context(request),
            "title": title,
            "opts": self.opts,
            "study": study,
            "ungradable": ungradable,
            "ungradable_says": Ungradable.says(ungradable),
            "ungradable_choices": [(choice, Ungradable.says(choice)) for choice in Ungradable.CHOICES],
            **extra,
        }
        return TemplateResponse(request, template, context)

    def agreement_view(self, request, object_id):
        """The study's agreement report for those who may see every grade; `?download=csv|json` exports it."""
        study, ungradable = self._report_study(request, object_id)
        report = agreement_report(study=study, ungradable=ungradable, rounds=1000, seed=0)
        download = request.GET.get("download")
        if download == "csv":
            return _csv_download(AGREEMENT_COLUMNS, agreement_rows(report), f"agreement-study-{study.pk}")
        if download == "json":
            response = JsonResponse(report.as_dict())
            return _as_attachment(response, f"agreement-study-{study.pk}.json")
        return self._report_page(
            request, "admin/grading/agreement.html", title=f"Agreement: {study.name}", study=study,
            ungradable=ungradable, report=report, fields=agreement_page_fields(report),
            data=agreement_chart_data(report),
        )  # fmt: skip

    def certification_view(self, request, object_id):
        """A certification set's trainees against its reference, pass or fail; `?download=csv` exports it."""
        study, ungradable = self._report_study(request, object_id)
        report = certification_report(study=study, ungradable=ungradable) if study.is_certification else None
        if report is not None and request.GET.get("download") == "csv":
            return _csv_download(
                CERTIFICATION_COLUMNS, certification_rows(report), f"certification-study-{study.pk}"
            )
        return self._report_page(
            request, "admin/grading/certification.html", title=f"Certification: {study.name}", study=study,
            ungradable=ungradable, report=report,
        )  # fmt: skip


class GradingPatientMixin:
    """What grading adds to the patient page: the grade history, and deletion that refuses graded patients."""

    inlines = [*PatientAdminBase.inlines, GradeHistoryInline]

    def delete_model(self, request, obj):
        services.patients_delete(patients=Patient.objects.filter(pk=obj.pk))

    def delete_queryset(self, request, queryset):
        services.patients_delete(patients=queryset)


class ConsensusAdminBase(LargeListMixin, admin.ModelAdmin):
    """Each patient's consensus per field (and eye), and how it was reached: read-only, kept by saves."""

    list_display = [
        "patient_code",
        "study",
        "grade_type",
        "eye",
        "field_name",
        "answer",
        "method",
        "graders",
        "votes",
    ]
    list_filter = ["method", ("patient__study", StudyFilter), "grade_type", "eye"]
    list_select_related = ["patient__study", "grade_type", "field", "option"]
    search_fields = ["patient__code"]
    ordering = ["patient_id", "field_id", "eye"]  # a patient's rows together, along the unique index
    fields = ["patient", "grade_type", "eye", "field", "option", "method", "graders", "votes", "updated_at"]
    readonly_fields = fields

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    @admin.display(description="patient", ordering="patient__code")
    def patient_code(self, consensus: Consensus) -> str:
        return consensus.patient.code

    @admin.display(description="study", ordering="patient__study__name")
    def study(self, consensus: Consensus) -> str:
        return consensus.patient.study.name

    @admin.display(description="field", ordering="field__order")
    def field_name(self, consensus: Consensus) -> str:
        return consensus.field.name

    @admin.display(description="consensus")
    def answer(self, consensus: Consensus) -> str:
        return f"{consensus.option.value} = {consensus.option.label}" if consensus.option else "-"
