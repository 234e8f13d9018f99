"""Every page answers every role as the design says, and none answers with a server error.

One table row per URL: what each role gets (superuser, the five roles, an anonymous visitor).
Admin model pages come from `admin.site._registry` and the table of what each role may do
with each model; a newly registered model fails here until it has its row.
"""

import io
from dataclasses import dataclass

import pytest
from django.conf import settings
from django.contrib import admin
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.cache import cache
from django.db import transaction
from django.test import Client, override_settings
from django.urls import reverse
from django.utils import timezone
from knox.models import AuthToken

from accounts import roles
from grading import services as grading_services
from grading.models import Consensus, Grade, GradeEntry, GradeField, GradeOption
from studies.models import Image, ImageImport
from studies.services import images_upload
from tests import images
from tests.exports.conftest import basic
from tests.factories import PatientFactory, StudyFactory, UserFactory
from tests.grading_support import SCHEMES, present, submit

SUPER, ADMIN, COLLECTOR, GRADER, ADJUDICATOR, DATA, ANON = (
    "superuser", "study admin", "collector", "grader", "adjudicator", "data team", "anonymous",
)  # fmt: skip
ROLES = [SUPER, ADMIN, COLLECTOR, GRADER, ADJUDICATOR, DATA, ANON]
STAFF = ROLES[:-1]
GROUP_OF = {
    ADMIN: roles.STUDY_ADMINISTRATORS,
    COLLECTOR: roles.IMAGE_COLLECTORS,
    GRADER: roles.GRADERS,
    ADJUDICATOR: roles.ADJUDICATORS,
    DATA: roles.DATA_TEAM,
}

# What each role may do with each model in the admin: v(iew), a(dd), c(hange), d(elete), after the
# ModelAdmin's own refusals (photos are added on the patient's page, grades on the grading page, ...).
MODEL_ACCESS: dict[str, dict[str, str]] = {
    "auth.group": {SUPER: "vacd", ADMIN: "v"},
    "auth.user": {SUPER: "vacd", ADMIN: "vac"},
    "django_tasks_database.dbtaskresult": {SUPER: "v"},
    "knox.authtoken": {SUPER: "vd"},
    "studies.region": {SUPER: "vacd", ADMIN: "vacd", COLLECTOR: "v", ADJUDICATOR: "v", DATA: "v"},
    "studies.study": {SUPER: "vacd", ADMIN: "vacd", COLLECTOR: "v", ADJUDICATOR: "v", DATA: "v"},
    "studies.patient": {SUPER: "vacd", ADMIN: "vacd", COLLECTOR: "vac", ADJUDICATOR: "v", DATA: "v"},
    "studies.image": {SUPER: "vcd", ADMIN: "vcd", COLLECTOR: "vc", ADJUDICATOR: "v", DATA: "v"},
    "studies.imageimport": {SUPER: "vd", ADMIN: "vd", COLLECTOR: "v", DATA: "v"},
    "grading.gradetype": {SUPER: "vacd", ADMIN: "vacd", DATA: "v"},
    "grading.gradefield": {SUPER: "vacd", ADMIN: "vacd", DATA: "v"},
    "grading.gradeoption": {SUPER: "vacd", ADMIN: "vacd", DATA: "v"},
    "grading.gradeentry": {SUPER: "v", ADMIN: "v", DATA: "v"},
    "grading.grade": {SUPER: "v", ADMIN: "v", GRADER: "v", DATA: "v"},  # a grader: their own
    "grading.consensus": {SUPER: "v", ADMIN: "v", DATA: "v"},
    # django-axes' records of sign-in attempts: superusers only.
    "axes.accessattempt": {SUPER: "vcd"},
    "axes.accesslog": {SUPER: "vcd"},
    "axes.accessfailurelog": {SUPER: "vcd"},
}
PAGE_NEEDS = {"changelist": "vc", "add": "a", "change": "vc", "history": "vc", "delete": "d"}


def row(default: int, anonymous: int = 302, **by_role: int) -> dict[str, int]:
    """Each role's status: `default`, except those named (superuser=, study_admin=, data_team=, ...)."""
    statuses = {role: default for role in STAFF} | {ANON: anonymous}
    for key, status in by_role.items():
        statuses[key.replace("_", " ")] = status
    return statuses


def allowed(*who: str, status: int = 200, refused: int = 403, anonymous: int = 302) -> dict[str, int]:
    return {role: status if role in who else refused for role in STAFF} | {ANON: anonymous}


@dataclass(frozen=True)
class Page:
    name: str  # the test id
    url: object  # str, or a function of the world giving the URL
    expected: dict[str, int]
    method: str = "get"
    data: dict | str | None = None  # a str is sent as JSON
    auth: str = "session"  # or "token" (each role's knox token) or "basic" (each role's password)

    def path(self, world) -> str:
        return self.url(world) if callable(self.url) else self.url


