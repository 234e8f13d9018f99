"""The data team's API: tokens, each endpoint's filters and pagination, and every refusal."""

import csv
import io
import json
from datetime import timedelta

import pytest
from django.http import StreamingHttpResponse
from knox.models import AuthToken

from grading.models import Grade
from studies.models import Image
from tests.exports.conftest import basic
from tests.factories import StudyFactory, UserFactory
from tests.grading_support import answers_for, submit  # noqa: F401  (fixtures come from tests/grading)

pytest_plugins = ["tests.s3server"]

LOGIN = "/api/auth/login/"


# Tokens ------------------------------------------------------------------


def test_login_with_basic_credentials_gives_a_token_and_its_expiry(client, data_user, settings):
    response = client.post(LOGIN, **basic("dana"))
    assert response.status_code == 200
    body = response.json()
    assert body["token"].startswith(settings.REST_KNOX["TOKEN_PREFIX"])
    instance = AuthToken.objects.get(user=data_user)
    assert timedelta(hours=9, minutes=59) < instance.expiry - instance.created <= timedelta(hours=10)
    assert client.get("/api/studies/", HTTP_AUTHORIZATION=f"Token {body['token']}").status_code == 200


def test_token_lifetime_comes_from_settings(client, data_user, settings):
    settings.REST_KNOX = {**settings.REST_KNOX, "TOKEN_TTL": timedelta(hours=2)}
    client.post(LOGIN, **basic("dana"))
    instance = AuthToken.objects.get(user=data_user)
    assert instance.expiry - instance.created <= timedelta(hours=2)


def test_wrong_password_is_401(client, data_user):
    assert client.post(LOGIN, **basic("dana", "wrong")).status_code == 401
    assert not AuthToken.objects.exists()


@pytest.mark.parametrize("role", ["Graders", "Image collectors", "Study administrators"])
def test_other_roles_cannot_get_a_token(client, db, role):
    UserFactory(username="someone", groups=[role])
    response = client.post(LOGIN, **basic("someone"))
    assert response.status_code == 403
    assert "Data team" in response.json()["detail"]
    assert not AuthToken.objects.exists()


def test_superuser_may_get_a_token(client, admin_user):
    assert client.post(LOGIN, **basic("admin", "password")).status_code == 200


def test_login_attempts_are_throttled(client, data_user, settings):
    settings.AXES_FAILURE_LIMIT = 100  # the throttle alone (the lockout: tests/accounts/test_brute_force.py)
    statuses = [client.post(LOGIN, **basic("dana", "wrong")).status_code for _ in range(12)]
    assert statuses[:10] == [401] * 10
    assert statuses[-1] == 429


def test_no_token_is_401(client, db):
    response = client.get("/api/studies/")
    assert response.status_code == 401
    assert response["WWW-Authenticate"] == "Token"


def test_bad_token_is_401(client, db):
    assert client.get("/api/studies/", HTTP_AUTHORIZATION="Token nonsense").status_code == 401


def test_expired_token_is_401(client, data_user):
    _, raw = AuthToken.objects.create(user=data_user, expiry=timedelta(seconds=-1))
    assert client.get("/api/studies/", HTTP_AUTHORIZATION=f"Token {raw}").status_code == 401


def test_logout_revokes_the_token(api, data_user):
    assert api.post("/api/auth/logout/").status_code == 204
    assert api.get("/api/studies/").status_code == 401


def test_logoutall_revokes_every_token(client, api, data_user):
    _, other = AuthToken.objects.create(user=data_user)
    assert api.post("/api/auth/logoutall/").status_code == 204
    assert client.get("/api/studies/", HTTP_AUTHORIZATION=f"Token {other}").status_code == 401
    assert not AuthToken.objects.filter(user=data_user).exists()


def test_token_of_someone_who_left_the_data_team_is_403(api, data_user):
    data_user.groups.clear()
    assert api.get("/api/studies/").status_code == 403


