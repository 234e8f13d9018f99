"""Each model's admin page is registered once, in admin_site.py, composed of the apps' parts."""

import ast
from pathlib import Path

from django.conf import settings
from django.contrib import admin
from django.contrib.auth import get_user_model
from django.urls import reverse
from knox.models import AuthToken

import admin_site
from exports.admin import ApiTokenUserMixin, ExportsGradeMixin, ExportsPatientMixin, ExportsStudyMixin
from grading.admin import GradeHistoryInline, GradingPatientMixin, GradingStudyMixin
from grading.models import Consensus, Grade, GradeEntry, GradeField, GradeOption, GradeType
from studies.admin import ImageInline, StudyAdminBase
from studies.models import Image, ImageImport, Patient, Region, Study

PROJECT = Path(settings.BASE_DIR)
APPS = ["studies", "grading", "exports", "accounts"]
REGISTERED_HERE = [
    Region, Study, Patient, Image, ImageImport, GradeType, GradeField, GradeOption, Grade, GradeEntry,
    Consensus, get_user_model(), AuthToken,
]  # fmt: skip


def admin_calls(path: Path) -> list[str]:
    """The admin registrations a module makes: `register(...)` / `unregister(...)` calls and decorators."""
    calls = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Call):
            name = getattr(node.func, "attr", None) or getattr(node.func, "id", None)
            if name in ("register", "unregister"):
                calls.append(f"{path.relative_to(PROJECT)}: {name}")
    return calls


def test_only_admin_site_registers_models():
    modules = [
        path for app in APPS for path in (PROJECT / app).rglob("*.py") if "migrations" not in path.parts
    ]
    modules += [PROJECT / "urls.py", PROJECT / "site_pages.py"]
    assert [call for path in modules for call in admin_calls(path)] == []
    assert admin_calls(PROJECT / "admin_site.py").count("admin_site.py: register") == len(REGISTERED_HERE) + 1


def test_pages_several_apps_add_to_are_composed_in_admin_site():
    assert all(admin.site.is_registered(model) for model in REGISTERED_HERE)
    for model in (Study, Patient, Image, Grade, Consensus, get_user_model()):
        assert type(admin.site.get_model_admin(model)).__module__ == "admin_site", model


def test_studies_admin_knows_nothing_of_grading_or_exports():
    for module in ("studies/admin.py", "studies/forms.py"):
        imported = {
            node.module.split(".")[0]
            for node in ast.walk(ast.parse((PROJECT / module).read_text()))
            if isinstance(node, ast.ImportFrom) and node.module
        }
        assert not imported & {"grading", "exports", "admin_site"}, module
    grading = {
        node.module.split(".")[0]
        for node in ast.walk(ast.parse((PROJECT / "grading/admin.py").read_text()))
        if isinstance(node, ast.ImportFrom) and node.module
    }
    assert not grading & {"exports", "admin_site"}


def test_the_study_page_has_every_apps_part():
    study_admin = admin.site.get_model_admin(Study)
    assert isinstance(study_admin, admin_site.StudyAdmin)
    mro = type(study_admin).__mro__
    assert mro.index(ExportsStudyMixin) < mro.index(GradingStudyMixin) < mro.index(StudyAdminBase)
    names = {pattern.name for pattern in study_admin.get_urls()}
    assert {
        "studies_study_import",  # studies: the field-day import
        "studies_study_agreement",  # grading: the reports
        "studies_study_certification",
        "studies_study_export",  # exports
        "studies_study_change",
    } <= names
    assert study_admin.change_form_template == "admin/studies/study/change_form.html"
    grading_fields = dict(study_admin.fieldsets)["Grading"]["fields"]
    assert grading_fields[:2] == ["grade_types", "graders"]
    assert "Certification" in dict(study_admin.fieldsets)


def test_the_patient_page_has_photos_grade_history_and_import_export():
    patient_admin = admin.site.get_model_admin(Patient)
    assert isinstance(patient_admin, GradingPatientMixin) and isinstance(patient_admin, ExportsPatientMixin)
    assert patient_admin.inlines == [ImageInline, GradeHistoryInline]
    names = {pattern.name for pattern in patient_admin.get_urls()}
    assert {"studies_patient_import", "studies_patient_export", "studies_patient_change"} <= names
    assert patient_admin.change_form_template == "admin/studies/patient/change_form.html"


def test_grades_and_users_have_their_export_and_token_parts(rf, admin_user):
    assert isinstance(admin.site.get_model_admin(Grade), ExportsGradeMixin)
    assert reverse("admin:grading_grade_export")
    user_admin = admin.site.get_model_admin(get_user_model())
    assert isinstance(user_admin, ApiTokenUserMixin)
    request = rf.get("/admin/auth/user/")
    request.user = admin_user
    assert "issue_api_token" in user_admin.get_actions(request)
    assert "roles" in user_admin.list_display
