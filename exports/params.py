"""Query parameters of the API: parsed strictly, each error naming its parameter."""

from datetime import UTC, datetime

from django.utils import timezone
from django.utils.dateparse import parse_date, parse_datetime
from rest_framework.exceptions import ValidationError

from grading.models import GradeField, GradeType
from studies.models import Eye, Study

MIN_MOMENT = datetime(1900, 1, 1, tzinfo=UTC)
MAX_MOMENT = datetime(9000, 1, 1, tzinfo=UTC)
TRUE = {"true", "1", "yes"}
FALSE = {"false", "0", "no"}


def _bad(name: str, message: str) -> ValidationError:
    return ValidationError({name: [message]})


def _whole_number(params, name: str) -> int | None:
    """The parameter as an int, None when absent; a 400 naming it when it is not a whole number."""
    value = params.get(name)
    if value in (None, ""):
        return None
    try:
        return int(value)
    except ValueError:
        raise _bad(name, f"{name} must be a whole number, not {value!r}.") from None


def optional_int(params, name: str) -> int | None:
    number = _whole_number(params, name)
    if number is None:
        return None
    if number < 1:
        raise _bad(name, f"{name} must be a positive id.")
    return number


def study(params, *, required: bool) -> Study | None:
    pk = optional_int(params, "study")
    if pk is None:
        if required:
            raise _bad("study", "study is required: the id of a study (see /api/studies/).")
        return None
    found = Study.objects.filter(pk=pk).first()
    if found is None:
        raise _bad("study", f"No study has the id {pk}.")
    return found


def grade_type(params, *, study: Study | None, required: bool = False) -> GradeType | None:
    pk = optional_int(params, "grade_type")
    if pk is None:
        if required:
            raise _bad("grade_type", "grade_type is required: the id of one of the study's grade types.")
        return None
    found = GradeType.objects.filter(pk=pk).first()
    if found is None:
        raise _bad("grade_type", f"No grade type has the id {pk}.")
    if study is not None and not found.studies.filter(pk=study.pk).exists():
        raise _bad("grade_type", f"{found.name} is not a grade type of the study {study.name}.")
    return found


def field(params, *, grade_type: GradeType) -> GradeField:
    value = params.get("field")
    fields = list(grade_type.fields.all())
    if value in (None, ""):
        if len(fields) == 1:
            return fields[0]
        names = ", ".join(f.name for f in fields)
        raise _bad("field", f"field is required for {grade_type.name}: one of {names}.")
    for candidate in fields:
        if value == candidate.name or value == str(candidate.pk):
            return candidate
    names = ", ".join(f.name for f in fields)
    raise _bad("field", f"{grade_type.name} has no field {value!r}; choose one of {names}.")


def boolean(params, name: str) -> bool | None:
    value = params.get(name)
    if value in (None, ""):
        return None
    if value.lower() in TRUE:
        return True
    if value.lower() in FALSE:
        return False
    raise _bad(name, f"{name} must be true or false, not {value!r}.")


def eye(params) -> str | None:
    value = params.get("eye")
    if value in (None, ""):
        return None
    value = value.upper()[:1] if value.lower() in {"r", "l", "u", "right", "left", "unknown"} else value
    if value not in Eye.values:
        raise _bad("eye", "eye must be R, L or U.")
    return value


def moment(params, name: str) -> datetime | None:
    value = params.get(name)
    if value in (None, ""):
        return None
    problem = f"{name} must be an ISO 8601 date or date-time, such as 2026-11-03 or 2026-11-03T14:00:00Z"
    try:
        parsed = parse_datetime(value)
        if parsed is None:
            day = parse_date(value)
            parsed = None if day is None else datetime(day.year, day.month, day.day)
    except ValueError:  # well formed but impossible, such as 2026-02-30
        raise _bad(name, f"{problem}; {value!r} is not a real date.") from None
    if parsed is None:
        raise _bad(name, f"{problem}, not {value!r}.")
    try:
        if timezone.is_naive(parsed):
            parsed = timezone.make_aware(parsed, timezone.get_default_timezone())
        # UTC, and within what every database stores (PostgreSQL refuses offsets past 15:59).
        parsed = parsed.astimezone(UTC)
        if not MIN_MOMENT <= parsed <= MAX_MOMENT:
            raise OverflowError
    except (OverflowError, ValueError):
        raise _bad(name, f"{name} must be between the years 1900 and 9000.") from None
    return parsed


def export_format(params, *, choices=("csv", "json"), default="json") -> str:
    # DRF reserves ?format= for its renderers; these views read it themselves.
    value = (params.get("format") or default).lower()
    if value not in choices:
        raise _bad("format", f"format must be one of {', '.join(choices)}, not {value!r}.")
    return value


def split(params) -> tuple[int, int, int]:
    value = params.get("split") or "80,10,10"
    try:
        parts = tuple(int(p) for p in value.split(","))
    except ValueError:
        raise _bad(
            "split", f"split must be three whole percentages such as 80,10,10, not {value!r}."
        ) from None
    if len(parts) != 3 or any(p < 0 for p in parts) or sum(parts) != 100:
        raise _bad("split", "split must be three percentages (train, val, test) that add up to 100.")
    return parts  # type: ignore[return-value]


def seed(params) -> int:
    number = _whole_number(params, "seed")
    return 0 if number is None else number


def bootstrap_seed(params) -> int:
    number = seed(params)
    if not 0 <= number < 2**32:
        raise _bad("seed", "seed must be a whole number from 0 to 4294967295.")
    return number


def min_graders(params, default: int) -> int:
    number = _whole_number(params, "min_graders")
    if number is None:
        return default
    if not 1 <= number <= 50:
        raise _bad("min_graders", "min_graders must be between 1 and 50.")
    return number


def choice(params, name: str, *, choices: tuple[str, ...], default: str) -> str:
    value = params.get(name) or default
    if value not in choices:
        raise _bad(name, f"{name} must be one of {', '.join(choices)}, not {value!r}.")
    return value


def rounds(params, *, default: int = 1000) -> int:
    number = _whole_number(params, "rounds")
    if number is None:
        return default
    if not 0 <= number <= 10_000:
        raise _bad("rounds", "rounds (bootstrap resamples) must be between 0 and 10000.")
    return number
