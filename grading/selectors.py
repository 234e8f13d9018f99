"""Reads for grading: the grader's queue, progress, the grading page's data, grade types.

Every function here runs a fixed number of queries, whatever the study's size.
"""

import hashlib
from dataclasses import dataclass, field

from django.contrib.auth.base_user import AbstractBaseUser
from django.db.models import QuerySet

from studies.models import Image, Patient, Study

from .models import Grade, GradeEntry, GradeField, GradeOption, GraderQueue, GradeType, QueueEntry

# A repeat is shown again only after this many other patients, so the grader cannot remember it.
REPEAT_GAP = 10


def _seed(*parts: object) -> int:
    digest = hashlib.sha256(":".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:8], "big")


def queue_position(*, study: Study, grader: AbstractBaseUser, patient_id: int) -> int:
    """Where a patient stands in a grader's queue: a random draw of the grader's own, stable.

    Without randomized order, patients come in the order they were added.
    """
    if not study.randomized_order:
        return patient_id
    return _seed("order", study.pk, grader.pk, patient_id) >> 1  # fits a signed 64-bit column


def repeat_drawn(*, study: Study, grader: AbstractBaseUser, patient_id: int) -> bool:
    """Whether this patient comes back to this grader for a repeat grade (the study's share)."""
    return _seed("repeat", study.pk, grader.pk, patient_id) % 10_000 < float(study.repeat_share) * 10_000


def grader_studies(*, grader: AbstractBaseUser) -> QuerySet[Study]:
    """The active studies a grader is assigned to."""
    return Study.objects.filter(graders=grader, is_active=True).select_related("region").order_by("name")


def assigned_study(*, study_id: int, grader: AbstractBaseUser) -> Study | None:
    """The study if the grader may grade it (assigned and active), else None."""
    return Study.objects.filter(pk=study_id, graders=grader, is_active=True).first()


def queue_of(*, study: Study, grader: AbstractBaseUser) -> GraderQueue | None:
    """The grader's queue of the study as last synced (services.queue_sync keeps it current)."""
    return GraderQueue.objects.filter(study=study, grader=grader).first()


def next_patient_id(*, queue: GraderQueue) -> int | None:
    """The next patient for this queue's grader: a repeat that is due, else the first to grade.

    A repeat (a share of the grader's patients, drawn once) comes back after
    REPEAT_GAP other patients, so the grader is unlikely to remember it; when
    nothing else is left, the remaining repeats come without waiting. Two
    index lookups, whatever the study's size.
    """
    repeats = queue.entries.filter(repeat_pending=True).order_by("shown_number")
    due = (
        repeats.filter(shown_number__lte=queue.shown - REPEAT_GAP)
        .values_list("patient_id", flat=True)
        .first()
    )
    if due is not None:
        return due
    upcoming = (
        queue.entries.filter(state=QueueEntry.State.PENDING)
        .order_by("position")
        .values_list("patient_id", flat=True)
        .first()
    )
    if upcoming is not None:
        return upcoming
    return repeats.values_list("patient_id", flat=True).first()


def queue_upcoming(*, queue: GraderQueue, limit: int) -> list[QueueEntry]:
    """The first patients still to grade, in the grader's order."""
    return list(
        queue.entries.filter(state=QueueEntry.State.PENDING)
        .select_related("patient")
        .order_by("position")[:limit]
    )


def queue_graded(*, queue: GraderQueue) -> QuerySet[QueueEntry]:
    """The patients this grader graded, in the order graded."""
    return (
        queue.entries.filter(state=QueueEntry.State.GRADED).select_related("patient").order_by("shown_number")
    )


