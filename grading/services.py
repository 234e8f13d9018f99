"""Writes for grading: queues, presentations, grades, and grade types from portable JSON.

Each function validates, runs in one transaction and raises ValidationError
with a message a person can act on.

Lock order. Every transaction that writes grading rows takes its locks in
this order, so no two of them wait on each other (PostgreSQL would end one
with "deadlock detected"):

1. patient rows, by id: all grades and queue entries of a patient are
   written under its lock, so counting a patient's graders is exact;
2. grader queue rows, by id;
3. the queue entries, presentations and grades of the locked patients.

A grader's save writes only that grader's own rows. Taking a patient that
has its graders out of the other graders' queues is a separate short step
after the save commits (queue_close), which `next` repeats if it was missed.
"""

import logging
import random
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TypeVar

from django.conf import settings
from django.contrib.auth.base_user import AbstractBaseUser
from django.core.exceptions import ValidationError
from django.db import OperationalError, connection, transaction
from django.db.models import Exists, F, OuterRef
from django.utils import timezone

from studies.models import Patient, Study

from . import consensus, selectors
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
from .selectors import answer_key

logger = logging.getLogger(__name__)

MAX_SECONDS = 4 * 3600  # a page left open overnight does not count as grading time
CANDIDATES_PER_LOOK = 20  # patients `next` weighs at a time for a free slot
_draw = random.SystemRandom()  # repeat gaps nobody can predict

T = TypeVar("T")


def reservation_time() -> timedelta:
    return timedelta(minutes=settings.GRADING_RESERVATION_MINUTES)


# --- Locks --------------------------------------------------------------------------------------------


def _patient_locked(patient_id: int) -> Patient:
    return (
        Patient.objects.select_for_update(no_key=True, of=("self",))
        .select_related("study")
        .get(pk=patient_id)
    )


def _patients_locked(patient_ids) -> None:
    list(
        Patient.objects.select_for_update(no_key=True).filter(pk__in=patient_ids).order_by("pk").values("pk")
    )


def _queues_locked(queue_ids) -> dict[int, GraderQueue]:
    queues = GraderQueue.objects.select_for_update(no_key=True).filter(pk__in=queue_ids).order_by("pk")
    return {queue.pk: queue for queue in queues}


def _is_conflict(error: OperationalError) -> bool:
    """A PostgreSQL deadlock or serialization failure: the transaction may simply be run again."""
    return getattr(error.__cause__, "pgcode", None) in ("40P01", "40001")


def _retried_once_on_conflict(work: Callable[[], T]) -> T:
    """Run a transaction, and once more if the database ended it for a conflict (a safety net)."""
    try:
        return work()
    except OperationalError as error:
        if not _is_conflict(error) or connection.in_atomic_block:
            raise
        logger.warning("Grading transaction ran again after a database conflict: %s", error)
        return work()


# --- Queues: built when graders are assigned and patients added, never in a grader's request ------------


def queue_build(*, study: Study, grader: AbstractBaseUser) -> GraderQueue:
    """The grader's queue of the study, with an entry for every patient (adds those missing).

    Patients the grader graded are graded in it, patients that have their
    graders are closed, the others wait at the grader's own random position.
    Runs where graders are assigned (and in repairs), not in a grader's request.
    """
    with transaction.atomic():
        queue, _ = GraderQueue.objects.get_or_create(study=study, grader=grader)
        queue = _queues_locked([queue.pk])[queue.pk]
        missing = (
            Patient.objects.filter(study=study)
            .exclude(Exists(QueueEntry.objects.filter(queue=queue, patient=OuterRef("pk"))))
            .order_by("pk")
            .values_list("pk", flat=True)
        )
        mine = dict(  # when the grader first graded each patient
            Grade.objects.filter(patient__study=study, grader=grader, kind=Grade.Kind.REGULAR)
            .order_by("-created_at", "-pk")
            .values_list("patient_id", "created_at")
        )
        full = set(selectors.patients_with_their_graders(study=study).values_list("patient_id", flat=True))
        rows, graded = [], []
        for patient_id in missing.iterator(chunk_size=5000):
            row = _EntryRow(*_entry_draw(study=study, grader_id=grader.pk, patient_id=patient_id))
            if patient_id in mine:
                row.state, row.graded_at = QueueEntry.State.GRADED, mine[patient_id]
                graded.append(row)
            elif patient_id in full:
                row.state = QueueEntry.State.CLOSED
            else:
                queue.pending += 1
            rows.append(row)
        for row in sorted(graded, key=lambda r: r.graded_at):  # numbered in the order graded
            queue.graded += 1
            row.shown_number = queue.graded
        _entries_insert(queue_id=queue.pk, rows=rows)
        queue.save(update_fields=["pending", "graded"])
    return queue


