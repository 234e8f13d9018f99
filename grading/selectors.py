"""Reads for grading: the grader's queue, progress, the grading page's data, grade types.

Every function here runs a fixed number of queries, whatever the study's size.
"""

import hashlib
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import NamedTuple

from django.conf import settings
from django.contrib.auth.base_user import AbstractBaseUser
from django.core.paginator import Page, Paginator
from django.db.models import (
    Case,
    CharField,
    Count,
    Exists,
    F,
    IntegerField,
    Min,
    OuterRef,
    QuerySet,
    Subquery,
    Value,
    When,
)
from django.db.models.functions import Cast, Coalesce, Concat

from studies.models import Eye, Image, Patient, Study

from .models import (
    Consensus,
    Grade,
    GradeEntry,
    GradeField,
    GradeOption,
    GraderQueue,
    GradeType,
    Presentation,
    QueueEntry,
)


def answer_key(grade_type_id: int, field_id: int, eye: str = "") -> str:
    """The form name of one field's answer on the grading page (of one eye, for a per-eye type)."""
    return f"answer-{grade_type_id}-{field_id}" + (f"-{eye}" if eye else "")


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
    eye: str = ""  # the eye this form grades, for a per-eye grade type

    @property
    def title(self) -> str:
        return f"{self.grade_type.name}: {EYE_TITLES[self.eye]}" if self.eye else self.grade_type.name


EYE_ORDER = [Eye.RIGHT, Eye.LEFT, Eye.UNKNOWN]
EYE_TITLES = {Eye.RIGHT: "right eye", Eye.LEFT: "left eye", Eye.UNKNOWN: "eye not recorded"}


def grading_eyes(eyes: set[str]) -> list[str]:
    """The eyes a per-eye grade type grades, given the eyes of the patient's photos.

    Each eye photographed, right first; a patient without photos has both
    eyes to grade (ungradable, where the grade type offers it).
    """
    return [eye for eye in EYE_ORDER if eye in eyes] or [Eye.RIGHT, Eye.LEFT]


def patient_eyes(*, patient_id: int) -> set[str]:
    return set(Image.objects.filter(patient_id=patient_id).values_list("eye", flat=True).distinct())


def forms_per_eye(forms: list[GradeTypeForm], *, eyes: set[str]) -> list[GradeTypeForm]:
    """The forms a patient is graded with: a per-eye grade type once per eye to grade."""
    result = []
    for form in forms:
        if form.grade_type.unit != GradeType.Unit.EYE:
            result.append(form)
            continue
        for eye in grading_eyes(eyes):
            fields = [FieldForm(f.field, f.options) for f in form.fields]
            result.append(GradeTypeForm(form.grade_type, fields, eye=eye))
    return result


def patient_forms(*, study: Study, patient_id: int) -> list[GradeTypeForm]:
    """The study's forms for one patient, per-eye grade types expanded to the patient's eyes."""
    return forms_per_eye(grading_forms(study=study), eyes=patient_eyes(patient_id=patient_id))


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
    """The patient's photos, right eye first, in an order of this grader's own when the study randomizes."""
    images = list(Image.objects.filter(patient=patient).order_by("pk"))
    rank = {eye: number for number, eye in enumerate(EYE_ORDER)}
    images.sort(
        key=lambda image: (
            rank.get(image.eye, 9),
            _seed("image", grader.pk, image.pk) if randomized else image.pk,
        )
    )
    return images


