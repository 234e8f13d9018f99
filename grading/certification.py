"""Grader certification: trainees' grades of a certification set measured against its reference grades.

A certification set is a study with `is_certification`. Its reference (gold) answers are the current
reference grades (kind REFERENCE); a trainee's answers are their current regular grades. Per trainee and
per field (per eye, for a per-eye grade type) the report gives Cohen's kappa against the reference,
percent agreement and, for two-level fields, sensitivity and specificity. A trainee passes when every
field has a kappa and each is at least the study's pass mark.

Reads a study in three queries whatever its size (fields, answers, trainees), then leaves the figures to
grading.agreement.
"""

from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from django.contrib.auth import get_user_model
from django.contrib.auth.base_user import AbstractBaseUser
from django.db import transaction
from django.db.models import Q

from studies.models import Eye, Study

from . import agreement, selectors
from .models import Grade, GradeEntry, GradeType
from .reports import Ungradable

# Fewer patients compared than this give no kappa: a certificate resting on a handful of photos says little.
MIN_PATIENTS = 10
# Kappa is a float; a pass mark of 0.60 must accept the 0.6 a 8/2/2/8 table gives, whatever its last bit.
_TOLERANCE = 1e-9
NO_REFERENCE = "not enough data: no reference answer"

PASSED = "passed"
UNMEASURED = "no field has a kappa: the reference gives every patient the same answer on every field"
FAILED = "failed"
NOT_STARTED = "not started"


def _too_few(patients: int) -> str:
    return f"not enough data: {patients} patient(s) compared, at least {MIN_PATIENTS} needed"


@dataclass(frozen=True)
class FieldSpec:
    """One field a trainee is measured on: a field of a grade type, for one eye of a per-eye type."""

    grade_type_id: int
    grade_type: str
    field_id: int
    field: str
    eye: str  # "" for a grade type of the whole patient
    positive: str | None  # the positive level of a two-level field, else None
    gradable: frozenset[str]

    @property
    def label(self) -> str:
        """ "TF, right eye", or the field's name for a grade type of the whole patient."""
        return f"{self.field}, {selectors.EYE_TITLES[self.eye]}" if self.eye else self.field

    @property
    def key(self) -> tuple[int, int, str]:
        return (self.grade_type_id, self.field_id, self.eye)


@dataclass
class FieldResult:
    grade_type: str
    field: str
    eye: str
    label: str
    patients: int  # patients with both a reference answer and the trainee's answer
    kappa: agreement.Figure  # Cohen's kappa, trainee against reference
    percent_agreement: agreement.Figure
    sensitivity: agreement.Figure | None = None  # two-level fields only
    specificity: agreement.Figure | None = None
    passed: bool = False
    shortfall: str = ""  # why this field is not passed, "" when it is


@dataclass
class TraineeResult:
    user_id: int
    username: str
    name: str
    status: str  # PASSED, FAILED or NOT_STARTED
    fields: list[FieldResult] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return self.status == PASSED

    @property
    def shortfalls(self) -> list[str]:
        if self.status == NOT_STARTED:
            return [NOT_STARTED]
        shortfalls = [result.shortfall for result in self.fields if not result.passed]
        if self.status == FAILED and not shortfalls:  # every field agreed, none could be measured
            return [UNMEASURED]
        return shortfalls

    @property
    def summary(self) -> str:
        """Why the trainee has not passed, short enough for a form error: "kappa 0.52 on TF, right eye"."""
        shortfalls = self.shortfalls
        if len(shortfalls) <= 2:
            return "; ".join(shortfalls)
        return f"{'; '.join(shortfalls[:2])}; and {len(shortfalls) - 2} more field(s)"


@dataclass
class CertificationReport:
    study: str
    study_id: int
    is_certification: bool
    pass_kappa: float
    ungradable: str
    min_patients: int
    fields: list[str]  # the labels of the fields measured, in order
    trainees: list[TraineeResult]

    @property
    def passed(self) -> int:
        return sum(trainee.passed for trainee in self.trainees)


def certification_report(*, study: Study, ungradable: str = Ungradable.EXCLUDED) -> CertificationReport:
    """Every trainee of a certification set against its reference: per field the figures, then pass or fail.

    Trainees are the graders with a current regular grade in the study and the assigned graders without
    one (status "not started"), by username. Three queries whatever the study's size. No figure is NaN:
    a field without enough data has a kappa of None with a note, and fails.
    """
    specs, results = _results(study=study, users=None, ungradable=ungradable)
    return CertificationReport(
        study=study.name,
        study_id=study.pk,
        is_certification=study.is_certification,
        pass_kappa=float(study.pass_kappa),
        ungradable=ungradable,
        min_patients=MIN_PATIENTS,
        fields=[spec.label for spec in specs],
        trainees=results,
    )


def certification_results(*, study: Study, users: Iterable[AbstractBaseUser]) -> dict[int, TraineeResult]:
    """The given users' results in the certification set `study` (ungradable left out), by user id.

    Two queries (fields, answers), none when no user is given; a user with no current regular grade in
    it is "not started".
    """
    users = list(users)
    if not users:
        return {}
    _specs, results = _results(study=study, users=users, ungradable=Ungradable.EXCLUDED)
    return {result.user_id: result for result in results}