@dataclass
class _EntryRow:
    patient_id: int
    position: int
    repeat_chosen: bool
    state: str = QueueEntry.State.PENDING
    shown_number: int | None = None
    graded_at: datetime | None = None


def _entry_draw(*, study: Study, grader_id: int, patient_id: int) -> tuple[int, int, bool]:
    """A new entry's patient, position and repeat draw."""
    key = {"study": study, "grader_id": grader_id, "patient_id": patient_id}
    return patient_id, selectors.queue_position(**key), selectors.repeat_drawn(**key)


def _entries_insert(*, queue_id: int, rows: list[_EntryRow]) -> None:
    """Insert queue entries as plain rows: the ORM's per-object cost made 100,000 take 15 s, not 1 s."""
    if not rows:
        return
    table = connection.ops.quote_name(QueueEntry._meta.db_table)
    columns = "queue_id, patient_id, position, state, repeat_chosen, repeat_pending, shown_number, graded_at"
    adapt = connection.ops.adapt_datetimefield_value
    values = [
        (
            queue_id,
            r.patient_id,
            r.position,
            r.state,
            r.repeat_chosen,
            False,
            r.shown_number,
            adapt(r.graded_at),
        )
        for r in rows
    ]
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            from psycopg2.extras import execute_values

            # The table is the model's own db_table and the columns a constant; the values are bound.
            sql = f"INSERT INTO {table} ({columns}) VALUES %s"  # nosec B608 # see the line above
            execute_values(cursor.cursor, sql, values, page_size=5000)
        else:
            placeholders = ", ".join(["%s"] * 8)
            sql = f"INSERT INTO {table} ({columns}) VALUES ({placeholders})"  # nosec B608 # as above
            cursor.executemany(sql, values)


def queue_entries_add(*, study: Study, patient_ids: Iterable[int]) -> None:
    """Put new patients into every queue of their study, inside the transaction that made them."""
    patient_ids = sorted(set(patient_ids))
    if not patient_ids:
        return
    with transaction.atomic():
        queues = _queues_locked(GraderQueue.objects.filter(study=study).values("pk"))
        for start in range(0, len(patient_ids), 5000):
            chunk = patient_ids[start : start + 5000]
            present = set(
                QueueEntry.objects.filter(queue__in=list(queues), patient_id__in=chunk).values_list(
                    "queue_id", "patient_id"
                )
            )
            for queue in queues.values():
                rows = [
                    _EntryRow(*_entry_draw(study=study, grader_id=queue.grader_id, patient_id=patient_id))
                    for patient_id in chunk
                    if (queue.pk, patient_id) not in present
                ]
                _entries_insert(queue_id=queue.pk, rows=rows)
                queue.pending += len(rows)
        for queue in queues.values():
            queue.save(update_fields=["pending"])


def queue_patient_removed(*, patient: Patient) -> None:
    """Before a patient (one with no grades) is deleted: its queue entries go, and so do their counts."""
    with transaction.atomic():
        _patient_locked(patient.pk)
        waiting = QueueEntry.objects.filter(patient=patient, state=QueueEntry.State.PENDING)
        queues = _queues_locked(waiting.values("queue_id"))
        GraderQueue.objects.filter(pk__in=list(queues)).update(pending=F("pending") - 1)


def patients_delete(*, patients) -> int:
    """Delete patients (none with grades: the database refuses those), their patient rows locked first."""
    with transaction.atomic():
        _patients_locked(patients.values("pk"))
        deleted, _ = patients.delete()
    return deleted


def queue_close(*, patient_id: int) -> int:
    """Take a patient that has its graders out of the queues still waiting for it; how many it left.

    The short step after the save that completed the patient, in a
    transaction of its own; `next` runs it again for a patient it finds full.
    """
    with transaction.atomic():
        patient = _patient_locked(patient_id)
        if selectors.patient_graders(patient_id=patient_id) < patient.study.graders_per_patient:
            return 0
        waiting = dict(
            QueueEntry.objects.filter(patient_id=patient_id, state=QueueEntry.State.PENDING).values_list(
                "pk", "queue_id"
            )
        )
        if not waiting:
            return 0
        queues = _queues_locked(waiting.values())
        QueueEntry.objects.filter(pk__in=list(waiting)).update(state=QueueEntry.State.CLOSED)
        GraderQueue.objects.filter(pk__in=list(queues)).update(pending=F("pending") - 1)
        return len(waiting)


