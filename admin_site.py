"""The admin: every model's page, registered once, here.

Each app's admin module holds its parts and registers nothing: studies/admin.py the study, patient
and photo pages; grading/admin.py grade types, grades, consensus, and what grading adds to the study
page (grade types, rules, agreement and certification) and the patient page (grade history);
exports/admin.py the export and import buttons and API tokens; accounts/admin.py the users list.
Apps depend one way (exports -> grading -> studies), so the pages that several apps add to are
composed here, above all of them: what a page shows is the one class below.

The site itself (the grading pages under /admin/grading/) is grading.sites.GradingCenterAdminSite,
Django's default site; grading.apps.GradingCenterAdminConfig imports this module once every app's
admin module is loaded.
"""

from django.apps import apps
from django.contrib import admin
from django.contrib.auth import get_user_model
from django_tasks_db.admin import DBTaskResultAdmin
from django_tasks_db.models import DBTaskResult
from knox.models import AuthToken

from accounts.admin import UserAdminBase
from exports.admin import (
    ApiTokenUserMixin,
    AuthTokenAdmin,
    ExportsConsensusMixin,
    ExportsGradeMixin,
    ExportsImageMixin,
    ExportsPatientMixin,
    ExportsStudyMixin,
)
from grading.admin import (
    ConsensusAdminBase,
    GradeAdminBase,
    GradeEntryAdmin,
    GradeFieldAdmin,
    GradeOptionAdmin,
    GradeTypeAdmin,
    GradingPatientMixin,
    GradingStudyMixin,
)
from grading.models import Consensus, Grade, GradeEntry, GradeField, GradeOption, GradeType
from studies.admin import ImageAdminBase, ImageImportAdmin, PatientAdminBase, RegionAdmin, StudyAdminBase
from studies.models import Image, ImageImport, Patient, Region, Study

site = admin.site


class StudyAdmin(ExportsStudyMixin, GradingStudyMixin, StudyAdminBase):
    """A study: name, region, graders and rules (studies); grade types, certification, agreement and
    certification reports (grading); the export button (exports); the field-day import (studies)."""

    change_form_template = StudyAdminBase.change_form_template  # not import-export's: keeps the buttons


class PatientAdmin(ExportsPatientMixin, GradingPatientMixin, PatientAdminBase):
    """A patient: code, age, sex and photos with their upload (studies); the grade history (grading);
    export, and import of a study's patients from a file (exports)."""

    change_form_template = PatientAdminBase.change_form_template  # keeps the photo upload


class ImageAdmin(ExportsImageMixin, ImageAdminBase):
    """The photos (studies) and their export (exports)."""


class GradeAdmin(ExportsGradeMixin, GradeAdminBase):
    """Grades with their answers (grading) and their export, wide or long (exports)."""


class ConsensusAdmin(ExportsConsensusMixin, ConsensusAdminBase):
    """Each patient's consensus per field (grading) and its export (exports)."""


class UserAdmin(ApiTokenUserMixin, UserAdminBase):
    """Users with their roles (accounts) and the action issuing API tokens (exports)."""


class BackgroundTaskAdmin(DBTaskResultAdmin):
    """Background work (field-day imports, storage sweeps), for superusers: staff never need it."""

    def has_module_permission(self, request):
        return request.user.is_superuser


# django.contrib.auth, knox and django-tasks-db register their own pages for these models when the
# admin loads their admin modules; the pages above take their place, here and nowhere else.
for model in (get_user_model(), AuthToken, DBTaskResult):
    if site.is_registered(model):
        site.unregister(model)


def _name_for_staff(app_label: str, app_name: str, model, singular: str, plural: str) -> None:
    """A package's section and page in the staff's words ("Knox: Auth tokens" reads "API: API tokens").
    Display names only: migrations read a model's declared options (`_meta.original_attrs`), not these."""
    apps.get_app_config(app_label).verbose_name = app_name
    model._meta.verbose_name, model._meta.verbose_name_plural = singular, plural


_name_for_staff("knox", "API", AuthToken, "API token", "API tokens")
_name_for_staff(
    "django_tasks_database", "Background work", DBTaskResult, "background task", "background tasks"
)

site.register(Region, RegionAdmin)
site.register(Study, StudyAdmin)
site.register(Patient, PatientAdmin)
site.register(Image, ImageAdmin)
site.register(ImageImport, ImageImportAdmin)

site.register(GradeType, GradeTypeAdmin)
site.register(GradeField, GradeFieldAdmin)
site.register(GradeOption, GradeOptionAdmin)
site.register(Grade, GradeAdmin)
site.register(GradeEntry, GradeEntryAdmin)
site.register(Consensus, ConsensusAdmin)

site.register(get_user_model(), UserAdmin)
site.register(AuthToken, AuthTokenAdmin)
site.register(DBTaskResult, BackgroundTaskAdmin)
