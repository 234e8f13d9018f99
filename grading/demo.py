"""Demo grades: graders grading through their queues as they would on the grading page.

Each photographed eye has a drawn true state; each grader reads it with a
small, seeded chance of error per field, so the demo study shows real
agreement figures, a few disagreements for adjudication and repeats.
"""

import random

from django.contrib.auth.base_user import AbstractBaseUser

from studies.models import Study

from . import selectors, services
from .models import Grade

# How often each WHO sign is present in the demo population, and how often a grader misreads a field.
PREVALENCE = {"TF": 0.35, "TI": 0.12, "TS": 0.12, "TT": 0.06, "CO": 0.04}
MISREAD = 0.12
UNGRADABLE = 0.03


def _answers(*, forms, truth: random.Random, reader: random.Random) -> dict[str, str]:
    answers = {}
    for form in forms:
        for item in form.fields:
            gradable = [o for o in item.options if not o.ungradable]
            ungradable = [o for o in item.options if o.ungradable]
            # The same patient and eye draw the same true answer for every grader.
            present = truth.random() < PREVALENCE.get(item.field.name, 0.3)
            option = gradable[-1] if present else gradable[0]
            if reader.random() < MISREAD:
                option = reader.choice(gradable)
            if ungradable and reader.random() < UNGRADABLE:
                option = ungradable[0]
            answers[selectors.answer_key(form.grade_type.pk, item.field.pk, form.eye)] = str(option.pk)
    return answers


def demo_grades(*, study: Study, graders: list[AbstractBaseUser], per_grader: int, seed: int = 7) -> int:
    """Each grader grades up to `per_grader` patients of their queue (repeats included); how many saved.

    Does nothing for a study that already has grades.
    """
    if Grade.objects.filter(patient__study=study).exists():
        return 0
    reader = random.Random(seed)
    saved = 0
    for _ in range(per_grader):
        for grader in graders:
            page = services.presentation_next(study=study, grader=grader)
            if page is None:
                continue
            forms = selectors.patient_forms(study=study, patient_id=page.patient_id)
            answers = _answers(forms=forms, truth=random.Random(f"{seed}:{page.patient_id}"), reader=reader)
            services.grade_submit(presentation=page, grader=grader, answers=answers, note="")
            saved += 1
    return saved