def queues_refresh(*, study: Study) -> None:
    """Bring every grader's queue in line with the study's rules after they changed.

    Patients open or close as "graders wanted" moved; positions follow the
    randomized-order rule; the repeat draw follows the repeat share (repeats
    already given stay); the counts are counted again.
    """
    with transaction.atomic():
        _patients_locked(Patient.objects.filter(study=study).values("pk"))
        queues = _queues_locked(GraderQueue.objects.filter(study=study).values("pk"))
        full = selectors.patients_with_their_graders(study=study)
        entries = QueueEntry.objects.filter(queue__in=list(queues))
        entries.filter(state=QueueEntry.State.PENDING, patient__in=full).update(state=QueueEntry.State.CLOSED)
        entries.filter(state=QueueEntry.State.CLOSED).exclude(patient__in=full).update(
            state=QueueEntry.State.PENDING
        )
        repeated = set(
            Grade.objects.filter(patient__study=study, kind=Grade.Kind.REPEAT).values_list(
                "patient_id", "grader_id"
            )
        )
        for queue in queues.values():
            _queue_redraw(queue=queue, study=study, repeated=repeated)
            counts = selectors.queue_counts(queue=queue)
            queue.pending = counts.get(QueueEntry.State.PENDING, 0)
            queue.graded = counts.get(QueueEntry.State.GRADED, 0)
            queue.save(update_fields=["pending", "graded"])


def _queue_redraw(*, queue: GraderQueue, study: Study, repeated: set) -> None:
    changed = []
    fields = ["pk", "patient_id", "position", "repeat_chosen", "repeat_pending", "repeat_due", "state"]
    for entry in queue.entries.only(*fields).iterator(chunk_size=5000):
        key = {"study": study, "grader_id": queue.grader_id, "patient_id": entry.patient_id}
        entry.position = selectors.queue_position(**key)
        entry.repeat_chosen = selectors.repeat_drawn(**key)
        was_pending = entry.repeat_pending
        entry.repeat_pending = (
            entry.repeat_chosen
            and entry.state == QueueEntry.State.GRADED
            and (entry.patient_id, queue.grader_id) not in repeated
        )
        if entry.repeat_pending and not was_pending:
            entry.repeat_due = queue.presented + _repeat_gap(study=study, upper=3 * study.repeat_gap_min)
        changed.append(entry)
    QueueEntry.objects.bulk_update(
        changed, ["position", "repeat_chosen", "repeat_pending", "repeat_due"], batch_size=2000
    )


# --- Presentations: what `next` shows, with a reserved slot ---------------------------------------------


def presentation_next(*, study: Study, grader: AbstractBaseUser) -> Presentation | None:
    """The grader's next grading page, or None when nothing is left for them now.

    In order: the page they left open (while the patient still wants them);
    a repeat that is due, unless the last page was a repeat and new patients
    remain; the first patient, in the grader's order, with a free slot (one
    slot is reserved for them); a repeat still waiting once no new patient
    is left. A patient found to have its graders is closed on the way.
    """
    queue = selectors.queue_of(study=study, grader=grader)
    if queue is None:  # a large study's queue is still being built in the background
        return None
    now = timezone.now()
    left_open = selectors.presentation_open(queue=queue)
    if left_open is not None and _still_wanted(left_open, study=study, now=now):
        return left_open
    due = selectors.repeat_due(queue=queue)
    if due is not None and (not queue.last_was_repeat or queue.pending == 0):
        return _presentation_make(entry=due, kind=Presentation.Kind.REPEAT)
    first = _first_grade_reserved(queue=queue, study=study, now=now)
    if first is not None:
        return first
    if due is None and queue.pending == 0:
        due = selectors.repeat_waiting(queue=queue)  # the end of the queue: repeats do not wait further
    return None if due is None else _presentation_make(entry=due, kind=Presentation.Kind.REPEAT)


