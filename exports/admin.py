"""Export and import buttons on the admin's lists, and API tokens issued from the users list."""

from django import forms
from django.contrib import admin, messages
from django.contrib.auth import get_user_model
from django.contrib.auth.admin import UserAdmin
from django.core.exceptions import ValidationError
from django.template.response import TemplateResponse
from import_export.admin import ExportActionMixin, ExportMixin, ImportExportMixin
from import_export.forms import ConfirmImportForm, ExportForm, ImportForm
from knox.models import AuthToken

from grading.admin import ConsensusAdmin, GradeAdmin, GradingPatientAdmin, GradingStudyAdmin
from grading.models import Consensus, Grade
from studies.admin import ImageAdmin
from studies.models import Image, Patient, Study

from . import resources, services


def may_export(request) -> bool:
    """Administrators and the Data team export; graders and collectors do not."""
    return request.user.is_superuser or request.user.has_perm("grading.view_all_grades")


class ExportsMixin(ExportActionMixin, ExportMixin):
    def has_export_permission(self, request):
        return may_export(request)


admin.site.unregister(Study)


@admin.register(Study)
class ExportStudyAdmin(ExportsMixin, GradingStudyAdmin):
    resource_classes = [resources.StudyResource]
    change_form_template = GradingStudyAdmin.change_form_template  # keeps "Import a field day"


class PatientImportForm(ImportForm):
    study = forms.ModelChoiceField(
        queryset=Study.objects.order_by("name"), help_text="The patients in the file are added to this study."
    )


class PatientConfirmImportForm(ConfirmImportForm):
    study = forms.ModelChoiceField(queryset=Study.objects.all(), widget=forms.HiddenInput())


admin.site.unregister(Patient)


@admin.register(Patient)
class ExportPatientAdmin(ExportsMixin, ImportExportMixin, GradingPatientAdmin):
    resource_classes = [resources.PatientResource]
    change_form_template = GradingPatientAdmin.change_form_template  # keeps the photo upload
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


admin.site.unregister(Image)


@admin.register(Image)
class ExportImageAdmin(ExportsMixin, ImageAdmin):
    resource_classes = [resources.ImageResource]


admin.site.unregister(Grade)


@admin.register(Grade)
class ExportGradeAdmin(ExportsMixin, GradeAdmin):
    resource_classes = [resources.GradeWideResource, resources.GradeLongResource]
    export_form_class = ExportForm  # the columns come from the grade types, not from a field list


admin.site.unregister(Consensus)


@admin.register(Consensus)
class ExportConsensusAdmin(ExportsMixin, ConsensusAdmin):
    resource_classes = [resources.ConsensusResource]


# API tokens --------------------------------------------------------------

admin.site.unregister(AuthToken)


@admin.register(AuthToken)
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


User = get_user_model()
admin.site.unregister(User)


@admin.register(User)
class GradingCenterUserAdmin(UserAdmin):
    """Users; only superusers issue API tokens, grant superuser status or edit superusers."""

    actions = ["issue_api_token"]

    def get_fieldsets(self, request, obj=None):
        fieldsets = super().get_fieldsets(request, obj)
        if request.user.is_superuser or obj is None:
            return fieldsets
        limited = []
        for name, options in fieldsets:
            kept = [f for f in options.get("fields", ()) if f not in ("is_superuser", "user_permissions")]
            limited.append((name, {**options, "fields": kept}))
        return limited

    def has_change_permission(self, request, obj=None):
        if obj is not None and obj.is_superuser and not request.user.is_superuser:
            return False
        return super().has_change_permission(request, obj)

    def has_delete_permission(self, request, obj=None):
        if obj is not None and obj.is_superuser and not request.user.is_superuser:
            return False
        return super().has_delete_permission(request, obj)

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
