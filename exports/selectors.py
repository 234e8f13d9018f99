"""Reads for the data team: studies, images with their grades, grade rows, training sets.

Lists come as querysets with their joins done; exports come as row
iterators over server-side cursors, so memory stays flat at any size.
"""

import hashlib
import itertools
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime

from django.db.models import Exists, OuterRef, Prefetch, Q, QuerySet

from grading.consensus import decide
from grading.models import Consensus, Grade, GradeEntry, GradeField, GradeType
from studies.models import Image, Study
from studies.selectors import studies_with_counts

CHUNK = 2000


def studies_for_api() -> QuerySet[Study]:
    fields = Prefetch(
        "fields", queryset=GradeField.objects.prefetch_related("options").order_by("order", "pk")
    )
    grade_types = Prefetch(
        "grade_types", queryset=GradeType.objects.prefetch_related(fields).order_by("name")
    )
    return studies_with_counts().prefetch_related(grade_types).order_by("pk")


def _current_grades() -> Prefetch:
    entries = Prefetch(
        "entries", queryset=GradeEntry.objects.select_related("field", "option").order_by("field__order")
    )
    return Prefetch(
        "patient__grades",
        queryset=Grade.objects.filter(is_current=True)
        .select_related("grader", "grade_type")
        .prefetch_related(entries)
        .order_by("created_at", "pk"),
        to_attr="current_grades",
    )


def images_for_api(
    *,
    study: Study | None,
    graded: bool | None,
    grade_type: GradeType | None,
    eye: str | None,
    updated_since: datetime | None,
) -> QuerySet[Image]:
    """Images with their patient's current grades, filtered as the API asks.

    graded: the patient has (or has not) a current regular grade (of
    grade_type, when given). updated_since: uploaded since, or graded since.
    """
    images = Image.objects.select_related("patient", "study").prefetch_related(_current_grades())
    if study is not None:
        images = images.filter(study=study)
    if eye is not None:
        images = images.filter(eye=eye)
    if graded is not None:
        grades = Grade.objects.filter(patient=OuterRef("patient"), kind=Grade.Kind.REGULAR, is_current=True)
        if grade_type is not None:
            grades = grades.filter(grade_type=grade_type)
        images = images.filter(Exists(grades)) if graded else images.exclude(Exists(grades))
    elif grade_type is not None:
        images = images.filter(study__grade_types=grade_type)
    if updated_since is not None:
        graded_since = Grade.objects.filter(patient=OuterRef("patient"), created_at__gte=updated_since)
        images = images.filter(Q(uploaded_at__gte=updated_since) | Exists(graded_since))
    return images


def _unique_names(fields: list[GradeField]) -> list[str]:
    counts = Counter(f.name for f in fields)
    return [f.name if counts[f.name] == 1 else f"{f.grade_type.name}:{f.name}" for f in fields]


GRADE_COLUMNS = [
    "grade_id", "study", "patient_code", "eyes", "eye", "grader", "grade_type", "kind", "is_current",
    "superseded_by", "created_at", "seconds_spent", "note",
]  # fmt: skip


@dataclass
class Table:
    header: list[str]
    rows: Iterator[list]


