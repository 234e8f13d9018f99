"""The agreement report from a study's grades, and GET /api/agreement/ for the Data team."""

import csv
import io

import pytest
from django.test import Client
from django.urls import reverse
from knox.models import AuthToken

from grading.models import Grade, GradeOption
from grading.reports import Ungradable, agreement_report
from tests.factories import UserFactory
from tests.grading_support import answers_where, present, submit

URL = "/api/agreement/"


@pytest.fixture
def graded_study(grading_study, graders, make_patients):
    """Two graders on 6 patients: TF agreed on 5 of 6, TS marked ungradable by one grader once."""
    grading_study.graders_per_patient = 2
    grading_study.save()
    patients = make_patients(grading_study, 6)
    first = ["1", "1", "0", "0", "0", "1"]
    second = ["1", "1", "0", "0", "0", "0"]
    for n, patient in enumerate(patients):
        submit(grading_study, patient, graders[0], answers=answers_where(grading_study, {"TF": first[n]}))
        ts = "9" if n == 0 else "0"
        submit(
            grading_study, patient, graders[1],
            answers=answers_where(grading_study, {"TF": second[n], "TS": ts}),
        )  # fmt: skip
    return grading_study


def field_of(report, name: str):
    return next(item for item in report.fields if item.field == name)


def test_the_report_gives_each_field_its_coefficients_and_grader_figures(graded_study, graders):
    report = agreement_report(study=graded_study, rounds=200, seed=3)
    tf = field_of(report, "TF")
    assert tf.coefficients["percent_agreement"].value == pytest.approx(5 / 6)
    assert tf.coefficients["percent_agreement"].units == 6
    # Cohen's kappa of the 2x2 table (both present 2, first only 1, both absent 3): po 5/6, pe 1/2.
    assert tf.pairwise["grader1"]["grader2"].value == pytest.approx((5 / 6 - 0.5) / 0.5)
    low, high = tf.coefficients["fleiss_kappa"].interval
    assert low <= tf.coefficients["fleiss_kappa"].value <= high
    one = next(g for g in tf.graders if g.grader == "grader1")
    assert one.options == {"1": 3, "0": 3} and one.answers == 6
    assert one.sensitivity.value == pytest.approx(1.0)  # every "present" of the other was called present
    assert one.specificity.value == pytest.approx(3 / 4)
    assert agreement_report(study=graded_study, rounds=200, seed=3) == report  # seeded: reproducible


def test_ungradable_left_out_or_counted_changes_the_figures_and_says_so(graded_study):
    left_out = field_of(agreement_report(study=graded_study, rounds=0), "TS")
    counted = field_of(agreement_report(study=graded_study, ungradable=Ungradable.CATEGORY, rounds=0), "TS")
    assert left_out.coefficients["percent_agreement"].units == 5
    assert left_out.coefficients["percent_agreement"].value == 1.0
    assert counted.coefficients["percent_agreement"].units == 6
    assert counted.coefficients["percent_agreement"].value == pytest.approx(5 / 6)


def test_a_field_with_every_answer_the_same_says_so_instead_of_a_number(graded_study):
    tt = field_of(agreement_report(study=graded_study, rounds=50), "TT")
    assert tt.coefficients["percent_agreement"].value == 1.0
    kappa = tt.coefficients["fleiss_kappa"]
    assert kappa.value is None and "every answer is the same" in kappa.note and kappa.interval is None


def test_repeatability_pairs_each_repeat_with_the_grade_current_when_it_was_given(
    graded_study, graders, make_patients
):
    patient = Grade.objects.filter(grader=graders[0]).first().patient
    repeat_page = present(graded_study, patient, graders[0], "repeat")
    submit(
        graded_study, patient, graders[0], presentation=repeat_page, answers=answers_where(graded_study, {})
    )
    submit(graded_study, patient, graders[0], regrade=True, answers=answers_where(graded_study, {"TF": "0"}))
    tf = field_of(agreement_report(study=graded_study, rounds=0), "TF")
    one = next(g for g in tf.graders if g.grader == "grader1")
    # The first grade said TF present (1), the repeat absent (0): one pair, disagreeing. The re-grade
    # after the repeat does not count.
    assert one.repeatability.units == 1


