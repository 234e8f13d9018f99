"""Reads for grading: the grader's queue, progress, the grading page's data, grade types.

Every function here runs a fixed number of queries, whatever the study's size.
"""

import hashlib
import uuid
from dataclasses import dataclass, field
from datetime import datetime

from django.conf import settings
from django.contrib.auth.base_user import AbstractBaseUser
from django.core.paginator import Page, Paginator
from django.db.models import (
    Case,
    CharField,
    Count,
    F,
    IntegerField,
    OuterRef,
    QuerySet,
    Subquery,
    Value,
    When,
)
from django.db.models.functions import Cast, Coalesce, Concat

from studies.models import Image, Patient, Study

from .models import (
    Grade,
    GradeEntry,
    GradeField,
    GradeOption,
    GraderQueue,
    GradeType,
    Presentation,
    QueueEntry,
)


def answer_key(grade_type_id: int, field_id: int) -> str:
    """The form name of one field's answer on the grading page."""
    return f"answer-{grade_type_id}-{field_id}"


def _seed(*parts: object) -> int:
    digest = hashlib.sha256(":".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:8], "big")


def queue_position(*, study: Study, grader_id: int, patient_id: int) -> int:
    """Where a patient stands in a grader's queue: a random draw of the grader's own, stable.

    Without randomized order, patients come in the order they were added.
    """
    if not study.randomized_order:
        return patient_id
    return _seed("order", settings.SECRET_KEY, study.pk, grader_id, patient_id) >> 1  # a signed 64-bit column


def repeat_drawn(*, study: Study, grader_id: int, patient_id: int) -> bool:
    """Whether this patient comes back to this grader for a repeat grade (the study's share)."""
    draw = _seed("repeat", settings.SECRET_KEY, study.pk, grader_id, patient_id) % 10_000
    return draw < float(study.repeat_share) * 10_000


def grader_studies(*, grader: AbstractBaseUser) -> QuerySet[Study]:
    """The active studies a grader is assigned to."""
    return Study.objects.filter(graders=grader, is_active=True).select_related("region").order_by("name")


def assigned_study(*, study_id: int, grader: AbstractBaseUser) -> Study | None:
    """The study if the grader may grade it (assigned and active), else None."""
    return Study.objects.filter(pk=study_id, graders=grader, is_active=True).first()


# --- A patient's graders and slots ---------------------------------------------------------------------


def _regular_current(**filters) -> QuerySet[Grade]:
    return Grade.objects.filter(kind=Grade.Kind.REGULAR, is_current=True, **filters)


def patient_graders(*, patient_id: int) -> int:
    """How many graders gave the patient a current regular grade (exact under the patient's lock)."""
    return _regular_current(patient_id=patient_id).values("grader_id").distinct().count()


def patients_with_their_graders(*, study: Study) -> QuerySet:
    """Ids of the study's patients that have the graders wanted, as a subquery."""
    return (
        _regular_current(patient__study=study)
        .values("patient_id")
        .annotate(graders=Count("grader_id", distinct=True))
        .filter(graders__gte=study.graders_per_patient)
        .values("patient_id")
    )


def _open_reservations(*, now: datetime, **filters) -> QuerySet[Presentation]:
    return Presentation.objects.filter(
        kind=Presentation.Kind.FIRST, ended_at__isnull=True, reserved_until__gt=now, **filters
    )


def patient_reservations(*, patient_id: int, now: datetime, besides: int) -> int:
    """Slots of the patient held by other graders' open pages (not the queue `besides`)."""
    return _open_reservations(now=now, patient_id=patient_id).exclude(queue_id=besides).count()


# --- A grader's queue -----------------------------------------------------------------------------------


def queue_of(*, study: Study, grader: AbstractBaseUser) -> GraderQueue | None:
    """The grader's queue of the study (made when the grader was assigned)."""
    return GraderQueue.objects.filter(study=study, grader=grader).first()


def queue_counts(*, queue: GraderQueue) -> dict[str, int]:
    """The queue's entries counted by state: what its stored counts must equal."""
    return dict(queue.entries.values("state").annotate(n=Count("pk")).values_list("state", "n"))


def presentation_open(*, queue: GraderQueue) -> Presentation | None:
    """The first-grade or repeat page the grader left open in this study, if any."""
    return (
        queue.presentations.filter(
            ended_at__isnull=True, kind__in=[Presentation.Kind.FIRST, Presentation.Kind.REPEAT]
        )
        .select_related("entry")
        .order_by("-shown_at", "-pk")
        .first()
    )


def repeat_due(*, queue: GraderQueue) -> QueueEntry | None:
    """The repeat whose gap has passed, the longest due first."""
    return (
        queue.entries.filter(repeat_pending=True, repeat_due__lte=queue.presented)
        .order_by("repeat_due", "pk")
        .first()
    )


