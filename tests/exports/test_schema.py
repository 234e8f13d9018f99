"""The API's OpenAPI schema: it validates, and no GET endpoint answers a 5xx to what it allows.

The second part is a bounded, derandomized schemathesis run: cases generated from
the schema (valid ones, and invalid ones for the 4xx paths) are sent in-process,
through Django's test client handler, with a real knox token of a Data team member,
against a study with grades and stored photos. Generated ids are swapped for real
ones half the time, so the export and training-set code runs on data, not only the
"no such study" branch.
"""

import io
import json
import os
import traceback
from urllib.parse import parse_qsl

import pytest
import schemathesis
from django.core.signals import got_request_exception
from django.db import transaction
from django.test import Client
from django.test.client import ClientHandler
from drf_spectacular.validation import validate_schema
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from knox.models import AuthToken
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error

from accounts import roles
from studies.services import images_upload
from tests import images
from tests.factories import PatientFactory, StudyFactory, UserFactory
from tests.grading_support import SCHEMES, submit

SCHEMA_URL = "/api/schema/"
OPENAPI_JSON = "application/vnd.oai.openapi+json"
GET_OPERATIONS = [
    "/api/studies/",
    "/api/images/",
    "/api/images/{id}/file/",
    "/api/grades/",
    "/api/training-set/",
    "/api/agreement/",
]
# Per operation and generation mode; SCHEMA_MAX_EXAMPLES=500 for a deeper (slower) run.
MAX_EXAMPLES = int(os.environ.get("SCHEMA_MAX_EXAMPLES", 30))


def _schema_dict() -> dict:
    response = Client().get(SCHEMA_URL, HTTP_ACCEPT=OPENAPI_JSON)
    assert response.status_code == 200, response.content[:500]
    assert response["Content-Type"].startswith(OPENAPI_JSON)
    return json.loads(response.content)


@pytest.mark.django_db
def test_schema_is_public_and_valid():
    schema = _schema_dict()
    validate_schema(schema)  # raises on an invalid OpenAPI 3 document
    assert set(GET_OPERATIONS) <= set(schema["paths"])
    for path in GET_OPERATIONS:
        assert schema["paths"][path]["get"]["security"] == [{"knoxApiToken": []}], path


@pytest.mark.django_db
def test_spectacular_command_validates_without_warnings(tmp_path):
    from django.core.management import call_command

    out = tmp_path / "schema.yaml"
    # --fail-on-warn turns every drf-spectacular warning (and error) into a non-zero exit.
    call_command("spectacular", "--validate", "--fail-on-warn", "--file", str(out))
    assert out.read_text().startswith("openapi: 3")


@pytest.mark.django_db
def test_security_requirements_name_declared_schemes():
    # OpenAPI 3: each name in a security requirement MUST be declared in components.securitySchemes.
    schema = _schema_dict()
    declared = set(schema.get("components", {}).get("securitySchemes", {}))
    used = {
        name
        for path in schema["paths"].values()
        for operation in path.values()
        for requirement in operation.get("security", [])
        for name in requirement
    }
    assert used <= declared, f"undeclared security schemes: {sorted(used - declared)}"


class InProcessApp:
    """A WSGI app over Django's test ClientHandler.

    Like the test Client, it keeps request_started/finished from closing the
    connection that holds the test's transaction. Each request runs in a savepoint
    that is rolled back afterwards, so that on PostgreSQL a database error in one
    request cannot abort the test's transaction for the requests after it. It
    records the traceback of any exception a view raised, so that a 500 can be
    reported with its cause.
    """

    def __init__(self):
        self.handler = ClientHandler(enforce_csrf_checks=True)
        self.errors: list[str] = []

    def _record(self, sender, request=None, **kwargs):
        self.errors.append(f"{request.method} {request.get_full_path()}\n{traceback.format_exc()}")

    def __call__(self, environ, start_response):
        savepoint = transaction.savepoint()
        try:
            got_request_exception.connect(self._record)
            try:
                response = self.handler(environ)
            finally:
                got_request_exception.disconnect(self._record)
            try:
                # Read inside the savepoint: streamed exports query as they are read.
                body = b"".join(response.streaming_content) if response.streaming else response.content
            except Exception:
                self.errors.append(f"while streaming {environ['PATH_INFO']}\n{traceback.format_exc()}")
                raise
        finally:
            transaction.savepoint_rollback(savepoint)
        headers = list(response.items())
        headers += [("Set-Cookie", cookie.output(header="").strip()) for cookie in response.cookies.values()]
        start_response(f"{response.status_code} {response.reason_phrase}", headers)
        return [body]


