"""Submitting grades: atomic, validated, idempotent, within graders wanted, never overwriting history."""

import pytest
from django.core.exceptions import ValidationError

from grading.models import Grade, GradeEntry, GradeOption, Presentation, QueueEntry
from grading.services import answer_key, grade_submit
from tests.factories import PatientFactory, StudyFactory, UserFactory
from tests.grading_support import answers_for, counts_agree, present, progress_of, submit


def test_submit_saves_one_grade_per_grade_type_with_every_entry(
    grading_study, follicles, graders, make_patients
):
    grading_study.grade_types.add(follicles)
    (patient,) = make_patients(grading_study, 1)
    grades = submit(grading_study, patient, graders[0], choice="1", seconds=42, note=" faint ")
    assert [(g.grade_type.name[:3], g.eye) for g in grades] == [("Fol", ""), ("WHO", "R"), ("WHO", "L")]
    who_grade = next(g for g in grades if g.grade_type.name.startswith("WHO"))
    values = dict(who_grade.entries.values_list("field__name", "option__value"))
    assert values == {"TF": "1", "TI": "1", "TS": "1", "TT": "1", "CO": "1"}
    assert (who_grade.kind, who_grade.seconds_spent, who_grade.note, who_grade.is_current) == (
        "regular",
        42,
        "faint",
        True,
    )
    assert GradeEntry.objects.count() == 11  # five fields per eye, one for the per-patient type


def test_regrade_supersedes_and_keeps_history(grading_study, graders, make_patients):
    (patient,) = make_patients(grading_study, 1)
    first, _ = submit(grading_study, patient, graders[0], choice="0")  # right eye, left eye
    second, _ = submit(grading_study, patient, graders[0], choice="1", regrade=True)
    first.refresh_from_db()
    assert (first.is_current, first.superseded_by) == (False, second)
    assert second.is_current and second.kind == "regular"
    assert Grade.objects.filter(patient=patient).count() == 4
    assert set(first.entries.values_list("option__value", flat=True)) == {"0"}
    assert progress_of(grading_study, graders[0]).graded == 1  # a re-grade is not another patient


def test_repeat_page_saves_a_repeat_grade_beside_the_regular_one(grading_study, graders, make_patients):
    (patient,) = make_patients(grading_study, 1)
    regular, _ = submit(grading_study, patient, graders[0])
    repeat, _ = submit(grading_study, patient, graders[0], choice="1", kind="repeat")
    regular.refresh_from_db()
    assert repeat.kind == "repeat"
    assert regular.is_current  # a repeat grade does not replace the regular one


def test_same_page_submitted_twice_saves_one_grade(grading_study, graders, make_patients):
    (patient,) = make_patients(grading_study, 1)
    page = present(grading_study, patient, graders[0])
    first = submit(grading_study, patient, graders[0], presentation=page)
    again = submit(grading_study, patient, graders[0], presentation=page)
    assert [g.pk for g in again] == [g.pk for g in first]
    assert Grade.objects.count() == 2  # one per eye


def test_an_old_page_sent_again_with_other_answers_is_refused_and_says_so(
    grading_study, graders, make_patients
):
    (patient,) = make_patients(grading_study, 1)
    page = present(grading_study, patient, graders[0])
    submit(grading_study, patient, graders[0], presentation=page, choice="0")
    with pytest.raises(ValidationError) as error:
        submit(grading_study, patient, graders[0], presentation=page, choice="1")
    assert error.value.code == "already_saved"
    assert "already saved" in error.value.messages[0] and "re-grade" in error.value.messages[0]
    assert set(GradeEntry.objects.values_list("option__value", flat=True)) == {"0"}


def test_two_graders_grading_the_same_patient_both_succeed(grading_study, graders, make_patients):
    (patient,) = make_patients(grading_study, 1)
    submit(grading_study, patient, graders[0])
    submit(grading_study, patient, graders[1], choice="1")
    assert Grade.objects.filter(patient=patient, is_current=True).count() == 4


@pytest.mark.parametrize("wanted", [1, 2])
def test_a_patient_that_has_its_graders_refuses_one_more(grading_study, graders, make_patients, wanted):
    grading_study.graders_per_patient = wanted
    grading_study.save()
    (patient,) = make_patients(grading_study, 1)
    pages = [present(grading_study, patient, grader) for grader in graders]  # all opened before any save
    for grader, page in zip(graders[:wanted], pages, strict=False):
        submit(grading_study, patient, grader, presentation=page)
    late = graders[wanted]
    with pytest.raises(ValidationError) as error:
        submit(grading_study, patient, late, presentation=pages[wanted])
    assert error.value.code == "patient_full"
    assert f"already has its {wanted} grader(s)" in error.value.messages[0]
    assert "not saved" in error.value.messages[0]
    assert Grade.objects.filter(patient=patient).values("grader").distinct().count() == wanted
    pages[wanted].refresh_from_db()
    assert pages[wanted].outcome == Presentation.Outcome.REFUSED
    assert QueueEntry.objects.get(patient=patient, queue__grader=late).state == QueueEntry.State.CLOSED
    counts_agree(grading_study)