def my_current_answers(*, patient: Patient, grader: AbstractBaseUser) -> dict:
    """The grader's current grades of a patient: their kinds, regular answers and note.

    {"kinds": {kind}, "answers": {(grade_type_id, field_id, eye): option_id}, "note": str}
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
            answers[(entry.grade.grade_type_id, entry.field_id, entry.grade.eye)] = entry.option_id
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
            answers = {answer_key(gt, f, eye): str(o) for (gt, f, eye), o in mine["answers"].items() if o}
            note = mine["note"]
    images = patient_images(patient=patient, grader=grader, randomized=study.randomized_order)
    forms = forms_per_eye(grading_forms(study=study), eyes={image.eye for image in images})
    for form in forms:
        for field_form in form.fields:
            field_form.key = answer_key(form.grade_type.pk, field_form.field.pk, form.eye)
            field_form.chosen = answers.get(field_form.key, "")
            field_form.errors = (errors or {}).get(field_form.key, [])
    progress = Progress.of(queue)
    return GradingPage(
        presentation=presentation,
        study=study,
        label=_page_label(presentation=presentation, progress=progress),
        show_code=not study.masked_codes,
        images=images,
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
        "unit": grade_type.unit,
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


# --- Adjudication: disagreements waiting for an adjudicator, and one patient's answers side by side -----


def adjudication_kind(*, study: Study) -> str:
    """What the adjudication pages enter: reference grades in a certification set, else adjudications."""
    return Grade.Kind.REFERENCE if study.is_certification else Grade.Kind.ADJUDICATION


def _waiting(**filters) -> QuerySet[Consensus]:
    """Consensus rows waiting for an adjudicator: graders wanted reached, no strict majority."""
    return Consensus.objects.filter(method=Consensus.Method.PENDING, **filters)


def _current(kind: str, **filters) -> QuerySet[Grade]:
    return Grade.objects.filter(kind=kind, is_current=True, **filters)


def adjudication_open(*, patient_id: int) -> bool:
    """Whether an adjudication of the patient may be saved: it waits for one, or has one to change."""
    return (
        _waiting(patient_id=patient_id).exists()
        or _current(Grade.Kind.ADJUDICATION, patient_id=patient_id).exists()
    )


@dataclass
class AdjudicationStudy:
    """A study on the adjudication index, with what is left to do in it."""

    study: Study
    waiting: int  # patients waiting for adjudication
    patients: int
    referenced: int  # patients with a current reference grade (certification sets)

    @property
    def without_reference(self) -> int:
        return self.patients - self.referenced

    @property
    def to_do(self) -> int:
        return self.without_reference if self.study.is_certification else self.waiting


def _patients_per_study(rows: QuerySet) -> Coalesce:
    """The number of distinct patients among rows of one study (an OuterRef to the study), as a subquery."""
    counted = rows.order_by().values("patient__study").annotate(n=Count("patient_id", distinct=True))
    return Coalesce(Subquery(counted.values("n"), output_field=IntegerField()), 0)


def adjudication_studies() -> list[AdjudicationStudy]:
    """Every study with its patients waiting for adjudication and, for certification sets, its
    patients with a reference grade; open studies first, in one query."""
    patients = Patient.objects.filter(study=OuterRef("pk")).order_by().values("study").annotate(n=Count("pk"))
    studies = (
        Study.objects.select_related("region")
        .annotate(
            waiting=_patients_per_study(_waiting(patient__study=OuterRef("pk"))),
            referenced=_patients_per_study(_current(Grade.Kind.REFERENCE, patient__study=OuterRef("pk"))),
            patient_count=Coalesce(Subquery(patients.values("n"), output_field=IntegerField()), 0),
        )
        .order_by("-is_active", "name")
    )
    return [
        AdjudicationStudy(study=s, waiting=s.waiting, patients=s.patient_count, referenced=s.referenced)
        for s in studies
    ]


def _adjudication_order(*, study: Study) -> QuerySet:
    """The study's patients in the order adjudicators take them, as dicts with "patient_id" and "code".

    Patients waiting for adjudication, longest waiting first (since the grade
    that left them without a majority); in a certification set every
    patient, those still without a reference grade first.
    """
    if study.is_certification:
        has_reference = Exists(_current(Grade.Kind.REFERENCE, patient=OuterRef("pk")))
        return (
            Patient.objects.filter(study=study)
            .annotate(patient_id=F("pk"), has_reference=has_reference)
            .order_by("has_reference", "pk")
            .values("patient_id", "code", "has_reference")
        )
    return (
        _waiting(patient__study=study)
        .values("patient_id", code=F("patient__code"))
        .annotate(waiting_since=Min("updated_at"))
        .order_by("waiting_since", "patient_id")
    )


def adjudication_next(*, study: Study) -> int | None:
    """The id of the patient an adjudicator takes next: the head of the queue, or None when it is empty."""
    order = _adjudication_order(study=study)
    if study.is_certification:
        order = order.filter(has_reference=False)
    first = order.first()
    return first["patient_id"] if first else None


@dataclass
class AdjudicationRow:
    patient_id: int
    code: str
    waiting_since: datetime | None = None
    disputed: list[str] = field(default_factory=list)  # the fields without a majority, e.g. "TF, right eye"
    has_reference: bool = False


@dataclass
class AdjudicationQueue:
    kind: str
    page: Page
    rows: list[AdjudicationRow]
    next_patient_id: int | None  # the head of the queue, whatever the page shown


def adjudication_queue(*, study: Study, page_number, per_page: int) -> AdjudicationQueue:
    """One page of the study's adjudication queue, each patient with the fields it waits on, in 4 queries."""
    page = Paginator(_adjudication_order(study=study), per_page).get_page(page_number)
    rows = [AdjudicationRow(**row) for row in page.object_list]
    if not study.is_certification:
        by_patient = {row.patient_id: row for row in rows}
        disputed = (
            _waiting(patient_id__in=list(by_patient))
            .select_related("field")
            .order_by("patient_id", "grade_type__name", "field__order", "field_id", "eye")
        )
        for row in disputed:
            eye = f", {EYE_TITLES[row.eye]}" if row.eye else ""
            by_patient[row.patient_id].disputed.append(f"{row.field.name}{eye}")
    following = adjudication_next(study=study)
    return AdjudicationQueue(
        kind=adjudication_kind(study=study), page=page, rows=rows, next_patient_id=following
    )