def repeat_waiting(*, queue: GraderQueue) -> QueueEntry | None:
    """The repeat that comes due first, for the end of a queue when nothing else is left."""
    return queue.entries.filter(repeat_pending=True).order_by("repeat_due", "pk").first()


def first_grade_candidates(
    *, queue: GraderQueue, now: datetime, after_position: int | None, limit: int
) -> list[QueueEntry]:
    """The next patients still to grade, in the grader's order, each with its graders and held slots.

    Annotates `graders` (current regular grades of distinct graders) and
    `reserved` (slots held by other graders' open pages).
    """
    graders = (
        _regular_current(patient_id=OuterRef("patient_id"))
        .values("patient_id")
        .annotate(n=Count("grader_id", distinct=True))
        .values("n")
    )
    reserved = (
        _open_reservations(now=now, patient_id=OuterRef("patient_id"))
        .exclude(queue_id=queue.pk)
        .values("patient_id")
        .annotate(n=Count("pk"))
        .values("n")
    )
    entries = queue.entries.filter(state=QueueEntry.State.PENDING)
    if after_position is not None:
        entries = entries.filter(position__gt=after_position)
    return list(
        entries.annotate(
            graders=Coalesce(Subquery(graders, output_field=IntegerField()), 0),
            reserved=Coalesce(Subquery(reserved, output_field=IntegerField()), 0),
        ).order_by("position")[:limit]
    )


def queue_upcoming(*, queue: GraderQueue, limit: int) -> list[QueueEntry]:
    """The first patients still to grade, in the grader's order."""
    return list(
        queue.entries.filter(state=QueueEntry.State.PENDING)
        .select_related("patient")
        .order_by("position")[:limit]
    )


def queue_graded(*, queue: GraderQueue) -> QuerySet[QueueEntry]:
    """The patients this grader graded, in the order graded (the index keeps this cheap)."""
    return (
        queue.entries.filter(state=QueueEntry.State.GRADED).select_related("patient").order_by("shown_number")
    )


def graded_entry(*, study: Study, grader: AbstractBaseUser, number: int) -> QueueEntry | None:
    """The entry of the patient the grader graded as their `number`-th, if they may grade the study."""
    return QueueEntry.objects.filter(
        queue__study=study,
        queue__grader=grader,
        queue__study__graders=grader,
        queue__study__is_active=True,
        state=QueueEntry.State.GRADED,
        shown_number=number,
    ).first()


def presentation_for(*, key: uuid.UUID, study_id: int, grader: AbstractBaseUser) -> Presentation | None:
    """A grading page by its opaque key, only for its own grader, in a study they may grade."""
    return (
        Presentation.objects.select_related("queue__study__region", "entry", "patient")
        .filter(
            key=key,
            queue__grader=grader,
            queue__study_id=study_id,
            queue__study__graders=grader,
            queue__study__is_active=True,
        )
        .first()
    )


@dataclass
class Progress:
    """A grader's progress in a study: patients graded and still to grade (repeats never counted)."""

    graded: int
    to_grade: int
    preparing: bool = False  # the grader's queue of a large study is still being built

    @classmethod
    def of(cls, queue: GraderQueue | None) -> "Progress":
        return cls(graded=queue.graded, to_grade=queue.pending) if queue else cls(0, 0, preparing=True)

    @property
    def total(self) -> int:
        return self.graded + self.to_grade

    @property
    def percent(self) -> int:
        return round(100 * self.graded / self.total) if self.total else 100


def grader_progress(*, grader: AbstractBaseUser) -> list[tuple[Study, Progress]]:
    """The grader's active studies, each with their progress, in two queries."""
    studies = list(grader_studies(grader=grader))
    queues = {q.study_id: q for q in GraderQueue.objects.filter(grader=grader, study__in=studies)}
    return [(study, Progress.of(queues.get(study.pk))) for study in studies]


@dataclass
class StudyPageRow:
    label: str
    number: int | None = None
    graded_at: datetime | None = None


@dataclass
class GraderStudyPage:
    """A grader's page of one study: progress, the next patients in their order, those graded."""

    progress: Progress
    upcoming: list[StudyPageRow]
    more_upcoming: int
    graded: Page
    graded_rows: list[StudyPageRow]


