"""Writes for grading: submitting grades, and grade types from portable JSON.

Each function validates, runs in one transaction and raises ValidationError
with a message a person can act on.
"""

import uuid
from collections.abc import Mapping

from django.contrib.auth.base_user import AbstractBaseUser
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.db.models import Count, Exists, F, IntegerField, OuterRef, Subquery, Value
from django.db.models.functions import Coalesce
from django.utils import timezone

from studies.models import Patient, Study

from . import selectors
from .models import Grade, GradeEntry, GradeField, GradeOption, GraderQueue, GradeType, QueueEntry

MAX_SECONDS = 4 * 3600  # a page left open overnight does not count as grading time


def answer_key(grade_type_id: int, field_id: int) -> str:
    """The form name of one field's answer on the grading page."""
    return f"answer-{grade_type_id}-{field_id}"


def _patients_with_enough_graders(study: Study, patient_ids) -> set[int]:
    return set(
        Grade.objects.filter(patient__in=patient_ids, kind=Grade.Kind.REGULAR, is_current=True)
        .values("patient")
        .annotate(graders=Count("grader", distinct=True))
        .filter(graders__gte=study.graders_per_patient)
        .values_list("patient", flat=True)
    )


def queue_sync(*, study: Study, grader: AbstractBaseUser, thorough: bool = True) -> GraderQueue:
    """The grader's queue of the study, with every patient of the study in it.

    The first visit places every patient at the grader's own random
    position; later visits add the patients created since. The quick check
    (one indexed lookup) sees patients newer than the last one queued; the
    thorough one (one indexed count) also finds a patient whose transaction
    committed after a newer one was queued.
    """
    queue, _ = GraderQueue.objects.get_or_create(study=study, grader=grader)
    patients = Patient.objects.filter(study=study)
    if thorough:
        if patients.count() == queue.known_patients:
            return queue
    elif not patients.filter(pk__gt=queue.last_patient_id).exists():
        return queue
    with transaction.atomic():
        queue = GraderQueue.objects.select_for_update().get(pk=queue.pk)
        new = list(
            patients.exclude(Exists(QueueEntry.objects.filter(queue=queue, patient=OuterRef("pk"))))
            .order_by("pk")
            .values_list("pk", flat=True)
        )
        mine = set(
            Grade.objects.filter(
                patient__in=new, grader=grader, kind=Grade.Kind.REGULAR, is_current=True
            ).values_list("patient", flat=True)
        )
        full = _patients_with_enough_graders(study, new)
        entries = []
        for patient_id in new:
            if patient_id in mine:
                state = QueueEntry.State.GRADED
            elif patient_id in full:
                state = QueueEntry.State.CLOSED
            else:
                state = QueueEntry.State.PENDING
            entry = QueueEntry(
                queue=queue,
                patient_id=patient_id,
                position=selectors.queue_position(study=study, grader=grader, patient_id=patient_id),
                state=state,
                repeat_chosen=selectors.repeat_drawn(study=study, grader=grader, patient_id=patient_id),
            )
            if state == QueueEntry.State.GRADED:  # graded before the queue existed
                queue.shown += 1
                entry.shown_number = queue.shown
            entries.append(entry)
        QueueEntry.objects.bulk_create(entries, batch_size=2000)
        queue.known_patients = patients.count()
        queue.last_patient_id = max([queue.last_patient_id, *new])
        queue.pending += sum(entry.state == QueueEntry.State.PENDING for entry in entries)
        queue.graded += sum(entry.state == QueueEntry.State.GRADED for entry in entries)
        queue.save(
            update_fields=["known_patients", "last_patient_id", "pending", "graded", "shown", "updated_at"]
        )
    return queue