def _still_wanted(presentation: Presentation, *, study: Study, now: datetime) -> bool:
    """Whether a page left open is still worth grading; renews its reservation if so, ends it if not."""
    entry = presentation.entry
    if presentation.kind == Presentation.Kind.REPEAT:
        if entry.repeat_pending:
            return True
        presentation_end(presentation=presentation, outcome=Presentation.Outcome.WITHDRAWN)
        return False
    graders = selectors.patient_graders(patient_id=presentation.patient_id)
    if entry.state == QueueEntry.State.GRADED or graders >= study.graders_per_patient:
        presentation_end(presentation=presentation, outcome=Presentation.Outcome.WITHDRAWN)
        queue_close(patient_id=presentation.patient_id)
        return False
    if presentation.reserved_until is None or presentation.reserved_until <= now:
        # The hold ran out while the page was away: others may have taken the free slots since.
        held = selectors.patient_reservations(
            patient_id=presentation.patient_id, now=now, besides=entry.queue_id
        )
        if graders + held >= study.graders_per_patient:
            presentation_end(presentation=presentation, outcome=Presentation.Outcome.WITHDRAWN)
            return False
    presentation_keep(presentation=presentation, now=now, revive=True)
    return True


def _first_grade_reserved(*, queue: GraderQueue, study: Study, now: datetime) -> Presentation | None:
    after = None
    for _ in range(50):  # bounded: only patients reserved by others are passed over
        candidates = selectors.first_grade_candidates(
            queue=queue, now=now, after_position=after, limit=CANDIDATES_PER_LOOK
        )
        for entry in candidates:
            if entry.graders >= study.graders_per_patient:
                queue_close(patient_id=entry.patient_id)  # missed after the save that completed it
            elif entry.graders + entry.reserved < study.graders_per_patient:
                presentation = _reserve(entry=entry, study=study, now=now)
                if presentation is not None:
                    return presentation
        if len(candidates) < CANDIDATES_PER_LOOK:
            return None
        after = candidates[-1].position
    return None


def _reserve(*, entry: QueueEntry, study: Study, now: datetime) -> Presentation | None:
    """A first-grade page for the entry's patient holding one of its slots, if one is still free."""
    with transaction.atomic():
        _patient_locked(entry.patient_id)
        graders = selectors.patient_graders(patient_id=entry.patient_id)
        reserved = selectors.patient_reservations(
            patient_id=entry.patient_id, now=now, besides=entry.queue_id
        )
        if graders + reserved >= study.graders_per_patient:
            return None
        return Presentation.objects.create(
            queue_id=entry.queue_id,
            entry=entry,
            patient_id=entry.patient_id,
            kind=Presentation.Kind.FIRST,
            shown_at=now,
            reserved_until=now + reservation_time(),
        )


def _presentation_make(*, entry: QueueEntry, kind: str) -> Presentation:
    return Presentation.objects.create(
        queue_id=entry.queue_id, entry=entry, patient_id=entry.patient_id, kind=kind
    )


def presentation_regrade(*, study: Study, grader: AbstractBaseUser, number: int) -> Presentation:
    """A re-grade page for the patient the grader graded as number `number` (their own numbering)."""
    entry = selectors.graded_entry(study=study, grader=grader, number=number)
    if entry is None:
        raise ValidationError("You have not graded a patient with this number in this study.", code="no_such")
    open_regrade = entry.presentations.filter(kind=Presentation.Kind.REGRADE, ended_at__isnull=True).first()
    return open_regrade or _presentation_make(entry=entry, kind=Presentation.Kind.REGRADE)


def presentation_keep(
    *, presentation: Presentation, now: datetime | None = None, revive: bool = False
) -> bool:
    """Renew an open first-grade page's hold on its slot (the page asks while it stays open).

    A hold that already ran out is not renewed (others may hold the slot now)
    unless `revive`, for a caller that checked the slot is still free.
    """
    now = now or timezone.now()
    pages = Presentation.objects.filter(
        pk=presentation.pk, kind=Presentation.Kind.FIRST, ended_at__isnull=True
    )
    if not revive:
        pages = pages.filter(reserved_until__gt=now)
    return bool(pages.update(reserved_until=now + reservation_time()))


def presentations_withdraw(*, queues) -> None:
    """End the open pages of these queues (their graders left the study), freeing the slots they held."""
    Presentation.objects.filter(queue__in=queues, ended_at__isnull=True).update(
        ended_at=timezone.now(), outcome=Presentation.Outcome.WITHDRAWN
    )


def presentation_end(*, presentation: Presentation, outcome: str) -> None:
    Presentation.objects.filter(pk=presentation.pk, ended_at__isnull=True).update(
        ended_at=timezone.now(), outcome=outcome
    )


# --- Grades -----------------------------------------------------------------------------------------------


