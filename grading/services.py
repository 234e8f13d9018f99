"""Writes for grading: submitting grades, and grade types from portable JSON.

Each function validates, runs in one transaction and raises ValidationError
with a message a person can act on.
"""

import uuid
from collections.abc import Mapping

from django.contrib.auth.base_user import AbstractBaseUser
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction

from studies.models import Patient, Study

from . import selectors
from .models import Grade, GradeEntry, GradeField, GradeOption, GradeType

MAX_SECONDS = 4 * 3600  # a page left open overnight does not count as grading time


def answer_key(grade_type_id: int, field_id: int) -> str:
    """The form name of one field's answer on the grading page."""
    return f"answer-{grade_type_id}-{field_id}"


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
    if not study.is_active or not study.graders.filter(pk=grader.pk).exists():
        raise ValidationError("You are not assigned to grade this study.", code="not_assigned")
    if patient.study_id != study.pk:
        raise ValidationError("This patient is not in this study.", code="wrong_study")
    already = list(Grade.objects.filter(grader=grader, submission=submission))
    if already:
        return already

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

    mine = selectors.my_current_answers(patient=patient, grader=grader)["kinds"]
    if regrade or Grade.Kind.REGULAR not in mine:
        kind = Grade.Kind.REGULAR
    else:
        kind = Grade.Kind.REPEAT
    seconds = max(0, min(int(seconds), MAX_SECONDS))
    try:
        with transaction.atomic():
            grades = []
            for form in forms:
                previous = (
                    Grade.objects.select_for_update()
                    .filter(
                        patient=patient, grade_type=form.grade_type, grader=grader, kind=kind, is_current=True
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
            return grades
    except IntegrityError:
        # The same page submitted twice at the same moment: the first one won.
        already = list(Grade.objects.filter(grader=grader, submission=submission))
        if already:
            return already
        raise


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
                order=int(spec.get("order", order)),
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
                    order=int(option.get("order", option_order)),
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