def admin_model_pages() -> list[Page]:
    pages = []
    for model in admin.site._registry:
        label = model._meta.label_lower
        access = MODEL_ACCESS.get(label, {})
        info = f"admin:{model._meta.app_label}_{model._meta.model_name}"
        for page, needs in PAGE_NEEDS.items():
            may = [role for role, letters in access.items() if set(letters) & set(needs)]
            if page in ("changelist", "add"):
                url = reverse(f"{info}_{page}")
            else:
                url = _object_url(f"{info}_{page}", label)
            pages.append(Page(f"{label}:{page}", url, allowed(*may)))
            if page == "changelist":  # searched, and sorted by its first column backwards
                pages.append(Page(f"{label}:search", f"{url}?q=EVERY&o=-1", allowed(*may)))
    return pages


def _object_url(name: str, label: str):
    return lambda world: reverse(name, args=[world.objects[label].pk])


def _app_index(app_label: str, *who: str) -> Page:
    return Page(
        f"app:{app_label}",
        reverse("admin:app_list", args=[app_label]),
        allowed(*who, refused=404),
    )


ADMINS = (SUPER, ADMIN)
EXPORTERS = (SUPER, ADMIN, DATA)
IMPORTERS = (SUPER, ADMIN, COLLECTOR)
REPORT_READERS = (SUPER, ADMIN, ADJUDICATOR, DATA)
ADJUDICATING = (SUPER, ADMIN, ADJUDICATOR)

CUSTOM_PAGES = [
    # The admin site's own pages.
    Page("index", "/admin/", row(200, grader=302, adjudicator=302)),
    Page("login", "/admin/login/", row(302, anonymous=200)),
    Page("logout", "/admin/logout/", row(200), method="post"),
    Page("password change", "/admin/password_change/", row(200)),
    Page("password change done", "/admin/password_change/done/", row(200)),
    Page("jsi18n", "/admin/jsi18n/", row(200)),
    Page("autocomplete without a field", "/admin/autocomplete/", row(403)),
    Page("no such admin page", "/admin/no-such-page/", row(404)),
    _app_index("studies", SUPER, ADMIN, COLLECTOR, ADJUDICATOR, DATA),
    _app_index("auth", SUPER, ADMIN),
    _app_index("knox", SUPER),
    _app_index("django_tasks_database", SUPER),
    Page(
        "user password",
        lambda w: reverse("admin:auth_user_password_change", args=[w.objects["auth.user"].pk]),
        allowed(*ADMINS),
    ),
    # Accounts: the profile inside the admin, the password reset outside it.
    Page("profile", "/accounts/profile/", row(200)),
    Page("password reset", "/admin/password_reset/", row(200, anonymous=200)),
    Page("password reset done", "/accounts/password-reset/done/", row(200, anonymous=200)),
    Page("password reset bad link", "/accounts/reset/MQ/bad-token/", row(200, anonymous=200)),
    Page("password reset complete", "/accounts/reset/done/", row(200, anonymous=200)),
    # The study's extra pages.
    Page("agreement", lambda w: reverse("admin:studies_study_agreement", args=[w.study.pk]),
         allowed(*REPORT_READERS)),
    Page("agreement csv", lambda w: reverse("admin:studies_study_agreement", args=[w.study.pk]) +
         "?download=csv", allowed(*REPORT_READERS)),
    Page("certification", lambda w: reverse("admin:studies_study_certification", args=[w.study.pk]),
         allowed(*REPORT_READERS)),
    Page("certification of a set", lambda w: reverse("admin:studies_study_certification",
         args=[w.certification_set.pk]), allowed(*REPORT_READERS)),
    Page("field-day import", lambda w: reverse("admin:studies_study_import", args=[w.study.pk]),
         allowed(*IMPORTERS)),
    Page("field-day import start", lambda w: reverse("admin:studies_study_import_start", args=[w.study.pk]),
         allowed(*IMPORTERS, status=400), method="post", data="{}"),
    Page("field-day import part", lambda w: reverse("admin:studies_imageimport_part",
         args=[w.objects["studies.imageimport"].pk]), allowed(SUPER, COLLECTOR, status=400), method="post"),
    Page("field-day import status", lambda w: reverse("admin:studies_imageimport_status",
         args=[w.objects["studies.imageimport"].pk]), allowed(SUPER, ADMIN, COLLECTOR, DATA)),
    Page("grade type import", "/admin/grading/gradetype/import/", allowed(*ADMINS)),
    Page("patient import", "/admin/studies/patient/import/", allowed(*IMPORTERS)),
    Page("study export", "/admin/studies/study/export/", allowed(*EXPORTERS)),
    Page("patient export", "/admin/studies/patient/export/", allowed(*EXPORTERS)),
    Page("image export", "/admin/studies/image/export/", allowed(*EXPORTERS)),
    Page("grade export", "/admin/grading/grade/export/", allowed(*EXPORTERS)),
    Page("consensus export", "/admin/grading/consensus/export/", allowed(*EXPORTERS)),
    Page("photo file", lambda w: w.image.file.url, row(200)),
    Page("thumbnail file", lambda w: w.image.thumbnail.url, row(200)),
    # Graders' pages: only the assigned grader (the world's grader is one of the study's).
    Page("grading dashboard", "/admin/grading/", row(200)),
    Page("grading study", lambda w: reverse("admin:grading_study", args=[w.study.pk]), allowed(GRADER)),
    Page("grading next", lambda w: reverse("admin:grading_next", args=[w.study.pk]),
         allowed(GRADER, status=302)),
    Page("grading page", lambda w: reverse("admin:grading_page", args=[w.study.pk, w.presentation.key]),
         allowed(GRADER)),
    Page("grading keep", lambda w: reverse("admin:grading_keep", args=[w.study.pk, w.presentation.key]),
         allowed(GRADER), method="post"),
    Page("grading regrade", lambda w: reverse("admin:grading_regrade", args=[w.study.pk, 1]),
         allowed(GRADER, status=302), method="post"),
    Page("adjudication", "/admin/grading/adjudication/", allowed(*ADJUDICATING)),
    Page("adjudication study", lambda w: reverse("admin:grading_adjudication_study", args=[w.study.pk]),
         allowed(*ADJUDICATING)),
    Page("adjudication patient", lambda w: reverse("admin:grading_adjudicate",
         args=[w.study.pk, w.patient.pk]), allowed(*ADJUDICATING)),
    # Health.
    Page("healthz", "/healthz/", row(200, anonymous=200)),
    Page("livez", "/livez/", row(200, anonymous=200)),
]  # fmt: skip

