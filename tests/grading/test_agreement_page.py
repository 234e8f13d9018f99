"""The agreement page of a study in the admin, for all who see every grade or adjudicate; its downloads."""

import csv
import io
import json

import pytest
from django.urls import reverse

from tests.factories import UserFactory
from tests.grading_support import answers_where, submit

WHO_FIELDS = ["TF", "TI", "TS", "TT", "CO"]


@pytest.fixture
def graded_study(grading_study, graders, make_patients):
    """Two graders on 6 patients: TF agreed on 5 of 6, TS marked ungradable by one grader once."""
    patients = make_patients(grading_study, 6)
    first = ["1", "1", "0", "0", "0", "1"]
    second = ["1", "1", "0", "0", "0", "0"]
    for n, patient in enumerate(patients):
        submit(grading_study, patient, graders[0], answers=answers_where(grading_study, {"TF": first[n]}))
        ts = "U" if n == 0 else "0"
        submit(
            grading_study, patient, graders[1],
            answers=answers_where(grading_study, {"TF": second[n], "TS": ts}),
        )  # fmt: skip
    return grading_study


def url_of(study, **query) -> str:
    url = reverse("admin:studies_study_agreement", args=[study.pk])
    return url + ("?" + "&".join(f"{key}={value}" for key, value in query.items()) if query else "")


@pytest.fixture
def superuser(db):
    return UserFactory(username="root", is_staff=True, is_superuser=True)


@pytest.fixture
def adjudicator(db):
    from accounts import roles

    return UserFactory(username="ada", groups=[roles.ADJUDICATORS])


@pytest.mark.parametrize("role", ["superuser", "study_admin", "data_member", "adjudicator"])
def test_the_page_shows_every_field_with_its_coefficients(role, graded_study, client_for, request):
    response = client_for(request.getfixturevalue(role)).get(url_of(graded_study))
    assert response.status_code == 200
    page = response.content.decode()
    for name in WHO_FIELDS:
        assert f"<b>{name}, right eye</b>" in page and f"<b>{name}, left eye</b>" in page
    assert "Fleiss&#x27; kappa" in page and "Krippendorff" in page and "Gwet" in page
    assert "0.833" in page  # TF's percent agreement, 5 of 6
    assert 'id="gc-agreement-data"' in page and "chart.umd.min.js" in page
    assert response.context["data"]["fields"][0]["coefficients"][1]["name"] == "Fleiss' kappa"


@pytest.mark.parametrize("role", ["grader", "collector"])
def test_graders_and_image_collectors_are_refused(role, graded_study, client_for, request):
    user = request.getfixturevalue(role)
    if role == "grader":
        graded_study.graders.add(user)  # even a grader of this very study
    assert client_for(user).get(url_of(graded_study)).status_code == 403
    assert client_for(user).get(url_of(graded_study, download="csv")).status_code == 403


def test_the_ungradable_switch_changes_figures_and_what_the_page_says(graded_study, client_for, superuser):
    client = client_for(superuser)
    left_out = client.get(url_of(graded_study))
    counted = client.get(url_of(graded_study, ungradable="category"))
    assert "ungradable answers left out" in left_out.content.decode()
    assert "ungradable counted as a category" in counted.content.decode()

    def ts_patients(response) -> int:
        ts = next(page for page in response.context["fields"] if page["item"].field == "TS")
        return ts["item"].coefficients["percent_agreement"].units

    assert (ts_patients(left_out), ts_patients(counted)) == (5, 6)


def test_the_study_page_links_to_the_agreement_page(graded_study, client_for, superuser):
    change = reverse("admin:studies_study_change", args=[graded_study.pk])
    assert url_of(graded_study) in client_for(superuser).get(change).content.decode()


def test_the_report_downloads_as_csv_and_json(graded_study, client_for, data_member):
    client = client_for(data_member)
    response = client.get(url_of(graded_study, ungradable="category", download="csv"))
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/csv")
    assert f'filename="agreement-study-{graded_study.pk}.csv"' in response["Content-Disposition"]
    rows = list(csv.DictReader(io.StringIO(response.content.decode())))
    tf = next(r for r in rows if r["field"] == "TF" and r["figure"] == "percent_agreement")
    assert float(tf["value"]) == pytest.approx(5 / 6)
    assert {r["ungradable"] for r in rows} == {"ungradable counted as a category"}

    response = client.get(url_of(graded_study, download="json"))
    assert response.status_code == 200
    assert "attachment" in response["Content-Disposition"]
    report = json.loads(response.content)
    assert report["ungradable"] == "excluded" and report["rounds"] == 1000
    assert [(item["field"], item["eye"]) for item in report["fields"]] == [(f, "R") for f in WHO_FIELDS] + [
        (f, "L") for f in WHO_FIELDS
    ]
    assert {r["eye"] for r in rows} == {"R", "L"}


def test_a_study_without_grades_still_shows_its_fields(grading_study, client_for, superuser):
    response = client_for(superuser).get(url_of(grading_study))
    assert response.status_code == 200
    assert "Nobody has answered this field yet." in response.content.decode()