def _queue_entry_locked(*, study: Study, patient: Patient, grader: AbstractBaseUser) -> QueueEntry:
    """The patient's entry in the grader's queue, locked with its queue, with the patient's grader count."""
    regular_graders = (
        Grade.objects.filter(patient=OuterRef("patient"), kind=Grade.Kind.REGULAR, is_current=True)
        .values("patient")
        .annotate(n=Count("grader", distinct=True))
        .values("n")
    )
    entries = (
        # Lock the entry and its queue only, not the study joined in for the assignment check.
        QueueEntry.objects.select_for_update(of=("self", "queue"))
        .select_related("queue")
        .filter(
            queue__study=study,
            queue__grader=grader,
            queue__study__graders=grader,
            queue__study__is_active=True,
            patient=patient,
        )
        .annotate(regular_graders=Coalesce(Subquery(regular_graders, output_field=IntegerField()), Value(0)))
    )
    entry = entries.first()
    if entry is None:  # not assigned, or the grader's first visit, or a patient added since
        if not Study.objects.filter(pk=study.pk, graders=grader, is_active=True).exists():
            raise ValidationError("You are not assigned to grade this study.", code="not_assigned")
        queue_sync(study=study, grader=grader)
        entry = entries.get()
    return entry


def _queue_record(*, study: Study, entry: QueueEntry, kind: str) -> None:
    """Move the patient along the grader's queue after a grade, and out of others' when it has enough."""
    queue = entry.queue
    if kind == Grade.Kind.REPEAT:
        if entry.repeat_pending:
            QueueEntry.objects.filter(pk=entry.pk).update(repeat_pending=False)
            GraderQueue.objects.filter(pk=queue.pk).update(
                repeats_done=F("repeats_done") + 1, shown=F("shown") + 1, updated_at=timezone.now()
            )
        return
    if entry.state == QueueEntry.State.GRADED:
        return  # a re-grade: the patient keeps its place and its graders
    QueueEntry.objects.filter(pk=entry.pk).update(
        state=QueueEntry.State.GRADED,
        shown_number=queue.shown + 1,
        graded_at=timezone.now(),
        repeat_pending=entry.repeat_chosen,
    )
    GraderQueue.objects.filter(pk=queue.pk).update(
        pending=F("pending") - (1 if entry.state == QueueEntry.State.PENDING else 0),
        graded=F("graded") + 1,
        shown=F("shown") + 1,
        updated_at=timezone.now(),
    )
    if entry.regular_graders + 1 >= study.graders_per_patient:
        _queues_close(patient_ids=[entry.patient_id])


def _queues_close(*, patient_ids) -> None:
    """Take patients with enough graders out of the queues of the graders still waiting for them."""
    waiting = QueueEntry.objects.filter(patient__in=patient_ids, state=QueueEntry.State.PENDING)
    per_queue = dict(waiting.values("queue").annotate(n=Count("pk")).values_list("queue", "n"))
    waiting.update(state=QueueEntry.State.CLOSED)
    for queue_id, count in per_queue.items():
        GraderQueue.objects.filter(pk=queue_id).update(pending=F("pending") - count)


@transaction.atomic
def queues_refresh(*, study: Study) -> None:
    """Bring every grader's queue in line with the study's rules after they changed.

    Patients open or close as "graders wanted" moved; positions follow the
    randomized-order rule; the repeat draw follows the repeat share (repeats
    already given stay).
    """
    full = _patients_with_enough_graders(study, Patient.objects.filter(study=study).values("pk"))
    entries = QueueEntry.objects.filter(queue__study=study)
    entries.filter(state=QueueEntry.State.PENDING, patient__in=full).update(state=QueueEntry.State.CLOSED)
    entries.filter(state=QueueEntry.State.CLOSED).exclude(patient__in=full).update(
        state=QueueEntry.State.PENDING
    )
    repeated = set(
        Grade.objects.filter(patient__study=study, kind=Grade.Kind.REPEAT).values_list(
            "patient_id", "grader_id"
        )
    )
    for queue in GraderQueue.objects.filter(study=study).select_related("grader"):
        grader = queue.grader
        changed = []
        for entry in queue.entries.only(
            "pk", "patient_id", "position", "repeat_chosen", "repeat_pending", "state"
        ):
            entry.position = selectors.queue_position(study=study, grader=grader, patient_id=entry.patient_id)
            entry.repeat_chosen = selectors.repeat_drawn(
                study=study, grader=grader, patient_id=entry.patient_id
            )
            entry.repeat_pending = (
                entry.repeat_chosen
                and entry.state == QueueEntry.State.GRADED
                and (entry.patient_id, grader.pk) not in repeated
            )
            changed.append(entry)
        QueueEntry.objects.bulk_update(
            changed, ["position", "repeat_chosen", "repeat_pending"], batch_size=1000
        )
        queue.pending = queue.entries.filter(state=QueueEntry.State.PENDING).count()
        queue.save(update_fields=["pending", "updated_at"])