API_USERS = (SUPER, DATA)


def _api(name, url, method="get", status=200) -> Page:
    return Page(name, url, allowed(*API_USERS, status=status, anonymous=401), method=method, auth="token")


API_PAGES = [
    _api("api studies", "/api/studies/"),
    _api("api images", lambda w: f"/api/images/?study={w.study.pk}&graded=true&grade_type={w.who.pk}"),
    _api("api image file", lambda w: f"/api/images/{w.image.pk}/file/"),
    _api("api grades csv", lambda w: f"/api/grades/?study={w.study.pk}&format=csv"),
    _api("api grades json", lambda w: f"/api/grades/?study={w.study.pk}&format=json"),
    _api(
        "api training set", lambda w: f"/api/training-set/?study={w.study.pk}&grade_type={w.who.pk}&field=TF"
    ),
    _api("api agreement", lambda w: f"/api/agreement/?study={w.study.pk}"),
    _api("api logout", "/api/auth/logout/", method="post", status=204),
    _api("api logout all", "/api/auth/logoutall/", method="post", status=204),
    # The OpenAPI schema and its docs are public; nothing in them is data.
    Page("api schema", "/api/schema/", row(200, anonymous=200), auth="token"),
    Page("api docs", "/api/docs/", row(200, anonymous=200), auth="token"),
    Page("api login", "/api/auth/login/", allowed(*API_USERS, anonymous=401), method="post", auth="basic"),
]

PAGES = admin_model_pages() + CUSTOM_PAGES + API_PAGES


@dataclass
class World:
    users: dict
    objects: dict
    study: object
    certification_set: object
    who: object
    patient: object
    image: Image
    presentation: object