def grades_table(*, grades: QuerySet[Grade], grade_types: list[GradeType] | None = None) -> Table:
    """One row per grade (wide): the grade's facts, then one column per field with the option's value.

    Two server-side cursors, grades and their entries, both in grade order,
    are merged as they stream: memory stays flat at any size.
    """
    if grade_types is None:
        grade_types = list(GradeType.objects.filter(pk__in=grades.values("grade_type")).order_by("name"))
    fields = list(
        GradeField.objects.filter(grade_type__in=grade_types)
        .select_related("grade_type")
        .order_by("grade_type__name", "order", "pk")
    )
    column_of = {f.pk: index for index, f in enumerate(fields)}
    eyes = {
        eye: Exists(Image.objects.filter(patient=OuterRef("patient"), eye=eye)) for eye in ("R", "L", "U")
    }
    grade_rows = (
        grades.annotate(has_r=eyes["R"], has_l=eyes["L"], has_u=eyes["U"])
        .order_by("pk")
        .values_list(
            "pk",
            "patient__study__name",
            "patient__code",
            "has_r",
            "has_l",
            "has_u",
            "eye",
            "grader__username",
            "grade_type__name",
            "kind",
            "is_current",
            "superseded_by_id",
            "created_at",
            "seconds_spent",
            "note",
        )  # fmt: skip
        .iterator(chunk_size=CHUNK)
    )
    entries = (
        GradeEntry.objects.filter(grade__in=grades.values("pk"))
        .order_by("grade_id")
        .values_list("grade_id", "field_id", "option__value")
        .iterator(chunk_size=CHUNK)
    )

    def rows() -> Iterator[list]:
        # The grades' cursor opens first: a grade saved meanwhile is then left out whole,
        # never listed with blank answers.
        first = next(grade_rows, None)
        if first is None:
            return
        pending = next(entries, None)
        for row in itertools.chain([first], grade_rows):
            (
                pk,
                study_name,
                code,
                r,
                left,
                u,
                grade_eye,
                grader,
                type_name,
                kind,
                current,
                superseded,
                created,
                seconds,
                note,
            ) = row
            answers = [""] * len(fields)
            while pending is not None and pending[0] < pk:
                pending = next(entries, None)
            while pending is not None and pending[0] == pk:
                if pending[1] in column_of:
                    answers[column_of[pending[1]]] = pending[2] or ""
                pending = next(entries, None)
            eye_list = ";".join(e for e, present in (("R", r), ("L", left), ("U", u)) if present)
            yield [
                pk, study_name, code, eye_list, grade_eye, grader, type_name, kind, current, superseded or "",
                created.isoformat(), seconds, note, *answers,
            ]  # fmt: skip

    return Table(header=GRADE_COLUMNS + _unique_names(fields), rows=rows())


def grades_for_export(*, study: Study, grade_type: GradeType | None, current_only: bool) -> Table:
    """The wide grade table of a study (one grade type, or all of the study's)."""
    grade_types = [grade_type] if grade_type else list(study.grade_types.order_by("name"))
    grades = Grade.objects.filter(patient__study=study, grade_type__in=grade_types)
    if current_only:
        grades = grades.filter(is_current=True)
    return grades_table(grades=grades, grade_types=grade_types)


ENTRY_COLUMNS = [
    "grade_id", "study", "patient_code", "grader", "grade_type", "eye", "kind", "is_current", "created_at",
    "field", "value", "label", "ungradable",
]  # fmt: skip


def grade_entries_table(*, grades: QuerySet[Grade]) -> Table:
    """One row per answer (long): the grade's facts, the field, the option's value and label."""
    entries = (
        GradeEntry.objects.filter(grade__in=grades.values("pk"))
        .order_by("grade_id", "field__order", "field_id")
        .values_list(
            "grade_id",
            "grade__patient__study__name",
            "grade__patient__code",
            "grade__grader__username",
            "grade__grade_type__name",
            "grade__eye",
            "grade__kind",
            "grade__is_current",
            "grade__created_at",
            "field__name",
            "option__value",
            "option__label",
            "option__ungradable",
        )  # fmt: skip
        .iterator(chunk_size=CHUNK)
    )

    def rows() -> Iterator[list]:
        for row in entries:
            row = list(row)
            row[8] = row[8].isoformat()
            row[10] = row[10] or ""
            row[11] = row[11] or ""
            row[12] = bool(row[12])
            yield row

    return Table(header=ENTRY_COLUMNS, rows=rows())


def split_of(*, patient_id: int, seed: int, split: tuple[int, int, int]) -> str:
    """train, val or test: drawn from the patient and the seed, so a patient never spans two splits."""
    digest = hashlib.sha256(f"{seed}:{patient_id}".encode()).digest()
    draw = int.from_bytes(digest[:8], "big") / 2**64 * 100
    if draw < split[0]:
        return "train"
    if draw < split[0] + split[1]:
        return "val"
    return "test"


