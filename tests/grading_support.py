import json
import uuid
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


def answers_for(study, choice: str = "0", skip: tuple[str, ...] = ()) -> dict[str, str]:
    """A complete set of answers choosing the option with this value in every field."""
    answers = {}
    for form in selectors.grading_forms(study=study):
        for item in form.fields:
            if item.field.name in skip:
                continue
            option = next((o for o in item.options if o.value == choice), item.options[0])
            answers[services.answer_key(form.grade_type.pk, item.field.pk)] = str(option.pk)
    return answers


def submit(study, patient, grader, choice="0", regrade=False, submission=None, **extra):
    return services.grade_submit(
        study=study,
        patient=patient,
        grader=grader,
        answers=extra.pop("answers", None) or answers_for(study, choice),
        submission=submission or uuid.uuid4(),
        seconds=extra.pop("seconds", 12),
        note=extra.pop("note", ""),
        regrade=regrade,
    )


def queue_order(study, grader) -> list[int]:
    """The patients still to grade by this grader, in the grader's order."""
    queue = services.queue_sync(study=study, grader=grader)
    return [entry.patient_id for entry in selectors.queue_upcoming(queue=queue, limit=10**6)]


def next_for(study, grader):
    """The patient the grading page would show this grader next, or None."""
    from studies.models import Patient

    patient_id = selectors.next_patient_id(queue=services.queue_sync(study=study, grader=grader))
    return None if patient_id is None else Patient.objects.get(pk=patient_id)


def progress_of(study, grader) -> selectors.Progress:
    return selectors.Progress.of(services.queue_sync(study=study, grader=grader), study)
