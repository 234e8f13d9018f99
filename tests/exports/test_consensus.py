"""Consensus per field and eye: kept with every save, listed in the admin, followed by every export."""

import json
import uuid

import pytest
from django.urls import reverse

from grading import consensus
from grading.models import Consensus, Grade, GradeEntry
from tests.factories import UserFactory
from tests.grading_support import answers_where, submit

TRAINING = "/api/training-set/"


def methods(patient, field="TF") -> dict[str, tuple[str, str | None]]:
    """eye -> (method, option value) of the patient's consensus on one field."""
    rows = Consensus.objects.filter(patient=patient, field__name=field).select_related("option")
    return {row.eye: (row.method, row.option.value if row.option else None) for row in rows}


def grade(study, patient, grader, **values):
    return submit(study, patient, grader, answers=answers_where(study, values, patient=patient))


def adjudicate(study, patient, adjudicator, **values):
    """An adjudication grade per form, as the adjudication page saves it, and the consensus kept."""
    from grading import selectors

    answers = answers_where(study, values, patient=patient)
    for form in selectors.patient_forms(study=study, patient_id=patient.pk):
        made = Grade.objects.create(
            patient=patient, grade_type=form.grade_type, eye=form.eye, grader=adjudicator,
            kind=Grade.Kind.ADJUDICATION, submission=uuid.uuid4(),
        )  # fmt: skip
        for item in form.fields:
            option_id = answers[selectors.answer_key(form.grade_type.pk, item.field.pk, form.eye)]
            GradeEntry.objects.create(grade=made, field=item.field, option_id=option_id)
    consensus.patients_refresh(patient_ids=[patient.pk])


def test_too_few_graders_then_majority_per_eye_and_a_split_eye_waits(grading_study, photographed, graders):
    patient = photographed[0]
    grade(grading_study, patient, graders[0], **{"TF/R": "1", "TF/L": "0"})
    assert methods(patient) == {"R": ("too_few", None), "L": ("too_few", None)}
    grade(grading_study, patient, graders[1], **{"TF/R": "1", "TF/L": "1"})  # two of two wanted
    assert methods(patient) == {"R": ("majority", "1"), "L": ("pending", None)}
    row = Consensus.objects.get(patient=patient, field__name="TF", eye="L")
    assert (row.graders, row.votes) == (2, "0:1;1:1")
    assert methods(patient, "TI") == {"R": ("majority", "0"), "L": ("majority", "0")}


def test_a_regrade_that_agrees_settles_the_split(grading_study, photographed, graders):
    patient = photographed[0]
    grade(grading_study, patient, graders[0], TF="0")
    grade(grading_study, patient, graders[1], TF="1")
    assert methods(patient)["R"] == ("pending", None)
    submit(
        grading_study,
        patient,
        graders[0],
        regrade=True,
        answers=answers_where(grading_study, {"TF": "1"}, patient),
    )
    assert methods(patient) == {"R": ("majority", "1"), "L": ("majority", "1")}


def test_a_repeat_grade_does_not_vote(grading_study, photographed, graders):
    patient = photographed[0]
    grade(grading_study, patient, graders[0], TF="1")
    grade(grading_study, patient, graders[1], TF="1")
    submit(
        grading_study,
        patient,
        graders[0],
        kind="repeat",
        answers=answers_where(grading_study, {"TF": "0"}, patient),
    )
    assert methods(patient)["R"] == ("majority", "1")


def test_an_adjudication_settles_every_field_and_the_latest_counts(grading_study, photographed, graders):
    patient = photographed[0]
    grade(grading_study, patient, graders[0], TF="0")
    grade(grading_study, patient, graders[1], TF="1")
    first, second = UserFactory(username="adj1"), UserFactory(username="adj2")
    adjudicate(grading_study, patient, first, TF="1", TS="1")
    assert methods(patient) == {"R": ("adjudicated", "1"), "L": ("adjudicated", "1")}
    assert methods(patient, "TS")["R"] == ("adjudicated", "1")  # the adjudicator's answer, not the majority
    adjudicate(grading_study, patient, second, TF="0")
    assert methods(patient)["R"] == ("adjudicated", "0")