def test_a_grader_who_graded_may_still_regrade_a_full_patient(grading_study, graders, make_patients):
    (patient,) = make_patients(grading_study, 1)
    submit(grading_study, patient, graders[0])
    submit(grading_study, patient, graders[1])
    again = submit(grading_study, patient, graders[0], choice="1", regrade=True)
    assert all(g.is_current for g in again)


def test_someone_elses_page_is_refused(grading_study, graders, make_patients):
    (patient,) = make_patients(grading_study, 1)
    page = present(grading_study, patient, graders[0])
    with pytest.raises(ValidationError, match="belongs to another grader"):
        submit(grading_study, patient, graders[1], presentation=page)
    assert not Grade.objects.exists()


def refused(study, patient, grader, answers, message):
    page = present(study, patient, grader)
    with pytest.raises(ValidationError) as error:
        grade_submit(presentation=page, grader=grader, answers=answers)
    assert message in " ".join(error.value.messages)
    assert Grade.objects.count() == 0 and GradeEntry.objects.count() == 0
    return page


def test_missing_required_field_is_refused(grading_study, graders, make_patients):
    (patient,) = make_patients(grading_study, 1)
    answers = answers_for(grading_study)
    answers.pop(next(iter(answers)))
    refused(grading_study, patient, graders[0], answers, "TF (right eye) is required.")


def test_time_spent_survives_a_refused_submit(grading_study, graders, make_patients):
    from datetime import timedelta

    from django.utils import timezone

    (patient,) = make_patients(grading_study, 1)
    answers = answers_for(grading_study)
    answers.pop(next(iter(answers)))
    page = refused(grading_study, patient, graders[0], answers, "TF (right eye) is required.")
    Presentation.objects.filter(pk=page.pk).update(shown_at=timezone.now() - timedelta(seconds=110))
    page.refresh_from_db()
    grade, _ = grade_submit(presentation=page, grader=graders[0], answers=answers_for(grading_study))
    assert 110 <= grade.seconds_spent <= 112


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


def test_a_grader_has_no_queue_in_another_study(grading_study, graders):
    stranger = PatientFactory(study=StudyFactory())
    assert not QueueEntry.objects.filter(patient=stranger, queue__grader=graders[0]).exists()


def test_unassigned_grader_is_refused(grading_study, graders, make_patients):
    (patient,) = make_patients(grading_study, 1)
    page = present(grading_study, patient, graders[0])
    grading_study.graders.remove(graders[0])
    with pytest.raises(ValidationError, match="You are not assigned"):
        grade_submit(presentation=page, grader=graders[0], answers=answers_for(grading_study))
    outsider = UserFactory(username="outsider", groups=["Graders"])
    assert not QueueEntry.objects.filter(queue__grader=outsider).exists()


def test_closed_study_is_refused(grading_study, graders, make_patients):
    (patient,) = make_patients(grading_study, 1)
    page = present(grading_study, patient, graders[0])
    grading_study.is_active = False
    grading_study.save()
    with pytest.raises(ValidationError, match="You are not assigned"):
        grade_submit(presentation=page, grader=graders[0], answers=answers_for(grading_study))
    assert not Grade.objects.exists()


def test_optional_field_may_be_left_blank(grading_study, who, graders, make_patients):
    who.fields.filter(name="CO").update(required=False)
    (patient,) = make_patients(grading_study, 1)
    answers = answers_for(grading_study)
    co = who.fields.get(name="CO")
    answers.pop(answer_key(who.pk, co.pk, "L"))
    right, left = submit(grading_study, patient, graders[0], answers=answers)
    assert left.entries.get(field=co).option is None
    assert right.entries.get(field=co).option is not None


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
    counts_agree(grading_study)


def test_a_second_first_grade_page_of_a_graded_patient_is_refused(grading_study, graders, make_patients):
    (patient,) = make_patients(grading_study, 1)
    old_page = present(grading_study, patient, graders[0])
    submit(grading_study, patient, graders[0], choice="0")
    with pytest.raises(ValidationError) as error:
        submit(grading_study, patient, graders[0], presentation=old_page, choice="1")
    assert error.value.code == "already_graded"
    assert Grade.objects.count() == 2


def test_a_refused_page_sent_again_is_refused_again_in_the_same_words(grading_study, graders, make_patients):
    grading_study.graders_per_patient = 1
    grading_study.save()
    (patient,) = make_patients(grading_study, 1)
    late = present(grading_study, patient, graders[1])
    submit(grading_study, patient, graders[0])
    for _ in range(2):
        with pytest.raises(ValidationError) as error:
            submit(grading_study, patient, graders[1], presentation=late)
        assert error.value.code == "patient_full" and "not saved" in error.value.messages[0]
    assert not Grade.objects.filter(grader=graders[1]).exists()