def grader_study_page(
    *, study: Study, grader: AbstractBaseUser, page_number, upcoming: int, per_page: int
) -> GraderStudyPage:
    """Reads the stored counts and two index ranges: the same few queries at any study size."""
    queue = queue_of(study=study, grader=grader)
    progress = Progress.of(queue)
    masked = study.masked_codes
    waiting = queue_upcoming(queue=queue, limit=upcoming) if queue else []
    paginator = Paginator(queue_graded(queue=queue) if queue else QueueEntry.objects.none(), per_page)
    paginator.count = progress.graded  # the stored count: no count query over the entries
    graded = paginator.get_page(page_number)
    return GraderStudyPage(
        progress=progress,
        upcoming=[
            StudyPageRow(
                label=patient_label(masked=masked, code=entry.patient.code, number=progress.graded + n)
            )
            for n, entry in enumerate(waiting, 1)
        ],
        more_upcoming=max(0, progress.to_grade - len(waiting)),
        graded=graded,
        graded_rows=[
            StudyPageRow(
                label=patient_label(masked=masked, code=entry.patient.code, number=entry.shown_number),
                number=entry.shown_number,
                graded_at=entry.graded_at,
            )
            for entry in graded.object_list
        ],
    )


# --- Masking: the one rule for the label a viewer sees for a patient -------------------------------------


def sees_patient_codes(*, viewer: AbstractBaseUser) -> bool:
    """Whether a user of the admin sees real patient codes in masked studies (not as a grader)."""
    return viewer.is_superuser or viewer.has_perm("grading.view_all_grades")


def patient_label(*, masked: bool, code: str, number: int | None, sees_codes: bool = False) -> str:
    """The label a viewer sees for a patient: the code, or "Patient #12" (their own number) when masked.

    Grading pages pass sees_codes=False whoever grades: masking is part of the grading itself.
    """
    if not masked or sees_codes:
        return code
    return f"Patient #{number}" if number else "Patient (masked)"


def patient_label_annotation(*, viewer: AbstractBaseUser, patient: str = "patient", grader: str = "grader"):
    """patient_label() as a database expression over rows with a patient and a grader (grades)."""
    code = F(f"{patient}__code")
    if sees_patient_codes(viewer=viewer):
        return code
    number = QueueEntry.objects.filter(patient=OuterRef(patient), queue__grader=OuterRef(grader)).values(
        "shown_number"
    )[:1]
    masked_label = Coalesce(
        Concat(Value("Patient #"), Cast(Subquery(number), CharField())), Value("Patient (masked)")
    )
    return Case(When(**{f"{patient}__study__masked_codes": True}, then=masked_label), default=code)


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


@dataclass
class GradingPage:
    """Everything the grading page shows for one presentation."""

    presentation: Presentation
    study: Study
    label: str
    show_code: bool
    images: list[Image]
    forms: list[GradeTypeForm]
    progress: Progress
    note: str
    regrade: bool


def grading_page(
    *,
    presentation: Presentation,
    grader: AbstractBaseUser,
    answers: dict[str, str] | None = None,
    note: str | None = None,
    errors: dict[str, list[str]] | None = None,
) -> GradingPage:
    """The grading page's data: label, photos, forms with the answers chosen so far, progress.

    A re-grade page starts from the grader's current answers; a page sent
    back with errors keeps the answers sent.
    """
    queue, patient = presentation.queue, presentation.patient
    study = queue.study
    regrade = presentation.kind == Presentation.Kind.REGRADE
    if answers is None:
        answers, note = {}, note or ""
        if regrade:
            mine = my_current_answers(patient=patient, grader=grader)
            answers = {answer_key(gt, f): str(o) for (gt, f), o in mine["answers"].items() if o}
            note = mine["note"]
    forms = grading_forms(study=study)
    for form in forms:
        for field_form in form.fields:
            field_form.key = answer_key(form.grade_type.pk, field_form.field.pk)
            field_form.chosen = answers.get(field_form.key, "")
            field_form.errors = (errors or {}).get(field_form.key, [])
    progress = Progress.of(queue)
    return GradingPage(
        presentation=presentation,
        study=study,
        label=_page_label(presentation=presentation, progress=progress),
        show_code=not study.masked_codes,
        images=patient_images(patient=patient, grader=grader, randomized=study.randomized_order),
        forms=forms,
        progress=progress,
        note=note or "",
        regrade=regrade,
    )


def _page_label(*, presentation: Presentation, progress: Progress) -> str:
    """ "Patient 17 of 240" counts patients only: a repeat reads like the next new patient."""
    study, entry = presentation.queue.study, presentation.entry
    name = patient_label(masked=study.masked_codes, code=presentation.patient.code, number=entry.shown_number)
    if presentation.kind == Presentation.Kind.REGRADE:
        return f"Re-grading {name}" if study.masked_codes else f"{name} (re-grade)"
    if not study.masked_codes:
        return f"Patient {name}"
    total = max(progress.total, 1)
    return f"Patient {min(progress.graded + 1, total)} of {total}"


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
