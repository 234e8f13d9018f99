"""A patient's consensus per field (and eye): the majority of its graders, or an adjudicator's grade.

Once a patient has the study's graders-wanted count of distinct graders
with a current regular grade of a grade type (per eye for a per-eye type),
each field's consensus is the answer more than half of those graders chose.
No such answer puts the patient into the adjudication queue until an
adjudicator's grade settles every field of that grade type and eye.

The rows are written by `patients_refresh` inside the transaction that
saved the grades, under the patient's lock (grading.services' lock order),
so they always match the current grades; lists, exports and the
adjudication queue read them instead of counting votes.
"""

from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field

from django.db import transaction

from studies.models import Patient, Study

from .models import Consensus, Grade, GradeEntry, GradeField

CHUNK = 2000
Method = Consensus.Method


@dataclass
class _Votes:
    """One patient's grades of one grade type and eye."""

    regular: dict[int, dict[int, tuple[int | None, str]]] = field(
        default_factory=dict
    )  # grader -> field -> option
    adjudicated: dict[int, int | None] | None = None  # field -> option, from the latest adjudication


def decide(
    answers: list[tuple[int | None, str]], *, graders: int, wanted: int
) -> tuple[str, int | None, str]:
    """(method, option id, votes summary) for one field from its graders' answers.

    `answers` holds one (option id, option value) per grader who graded the
    patient, None for a field they left blank; blanks are no vote.
    """
    counts = Counter(answer for answer in answers if answer[0] is not None)
    summary = ";".join(
        f"{value}:{count}" for (_, value), count in sorted(counts.items(), key=lambda i: i[0][1])
    )
    if graders < wanted:
        return Method.TOO_FEW, None, summary
    if not counts:
        return Method.MAJORITY, None, summary
    (option_id, _), top = counts.most_common(1)[0]
    if top * 2 > sum(counts.values()):
        return Method.MAJORITY, option_id, summary
    return Method.PENDING, None, summary


def patients_refresh(*, patient_ids: Iterable[int]) -> None:
    """Compute the consensus rows of these patients again from their current grades.

    Call inside the transaction that changed their grades, with the patients locked.
    """
    ids = sorted(set(patient_ids))
    for start in range(0, len(ids), CHUNK):
        _refresh_chunk(ids[start : start + CHUNK])


def study_refresh(*, study: Study) -> None:
    """Every patient of a study, after its graders-wanted count changed."""
    from .services import _patients_locked

    with transaction.atomic():
        patients = Patient.objects.filter(study=study).values("pk")
        _patients_locked(patients)
        patients_refresh(patient_ids=patients.values_list("pk", flat=True))


def _refresh_chunk(patient_ids: list[int]) -> None:
    wanted = dict(Patient.objects.filter(pk__in=patient_ids).values_list("pk", "study__graders_per_patient"))
    groups: dict[tuple[int, int, str], _Votes] = defaultdict(_Votes)
    # Two adjudicators may each have a current adjudication: the latest one counts.
    adjudications: dict[tuple[int, int, str], dict[tuple, dict]] = defaultdict(lambda: defaultdict(dict))
    entries = (
        GradeEntry.objects.filter(
            grade__patient_id__in=patient_ids,
            grade__is_current=True,
            grade__kind__in=[Grade.Kind.REGULAR, Grade.Kind.ADJUDICATION],
        )
        .values_list(
            "grade__patient_id",
            "grade__grade_type_id",
            "grade__eye",
            "grade__grader_id",
            "grade__kind",
            "grade__created_at",
            "grade_id",
            "field_id",
            "option_id",
            "option__value",
        )  # fmt: skip
        .iterator(chunk_size=CHUNK)
    )
    for (
        patient_id,
        type_id,
        eye,
        grader_id,
        kind,
        created_at,
        grade_id,
        field_id,
        option_id,
        value,
    ) in entries:
        key = (patient_id, type_id, eye)
        if kind == Grade.Kind.REGULAR:
            groups[key].regular.setdefault(grader_id, {})[field_id] = (option_id, value or "")
        else:
            adjudications[key][(created_at, grade_id)][field_id] = option_id
    for key, by_grade in adjudications.items():
        groups[key].adjudicated = by_grade[max(by_grade)]
    fields_of: dict[int, list[int]] = defaultdict(list)
    type_ids = {type_id for _, type_id, _ in groups}
    for field_id, type_id in GradeField.objects.filter(grade_type_id__in=type_ids).values_list(
        "pk", "grade_type_id"
    ):
        fields_of[type_id].append(field_id)
    rows = []
    for (patient_id, type_id, eye), group in groups.items():
        for field_id in fields_of[type_id]:
            answers = [mine.get(field_id, (None, "")) for mine in group.regular.values()]
            method, option_id, votes = decide(answers, graders=len(group.regular), wanted=wanted[patient_id])
            if group.adjudicated is not None:
                method, option_id = Method.ADJUDICATED, group.adjudicated.get(field_id)
            rows.append(
                Consensus(
                    patient_id=patient_id,
                    grade_type_id=type_id,
                    eye=eye,
                    field_id=field_id,
                    option_id=option_id,
                    method=method,
                    graders=len(group.regular),
                    votes=votes[:500],
                )  # fmt: skip
            )
    Consensus.objects.filter(patient_id__in=patient_ids).delete()
    Consensus.objects.bulk_create(rows, batch_size=CHUNK)