def _answers_checked(forms: list[selectors.GradeTypeForm], answers: Mapping[str, str]) -> dict:
    """Each answer's option, by answer key; refuses unknown fields, foreign options, missing answers."""
    known = {
        answer_key(form.grade_type.pk, f.field.pk, form.eye): (f, form) for form in forms for f in form.fields
    }
    errors: dict[str, list[str]] = {}
    for key in answers:
        if key not in known:
            errors.setdefault("__all__", []).append(
                f"The answer {key!r} is not a field of this study's grade types; reload the page."
            )
    chosen: dict[str, GradeOption | None] = {}
    for key, (field_form, form) in known.items():
        name = field_form.field.name + (f" ({selectors.EYE_TITLES[form.eye]})" if form.eye else "")
        value = str(answers.get(key, "") or "").strip()
        options = {str(option.pk): option for option in field_form.options}
        if not value:
            if field_form.field.required:
                errors.setdefault(key, []).append(f"{name} is required.")
            chosen[key] = None
        elif value not in options:
            errors.setdefault(key, []).append(
                f"That choice is not an option of {name}; choose one of "
                + ", ".join(o.label for o in field_form.options)
                + "."
            )
        else:
            chosen[key] = options[value]
    if errors:
        raise ValidationError(errors)
    return chosen


@dataclass
class _Save:
    grades: list[Grade]
    completes_patient: bool = False


def grade_submit(
    *, presentation: Presentation, grader: AbstractBaseUser, answers: Mapping[str, str], note: str = ""
) -> list[Grade]:
    """Save one grade per grade type of the study (per eye, for a per-eye type) from a grading page.

    All grades with all their entries, atomically, with the patient's
    consensus. `answers` maps answer_key(grade type, field, eye) to an option id. The page
    says what is saved: a first grade (regular), a repeat, or a re-grade
    that supersedes the grader's current regular grade. Submitting the
    same page again with the same answers returns the grades saved the
    first time. Refused, with nothing saved: someone else's page, a study
    the grader is not assigned to or that is closed, an unknown field or
    grade type, an option of another field, a missing required field; a
    page already saved with other answers (code "already_saved"); a first
    grade for a patient that already has its graders (code "patient_full").
    """
    study = presentation.queue.study
    if presentation.queue.grader_id != grader.pk:
        raise ValidationError("This grading page belongs to another grader.", code="not_yours")
    if not selectors.assigned_study(study_id=study.pk, grader=grader):
        raise ValidationError("You are not assigned to grade this study.", code="not_assigned")
    forms = selectors.patient_forms(study=study, patient_id=presentation.patient_id)
    if not forms:
        raise ValidationError("This study has no grade type to grade with yet.", code="no_grade_type")
    chosen = _answers_checked(forms, answers)
    try:
        saved = _retried_once_on_conflict(
            lambda: _grades_save(
                presentation=presentation, study=study, grader=grader, forms=forms, chosen=chosen, note=note
            )
        )
    except ValidationError as error:
        if getattr(error, "code", None) == "patient_full":
            presentation_end(presentation=presentation, outcome=Presentation.Outcome.REFUSED)
            queue_close(patient_id=presentation.patient_id)
        raise
    if saved.completes_patient:
        queue_close(patient_id=presentation.patient_id)
    return saved.grades


def _grades_save(*, presentation, study, grader, forms, chosen, note) -> _Save:
    with transaction.atomic():
        _patient_locked(presentation.patient_id)
        queue = _queues_locked([presentation.queue_id])[presentation.queue_id]
        page = Presentation.objects.select_related("entry").get(pk=presentation.pk)
        if page.ended_at is not None:
            return _Save(_grades_saved_before(page=page, grader=grader, chosen=chosen, note=note))
        kind = _grade_kind(page)
        graders = selectors.patient_graders(patient_id=page.patient_id)
        first = page.kind == Presentation.Kind.FIRST
        if first and graders >= study.graders_per_patient:
            raise ValidationError(
                f"This patient already has its {study.graders_per_patient} grader(s), so your answers "
                "were not saved. Here is your next patient.",
                code="patient_full",
            )
        now = timezone.now()
        seconds = max(0, min(int((now - page.shown_at).total_seconds()), MAX_SECONDS))
        grades = [
            _grade_write(
                patient_id=page.patient_id,
                grader=grader,
                form=form,
                chosen=chosen,
                kind=kind,
                submission=page.key,
                supersedes=page.kind != Presentation.Kind.FIRST,
                seconds=seconds,
                note=note,
            )
            for form in forms
        ]
        _queue_record(queue=queue, entry=page.entry, kind=kind, study=study, now=now)
        if kind == Grade.Kind.REGULAR:
            consensus.patients_refresh(patient_ids=[page.patient_id])
        Presentation.objects.filter(pk=page.pk).update(ended_at=now, outcome=Presentation.Outcome.SAVED)
        return _Save(grades, completes_patient=first and graders + 1 >= study.graders_per_patient)