@dataclass
class Progress:
    """A grader's progress in a study: patients graded, left, and repeat grades given."""

    graded: int
    to_grade: int
    repeats_done: int = 0
    repeat_share: float = 0.0

    @classmethod
    def of(cls, queue: GraderQueue, study: Study) -> "Progress":
        return cls(
            graded=queue.graded,
            to_grade=queue.pending,
            repeats_done=queue.repeats_done,
            repeat_share=float(study.repeat_share),
        )

    @property
    def total(self) -> int:
        return self.graded + self.to_grade

    @property
    def percent(self) -> int:
        return round(100 * self.graded / self.total) if self.total else 100

    @property
    def shown(self) -> int:
        """Patients shown so far, repeats included: the masked label counts these."""
        return self.graded + self.repeats_done

    @property
    def expected_total(self) -> int:
        """Patients the grader will be shown, repeats included, as the masked label says."""
        return self.total + max(self.repeats_done, round(self.repeat_share * self.total))


@dataclass
class FieldForm:
    field: GradeField
    options: list[GradeOption] = field(default_factory=list)


@dataclass
class GradeTypeForm:
    grade_type: GradeType
    fields: list[FieldForm] = field(default_factory=list)


def grading_forms(*, study: Study) -> list[GradeTypeForm]:
    """The study's active grade types with their fields and options, in order, in one query."""
    options = (
        GradeOption.objects.filter(field__grade_type__studies=study, field__grade_type__is_active=True)
        .select_related("field__grade_type")
        .order_by(
            "field__grade_type__name", "field__grade_type_id", "field__order", "field_id", "order", "pk"
        )
    )
    forms: dict[int, GradeTypeForm] = {}
    fields: dict[int, FieldForm] = {}
    for option in options:
        grade_field = option.field
        form = forms.setdefault(grade_field.grade_type_id, GradeTypeForm(grade_field.grade_type))
        if grade_field.pk not in fields:
            fields[grade_field.pk] = FieldForm(grade_field)
            form.fields.append(fields[grade_field.pk])
        fields[grade_field.pk].options.append(option)
    return list(forms.values())


def patient_images(*, patient: Patient, grader: AbstractBaseUser, randomized: bool) -> list[Image]:
    """The patient's photos, in an order of this grader's own when the study randomizes."""
    images = list(Image.objects.filter(patient=patient).order_by("eye", "pk"))
    if randomized:
        images.sort(key=lambda image: _seed("image", grader.pk, image.pk))
    return images


def my_current_answers(*, patient: Patient, grader: AbstractBaseUser) -> dict:
    """The grader's current grades of a patient: their kinds, regular answers and note.

    {"kinds": {kind}, "answers": {(grade_type_id, field_id): option_id}, "note": str}
    """
    entries = GradeEntry.objects.filter(
        grade__patient=patient, grade__grader=grader, grade__is_current=True
    ).select_related("grade")
    kinds = set()
    answers = {}
    note = ""
    for entry in entries:
        kinds.add(entry.grade.kind)
        if entry.grade.kind == Grade.Kind.REGULAR:
            answers[(entry.grade.grade_type_id, entry.field_id)] = entry.option_id
            note = entry.grade.note or note
    return {"kinds": kinds, "answers": answers, "note": note}


def grades_visible_to(*, user: AbstractBaseUser) -> QuerySet[Grade]:
    """All grades for those who may see them all; a grader sees only their own."""
    grades = Grade.objects.select_related("patient__study", "grade_type", "grader", "superseded_by")
    if user.is_superuser or user.has_perm("grading.view_all_grades"):
        return grades
    return grades.filter(grader=user)


def grade_type_as_dict(grade_type: GradeType) -> dict:
    """A grade type as portable JSON, to reuse the scheme in another deployment."""
    return {
        "name": grade_type.name,
        "description": grade_type.description,
        "active": grade_type.is_active,
        "fields": [
            {
                "name": f.name,
                "help_text": f.help_text,
                "order": f.order,
                "required": f.required,
                "options": [
                    {"value": o.value, "label": o.label, "order": o.order, "ungradable": o.ungradable}
                    for o in f.options.all()
                ],
            }
            for f in grade_type.fields.all()
        ],
    }


def grade_types_for_export(ids: list[int]) -> QuerySet[GradeType]:
    return GradeType.objects.filter(pk__in=ids).prefetch_related("fields__options")