@dataclass
class _Votes:
    regular: dict[int, tuple[int | None, str]] = field(default_factory=dict)  # grader -> (option, value)
    adjudicated: tuple | None = None  # ((created_at, grade id), option id) of the latest adjudication


@dataclass
class Label:
    value: str
    ungradable: bool
    method: str
    graders: int
    votes: str
    reason: str


def label_of(votes: _Votes, *, min_graders: int, options: dict[int, tuple[str, bool]]) -> Label:
    """The consensus rule of grading.consensus, with the number of graders the caller asks for."""
    answers = list(votes.regular.values())
    graders = len(answers)
    method, option_id, summary = decide(answers, graders=graders, wanted=min_graders)
    if votes.adjudicated is not None:
        method, option_id = Consensus.Method.ADJUDICATED, votes.adjudicated[1]
    value, ungradable = options.get(option_id, ("", False))
    reason = ""
    if method == Consensus.Method.TOO_FEW:
        reason = f"{graders} of the {min_graders} graders needed" if graders else "not graded"
    elif method == Consensus.Method.PENDING:
        reason = f"no majority ({summary}): waiting for adjudication"
    return Label(value, ungradable, method, graders, summary, reason)


TRAINING_COLUMNS = [
    "image_id", "patient_id", "patient_code", "eye", "storage_key", "url", "sha256", "width", "height",
    "label", "label_ungradable", "consensus", "graders", "votes", "no_label_reason", "split",
]  # fmt: skip


def training_set(
    *,
    study: Study,
    field: GradeField,
    split: tuple[int, int, int],
    seed: int,
    min_graders: int,
    url_of,
) -> Table:
    """One row per image: its file, its consensus label for the field, and its patient's split.

    A per-eye grade type's label goes only to the photos of that eye. The
    label follows grading.consensus (majority of distinct graders, or the
    latest adjudication), counted here so that `min_graders` may differ from
    the study's graders wanted.
    """
    per_eye = field.grade_type.unit == GradeType.Unit.EYE
    options = {o.pk: (o.value, o.ungradable) for o in field.options.all()}
    votes: dict[tuple[int, str], _Votes] = defaultdict(_Votes)
    for patient_id, eye, grader_id, kind, created_at, grade_id, option_id, value in (
        GradeEntry.objects.filter(
            field=field,
            grade__patient__study=study,
            grade__is_current=True,
            grade__kind__in=[Grade.Kind.REGULAR, Grade.Kind.ADJUDICATION],
        )
        .values_list(
            "grade__patient_id",
            "grade__eye",
            "grade__grader_id",
            "grade__kind",
            "grade__created_at",
            "grade_id",
            "option_id",
            "option__value",
        )  # fmt: skip
        .iterator(chunk_size=CHUNK)
    ):
        group = votes[(patient_id, eye)]
        if kind == Grade.Kind.REGULAR:
            group.regular[grader_id] = (option_id, value or "")
        elif group.adjudicated is None or group.adjudicated[0] < (created_at, grade_id):
            group.adjudicated = ((created_at, grade_id), option_id)
    images = (
        Image.objects.filter(study=study)
        .order_by("patient_id", "pk")
        .values_list("pk", "patient_id", "patient__code", "eye", "file", "sha256", "width", "height")
        .iterator(chunk_size=CHUNK)
    )
    nobody = _Votes()

    def rows() -> Iterator[list]:
        for pk, patient_id, code, eye, key, sha256, width, height in images:
            group = votes.get((patient_id, eye if per_eye else ""), nobody)
            label = label_of(group, min_graders=min_graders, options=options)
            yield [
                pk, patient_id, code, eye, key, url_of(pk, key), sha256, width, height, label.value,
                label.ungradable, label.method, label.graders, label.votes, label.reason,
                split_of(patient_id=patient_id, seed=seed, split=split),
            ]  # fmt: skip

    return Table(header=TRAINING_COLUMNS, rows=rows())
