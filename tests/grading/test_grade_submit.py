"""Submitting grades: atomic, validated, idempotent, and never overwriting history."""

import uuid

import pytest
from django.core.exceptions import ValidationError

from grading.models import Grade, GradeEntry, GradeOption
from grading.services import answer_key, grade_submit
from tests.factories import PatientFactory, StudyFactory, UserFactory
from tests.grading_support import answers_for, submit


def test_submit_saves_one_grade_per_grade_type_with_every_entry(
    grading_study, follicles, graders, make_patients
):
    grading_study.grade_types.add(follicles)
    (patient,) = make_patients(grading_study, 1)
    grades = submit(grading_study, patient, graders[0], choice="1", seconds=42, note=" faint ")
    assert len(grades) == 2
    who_grade = next(g for g in grades if g.grade_type.name.startswith("WHO"))
    values = dict(who_grade.entries.values_list("field__name", "option__value"))
    assert values == {"TF": "1", "TI": "1", "TS": "1", "TT": "1", "CO": "1"}
    assert (who_grade.kind, who_grade.seconds_spent, who_grade.note, who_grade.is_current) == (
        "regular",
        42,
        "faint",
        True,
    )
    assert GradeEntry.objects.count() == 6


def test_regrade_supersedes_and_keeps_history(grading_study, graders, make_patients):
    (patient,) = make_patients(grading_study, 1)
    (first,) = submit(grading_study, patient, graders[0], choice="0")
    (second,) = submit(grading_study, patient, graders[0], choice="1", regrade=True)
    first.refresh_from_db()
    assert (first.is_current, first.superseded_by) == (False, second)
    assert second.is_current and second.kind == "regular"
    assert Grade.objects.filter(patient=patient).count() == 2
    assert set(first.entries.values_list("option__value", flat=True)) == {"0"}


def test_patient_drawn_for_repeat_and_shown_again_gets_a_repeat_grade(grading_study, graders, make_patients):
    grading_study.repeat_share = 1
    grading_study.save()
    (patient,) = make_patients(grading_study, 1)
    (regular,) = submit(grading_study, patient, graders[0])
    (repeat,) = submit(grading_study, patient, graders[0], choice="1")
    regular.refresh_from_db()
    assert repeat.kind == "repeat"
    assert regular.is_current  # a repeat grade does not replace the regular one


def test_same_page_submitted_twice_saves_one_grade(grading_study, graders, make_patients):
    (patient,) = make_patients(grading_study, 1)
    key = uuid.uuid4()
    first = submit(grading_study, patient, graders[0], submission=key)
    again = submit(grading_study, patient, graders[0], submission=key, choice="1")
    assert [g.pk for g in again] == [g.pk for g in first]
    assert Grade.objects.count() == 1


def test_two_graders_grading_the_same_patient_both_succeed(grading_study, graders, make_patients):
    (patient,) = make_patients(grading_study, 1)
    submit(grading_study, patient, graders[0])
    submit(grading_study, patient, graders[1], choice="1")
    assert Grade.objects.filter(patient=patient, is_current=True).count() == 2


def refused(study, patient, grader, answers, message):
    with pytest.raises(ValidationError) as error:
        grade_submit(
            study=study, patient=patient, grader=grader, answers=answers, submission=uuid.uuid4(), seconds=5
        )
    assert message in " ".join(error.value.messages)
    assert Grade.objects.count() == 0 and GradeEntry.objects.count() == 0


def test_missing_required_field_is_refused(grading_study, graders, make_patients):
    (patient,) = make_patients(grading_study, 1)
    answers = answers_for(grading_study)
    answers.pop(next(iter(answers)))
    refused(grading_study, patient, graders[0], answers, "TF is required.")


def test_option_of_another_field_is_refused(grading_study, graders, make_patients):
    (patient,) = make_patients(grading_study, 1)
    answers = answers_for(grading_study)
    keys = list(answers)
    answers[keys[0]] = answers[keys[1]]  # TI's option given for TF
    refused(grading_study, patient, graders[0], answers, "That choice is not an option of TF")


def test_unknown_field_is_refused(grading_study, graders, make_patients):
    (patient,) = make_patients(grading_study, 1)
    answers = {**answers_for(grading_study), "answer-999-999": "1"}
    refused(grading_study, patient, graders[0], answers, "is not a field of this study's grade types")


def test_grade_type_not_attached_to_the_study_is_refused(grading_study, follicles, graders, make_patients):
    (patient,) = make_patients(grading_study, 1)
    field = follicles.fields.get()
    answers = {
        **answers_for(grading_study),
        answer_key(follicles.pk, field.pk): str(field.options.first().pk),
    }
    refused(grading_study, patient, graders[0], answers, "is not a field of this study's grade types")


def test_patient_of_another_study_is_refused(grading_study, graders):
    stranger = PatientFactory(study=StudyFactory())
    refused(
        grading_study, stranger, graders[0], answers_for(grading_study), "This patient is not in this study."
    )


def test_unassigned_grader_is_refused(grading_study, make_patients):
    (patient,) = make_patients(grading_study, 1)
    outsider = UserFactory(username="outsider", groups=["Graders"])
    refused(grading_study, patient, outsider, answers_for(grading_study), "You are not assigned")


def test_closed_study_is_refused(grading_study, graders, make_patients):
    (patient,) = make_patients(grading_study, 1)
    grading_study.is_active = False
    grading_study.save()
    refused(grading_study, patient, graders[0], answers_for(grading_study), "You are not assigned")


def test_optional_field_may_be_left_blank(grading_study, who, graders, make_patients):
    who.fields.filter(name="CO").update(required=False)
    (patient,) = make_patients(grading_study, 1)
    answers = answers_for(grading_study)
    co = who.fields.get(name="CO")
    answers.pop(answer_key(who.pk, co.pk))
    (grade,) = grade_submit(
        study=grading_study,
        patient=patient,
        grader=graders[0],
        answers=answers,
        submission=uuid.uuid4(),
        seconds=3,
    )
    assert grade.entries.get(field=co).option is None


def test_deleting_a_graded_patient_or_grade_type_or_option_is_refused(
    grading_study, who, graders, make_patients
):
    from django.db.models import ProtectedError

    (patient,) = make_patients(grading_study, 1)
    submit(grading_study, patient, graders[0])
    with pytest.raises(ProtectedError):
        patient.delete()
    with pytest.raises(ProtectedError):
        who.delete()
    with pytest.raises(ProtectedError):
        GradeOption.objects.filter(entries__isnull=False).first().delete()


def test_saving_a_graded_patient_again_from_an_old_page_supersedes_not_a_repeat(
    grading_study, graders, make_patients
):
    (patient,) = make_patients(grading_study, 1)  # repeat share 0: never drawn for repeat
    (first,) = submit(grading_study, patient, graders[0], choice="0")
    (again,) = submit(grading_study, patient, graders[0], choice="1")
    first.refresh_from_db()
    assert again.kind == "regular" and again.is_current
    assert (first.is_current, first.superseded_by) == (False, again)
    assert not Grade.objects.filter(kind="repeat").exists()