def _grade_kind(page: Presentation) -> str:
    """What a page saves: a repeat page a repeat grade; a first or re-grade page a regular grade."""
    graded = page.entry.state == QueueEntry.State.GRADED
    if page.kind == Presentation.Kind.REPEAT:
        return Grade.Kind.REPEAT
    if page.kind == Presentation.Kind.FIRST and graded:
        raise ValidationError(
            "You have already graded this patient on another page; re-grade it from the study page.",
            code="already_graded",
        )
    if page.kind == Presentation.Kind.REGRADE and not graded:
        raise ValidationError("You have not graded this patient yet.", code="not_graded")
    return Grade.Kind.REGULAR


def _grade_write(
    *, patient_id, grader, form, chosen, kind, submission, supersedes, seconds=0, note=""
) -> Grade:
    """One grade of one form with its entries; with `supersedes`, it supersedes the grader's current grade
    of that grade type, eye and kind, which stays as history."""
    previous = (
        Grade.objects.filter(
            patient_id=patient_id,
            grade_type=form.grade_type,
            eye=form.eye,
            grader=grader,
            kind=kind,
            is_current=True,
        ).first()
        if supersedes
        else None
    )
    if previous is not None:  # first out of the way of the one-current-grade constraint
        previous.is_current = False
        previous.save(update_fields=["is_current"])
    grade = Grade.objects.create(
        patient_id=patient_id,
        grade_type=form.grade_type,
        eye=form.eye,
        grader=grader,
        kind=kind,
        seconds_spent=seconds,
        note=note.strip(),
        submission=submission,
    )
    if previous is not None:
        previous.superseded_by = grade
        previous.save(update_fields=["superseded_by"])
    GradeEntry.objects.bulk_create(
        GradeEntry(
            grade=grade, field=f.field, option=chosen[answer_key(form.grade_type.pk, f.field.pk, form.eye)]
        )
        for f in form.fields
    )
    return grade


def _same_answers(grades: list[Grade], *, chosen: dict, note: str) -> bool:
    """Whether grades already saved hold exactly these answers and note (a page sent again)."""
    saved = {
        answer_key(g.grade_type_id, e.field_id, g.eye): e.option_id for g in grades for e in g.entries.all()
    }
    sent = {key: option.pk if option else None for key, option in chosen.items()}
    return saved == sent and all(g.note == note.strip() for g in grades)


def _grades_saved_before(*, page: Presentation, grader, chosen: dict, note: str) -> list[Grade]:
    """A page sent again: the same answers get the grades saved the first time; others are refused."""
    if page.outcome != Presentation.Outcome.SAVED:  # refused or withdrawn: the patient had its graders
        raise ValidationError(
            "This patient already has its graders, so your answers were not saved. "
            "Here is your next patient.",
            code="patient_full",
        )
    grades = list(
        Grade.objects.filter(grader=grader, submission=page.key).order_by("pk").prefetch_related("entries")
    )
    if not _same_answers(grades, chosen=chosen, note=note):
        raise ValidationError(
            "This page was already saved"
            + (f" at {timezone.localtime(page.ended_at):%H:%M}" if page.ended_at else "")
            + " with other answers, so these were not saved. To change your answers, re-grade this patient.",
            code="already_saved",
        )
    return grades


def _queue_record(*, queue: GraderQueue, entry: QueueEntry, kind: str, study: Study, now: datetime) -> None:
    """Move the patient along the grader's own queue after a grade (the grader's rows only)."""
    if kind == Grade.Kind.REPEAT:
        if entry.repeat_pending:
            entry.repeat_pending = False
            queue.repeats_done += 1
        queue.last_was_repeat = True
    elif entry.state != QueueEntry.State.GRADED:  # a first grade; a re-grade keeps its place
        if entry.state == QueueEntry.State.PENDING:
            queue.pending -= 1
        queue.graded += 1
        queue.last_was_repeat = False
        entry.state, entry.shown_number, entry.graded_at = QueueEntry.State.GRADED, queue.graded, now
        _repeat_schedule(entry=entry, queue=queue, study=study)
    else:
        return
    entry.save(update_fields=["state", "shown_number", "graded_at", "repeat_pending", "repeat_due"])
    queue.save(update_fields=["pending", "graded", "repeats_done", "last_was_repeat"])