def _world() -> World:
    User = get_user_model()
    graders = [UserFactory(username=f"every-grader{n}", groups=[roles.GRADERS]) for n in range(1, 4)]
    users = {role: UserFactory(username=f"every-{role.replace(' ', '-')}", groups=[group])
             for role, group in GROUP_OF.items() if role != GRADER}  # fmt: skip
    users[GRADER] = graders[0]
    users[SUPER] = UserFactory(username="every-root", is_superuser=True)
    who = grading_services.grade_types_import(data=SCHEMES[0])[0]
    study = StudyFactory(graders_per_patient=2, repeat_share=0)
    study.grade_types.add(who)
    study.graders.add(*graders)
    certification_set = StudyFactory(is_certification=True, graders_per_patient=2, repeat_share=0)
    certification_set.grade_types.add(who)
    patient, waiting = (PatientFactory(study=study, code=f"EVERY-{n}") for n in range(2))
    image = images_upload(
        patient=patient,
        files=[("every.jpg", io.BytesIO(images.jpeg(seed=4242)))],
        eye="R",
        uploaded_by=users[COLLECTOR],
    )[0]
    submit(study, patient, graders[0], "0")
    submit(study, patient, graders[1], "1")  # a disagreement for the adjudication pages
    presentation = present(study, waiting, graders[0])
    grade = Grade.objects.filter(grader=graders[0]).first()
    from django_tasks_db.models import DBTaskResult

    objects = {
        "auth.group": Group.objects.get(name=roles.GRADERS),
        "auth.user": User.objects.get(pk=graders[2].pk),
        "django_tasks_database.dbtaskresult": DBTaskResult.objects.create(
            args_kwargs={"args": [], "kwargs": {}},
            task_path="studies.tasks.no_such_task",
            backend_name="default",
            run_after=timezone.now(),
        ),
        "knox.authtoken": AuthToken.objects.create(user=users[DATA])[0],
        "studies.region": study.region,
        "studies.study": study,
        "studies.patient": patient,
        "studies.image": image,
        "studies.imageimport": ImageImport.objects.create(
            study=study, source=ImageImport.Source.ZIP, created_by=users[COLLECTOR]
        ),
        "grading.gradetype": who,
        "grading.gradefield": GradeField.objects.filter(grade_type=who).first(),
        "grading.gradeoption": GradeOption.objects.filter(field__grade_type=who).first(),
        "grading.gradeentry": GradeEntry.objects.filter(grade=grade).first(),
        "grading.grade": grade,
        "grading.consensus": Consensus.objects.filter(patient=patient).first(),
        **_sign_in_records(),
    }
    return World(users, objects, study, certification_set, who, patient, image, presentation)


def _sign_in_records() -> dict:
    from django.apps import apps

    if not apps.is_installed("axes"):
        return {}
    from axes.models import AccessAttempt, AccessFailureLog, AccessLog

    seen = {"user_agent": "test", "ip_address": "192.0.2.1", "username": "a-stranger",
            "http_accept": "*/*", "path_info": "/admin/login/"}  # fmt: skip
    return {
        "axes.accessattempt": AccessAttempt.objects.create(
            **seen, get_data="", post_data="", failures_since_start=1
        ),
        "axes.accesslog": AccessLog.objects.create(**seen),
        "axes.accessfailurelog": AccessFailureLog.objects.create(**seen),
    }


@pytest.fixture(scope="module")
def world(django_db_setup, django_db_blocker, tmp_path_factory):
    """One set of objects for the whole module, rolled back at its end (each test in a savepoint)."""
    media = {"location": tmp_path_factory.mktemp("media"), "base_url": "/files/"}
    storages = {**settings.STORAGES, "default": {**settings.STORAGES["default"], "OPTIONS": media}}
    with django_db_blocker.unblock(), override_settings(STORAGES=storages), transaction.atomic():
        yield _world()
        transaction.set_rollback(True)


@pytest.fixture
def private_media():
    """The module's world keeps its files for the whole module (see `world`)."""


def test_every_registered_model_has_its_row_in_the_table():
    assert {m._meta.label_lower for m in admin.site._registry} <= set(MODEL_ACCESS)


def _client(world, role: str, page: Page) -> Client:
    if role == ANON:
        client = Client()
    elif page.auth == "token":
        client = Client(HTTP_AUTHORIZATION=f"Token {AuthToken.objects.create(user=world.users[role])[1]}")
    elif page.auth == "basic":
        client = Client(**basic(world.users[role].username))
    else:
        client = Client()
        client.force_login(world.users[role])
    client.raise_request_exception = False  # a server error is an answer in the table, with its exception
    return client


def _answer(client: Client, page: Page, url: str) -> tuple[int, object]:
    """The status and what to show when it is not the expected one: the exception, or the body's start."""
    if isinstance(page.data, str):
        response = getattr(client, page.method)(url, page.data, content_type="application/json")
    else:
        response = getattr(client, page.method)(url, page.data or {})
    if response.status_code >= 500:
        return response.status_code, getattr(response, "exc_info", None)
    # Read a stream to its end: one that breaks half-way raises here.
    body = b"".join(response.streaming_content) if response.streaming else response.content
    return response.status_code, body[:300]


@pytest.mark.parametrize("page", PAGES, ids=[page.name for page in PAGES])
def test_each_role_gets_what_the_design_says(world, db, page):
    cache.clear()  # login throttling
    url = page.path(world)

    answers = {role: _answer(_client(world, role, page), page, url) for role in ROLES}

    assert not {role: seen for role, (status, seen) in answers.items() if status >= 500}  # above all
    statuses = {role: status for role, (status, _) in answers.items()}
    assert statuses == page.expected, {role: seen for role, (status, seen) in answers.items()
                                       if status != page.expected[role]}  # fmt: skip