def test_a_study_without_grades_gives_notes_not_errors(grading_study):
    report = agreement_report(study=grading_study, rounds=100)
    fields = ["TF", "TI", "TS", "TT", "CO"]
    assert [(item.field, item.eye) for item in report.fields] == [(f, "R") for f in fields] + [
        (f, "L") for f in fields
    ]  # a per-eye grade type is reported per eye
    for item in report.fields:
        for figure in item.coefficients.values():
            assert figure.value is None and figure.note.startswith("not enough data")


def test_the_api_gives_the_report_as_json_and_csv(api, graded_study):
    response = api.get(URL, {"study": graded_study.pk, "rounds": 100})
    assert response.status_code == 200
    body = response.json()
    assert body["ungradable"] == "excluded" and body["rounds"] == 100
    tf = next(item for item in body["fields"] if item["field"] == "TF")
    assert tf["coefficients"]["percent_agreement"]["value"] == pytest.approx(5 / 6)
    response = api.get(URL, {"study": graded_study.pk, "rounds": 0, "format": "csv"})
    assert response.status_code == 200 and response["Content-Type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(b"".join(response.streaming_content).decode())))
    percent = next(r for r in rows if r["field"] == "TF" and r["figure"] == "percent_agreement")
    assert float(percent["value"]) == pytest.approx(5 / 6)
    assert {r["ungradable"] for r in rows} == {"ungradable answers left out"}
    assert {r["figure"] for r in rows} >= {
        "fleiss_kappa", "krippendorff_alpha", "gwet_ac1", "cohen_kappa", "kappa_against_others",
        "sensitivity", "specificity", "answers",
    }  # fmt: skip


@pytest.mark.parametrize(
    "query, name",
    [
        ({}, "study"),
        ({"study": "x"}, "study"),
        ({"study": 999999}, "study"),
        ({"study": "S", "ungradable": "sometimes"}, "ungradable"),
        ({"study": "S", "rounds": "-1"}, "rounds"),
        ({"study": "S", "rounds": "100000"}, "rounds"),
        ({"study": "S", "seed": "one"}, "seed"),
        ({"study": "S", "seed": "-1"}, "seed"),
        ({"study": "S", "format": "xml"}, "format"),
    ],
)
def test_bad_parameters_answer_400_naming_them(api, graded_study, query, name):
    query = {**query, "study": graded_study.pk} if query.get("study") == "S" else query
    response = api.get(URL, query)
    assert response.status_code == 400 and name in response.json()


def test_only_a_data_team_token_opens_the_report(graded_study, graders):
    assert Client().get(URL, {"study": graded_study.pk}).status_code == 401
    grader_token = AuthToken.objects.create(user=graders[0])[1]
    response = Client(HTTP_AUTHORIZATION=f"Token {grader_token}").get(URL, {"study": graded_study.pk})
    assert response.status_code == 403
    collector = UserFactory(username="cora", groups=["Image collectors"])
    collector_token = AuthToken.objects.create(user=collector)[1]
    response = Client(HTTP_AUTHORIZATION=f"Token {collector_token}").get(URL, {"study": graded_study.pk})
    assert response.status_code == 403


def test_the_schema_documents_the_endpoint(api):
    import json

    schema = json.loads(
        api.get(reverse("api-schema"), HTTP_ACCEPT="application/vnd.oai.openapi+json").content
    )
    assert "/api/agreement/" in schema["paths"]
    names = {p["name"] for p in schema["paths"]["/api/agreement/"]["get"]["parameters"]}
    assert {"study", "ungradable", "rounds", "seed", "format"} <= names


def test_options_exist_for_the_fixture(graded_study):
    assert GradeOption.objects.filter(ungradable=True).exists()