@pytest.fixture
def api_data():
    """A Data team token, and a study graded with the WHO grade type, with photos."""
    from grading import services

    who = services.grade_types_import(data=SCHEMES[0])[0]
    graders = [UserFactory(username=f"schema-grader{n}", groups=[roles.GRADERS]) for n in range(2)]
    collector = UserFactory(username="schema-collector", groups=[roles.IMAGE_COLLECTORS])
    study = StudyFactory(graders_per_patient=2, repeat_share=0)
    study.grade_types.add(who)
    study.graders.add(*graders)
    image_ids = []
    for n in range(3):
        patient = PatientFactory(study=study, code=f"SCH-{n:03d}")
        stored = images_upload(
            patient=patient,
            files=[(f"p{n}.jpg", io.BytesIO(images.jpeg(seed=n)))],
            eye="RL"[n % 2],
            uploaded_by=collector,
        )
        image_ids += [image.pk for image in stored]
        for grader in graders[: 1 + n % 2]:
            submit(study, patient, grader, choice=str(n % 2))
    submit(study, patient, graders[0], choice="1", regrade=True)  # a superseded grade in the history
    member = UserFactory(username="schema-data", groups=[roles.DATA_TEAM])
    _, token = AuthToken.objects.create(user=member)
    field = who.fields.order_by("order").first()
    return {
        "token": token,
        "study": study.pk,
        "grade_type": who.pk,
        "field": [field.name, str(field.pk)],
        "image": image_ids,
    }


VALID = {
    "split": st.sampled_from(["80,10,10", "70,15,15", "100,0,0"]),
    "min_graders": st.integers(1, 3),
    "limit": st.integers(1, 5),
    "current": st.sampled_from(["true", "false"]),
    "graded": st.sampled_from(["true", "false"]),
    "format": st.sampled_from(["csv", "json"]),
}


def _with_real_data(case, data, draw):
    """Half the time, aim the case at the real study: real ids, and workable other values.

    Otherwise the case goes as generated (almost always a 400 for an unknown id).
    """
    case.headers = {**(case.headers or {}), "Authorization": f"Token {data['token']}"}
    if not draw(st.booleans()):
        return case
    if "id" in (case.path_parameters or {}):
        case.path_parameters["id"] = draw(st.sampled_from(data["image"]))
    names = [parameter.name for parameter in case.operation.query]  # a list: draws in a fixed order
    query = dict(case.query or {})
    for name in names:
        if name in ("study", "grade_type"):
            query[name] = data[name]
        elif name == "field":
            query[name] = draw(st.sampled_from(data["field"]))
        elif draw(st.booleans()):
            query.pop(name, None)
        elif name in VALID:
            query[name] = draw(VALID[name])
    case.query = query
    return case


@pytest.mark.django_db
@pytest.mark.parametrize("path", GET_OPERATIONS)
@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=lambda m: m.value)
def test_get_endpoints_never_answer_a_server_error(path, mode, api_data):
    app = InProcessApp()
    schema = schemathesis.openapi.from_dict(_schema_dict())
    operation = schema[path]["GET"]
    statuses = []

    @st.composite
    def cases(draw):
        return _with_real_data(draw(operation.as_strategy(generation_mode=mode)), api_data, draw)

    @settings(
        max_examples=MAX_EXAMPLES,
        deadline=None,
        derandomize=True,
        database=None,
        print_blob=False,
        suppress_health_check=list(HealthCheck),
    )
    @given(case=cases())
    def check(case):
        app.errors.clear()
        response = case.call(app=app)
        statuses.append(response.status_code)
        try:
            case.validate_response(response, checks=[not_a_server_error])
        except (Exception, BaseExceptionGroup) as failure:  # schemathesis FailureGroup
            raise AssertionError(
                f"{failure}\nServer traceback:\n" + ("\n".join(app.errors) or "(none recorded)")
            ) from None

    check()
    # The token works and real data was reached: not every answer is a refusal.
    assert 401 not in statuses and 403 not in statuses, statuses
    if mode is GenerationMode.POSITIVE:
        assert 200 in statuses, statuses


@pytest.mark.django_db
@pytest.mark.parametrize(
    "query",
    [
        "updated_since=2020-02-30T00:00:00",
        "updated_since=2020-02-30",
        "updated_since=0001-01-01T00:00:00%2B14:00",
        "updated_since=9999-12-31T23:59:59-14:00",
        "updated_since=0001-01-01",
        "updated_since=2000-01-01T00:00:00%2B16:00",
        "updated_since=2020-13-01T00:00:00",
        "study=99999999999999999999999",
        "limit=99999999999999999999999",
        "cursor=%00",
        "eye=%C4%B0",
        "study=%D9%A1",
    ],
)
def test_edge_inputs_never_answer_a_server_error(query, api_data):
    """Inputs the bounded run above rarely draws (found by hand): each must be a 2xx or a 4xx.

    Impossible dates, offsets PostgreSQL refuses and dates at the edge of datetime's range
    once gave 500s."""
    app = InProcessApp()
    schema = schemathesis.openapi.from_dict(_schema_dict())
    case = schema["/api/images/"]["GET"].Case(
        query=dict(parse_qsl(query, keep_blank_values=True)),
        headers={"Authorization": f"Token {api_data['token']}"},
    )
    response = case.call(app=app)
    try:
        case.validate_response(response, checks=[not_a_server_error])
    except (Exception, BaseExceptionGroup) as failure:  # schemathesis FailureGroup
        raise AssertionError(f"{failure}\nServer traceback:\n" + "\n".join(app.errors)) from None