def _repeat_schedule(*, entry: QueueEntry, queue: GraderQueue, study: Study) -> None:
    """A patient drawn for a repeat comes back after a random gap of at least the study's minimum.

    The gap ends while new patients remain, at least one for each repeat
    still waiting, so repeats mix with new patients instead of piling up at
    the end; a patient too near the end for that is not repeated.
    """
    if not entry.repeat_chosen:
        return
    room = queue.pending - queue.entries.filter(repeat_pending=True).count()
    if room < study.repeat_gap_min:
        return
    entry.repeat_pending = True
    entry.repeat_due = queue.presented + _repeat_gap(study=study, upper=room)


def _repeat_gap(*, study: Study, upper: int) -> int:
    least = study.repeat_gap_min
    return _draw.randint(least, max(least, min(upper, 3 * least)))


def _order(value: object, *, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 32767:
        raise ValidationError(f"{where}: the order must be a whole number from 0 to 32767.")
    return value


@transaction.atomic
def grade_types_import(*, data: object) -> list[GradeType]:
    """Create grade types from the JSON that grade_type_as_dict makes (one object or a list).

    Refuses the whole file if any grade type is malformed or its name is taken.
    """
    items = data if isinstance(data, list) else [data]
    created = []
    for number, item in enumerate(items, start=1):
        where = f"Grade type {number}"
        if not isinstance(item, dict) or not str(item.get("name", "")).strip():
            raise ValidationError(f"{where}: needs a name.")
        name = str(item["name"]).strip()
        where = f"Grade type {name!r}"
        if GradeType.objects.filter(name=name).exists():
            raise ValidationError(
                f"{where} already exists; rename it in the file or delete the existing one."
            )
        fields = item.get("fields")
        if not isinstance(fields, list) or not fields:
            raise ValidationError(f"{where}: needs a list of fields.")
        unit = str(item.get("unit", GradeType.Unit.PATIENT))
        if unit not in GradeType.Unit.values:
            raise ValidationError(f"{where}: the unit must be one of {', '.join(GradeType.Unit.values)}.")
        grade_type = GradeType.objects.create(
            name=name,
            description=str(item.get("description", "")),
            unit=unit,
            is_active=bool(item.get("active", True)),
        )
        seen_fields = set()
        for order, spec in enumerate(fields):
            if not isinstance(spec, dict) or not str(spec.get("name", "")).strip():
                raise ValidationError(f"{where}: field {order + 1} needs a name.")
            field_name = str(spec["name"]).strip()
            if field_name in seen_fields:
                raise ValidationError(f"{where}: the field {field_name!r} appears twice.")
            seen_fields.add(field_name)
            options = spec.get("options")
            if not isinstance(options, list) or not options:
                raise ValidationError(f"{where}: the field {field_name!r} needs at least one option.")
            grade_field = GradeField.objects.create(
                grade_type=grade_type,
                name=field_name,
                help_text=str(spec.get("help_text", "")),
                order=_order(spec.get("order", order), where=f"{where}, field {field_name!r}"),
                required=bool(spec.get("required", True)),
            )
            values = set()
            for option_order, option in enumerate(options):
                if not isinstance(option, dict) or not str(option.get("value", "")).strip():
                    raise ValidationError(f"{where}: an option of {field_name!r} needs a value.")
                value = str(option["value"]).strip()
                if value in values:
                    raise ValidationError(f"{where}: the option {value!r} appears twice in {field_name!r}.")
                values.add(value)
                GradeOption.objects.create(
                    field=grade_field,
                    value=value,
                    label=str(option.get("label") or value),
                    order=_order(option.get("order", option_order), where=f"{where}, option {value!r}"),
                    ungradable=bool(option.get("ungradable", False)),
                )
        created.append(grade_type)
    return created


@transaction.atomic
def grade_field_options_set(*, grade_field: GradeField, options: list[dict]) -> None:
    """Make the field's options exactly `options` (in order), keeping those already used in grades.

    Refuses to remove an option that grades have chosen: history would lose its meaning.
    """
    existing = {option.value: option for option in grade_field.options.all()}
    wanted = {spec["value"] for spec in options}
    removed = [option for value, option in existing.items() if value not in wanted]
    used = [option.value for option in removed if option.entries.exists()]
    if used:
        raise ValidationError(
            f"{grade_field.name}: the option(s) {', '.join(used)} are used in grades and cannot be removed."
        )
    for option in removed:
        option.delete()
    for order, spec in enumerate(options):
        option = existing.get(spec["value"]) or GradeOption(field=grade_field, value=spec["value"])
        option.label = spec["label"]
        option.ungradable = spec["ungradable"]
        option.order = order
        option.save()


@transaction.atomic
def study_grade_types_set(*, study: Study, grade_types) -> None:
    """Grade the study with these grade types; one that already has grades in it stays."""
    chosen = set(grade_types)
    for grade_type in set(study.grade_types.all()) - chosen:
        if Grade.objects.filter(patient__study=study, grade_type=grade_type).exists():
            raise ValidationError(
                f"{grade_type.name} already has grades in this study and cannot be removed."
            )
    study.grade_types.set(chosen)


# --- Adjudication ---------------------------------------------------------------------------------------


def adjudication_submit(
    *,
    study: Study,
    patient: Patient,
    adjudicator: AbstractBaseUser,
    answers: Mapping[str, str],
    submission: str,
    kind: str = Grade.Kind.ADJUDICATION,
    note: str = "",
) -> list[Grade]:
    """Save an adjudicator's grades of a patient: one per form of the study (per eye for a per-eye type).

    `kind` is what the study takes (selectors.adjudication_kind): an
    adjudication, which settles the patient's consensus on every field of
    its grade type and eye, or in a certification set a reference grade,
    which leaves the consensus alone. Each grade supersedes the user's own
    current grade of that kind; the patient's lock is held throughout.
    `submission` is the page's one-time key: the same page sent again with
    the same answers returns the grades saved the first time. Refused, with
    nothing saved: a user without grading.adjudicate_grade ("not_allowed"),
    a patient of another study ("other_study"), a kind the study does not
    take ("wrong_kind"), a missing or damaged key ("bad_submission"), an
    adjudication of a patient that neither waits for one nor has one
    ("not_disputed"), the answers _answers_checked refuses, and a key
    already used with other answers ("already_saved").
    """
    if not adjudicator.has_perm("grading.adjudicate_grade"):
        raise ValidationError("Only adjudicators may adjudicate grades.", code="not_allowed")
    if patient.study_id != study.pk:
        raise ValidationError("This patient belongs to another study.", code="other_study")
    if kind != selectors.adjudication_kind(study=study):
        raise ValidationError(
            "A certification set takes reference grades, and other studies adjudications.", code="wrong_kind"
        )
    key = _submission_key(submission)
    forms = selectors.patient_forms(study=study, patient_id=patient.pk)
    if not forms:
        raise ValidationError("This study has no grade type to grade with yet.", code="no_grade_type")
    chosen = _answers_checked(forms, answers)
    return _retried_once_on_conflict(
        lambda: _adjudication_save(
            patient_id=patient.pk,
            adjudicator=adjudicator,
            forms=forms,
            chosen=chosen,
            kind=kind,
            key=key,
            note=note,
        )
    )


def _submission_key(value: str):
    """The page's one-time key as a UUID; refuses a missing or damaged one."""
    try:
        key = Grade._meta.get_field("submission").to_python(value)
    except ValidationError:
        key = None
    if key is None:
        raise ValidationError("This page's form is incomplete; reload the page.", code="bad_submission")
    return key


def _adjudication_save(*, patient_id, adjudicator, forms, chosen, kind, key, note) -> list[Grade]:
    with transaction.atomic():
        _patient_locked(patient_id)
        before = list(Grade.objects.filter(grader=adjudicator, submission=key).prefetch_related("entries"))
        if before:
            return _adjudication_saved_before(before, patient_id=patient_id, chosen=chosen, note=note)
        if kind == Grade.Kind.ADJUDICATION and not selectors.adjudication_open(patient_id=patient_id):
            raise ValidationError(
                "This patient is not waiting for adjudication: its graders agree, or it still waits for "
                "graders. Nothing was saved.",
                code="not_disputed",
            )
        grades = [
            _grade_write(
                patient_id=patient_id,
                grader=adjudicator,
                form=form,
                chosen=chosen,
                kind=kind,
                submission=key,
                supersedes=True,
                note=note,
            )  # fmt: skip
            for form in forms
        ]
        if kind == Grade.Kind.ADJUDICATION:
            consensus.patients_refresh(patient_ids=[patient_id])
        return grades


def _adjudication_saved_before(
    grades: list[Grade], *, patient_id: int, chosen: dict, note: str
) -> list[Grade]:
    """A page sent again: the same answers get the grades saved the first time; others are refused."""
    if not (
        all(g.patient_id == patient_id for g in grades) and _same_answers(grades, chosen=chosen, note=note)
    ):
        raise ValidationError(
            f"This page was already saved at {timezone.localtime(grades[0].created_at):%H:%M} with other "
            "answers, so these were not saved. Save them again to change the adjudication.",
            code="already_saved",
        )
    return grades