def passed_certification(*, study: Study, users: Iterable[AbstractBaseUser]) -> dict[int, bool]:
    """user id -> whether the user passed the certification set `study`, for each user given."""
    return {
        user_id: result.passed for user_id, result in certification_results(study=study, users=users).items()
    }


def graders_not_certified(*, study: Study, graders: Iterable[AbstractBaseUser]) -> list[AbstractBaseUser]:
    """The given graders who have not passed the certification set `study` requires, in the order given.

    Empty when the study requires no certification. A bounded number of queries whatever the number of
    graders or patients.
    """
    graders = list(graders)
    if study.certification_required_id is None or not graders:
        return []
    results = certification_results(study=study.certification_required, users=graders)
    return [grader for grader in graders if not results[grader.pk].passed]


# --- Reading the study ------------------------------------------------------------------------------------


def _results(
    *, study: Study, users: list[AbstractBaseUser] | None, ungradable: str
) -> tuple[list[FieldSpec], list[TraineeResult]]:
    with transaction.atomic():  # one snapshot of fields, reference and trainees' answers
        forms = selectors.grading_forms(study=study)
        user_ids = None if users is None else {user.pk for user in users}
        reference, answers, started = _current_answers(study=study, user_ids=user_ids, ungradable=ungradable)
        trainees = _trainees(study=study, started=started) if users is None else users
    specs = list(_field_specs(forms, reference))
    pass_kappa = float(study.pass_kappa)
    results = [
        _trainee_result(
            trainee, specs, reference, answers.get(trainee.pk, {}), started=trainee.pk in started,
            pass_kappa=pass_kappa,
        )
        for trainee in sorted(trainees, key=lambda user: user.get_username())
    ]  # fmt: skip
    return specs, results


Key = tuple[int, int, str]  # (grade type, field, eye)


def _answer(value: str | None, is_ungradable: bool, ungradable: str) -> str | None:
    if value is None or (is_ungradable and ungradable == Ungradable.EXCLUDED):
        return None
    return value


def _current_answers(
    *, study: Study, user_ids: set[int] | None, ungradable: str
) -> tuple[dict[Key, dict[int, str]], dict[int, dict[Key, dict[int, str]]], set[int]]:
    """The reference answers (key -> patient -> answer), the trainees' answers (grader -> key -> patient
    -> answer) and the graders with a current regular grade: one query.

    Should two people have entered current reference grades for one patient, the later one counts.
    """
    regular = Q(grade__kind=Grade.Kind.REGULAR)
    if user_ids is not None:
        regular &= Q(grade__grader_id__in=user_ids)
    rows = (
        GradeEntry.objects.filter(grade__patient__study=study, grade__is_current=True)
        .filter(Q(grade__kind=Grade.Kind.REFERENCE) | regular)
        .order_by("grade_id")
        .values_list(
            "grade__kind", "grade__grade_type_id", "field_id", "grade__eye", "grade__patient_id",
            "grade__grader_id", "option__value", "option__ungradable",
        )
    )  # fmt: skip
    reference: dict = defaultdict(dict)
    answers: dict = defaultdict(lambda: defaultdict(dict))
    started = set()
    for kind, grade_type_id, field_id, eye, patient_id, grader_id, value, is_ungradable in rows.iterator(
        chunk_size=5000
    ):
        answer = _answer(value, is_ungradable, ungradable)
        key = (grade_type_id, field_id, eye)
        if kind == Grade.Kind.REFERENCE:
            if answer is None:
                reference[key].pop(patient_id, None)  # a later reference without an answer replaces it too
            else:
                reference[key][patient_id] = answer
            continue
        started.add(grader_id)
        if answer is not None:
            answers[grader_id][key][patient_id] = answer
    return reference, answers, started


def _trainees(*, study: Study, started: set[int]) -> list[AbstractBaseUser]:
    """The assigned graders and whoever else has a current regular grade in the study: one query."""
    users = get_user_model().objects.filter(Q(pk__in=started) | Q(graded_studies=study)).distinct()
    return list(users)


def _field_specs(forms: list[selectors.GradeTypeForm], reference: dict[Key, dict]) -> Iterator[FieldSpec]:
    """Each field measured, in the grading page's order: a per-eye type's once per eye the reference grades
    (right and left when it grades none yet)."""
    for form in forms:
        eyes = [""]
        if form.grade_type.unit == GradeType.Unit.EYE:
            graded = {key[2] for key in reference if key[0] == form.grade_type.pk}
            eyes = [eye for eye in selectors.EYE_ORDER if eye in graded] or [Eye.RIGHT, Eye.LEFT]
        for eye in eyes:
            for item in form.fields:
                gradable = [option.value for option in item.options if not option.ungradable]
                yield FieldSpec(
                    grade_type_id=form.grade_type.pk,
                    grade_type=form.grade_type.name,
                    field_id=item.field.pk,
                    field=item.field.name,
                    eye=str(eye),
                    # Two-level fields (absent / present): the second level is positive.
                    positive=gradable[1] if len(gradable) == 2 else None,
                    gradable=frozenset(gradable),
                )


