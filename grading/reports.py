"""The agreement report of a study: what graders' answers say about how far to trust them.

Reads a study's grades in a few aggregate queries (never per patient), then leaves the figures to
grading.agreement. One unit is one patient (one eye of a patient, for a per-eye grade type, reported
per eye); answers are the graders' current regular grades.
"""

from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field

import numpy as np
from django.contrib.auth import get_user_model
from django.db import transaction
from django.db.models import Exists, OuterRef

from studies.models import Study

from . import agreement
from .models import Grade, GradeEntry, GradeOption, GradeType

EYE_NAMES = {"R": "right eye", "L": "left eye", "U": "eye not recorded"}


class Ungradable:
    """How ungradable answers count in every figure: left out, or a category of their own."""

    EXCLUDED = "excluded"
    CATEGORY = "category"
    CHOICES = (EXCLUDED, CATEGORY)

    @staticmethod
    def says(choice: str) -> str:
        return (
            "ungradable answers left out"
            if choice == Ungradable.EXCLUDED
            else "ungradable counted as a category"
        )


@dataclass
class GraderFigures:
    grader: str
    answers: int
    options: dict[str, int]
    against_others: agreement.Figure  # Cohen's kappa against the majority of the other graders
    sensitivity: agreement.Figure | None = None  # two-level fields only, against that majority
    specificity: agreement.Figure | None = None
    repeatability: agreement.Figure | None = None  # Cohen's kappa of their first grades and repeats


@dataclass
class FieldReport:
    grade_type: str
    field: str
    options: list[str]
    coefficients: dict[str, agreement.Figure]
    graders: list[GraderFigures] = field(default_factory=list)
    pairwise: dict[str, dict[str, agreement.Figure]] = field(default_factory=dict)
    eye: str = ""  # R, L or U for a per-eye grade type's field; blank for a per-patient one

    @property
    def title(self) -> str:
        return f"{self.field}, {EYE_NAMES[self.eye]}" if self.eye else self.field


@dataclass
class AgreementReport:
    study: str
    ungradable: str
    rounds: int
    seed: int
    fields: list[FieldReport]

    def as_dict(self) -> dict:
        return asdict(self)


def agreement_report(
    *, study: Study, ungradable: str = Ungradable.EXCLUDED, rounds: int = 1000, seed: int = 0
):
    """Every field of the study's grade types: coefficients with intervals, graders, pairs, repeats.

    Three queries whatever the study's size; the bootstrap is seeded, so the same grades give the same
    report. Ungradable answers are left out or counted as a category, as asked, in every figure.
    """
    with transaction.atomic():  # one snapshot; PostgreSQL streams the cursor as read, with no held copy
        answers = _current_answers(study=study, ungradable=ungradable)
        repeats = _repeat_pairs(study=study, ungradable=ungradable)
    fields = []
    for (grade_type, field_name, eye, options, positive), units in _fields_of(study=study, answers=answers):
        ratings = list(units.values())
        report = FieldReport(
            grade_type=grade_type,
            field=field_name,
            eye=eye,
            options=options,
            coefficients=_coefficients(ratings, rounds=rounds, seed=seed),
            pairwise=_pairwise(ratings),
        )
        against = _against_others(ratings)
        report.graders = [
            _grader_figures(
                grader, against[grader], positive, repeats.get((grade_type, field_name, eye, grader), [])
            )
            for grader in sorted(against)
        ]
        fields.append(report)
    return AgreementReport(study=study.name, ungradable=ungradable, rounds=rounds, seed=seed, fields=fields)


def _coefficients(ratings: list, *, rounds: int, seed: int) -> dict[str, agreement.Figure]:
    if rounds == 0:  # figures without intervals
        return {name: statistic(ratings=ratings) for name, statistic in agreement.COEFFICIENTS.items()}
    return agreement.agreement_summary(ratings=ratings, rounds=rounds, seed=seed)


def _answer(option_value, option_ungradable, ungradable: str) -> str | None:
    if option_value is None or (option_ungradable and ungradable == Ungradable.EXCLUDED):
        return None
    return option_value