@dataclass
class AnswerCell:
    """One grader's answer to one field."""

    grader: str
    label: str  # the option's label; blank when the field was left blank
    disagrees: bool = False  # the graders of this field chose different options


@dataclass
class AdjudicationField:
    field: GradeField
    options: list[GradeOption]
    key: str  # the answer's form name
    answers: list[AnswerCell]  # one per grader, in the page's grader order
    consensus: Consensus | None
    disagree: bool
    chosen: str = ""  # the option id shown chosen: sent, or the current adjudication's, or the majority's
    errors: list[str] = field(default_factory=list)


@dataclass
class AdjudicationForm:
    form: GradeTypeForm
    fields: list[AdjudicationField]
    notes: list[str]  # each grader's note on this grade, in the page's grader order

    @property
    def eye_title(self) -> str:
        return EYE_TITLES.get(self.form.eye, "")


@dataclass
class AdjudicationPage:
    """Everything an adjudicator sees of one patient."""

    study: Study
    patient: Patient
    kind: str  # the kind of grade the page saves: adjudication, or reference in a certification set
    images: list[Image]
    graders: list[str]  # the graders' names, one column each (none shown in a certification set)
    forms: list[AdjudicationForm]
    open: bool  # whether it may save: an adjudication only of a patient waiting for one, or to change one
    earlier: list[tuple[str, datetime]]  # who entered the current adjudication or reference grades, when
    note: str = ""


class _KindGrade(NamedTuple):
    grader_id: int
    options: dict[int, int | None]  # field id -> option id
    note: str


@dataclass
class _PatientGrades:
    """A patient's current grades by (grade type id, eye): graders' regular answers, and the page's kind."""

    names: dict[int, str] = field(default_factory=dict)
    regular: dict[tuple, dict[int, dict[int, int | None]]] = field(default_factory=dict)  # grader -> answers
    notes: dict[tuple, dict[int, str]] = field(default_factory=dict)
    kind: dict[tuple, dict[tuple, _KindGrade]] = field(default_factory=dict)  # by (created at, grade id)

    def latest(self, where: tuple) -> _KindGrade | None:
        """The latest current grade of the page's kind: the one the consensus follows."""
        grades = self.kind.get(where)
        return grades[max(grades)] if grades else None


def _patient_grades(*, patient: Patient, kind: str, with_regular: bool) -> _PatientGrades:
    entries = GradeEntry.objects.filter(
        grade__patient=patient,
        grade__is_current=True,
        grade__kind__in=[Grade.Kind.REGULAR, kind] if with_regular else [kind],
    ).values_list(
        "grade_id", "grade__kind", "grade__grader_id", "grade__grader__first_name",
        "grade__grader__last_name", "grade__grader__username", "grade__grade_type_id", "grade__eye",
        "grade__created_at", "grade__note", "field_id", "option_id",
    )  # fmt: skip
    found = _PatientGrades()
    for grade_id, grade_kind, grader_id, first, last, username, type_id, eye, at, note, *answer in entries:
        found.names[grader_id] = f"{first} {last}".strip() or username
        field_id, option_id = answer
        if grade_kind == Grade.Kind.REGULAR:
            found.regular.setdefault((type_id, eye), {}).setdefault(grader_id, {})[field_id] = option_id
            found.notes.setdefault((type_id, eye), {})[grader_id] = note
        else:
            by_time = found.kind.setdefault((type_id, eye), {})
            by_time.setdefault((at, grade_id), _KindGrade(grader_id, {}, note)).options[field_id] = option_id
    return found