def grade_submit(
    *,
    study: Study,
    patient: Patient,
    grader: AbstractBaseUser,
    answers: Mapping[str, str],
    submission: uuid.UUID,
    seconds: int,
    note: str = "",
    regrade: bool = False,
) -> list[Grade]:
    """Save one grade per grade type of the study for this patient, with all entries, atomically.

    `answers` maps answer_key(grade type, field) to an option id. The kind
    is decided here: a re-grade (asked for) supersedes the grader's current
    regular grade; a patient the grader already graded, shown again by the
    queue, gets a repeat grade; otherwise a regular grade. Submitting the
    same page twice (same `submission`) returns the grades saved the first
    time. Refused, with nothing saved: a study the grader is not assigned to
    or that is closed, a patient of another study, an unknown field or grade
    type, an option of another field, a missing required field.
    """
    if patient.study_id != study.pk:
        raise ValidationError("This patient is not in this study.", code="wrong_study")
    forms = selectors.grading_forms(study=study)
    if not forms:
        raise ValidationError("This study has no grade type to grade with yet.", code="no_grade_type")
    known = {
        answer_key(form.grade_type.pk, f.field.pk): (form.grade_type, f)
        for form in forms
        for f in form.fields
    }
    errors: dict[str, list[str]] = {}
    for key in answers:
        if key not in known:
            errors.setdefault("__all__", []).append(
                f"The answer {key!r} is not a field of this study's grade types; reload the page."
            )
    chosen: dict[str, GradeOption | None] = {}
    for key, (_grade_type, field_form) in known.items():
        value = str(answers.get(key, "") or "").strip()
        options = {str(option.pk): option for option in field_form.options}
        if not value:
            if field_form.field.required:
                errors.setdefault(key, []).append(f"{field_form.field.name} is required.")
            chosen[key] = None
        elif value not in options:
            errors.setdefault(key, []).append(
                f"That choice is not an option of {field_form.field.name}; choose one of "
                + ", ".join(o.label for o in field_form.options)
                + "."
            )
        else:
            chosen[key] = options[value]
    if errors:
        raise ValidationError(errors)

    seconds = max(0, min(int(seconds), MAX_SECONDS))
    try:
        with transaction.atomic():
            entry = _queue_entry_locked(study=study, patient=patient, grader=grader)
            if not regrade and entry.state == QueueEntry.State.GRADED and entry.repeat_pending:
                kind = Grade.Kind.REPEAT  # shown again by the queue, unannounced
            else:
                kind = Grade.Kind.REGULAR  # a first grade, or a re-grade that supersedes the last one
            may_supersede = kind == Grade.Kind.REPEAT or entry.state == QueueEntry.State.GRADED
            grades = []
            for form in forms:
                previous = None
                if may_supersede:
                    previous = (
                        Grade.objects.select_for_update()
                        .filter(
                            patient=patient,
                            grade_type=form.grade_type,
                            grader=grader,
                            kind=kind,
                            is_current=True,
                        )
                        .first()
                    )
                if previous:
                    previous.is_current = False
                    previous.save(update_fields=["is_current"])
                grade = Grade.objects.create(
                    patient=patient,
                    grade_type=form.grade_type,
                    grader=grader,
                    kind=kind,
                    seconds_spent=seconds,
                    note=note.strip(),
                    submission=submission,
                )
                if previous:
                    previous.superseded_by = grade
                    previous.save(update_fields=["superseded_by"])
                GradeEntry.objects.bulk_create(
                    GradeEntry(
                        grade=grade, field=f.field, option=chosen[answer_key(form.grade_type.pk, f.field.pk)]
                    )
                    for f in form.fields
                )
                grades.append(grade)
            _queue_record(study=study, entry=entry, kind=kind)
            return grades
    except IntegrityError:
        # The same page submitted twice: the first submission's grades stand.
        already = list(Grade.objects.filter(grader=grader, submission=submission))
        if already:
            return already
        raise


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
        grade_type = GradeType.objects.create(
            name=name, description=str(item.get("description", "")), is_active=bool(item.get("active", True))
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