def _current_answers(
    *, study: Study, ungradable: str
) -> dict[tuple[int, int, str], dict[int, dict[str, str]]]:
    """(grade type, field, eye) -> patient -> grader -> answer, from the current regular grades.

    One query over grades and their entries only (no join to users or options, which are looked up
    once each), streamed.
    """
    rows = GradeEntry.objects.filter(
        grade__patient__study=study, grade__kind=Grade.Kind.REGULAR, grade__is_current=True
    ).values_list(
        "grade__grade_type_id", "field_id", "grade__eye", "grade__patient_id", "grade__grader_id", "option_id"
    )
    answer_of = {
        pk: _answer(value, is_ungradable, ungradable)
        for pk, value, is_ungradable in GradeOption.objects.filter(
            field__grade_type__studies=study
        ).values_list("pk", "value", "ungradable")
    }
    graded = Grade.objects.filter(grader=OuterRef("pk"), patient__study=study, kind=Grade.Kind.REGULAR)
    names = dict(get_user_model().objects.filter(Exists(graded)).values_list("pk", "username"))
    answers: dict = defaultdict(lambda: defaultdict(dict))
    for grade_type_id, field_id, eye, patient_id, grader_id, option_id in rows.iterator(chunk_size=20000):
        answer = answer_of.get(option_id)
        if answer is not None:
            answers[(grade_type_id, field_id, eye)][patient_id][names[grader_id]] = answer
    return answers


def _fields_of(*, study: Study, answers: dict):
    """Each field of the study's active grade types (per eye graded, for a per-eye type), in order, with
    its units (even if none)."""
    options = GradeOption.objects.filter(
        field__grade_type__studies=study, field__grade_type__is_active=True
    ).order_by("field__grade_type__name", "field__grade_type_id", "field__order", "field_id", "order", "pk")
    per_field: dict = {}
    for option in options.select_related("field__grade_type"):
        grade_type = option.field.grade_type
        key = (grade_type.pk, option.field_id, grade_type.unit == GradeType.Unit.EYE)
        entry = per_field.setdefault(key, [grade_type.name, option.field.name, [], []])
        entry[2].append(option.value)
        if not option.ungradable:
            entry[3].append(option.value)
    graded_eyes = {eye for (_, _, eye) in answers if eye}
    eye_rank = {eye: rank for rank, eye in enumerate(EYE_NAMES)}
    items = []
    for number, (key, (grade_type, field_name, values, gradable)) in enumerate(per_field.items()):
        type_id, field_id, per_eye = key
        # Two-level fields (absent / present) get sensitivity and specificity: the second level is positive.
        positive = gradable[1] if len(gradable) == 2 else None
        eyes = ([e for e in EYE_NAMES if e in graded_eyes] or ["R", "L"]) if per_eye else [""]
        for eye in eyes:  # a per-eye type: every field of the right eye, then of the left
            item = (grade_type, field_name, eye, values, positive), answers.get((type_id, field_id, eye), {})
            items.append(((grade_type, type_id, eye_rank.get(eye, -1), number), item))
    return [item for _, item in sorted(items, key=lambda pair: pair[0])]