@pytest.mark.parametrize("role", ["Graders", "Image collectors"])
def test_token_of_another_role_is_403_on_every_endpoint(client, role, grading_study):
    user = UserFactory(username="other", groups=[role])
    _, raw = AuthToken.objects.create(user=user)
    auth = {"HTTP_AUTHORIZATION": f"Token {raw}"}
    for url in [
        "/api/studies/",
        f"/api/images/?study={grading_study.pk}",
        f"/api/grades/?study={grading_study.pk}",
        f"/api/training-set/?study={grading_study.pk}&grade_type=1",
    ]:
        assert client.get(url, **auth).status_code == 403, url


# Studies -----------------------------------------------------------------


def test_studies_list_counts_and_grade_types(api, grading_study, photographed):
    (study,) = api.get("/api/studies/").json()
    assert (study["id"], study["patient_count"], study["image_count"]) == (grading_study.pk, 3, 6)
    (grade_type,) = study["grade_types"]
    assert [f["name"] for f in grade_type["fields"]] == ["TF", "TI", "TS", "TT", "CO"]
    assert [o["value"] for o in grade_type["fields"][0]["options"]] == ["0", "1", "U"]
    assert grade_type["fields"][0]["options"][2]["ungradable"] is True


# Images ------------------------------------------------------------------


def test_images_with_key_url_and_current_grades(api, grading_study, photographed, graders):
    submit(grading_study, photographed[0], graders[0], choice="1")
    submit(grading_study, photographed[0], graders[1], choice="0")
    body = api.get(f"/api/images/?study={grading_study.pk}").json()
    assert len(body["results"]) == 6
    first = body["results"][0]
    image = Image.objects.get(pk=first["id"])
    assert first["storage_key"] == image.file.name and first["sha256"] == image.sha256
    assert first["url"] == f"http://testserver/api/images/{image.pk}/file/"
    assert first["patient_code"] == "EX-0"
    assert sorted((g["grader"], g["answers"]["TF"]) for g in first["grades"]) == [
        ("grader1", "1"),
        ("grader2", "0"),
    ]
    # A per-eye grade type's grades go to the photos of their own eye only.
    assert {g["eye"] for r in body["results"] for g in r["grades"] if r["eye"] == "R"} == {"R"}
    assert {g["eye"] for r in body["results"] for g in r["grades"] if r["eye"] == "L"} == {"L"}


def test_local_image_url_works_with_a_token_and_not_without(api, client, photographed):
    image = photographed[0].images.first()
    url = f"/api/images/{image.pk}/file/"
    response = api.get(url)
    assert response.status_code == 200
    with image.file.open("rb") as handle:
        assert b"".join(response.streaming_content) == handle.read()
    assert client.get(url).status_code == 401
    grader = UserFactory(username="g", groups=["Graders"])
    _, raw = AuthToken.objects.create(user=grader)
    assert client.get(url, HTTP_AUTHORIZATION=f"Token {raw}").status_code == 403
    assert api.get("/api/images/999999/file/").status_code == 404


def test_image_filters(api, grading_study, photographed, graders, who):
    submit(grading_study, photographed[1], graders[0])
    base = f"/api/images/?study={grading_study.pk}"

    def ids(query: str) -> set[int]:
        return {row["id"] for row in api.get(base + query).json()["results"]}

    graded = set(photographed[1].images.values_list("pk", flat=True))
    everything = set(Image.objects.filter(study=grading_study).values_list("pk", flat=True))
    assert ids("&graded=true") == graded
    assert ids("&graded=false") == everything - graded
    assert ids(f"&graded=true&grade_type={who.pk}") == graded
    assert ids("&eye=L") == set(
        Image.objects.filter(study=grading_study, eye="L").values_list("pk", flat=True)
    )
    assert ids("&updated_since=2999-01-01") == set()
    assert ids("&updated_since=2000-01-01T00:00:00Z") == everything
    other = StudyFactory()
    assert {row["id"] for row in api.get(f"/api/images/?study={other.pk}").json()["results"]} == set()