def test_lowering_graders_wanted_on_the_study_page_settles_what_now_has_its_graders(
    grading_study, photographed, graders, client_for, study_admin
):
    patient = photographed[0]
    grade(grading_study, patient, graders[0], TF="1")
    assert methods(patient)["R"] == ("too_few", None)
    grading_study.graders_per_patient = 1
    grading_study.save()
    consensus.study_refresh(study=grading_study)  # as the study page does when graders wanted changes
    assert methods(patient)["R"] == ("majority", "1")


def test_the_training_set_gives_each_photo_its_own_eyes_label(api, grading_study, photographed, graders, who):
    patient = photographed[0]
    grade(grading_study, patient, graders[0], **{"TF/R": "1", "TF/L": "0"})
    grade(grading_study, patient, graders[1], **{"TF/R": "1", "TF/L": "0"})
    rows = training(api, grading_study, grade_type=who.pk, field="TF")
    mine = {row["eye"]: row for row in rows if row["patient_code"] == patient.code}
    assert (mine["R"]["label"], mine["L"]["label"]) == ("1", "0")
    assert {row["consensus"] for row in mine.values()} == {"majority"}
    others = {row["consensus"] for row in rows if row["patient_code"] != patient.code}
    assert others == {"too_few"}


def test_the_training_set_follows_an_adjudication(api, grading_study, photographed, graders, who):
    patient = photographed[1]
    grade(grading_study, patient, graders[0], TF="0")
    grade(grading_study, patient, graders[1], TF="1")
    (before,) = {
        r["label"] for r in training(api, grading_study, grade_type=who.pk) if r["patient_code"] == "EX-1"
    }
    assert before == ""
    adjudicate(grading_study, patient, UserFactory(username="adj"), TF="1")
    after = [r for r in training(api, grading_study, grade_type=who.pk) if r["patient_code"] == "EX-1"]
    assert {(r["label"], r["consensus"], r["no_label_reason"]) for r in after} == {("1", "adjudicated", "")}


def test_a_per_patient_label_goes_to_every_photo(api, grading_study, photographed, graders, follicles):
    grading_study.grade_types.add(follicles)
    patient = photographed[2]
    for grader in graders[:2]:
        answers = answers_where(grading_study, {"Follicles present": "probably_yes"}, patient)
        submit(grading_study, patient, grader, answers=answers)
    rows = training(api, grading_study, grade_type=follicles.pk, field="Follicles present")
    rows = [r for r in rows if r["patient_code"] == "EX-2"]
    assert sorted((r["eye"], r["label"]) for r in rows) == [("L", "probably_yes"), ("R", "probably_yes")]


def training(api, study, **params) -> list[dict]:
    params = {"study": study.pk, "format": "json", "field": "TF", **params}
    response = api.get(TRAINING, params)
    assert response.status_code == 200, response.content
    return json.loads(b"".join(response.streaming_content))


# The admin's consensus list ------------------------------------------------------------------------------


@pytest.fixture
def disputed(grading_study, photographed, graders):
    patient = photographed[0]
    grade(grading_study, patient, graders[0], TF="0")
    grade(grading_study, patient, graders[1], TF="1")
    return patient


@pytest.mark.parametrize("role", ["admin_user", "study_admin", "data_member"])
def test_staff_list_the_consensus_filtered_by_method(role, disputed, client_for, request):
    client = client_for(request.getfixturevalue(role))
    url = reverse("admin:grading_consensus_changelist")
    page = client.get(url, {"method__exact": "pending"})
    assert page.status_code == 200
    html = page.content.decode()
    assert disputed.code in html and "Waiting for adjudication" in html
    assert "Majority" not in html.split("<tbody>")[1]


def test_graders_cannot_see_the_consensus(disputed, graders, client_for):
    client = client_for(graders[0])
    assert client.get(reverse("admin:grading_consensus_changelist")).status_code == 403


def test_the_consensus_exports_as_csv_with_how_it_was_reached(disputed, client_for, data_member):
    from tests.exports.test_admin_exports import download

    table = download(client_for(data_member), reverse("admin:grading_consensus_export"), "csv")
    tf = {(row["eye"], row["method"], row["value"]) for row in table.rows if row["field"] == "TF"}
    assert tf == {("R", "pending", ""), ("L", "pending", "")}
    assert {row["patient_code"] for row in table.rows} == {disputed.code}