def _repeat_pairs(*, study: Study, ungradable: str) -> dict[tuple[str, str, str], list[tuple[str, str]]]:
    """(grade type, field, eye, grader) -> (first answer, repeat answer), the first being the regular
    grade current when the repeat was given: two queries."""
    repeats = Grade.objects.filter(patient__study=study, kind=Grade.Kind.REPEAT)
    repeated = repeats.filter(
        patient=OuterRef("patient"),
        grader=OuterRef("grader"),
        grade_type=OuterRef("grade_type"),
        eye=OuterRef("eye"),
    )
    firsts = Grade.objects.filter(patient__study=study, kind=Grade.Kind.REGULAR).filter(Exists(repeated))
    regular = defaultdict(list)  # (patient, grade type, eye, grader) -> [(given at, superseded at, grade id)]
    for pk, patient, grade_type, eye, grader, at, superseded_at in firsts.values_list(
        "pk", "patient_id", "grade_type_id", "eye", "grader_id", "created_at", "superseded_by__created_at"
    ):
        regular[(patient, grade_type, eye, grader)].append((at, superseded_at, pk))
    matched = {}  # repeat grade id -> the regular grade current at the time
    for pk, patient, grade_type, eye, grader, at in repeats.values_list(
        "pk", "patient_id", "grade_type_id", "eye", "grader_id", "created_at"
    ):
        for given, superseded, regular_pk in regular.get((patient, grade_type, eye, grader), []):
            if given <= at and (superseded is None or superseded > at):
                matched[pk] = regular_pk
    entries = GradeEntry.objects.filter(grade_id__in=[*matched, *matched.values()]).values_list(
        "grade_id", "grade__grade_type__name", "field__name", "grade__eye", "grade__grader__username",
        "option__value", "option__ungradable",
    )  # fmt: skip
    answer_of = {
        (grade_id, field_name): (grade_type, eye, grader, _answer(value, is_ungradable, ungradable))
        for grade_id, grade_type, field_name, eye, grader, value, is_ungradable in entries
    }
    pairs = defaultdict(list)
    for (grade_id, field_name), (grade_type, eye, grader, repeat_answer) in answer_of.items():
        if grade_id not in matched:
            continue
        first = answer_of.get((matched[grade_id], field_name), (None, None, None, None))[3]
        pairs[(grade_type, field_name, eye, grader)].append((first, repeat_answer))
    return pairs


def _against_others(ratings: list) -> dict[str, list[tuple[str, str | None]]]:
    """Per grader: (their answer, the answer most of the other graders gave, unless tied, or None).

    Counted as arrays: units x categories of answer counts, less each grader's own answer.
    """
    graders = sorted({grader for unit in ratings for grader in unit})
    categories = sorted({answer for unit in ratings for answer in unit.values()})
    if not graders:
        return {}
    column = {grader: n for n, grader in enumerate(graders)}
    code = {answer: n for n, answer in enumerate(categories)}
    given = np.full((len(ratings), len(graders)), -1, dtype=np.int64)  # each grader's answer, -1 for none
    for row, unit in enumerate(ratings):
        for grader, answer in unit.items():
            given[row, column[grader]] = code[answer]
    counts = np.stack([(given == category).sum(axis=1) for category in range(len(categories))], axis=1)
    rows = np.arange(len(ratings))
    pairs: dict[str, list[tuple[str, str | None]]] = {}
    for grader, n in column.items():
        mine = given[:, n]
        rated = mine >= 0
        others = counts[rated].copy()
        others[rows[: rated.sum()], mine[rated]] -= 1
        top = others.max(axis=1)
        clear = (top > 0) & ((others == top[:, None]).sum(axis=1) == 1)
        majority = others.argmax(axis=1)
        pairs[grader] = [
            (categories[answer], categories[best] if unique else None)
            for answer, best, unique in zip(
                mine[rated].tolist(), majority.tolist(), clear.tolist(), strict=True
            )
        ]
    return pairs


def _grader_figures(grader: str, against: list, positive: str | None, repeats: list) -> GraderFigures:
    """One grader's figures from (their answer, majority of the others) on each patient they graded."""
    figures = GraderFigures(
        grader=grader,
        answers=len(against),
        options=dict(Counter(answer for answer, _ in against)),
        against_others=agreement.cohen_kappa(pairs=against),
        repeatability=agreement.cohen_kappa(pairs=repeats) if repeats else None,
    )
    if positive is not None:
        figures.sensitivity, figures.specificity = agreement.sensitivity_specificity(
            pairs=against, positive=positive
        )
    return figures


def _pairwise(ratings: list) -> dict[str, dict[str, agreement.Figure]]:
    matrix: dict[str, dict[str, agreement.Figure]] = defaultdict(dict)
    for (first, second), figure in agreement.cohen_matrix(ratings=ratings).items():
        matrix[first][second] = matrix[second][first] = figure
    return dict(matrix)


