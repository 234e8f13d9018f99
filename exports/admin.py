"""The exports admin's parts: export (and patient import) buttons for the lists, API tokens.

Nothing is registered here: admin_site.py registers every model once, composing each page from these
mixins and the other apps' parts.
"""

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import ValidationError
from django.db.models import OuterRef
from django.template.response import TemplateResponse
from import_export.admin import ExportActionMixin, ExportMixin, ImportExportMixin
from import_export.forms import ConfirmImportForm, ExportForm, ImportForm, SelectableFieldsExportForm

from studies.admin import count_of
from studies.models import Image, Patient, Study

from . import resources, services


def may_export(request) -> bool:
    """Administrators and the Data team export; graders and collectors do not."""
    return request.user.is_superuser or request.user.has_perm("grading.view_all_grades")


class CsvByDefault:
    """The export form with CSV chosen, and no empty "---" format to choose."""

    def __init__(self, formats, resources, **kwargs):
        super().__init__(formats, resources, **kwargs)
        field = self.fields["format"]
        field.choices = [choice for choice in field.choices if choice[0] != ""]
        titles = [str(file_format().get_title()).lower() for file_format in formats]
        if "csv" in titles:
            self.initial.setdefault("format", str(titles.index("csv")))


class ExportFieldsForm(CsvByDefault, SelectableFieldsExportForm):
    """Choose the format and the columns."""


class ExportWholeForm(CsvByDefault, ExportForm):
    """Choose the format; the columns are the resource's (grades: one per field of the grade types)."""


class ExportsMixin(ExportActionMixin, ExportMixin):
    """An export button on the list and an export action, for administrators and the Data team."""

    export_form_class = ExportFieldsForm

    def has_export_permission(self, request):
        return may_export(request)


class ExportsStudyMixin(ExportsMixin):
    resource_classes = [resources.StudyResource]

    def get_export_queryset(self, request):
        """The listed studies with their exact counts (the list shows estimates for large studies)."""
        patients = Patient.objects.filter(study=OuterRef("pk")).values("study")
        images = Image.objects.filter(study=OuterRef("pk")).values("study")
        return (
            super()
            .get_export_queryset(request)
            .annotate(patient_count=count_of(patients), image_count=count_of(images))
        )


class PatientImportForm(ImportForm):
    study = forms.ModelChoiceField(
        queryset=Study.objects.order_by("name"), help_text="The patients in the file are added to this study."
    )


class PatientConfirmImportForm(ConfirmImportForm):
    study = forms.ModelChoiceField(queryset=Study.objects.all(), widget=forms.HiddenInput())


class ExportsPatientMixin(ExportsMixin, ImportExportMixin):
    """Export the patients, and import a study's patients from a file."""

    resource_classes = [resources.PatientResource]
    import_form_class = PatientImportForm
    confirm_form_class = PatientConfirmImportForm

    def has_import_permission(self, request):
        return request.user.has_perm("studies.add_patient")

    def get_confirm_form_initial(self, request, import_form):
        initial = super().get_confirm_form_initial(request, import_form)
        if import_form:
            initial["study"] = import_form.cleaned_data["study"].pk
        return initial

    def get_import_resource_kwargs(self, request, **kwargs):
        form = kwargs.get("form")
        study = None
        if form is not None and hasattr(form, "cleaned_data") and form.cleaned_data.get("study"):
            study = form.cleaned_data["study"]
        return {**super().get_import_resource_kwargs(request, **kwargs), "study": study}

    def get_export_resource_kwargs(self, request, **kwargs):
        return {}


class ExportsImageMixin(ExportsMixin):
    resource_classes = [resources.ImageResource]


class ExportsGradeMixin(ExportsMixin):
    resource_classes = [resources.GradeWideResource, resources.GradeLongResource]
    export_form_class = ExportWholeForm  # the columns come from the grade types, not from a field list


class ExportsConsensusMixin(ExportsMixin):
    resource_classes = [resources.ConsensusResource]


# API tokens --------------------------------------------------------------


class AuthTokenAdmin(admin.ModelAdmin):
    """Issued tokens, shown by their key prefix only; the secret is never shown again."""

    list_display = ["token_key", "user", "created", "expiry"]
    list_select_related = ["user"]
    search_fields = ["token_key", "user__username"]
    fields = ["token_key", "user", "created", "expiry"]
    readonly_fields = fields

    def has_add_permission(self, request):
        return False  # tokens are issued from the users list, where the raw token is shown once

    def has_change_permission(self, request, obj=None):
        return False


class ApiTokenUserMixin:
    """What exports adds to the users list: an action issuing API tokens, for superusers only."""

    actions = ["issue_api_token"]

    def has_issue_token_permission(self, request) -> bool:
        return request.user.is_superuser

    @admin.action(description="Issue an API token (shown once)", permissions=["issue_token"])
    def issue_api_token(self, request, queryset):
        issued, refused = [], []
        for user in queryset:
            try:
                instance, token = services.api_token_issue(user=user)
            except ValidationError as error:
                refused.append(" ".join(error.messages))
            else:
                issued.append((user, token, instance.expiry))
        for message in refused:
            self.message_user(request, message, messages.ERROR)
        if not issued:
            return None
        context = {
            **self.admin_site.each_context(request),
            "title": "API tokens issued",
            "opts": self.model._meta,
            "issued": issued,
        }
        response = TemplateResponse(request, "admin/exports/token_issued.html", context)
        response["Cache-Control"] = "no-store"
        return response