def adjudication_page(
    *,
    study: Study,
    patient: Patient,
    viewer: AbstractBaseUser,
    answers: dict[str, str] | None = None,
    note: str | None = None,
    errors: dict[str, list[str]] | None = None,
) -> AdjudicationPage:
    """One patient for an adjudicator, in 4 queries: photos, forms, current grades, consensus.

    Every grader's current answers side by side, named (adjudicators see
    through the masking), with each field's consensus. The answers start
    from the current adjudication (the latest, if two adjudicators saved
    one), else from each field's majority; a page sent back with errors
    keeps the answers sent. In a certification set the page enters
    reference grades and shows no trainee's answers: a reference must not
    lean on the grades it is to measure.
    """
    kind = adjudication_kind(study=study)
    with_graders = kind == Grade.Kind.ADJUDICATION
    images = patient_images(patient=patient, grader=viewer, randomized=False)
    forms = forms_per_eye(grading_forms(study=study), eyes={image.eye for image in images})
    grades = _patient_grades(patient=patient, kind=kind, with_regular=with_graders)
    consensus = {}
    if with_graders:
        for row in Consensus.objects.filter(patient=patient).select_related("option"):
            consensus[(row.grade_type_id, row.field_id, row.eye)] = row
    grader_ids = sorted({g for by_grader in grades.regular.values() for g in by_grader}, key=grades.names.get)
    page_forms = [
        _adjudication_form(
            form,
            grades=grades,
            grader_ids=grader_ids,
            consensus=consensus,
            answers=answers,
            errors=errors or {},
        )
        for form in forms
    ]
    mine = [g for by_time in grades.kind.values() for g in by_time.values() if g.grader_id == viewer.pk]
    waiting = any(row.method == Consensus.Method.PENDING for row in consensus.values())
    saved_at = {}  # each user's latest save of the page's kind (its forms' grades are microseconds apart)
    for by_time in grades.kind.values():
        for (at, _), grade in by_time.items():
            saved_at[grade.grader_id] = max(at, saved_at.get(grade.grader_id, at))
    return AdjudicationPage(
        study=study,
        patient=patient,
        kind=kind,
        images=images,
        graders=[grades.names[g] for g in grader_ids],
        forms=page_forms,
        open=not with_graders or waiting or bool(grades.kind),
        earlier=sorted({(grades.names[g], at) for g, at in saved_at.items()}, key=lambda entry: entry[1]),
        note=note if note is not None else (mine[0].note if mine else ""),
    )


def _adjudication_form(
    form: GradeTypeForm, *, grades: _PatientGrades, grader_ids: list[int], consensus: dict, answers, errors
) -> AdjudicationForm:
    """One form's rows: each grader's answer, the consensus and the answer shown chosen, per field."""
    where = (form.grade_type.pk, form.eye)
    regular = grades.regular.get(where, {})
    current = grades.latest(where)
    rows = []
    for item in form.fields:
        key = answer_key(form.grade_type.pk, item.field.pk, form.eye)
        labels = {option.pk: option.label for option in item.options}
        chosen = [regular.get(g, {}).get(item.field.pk) for g in grader_ids]
        disagree = len({option for option in chosen if option is not None}) > 1
        agreed = consensus.get((form.grade_type.pk, item.field.pk, form.eye))
        rows.append(
            AdjudicationField(
                field=item.field,
                options=item.options,
                key=key,
                answers=[
                    AnswerCell(grades.names[g], labels.get(option, ""), disagrees=disagree)
                    for g, option in zip(grader_ids, chosen, strict=True)
                ],
                consensus=agreed,
                disagree=disagree,
                chosen=answers.get(key, "")
                if answers is not None
                else _prefilled(item.field, current, agreed),
                errors=errors.get(key, []),
            )
        )
    notes = [grades.notes.get(where, {}).get(g, "") for g in grader_ids]
    return AdjudicationForm(form=form, fields=rows, notes=notes)


def _prefilled(grade_field: GradeField, current: _KindGrade | None, agreed: Consensus | None) -> str:
    """The option a fresh page shows chosen: the current adjudication's, else the majority's, else none."""
    if current is not None and current.options.get(grade_field.pk):
        return str(current.options[grade_field.pk])
    if agreed is not None and agreed.method == Consensus.Method.MAJORITY and agreed.option_id:
        return str(agreed.option_id)
    return ""