AGREEMENT_COLUMNS = [
    "grade_type", "field", "eye", "figure", "grader", "versus", "value", "low", "high", "units", "ratings",
    "note", "ungradable",
]  # fmt: skip


def agreement_rows(report: AgreementReport):
    """The report as flat rows under AGREEMENT_COLUMNS, for CSV: every figure says how ungradable counted."""
    says = Ungradable.says(report.ungradable)

    def row(item: FieldReport, figure_name, figure, grader="", versus=""):
        low, high = figure.interval or (None, None)
        return [
            item.grade_type, item.field, item.eye, figure_name, grader, versus, figure.value, low, high,
            figure.units, figure.ratings, figure.note, says,
        ]  # fmt: skip

    for item in report.fields:
        for name, figure in item.coefficients.items():
            yield row(item, name, figure)
        for first, others in sorted(item.pairwise.items()):
            for second, figure in sorted(others.items()):
                if first < second:
                    yield row(item, "cohen_kappa", figure, first, second)
        for grader in item.graders:
            yield row(
                item, "kappa_against_others", grader.against_others, grader.grader, "majority of others"
            )
            for name in ("sensitivity", "specificity", "repeatability"):
                figure = getattr(grader, name)
                if figure is not None:
                    versus = "own first grades" if name == "repeatability" else "majority of others"
                    yield row(item, name, figure, grader.grader, versus)
            for option in item.options:
                count = grader.options.get(option, 0)
                yield [item.grade_type, item.field, item.eye, "answers", grader.grader, option, count, None,
                       None, grader.answers, grader.answers, "", says]  # fmt: skip


# --- The admin page's view of a report ------------------------------------------------------------------


COEFFICIENT_NAMES = {
    "percent_agreement": "Percent agreement",
    "fleiss_kappa": "Fleiss' kappa",
    "krippendorff_alpha": "Krippendorff's alpha",
    "gwet_ac1": "Gwet's AC1",
}


def _kappa_background(value: float | None) -> str:
    """A heat-map colour for a kappa: red at 0 or below, through yellow, to green at 1; grey for none."""
    if value is None:
        return "background-color: #f1f3f5"
    share = min(max(value, 0.0), 1.0)
    return f"background-color: hsl({round(120 * share)}, 65%, {round(88 - 18 * share)}%)"


def _matrix_cell(item, first: str, second: str) -> dict | None:
    """One cell of the pairwise kappa matrix; None on the diagonal (a grader against themself)."""
    if first == second:
        return None
    figure = item.pairwise.get(first, {}).get(second)
    return {"figure": figure, "style": _kappa_background(figure.value if figure else None)}


def _field_page(item: FieldReport) -> dict:
    """What the agreement page shows of one field: named coefficients, the kappa matrix, grader rows."""
    names = sorted({grader.grader for grader in item.graders} | set(item.pairwise))
    matrix = [(first, [_matrix_cell(item, first, second) for second in names]) for first in names]
    graders = [
        {"figures": grader, "options": [grader.options.get(option, 0) for option in item.options]}
        for grader in item.graders
    ]
    coefficients = [(COEFFICIENT_NAMES.get(name, name), figure) for name, figure in item.coefficients.items()]
    return {"item": item, "coefficients": coefficients, "names": names, "matrix": matrix, "graders": graders}


def agreement_chart_data(report: AgreementReport) -> dict:
    """The figures the page's charts draw, per field in the page's order."""
    fields = []
    for item in report.fields:
        coefficients = [
            {
                "name": COEFFICIENT_NAMES.get(name, name),
                "value": figure.value,
                "interval": list(figure.interval) if figure.interval else None,
            }
            for name, figure in item.coefficients.items()
        ]
        graders = [{"grader": grader.grader, "options": grader.options} for grader in item.graders]
        fields.append({"coefficients": coefficients, "options": item.options, "graders": graders})
    return {"fields": fields}


def agreement_page_fields(report: AgreementReport) -> list[dict]:
    """Each field as the agreement page shows it: named coefficients, the kappa heat map, grader rows."""
    return [_field_page(item) for item in report.fields]