# --- Figures ----------------------------------------------------------------------------------------------


def _trainee_result(
    trainee: AbstractBaseUser,
    specs: list[FieldSpec],
    reference: dict[Key, dict[int, str]],
    answers: dict[Key, dict[int, str]],
    *,
    started: bool,
    pass_kappa: float,
) -> TraineeResult:
    result = TraineeResult(
        user_id=trainee.pk,
        username=trainee.get_username(),
        name=_display_name(trainee),
        status=NOT_STARTED,
    )
    if not started:
        return result
    result.fields = [
        _field_result(spec, reference.get(spec.key, {}), answers.get(spec.key, {}), pass_kappa=pass_kappa)
        for spec in specs
    ]
    measured = any(item.kappa.value is not None for item in result.fields)
    passed = measured and all(item.passed for item in result.fields)
    result.status = PASSED if passed else FAILED
    return result


def _display_name(user: AbstractBaseUser) -> str:
    full_name = user.get_full_name() if hasattr(user, "get_full_name") else ""
    return full_name or user.get_username()


def _kappa(pairs: list[tuple[str, str]], *, has_reference: bool) -> agreement.Figure:
    """Cohen's kappa of (trainee, reference) pairs; None with a note when there is too little to go on."""
    if not has_reference:
        return agreement.Figure(value=None, units=0, ratings=0, note=NO_REFERENCE)
    if len(pairs) < MIN_PATIENTS:
        return agreement.Figure(
            value=None, units=len(pairs), ratings=2 * len(pairs), note=_too_few(len(pairs))
        )
    return agreement.cohen_kappa(pairs=pairs)


def _shortfall(spec: FieldSpec, kappa: agreement.Figure, pass_kappa: float, pairs: list) -> str:
    """Why this field is not passed, or "" when it is.

    A sign the reference never (or always) calls, which the trainee answered exactly as the
    reference on every patient, has no kappa (one category only) but nothing to fault: passed.
    Rare signs such as TT and CO are often absent from a whole certification set.
    """
    if kappa.value is None:
        enough = len(pairs) >= MIN_PATIENTS
        if enough and all(answer == truth for answer, truth in pairs):
            return ""
        return f"no kappa on {spec.label} ({kappa.note})"
    if kappa.value + _TOLERANCE < pass_kappa:
        return f"kappa {kappa.value:.2f} on {spec.label}"
    return ""


def _field_result(
    spec: FieldSpec, reference: dict[int, str], answers: dict[int, str], *, pass_kappa: float
) -> FieldResult:
    """The trainee against the reference on the patients with both answers."""
    pairs = [(answers[patient], truth) for patient, truth in reference.items() if patient in answers]
    kappa = _kappa(pairs, has_reference=bool(reference))
    shortfall = _shortfall(spec, kappa, pass_kappa, pairs)
    result = FieldResult(
        grade_type=spec.grade_type,
        field=spec.field,
        eye=spec.eye,
        label=spec.label,
        patients=len(pairs),
        kappa=kappa,
        percent_agreement=agreement.percent_agreement(
            ratings=[{"trainee": answer, "reference": truth} for answer, truth in pairs]
        ),
        passed=not shortfall,
        shortfall=shortfall,
    )
    if spec.positive is not None:
        # A reference that calls the photo ungradable is neither positive nor negative.
        graded = [(answer, truth) for answer, truth in pairs if truth in spec.gradable]
        result.sensitivity, result.specificity = agreement.sensitivity_specificity(
            pairs=graded, positive=spec.positive
        )
    return result


# --- CSV --------------------------------------------------------------------------------------------------

CERTIFICATION_COLUMNS = [
    "trainee", "name", "status", "grade_type", "field", "eye", "patients_compared", "kappa",
    "percent_agreement", "sensitivity", "specificity", "passed", "note", "pass_kappa", "ungradable",
]  # fmt: skip


def _value(figure: agreement.Figure | None) -> float | None:
    return None if figure is None else figure.value


def certification_rows(report: CertificationReport) -> Iterator[list]:
    """The report as flat rows under CERTIFICATION_COLUMNS: one per trainee and field, one per trainee not
    started; every row says the pass mark and how ungradable counted."""
    says = Ungradable.says(report.ungradable)
    for trainee in report.trainees:
        if not trainee.fields:
            yield [trainee.username, trainee.name, trainee.status, "", "", "", 0, None, None, None, None,
                   False, NOT_STARTED, report.pass_kappa, says]  # fmt: skip
        for item in trainee.fields:
            yield [
                trainee.username, trainee.name, trainee.status, item.grade_type, item.field, item.eye,
                item.patients, item.kappa.value, item.percent_agreement.value, _value(item.sensitivity),
                _value(item.specificity), item.passed, item.shortfall or item.kappa.note, report.pass_kappa,
                says,
            ]  # fmt: skip