def test_images_cursor_pagination_with_limit(api, grading_study, photographed, django_assert_max_num_queries):
    seen = []
    url = f"/api/images/?study={grading_study.pk}&limit=4"
    pages = 0
    while url:
        with django_assert_max_num_queries(12):
            body = api.get(url).json()
        seen += [row["id"] for row in body["results"]]
        url = body["next"]
        pages += 1
    assert pages == 2
    assert seen == sorted(Image.objects.filter(study=grading_study).values_list("pk", flat=True))


@pytest.mark.parametrize(
    ("query", "parameter"),
    [
        ("study=abc", "study"),
        ("study=0", "study"),
        ("study=999999", "study"),
        ("graded=perhaps", "graded"),
        ("grade_type=x", "grade_type"),
        ("grade_type=999999", "grade_type"),
        ("eye=Z", "eye"),
        ("updated_since=yesterday", "updated_since"),
        ("limit=-3", "limit"),
        ("limit=ten", "limit"),
        ("cursor=forged", "cursor"),
    ],
)
def test_bad_image_parameters_are_400_naming_the_parameter(api, grading_study, query, parameter):
    response = api.get(f"/api/images/?{query}")
    assert response.status_code == 400
    assert parameter in response.json()


# Grades ------------------------------------------------------------------


def test_grades_export_streams_one_row_per_grade(api, grading_study, photographed, graders):
    submit(grading_study, photographed[0], graders[0], choice="1", note="=cmd|' /C calc'!A0")
    submit(grading_study, photographed[0], graders[0], choice="0", regrade=True)
    submit(grading_study, photographed[1], graders[1], choice="U")
    response = api.get(f"/api/grades/?study={grading_study.pk}&format=csv")
    assert isinstance(response, StreamingHttpResponse)
    assert response["Content-Type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(b"".join(response.streaming_content).decode())))
    assert len(rows) == 6  # a grade per eye
    assert {r["eye"] for r in rows} == {"R", "L"}
    assert {r["grade_id"] for r in rows} == {str(pk) for pk in Grade.objects.values_list("pk", flat=True)}
    old = next(r for r in rows if r["is_current"] == "False" and r["eye"] == "R")
    assert (old["TF"], old["note"]) == ("1", "'=cmd|' /C calc'!A0")  # escaped for spreadsheets
    assert old["superseded_by"] != ""
    latest = next(r for r in rows if r["grader"] == "grader2" and r["eye"] == "L")
    assert [latest[f] for f in ("TF", "TI", "TS", "TT", "CO")] == ["U"] * 5
    assert latest["eyes"] == "R;L" and latest["patient_code"] == "EX-1"
    current = api.get(f"/api/grades/?study={grading_study.pk}&format=json&current=true")
    assert len(json.loads(b"".join(current.streaming_content))) == 4


def test_grades_export_matches_the_database_for_thousands_of_grades(api, grading_study, graders):
    import uuid

    from grading.models import GradeEntry
    from tests.factories import PatientFactory

    who = grading_study.grade_types.get()
    fields = list(who.fields.prefetch_related("options"))
    patients = PatientFactory.create_batch(1000, study=grading_study)
    grades = Grade.objects.bulk_create(
        Grade(patient=p, grade_type=who, grader=g, submission=uuid.uuid4(), seconds_spent=n % 60)
        for n, p in enumerate(patients)
        for g in graders
    )
    GradeEntry.objects.bulk_create(
        GradeEntry(grade=grade, field=f, option=list(f.options.all())[(grade.pk + i) % 3])
        for grade in grades
        for i, f in enumerate(fields)
    )
    response = api.get(f"/api/grades/?study={grading_study.pk}&format=csv")
    rows = list(csv.DictReader(io.StringIO(b"".join(response.streaming_content).decode())))
    assert len(rows) == 3000
    expected = {
        (e.grade_id, e.field.name): e.option.value
        for e in GradeEntry.objects.select_related("field", "option")
    }
    for row in rows:
        for field in ("TF", "TI", "TS", "TT", "CO"):
            assert row[field] == expected[(int(row["grade_id"]), field)]


@pytest.mark.parametrize(
    ("query", "parameter"),
    [("", "study"), ("study=x", "study"), ("study=999999", "study"), ("format=xml", "format"),
     ("grade_type=424242", "grade_type"), ("current=maybe", "current")],
)  # fmt: skip
def test_bad_grade_parameters_are_400(api, grading_study, query, parameter):
    if "study" not in query:
        query += f"&study={grading_study.pk}" if query else ""
    response = api.get(f"/api/grades/?{query}")
    assert response.status_code == 400
    assert parameter in response.json()


def test_grade_type_of_another_study_is_400(api, grading_study, follicles):
    response = api.get(f"/api/grades/?study={grading_study.pk}&grade_type={follicles.pk}")
    assert response.status_code == 400
    assert "is not a grade type of the study" in response.json()["grade_type"][0]


# Training set --------------------------------------------------------------


def training(api, study, **params) -> list[dict]:
    query = "&".join(f"{k}={v}" for k, v in {"study": study.pk, "format": "json", **params}.items())
    response = api.get(f"/api/training-set/?{query}")
    assert response.status_code == 200, response.content
    return json.loads(b"".join(response.streaming_content))


def test_consensus_majority_tie_and_too_few_graders(api, grading_study, photographed, graders, who):
    grading_study.graders_per_patient = 3
    grading_study.save()
    a, b, c = photographed
    for grader, choice in zip(graders, ["1", "1", "0"], strict=True):  # majority 1
        submit(grading_study, a, grader, choice=choice)
    for grader, choice in zip(graders, ["1", "0", "U"], strict=True):  # three-way tie
        submit(grading_study, b, grader, choice=choice)
    submit(grading_study, c, graders[0], choice="1")  # one grader of three
    submit(grading_study, a, graders[2], choice="1", regrade=True)  # the re-grade replaces the 0
    rows = {
        (r["patient_code"], r["eye"]): r for r in training(api, grading_study, grade_type=who.pk, field="TF")
    }
    assert len(rows) == 6
    assert (rows[("EX-0", "R")]["label"], rows[("EX-0", "R")]["votes"]) == ("1", "1:3")
    assert rows[("EX-1", "L")]["label"] == ""
    assert rows[("EX-1", "L")]["no_label_reason"] == "no majority (0:1;1:1;U:1): waiting for adjudication"
    assert (rows[("EX-1", "L")]["consensus"], rows[("EX-0", "R")]["consensus"]) == ("pending", "majority")
    assert rows[("EX-2", "R")]["no_label_reason"] == "1 of the 3 graders needed"
    lowered = training(api, grading_study, grade_type=who.pk, field="TF", min_graders=1)
    assert {r["label"] for r in lowered if r["patient_code"] == "EX-2"} == {"1"}


def test_ungradable_consensus_is_flagged(api, grading_study, photographed, graders, who):
    for grader in graders[:2]:
        submit(grading_study, photographed[0], grader, choice="U")
    rows = training(api, grading_study, grade_type=who.pk, field="CO")
    flagged = [r for r in rows if r["patient_code"] == "EX-0"]
    assert {(r["label"], r["label_ungradable"]) for r in flagged} == {("U", True)}


def test_split_is_per_patient_and_follows_the_seed(api, grading_study, who):
    import io as _io

    from studies.services import images_upload
    from tests import images
    from tests.factories import PatientFactory

    collector = UserFactory(username="c", groups=["Image collectors"])
    for n in range(40):
        patient = PatientFactory(study=grading_study)
        images_upload(
            patient=patient,
            files=[
                (f"{n}-{k}.jpg", _io.BytesIO(images.jpeg((16, 16), seed=5000 + 3 * n + k))) for k in range(2)
            ],
            eye="R",
            uploaded_by=collector,
        )
    first = training(api, grading_study, grade_type=who.pk, field="TF", seed=7)
    again = training(api, grading_study, grade_type=who.pk, field="TF", seed=7)
    other = training(api, grading_study, grade_type=who.pk, field="TF", seed=8)
    assert first == again
    splits_of = {}
    for row in first:
        splits_of.setdefault(row["patient_id"], set()).add(row["split"])
    assert all(len(s) == 1 for s in splits_of.values())
    assert {row["split"] for row in first} == {"train", "val", "test"}
    assert [r["split"] for r in first] != [r["split"] for r in other]
    only_train = training(api, grading_study, grade_type=who.pk, field="TF", split="100,0,0")
    assert {r["split"] for r in only_train} == {"train"}


def test_training_set_csv_has_urls_and_keys(api, grading_study, photographed, who):
    response = api.get(f"/api/training-set/?study={grading_study.pk}&grade_type={who.pk}&field=TF&format=csv")
    rows = list(csv.DictReader(io.StringIO(b"".join(response.streaming_content).decode())))
    image = Image.objects.get(pk=rows[0]["image_id"])
    assert rows[0]["storage_key"] == image.file.name
    assert rows[0]["url"] == f"http://testserver/api/images/{image.pk}/file/"


@pytest.mark.parametrize(
    ("extra", "parameter"),
    [("", "grade_type"), ("&grade_type=abc", "grade_type"), ("&grade_type={who}", "field"),
     ("&grade_type={who}&field=XX", "field"), ("&grade_type={who}&field=TF&split=80,20", "split"),
     ("&grade_type={who}&field=TF&split=50,30,30", "split"),
     ("&grade_type={who}&field=TF&split=a,b,c", "split"),
     ("&grade_type={who}&field=TF&seed=x", "seed"), ("&grade_type={who}&field=TF&format=xlsx", "format"),
     ("&grade_type={who}&field=TF&min_graders=0", "min_graders")],
)  # fmt: skip
def test_bad_training_parameters_are_400(api, grading_study, who, extra, parameter):
    response = api.get(f"/api/training-set/?study={grading_study.pk}" + extra.format(who=who.pk))
    assert response.status_code == 400
    assert parameter in response.json()


# S3 -----------------------------------------------------------------------


@pytest.mark.s3
def test_s3_image_url_from_the_api_downloads_the_stored_bytes(s3_storage, api, grading_study, collector):
    import urllib.request

    from studies.services import images_upload
    from tests import images
    from tests.factories import PatientFactory

    patient = PatientFactory(study=grading_study)
    (image,) = images_upload(
        patient=patient,
        files=[("s3.jpg", io.BytesIO(images.jpeg(seed=4242)))],
        eye="R",
        uploaded_by=collector,
    )
    (row,) = api.get(f"/api/images/?study={grading_study.pk}").json()["results"]
    assert "X-Amz-Signature=" in row["url"] and "X-Amz-Expires=" in row["url"]
    with urllib.request.urlopen(row["url"], timeout=10) as fetched:
        downloaded = fetched.read()
    with s3_storage.open(image.file.name, "rb") as handle:
        assert downloaded == handle.read()
    assert row["storage_key"] == image.file.name
    assert not row["storage_key"].startswith("http")


def test_api_docs_work_offline(client, db):
    import re

    page = client.get("/api/docs/")
    assert page.status_code == 200
    assets = re.findall(r'(?:src|href)="([^"]+)"', page.content.decode())
    # Static files, and the start-up script served beside the page (no inline script under the CSP).
    assert assets and all(asset.startswith(("/static/", "/api/docs/?script")) for asset in assets), assets
    schema = client.get("/api/schema/")
    assert schema.status_code == 200 and b"/api/training-set/" in schema.content


@pytest.mark.parametrize(
    "value", ["2026-02-30", "2026-13-01T00:00:00", "0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00"]
)
def test_impossible_or_out_of_range_dates_are_400(api, db, value):
    from urllib.parse import quote

    response = api.get(f"/api/images/?updated_since={quote(value)}")
    assert response.status_code == 400
    assert "updated_since" in response.json()
