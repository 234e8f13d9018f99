import json
from pathlib import Path

import pytest
from django.conf import settings

from accounts import roles
from grading import selectors, services
from grading.models import GradeType
from tests.factories import PatientFactory, StudyFactory, UserFactory

SCHEMES = json.loads((Path(settings.BASE_DIR) / "fixtures" / "grade_types.json").read_text())


@pytest.fixture
def who(db) -> GradeType:
    """The WHO simplified trachoma grade type: TF, TI, TS, TT, CO; absent, present, ungradable."""
    return services.grade_types_import(data=SCHEMES[0])[0]


@pytest.fixture
def follicles(db) -> GradeType:
    return services.grade_types_import(data=SCHEMES[1])[0]


@pytest.fixture
def graders(db):
    return [UserFactory(username=f"grader{n}", groups=[roles.GRADERS]) for n in range(1, 4)]


@pytest.fixture
def grading_study(who, graders):
    study = StudyFactory(graders_per_patient=2, repeat_share=0)
    study.grade_types.add(who)
    study.graders.add(*graders)
    return study


@pytest.fixture
def make_patients():
    def make(study, count: int):
        return [PatientFactory(study=study, code=f"TR-{study.pk}-{n:05d}") for n in range(count)]

    return make


def forms_of(study, patient=None):
    """The forms a patient is graded with; without a patient, of one with no photos (both eyes)."""
    if patient is None:
        return selectors.forms_per_eye(selectors.grading_forms(study=study), eyes=set())
    return selectors.patient_forms(study=study, patient_id=patient.pk)


def answers_for(study, choice: str = "0", skip: tuple[str, ...] = (), patient=None) -> dict[str, str]:
    """A complete set of answers choosing the option with this value in every field (and eye)."""
    answers = {}
    for form in forms_of(study, patient):
        for item in form.fields:
            if item.field.name in skip:
                continue
            option = next((o for o in item.options if o.value == choice), item.options[0])
            answers[services.answer_key(form.grade_type.pk, item.field.pk, form.eye)] = str(option.pk)
    return answers


def answers_where(study, values: dict[str, str], patient=None) -> dict[str, str]:
    """Answers choosing, per field name, the option with that value (default "0"); "U" or "9" picks
    the field's ungradable option. A key "TF/L" sets one eye's answer apart."""
    answers = {}
    for form in forms_of(study, patient):
        for item in form.fields:
            value = values.get(f"{item.field.name}/{form.eye}", values.get(item.field.name, "0"))
            ungradable = value in ("U", "9")
            option = next(o for o in item.options if o.value == value or (ungradable and o.ungradable))
            answers[services.answer_key(form.grade_type.pk, item.field.pk, form.eye)] = str(option.pk)
    return answers


def present(study, patient, grader, kind: str = "first"):
    """A grading page of the patient for the grader, as `next` or the re-grade button would open it.

    Opened directly, without `next`'s choice or reservation: like a page opened before others saved.
    """
    from grading.models import Presentation, QueueEntry

    entry = QueueEntry.objects.get(queue__study=study, queue__grader=grader, patient=patient)
    return Presentation.objects.create(queue=entry.queue, entry=entry, patient=patient, kind=kind)


def submit(study, patient, grader, choice="0", regrade=False, presentation=None, **extra):
    """Grade the patient from a page of its own (a first grade, or a re-grade with regrade=True)."""
    if presentation is None:
        kind = extra.pop("kind", "regrade" if regrade else None)
        if kind is None:  # what the queue would show: a repeat if one is waiting for this patient
            from grading.models import QueueEntry

            mine = QueueEntry.objects.filter(queue__study=study, queue__grader=grader)
            entry = mine.filter(patient=patient).first()
            kind = "repeat" if entry is not None and entry.repeat_pending else "first"
        presentation = present(study, patient, grader, kind)
    if "seconds" in extra:  # as if the page had been open that long
        from datetime import timedelta

        from django.utils import timezone

        presentation.shown_at = timezone.now() - timedelta(seconds=extra.pop("seconds"))
        presentation.save(update_fields=["shown_at"])
    return services.grade_submit(
        presentation=presentation,
        grader=grader,
        answers=extra.pop("answers", None) or answers_for(study, choice, patient=patient),
        note=extra.pop("note", ""),
    )


def queue_order(study, grader) -> list[int]:
    """The patients still to grade by this grader, in the grader's order."""
    queue = selectors.queue_of(study=study, grader=grader)
    return [entry.patient_id for entry in selectors.queue_upcoming(queue=queue, limit=10**6)]


def next_presentation(study, grader):
    return services.presentation_next(study=study, grader=grader)


def next_for(study, grader):
    """The patient the grading page would show this grader next, or None."""
    presentation = services.presentation_next(study=study, grader=grader)
    return None if presentation is None else presentation.patient


def progress_of(study, grader) -> selectors.Progress:
    return selectors.Progress.of(selectors.queue_of(study=study, grader=grader))


def counts_agree(study) -> None:
    """Every queue's stored counts equal its entries, and no entry waits for a patient with its graders."""
    from grading.models import GraderQueue, QueueEntry

    full = set(selectors.patients_with_their_graders(study=study).values_list("patient_id", flat=True))
    for queue in GraderQueue.objects.filter(study=study):
        counts = selectors.queue_counts(queue=queue)
        assert (queue.pending, queue.graded) == (counts.get("pending", 0), counts.get("graded", 0)), queue
        assert not queue.entries.filter(state=QueueEntry.State.PENDING, patient__in=full).exists()
