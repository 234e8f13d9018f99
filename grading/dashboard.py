"""Reads for the study dashboard, the admin's home page for staff: where each active study stands.

Every figure of every active study comes from one query per kind of figure
(counts, graders, imports, grades per day), so the page costs the same
number of queries whatever the size or number of the studies. A viewer gets
only the figures behind the admin lists they may open.
"""

from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta

from django.contrib.auth.base_user import AbstractBaseUser
from django.db.models import Count, Exists, F, IntegerField, OuterRef, QuerySet, Subquery, Value, Window
from django.db.models.functions import Coalesce, RowNumber, TruncDate
from django.utils import timezone

from studies.models import Image, ImageImport, Patient, Study

from .models import Consensus, Grade, GraderQueue
from .selectors import Progress

WEEKS_CHARTED = 8
IMPORTS_SHOWN = 5


@dataclass(frozen=True)
class Sees:
    """What a viewer of the dashboard may see: the view permission of each admin list a figure links to."""

    patients: bool
    images: bool
    imports: bool
    grades: bool  # every grader's grades, grader names included
    consensus: bool
    adjudicates: bool
    may_import: bool  # the field-day import page of a study
    may_add_study: bool

    @classmethod
    def of(cls, user: AbstractBaseUser) -> "Sees":
        return cls(
            patients=user.has_perm("studies.view_patient"),
            images=user.has_perm("studies.view_image"),
            imports=user.has_perm("studies.view_imageimport"),
            grades=user.has_perms(["grading.view_grade", "grading.view_all_grades"]),
            consensus=user.has_perm("grading.view_consensus"),
            adjudicates=user.has_perm("grading.adjudicate_grade"),
            may_import=user.has_perms(["studies.add_patient", "studies.add_image"]),
            may_add_study=user.has_perm("studies.add_study"),
        )

    @property
    def waiting(self) -> bool:
        """Patients waiting for adjudication: on the consensus list, or on the adjudication pages."""
        return self.consensus or self.adjudicates


@dataclass
class GraderBar:
    """One grader's progress in one study: patients graded of those in their queue."""

    grader_id: int
    name: str
    progress: Progress


@dataclass
class StudyFigures:
    study: Study
    patients: int
    images: int
    patients_ungraded: int  # patients without any grade yet
    images_ungraded: int  # the photos of those patients
    patients_complete: int  # every grade type (and eye) has the graders wanted
    patients_waiting: int  # a field without a majority, waiting for an adjudicator
    graders: list[GraderBar] = field(default_factory=list)
    imports: list[ImageImport] = field(default_factory=list)
    grades_per_day: dict[str, list[int]] = field(default_factory=dict)  # grade kind -> one count per day

    @property
    def patients_agreed(self) -> int:
        return max(0, self.patients_complete - self.patients_waiting)

    @property
    def patients_in_grading(self) -> int:
        return max(0, self.patients - self.patients_complete)

    def percent_of_patients(self, count: int) -> float:
        return round(100 * count / self.patients, 1) if self.patients else 0

    @property
    def agreed_percent(self) -> float:
        return self.percent_of_patients(self.patients_agreed)

    @property
    def waiting_percent(self) -> float:
        return self.percent_of_patients(self.patients_waiting)

    @property
    def grades_charted(self) -> int:
        return sum(sum(counts) for counts in self.grades_per_day.values())


@dataclass
class Dashboard:
    shown: bool  # the viewer may see studies: otherwise the home page lists what they may open
    sees: Sees
    studies: list[StudyFigures]
    days: list[date]
    inactive_studies: int

    @property
    def weeks(self) -> int:
        return len(self.days) // 7

    def chart_data(self) -> dict:
        """What dashboard.js draws: per study, the grades per day of each kind (for json_script)."""
        return {
            "days": [day.isoformat() for day in self.days],
            "studies": {
                str(figures.study.pk): [
                    {"kind": kind, "label": Grade.Kind(kind).label, "counts": counts}
                    for kind, counts in figures.grades_per_day.items()
                ]
                for figures in self.studies
            },
        }


def home_dashboard(*, viewer: AbstractBaseUser, weeks: int = WEEKS_CHARTED) -> Dashboard:
    """Each active study with the figures this viewer may see, in at most six queries at any size.

    Grader names and grades per day only for those who may see every grader's grades.
    """
    sees = Sees.of(viewer)
    if not viewer.has_perm("studies.view_study"):
        return Dashboard(shown=False, sees=sees, studies=[], days=[], inactive_studies=0)
    first_day = timezone.localdate() - timedelta(days=weeks * 7 - 1)
    days = [first_day + timedelta(days=n) for n in range(weeks * 7)]
    studies = [_figures(study) for study in studies_with_figures()]
    by_id = {figures.study.pk: figures for figures in studies}
    if studies and sees.grades:
        for figures, bar in _grader_bars(study_ids=list(by_id)):
            by_id[figures].graders.append(bar)
        _grades_per_day_add(by_id, days=days)
    if studies and sees.imports:
        for image_import in _latest_imports(study_ids=list(by_id), per_study=IMPORTS_SHOWN):
            by_id[image_import.study_id].imports.append(image_import)
    inactive = Study.objects.filter(is_active=False).count()
    return Dashboard(shown=True, sees=sees, studies=studies, days=days, inactive_studies=inactive)


def studies_with_figures() -> QuerySet[Study]:
    """The active studies with their counts of patients, photos, ungraded, complete and waiting patients."""
    patients = Patient.objects.filter(study=OuterRef("pk"))
    images = Image.objects.filter(study=OuterRef("pk"))
    any_grade = Grade.objects.filter(patient=OuterRef("pk"))
    patient_graded = Grade.objects.filter(patient=OuterRef("patient_id"))
    waiting = Consensus.objects.filter(patient=OuterRef("pk"), method=Consensus.Method.PENDING)
    consensus = Consensus.objects.filter(patient=OuterRef("pk"))
    complete = patients.filter(Exists(consensus), ~Exists(consensus.filter(method=Consensus.Method.TOO_FEW)))
    return (
        Study.objects.filter(is_active=True)
        .select_related("region")
        .annotate(
            patient_count=_count(patients),
            image_count=_count(images),
            patients_ungraded=_count(patients.filter(~Exists(any_grade))),
            images_ungraded=_count(images.filter(~Exists(patient_graded))),
            patients_complete=_count(complete),
            patients_waiting=_count(patients.filter(Exists(waiting))),
        )
        .order_by("name")
    )


def _count(rows: QuerySet) -> Coalesce:
    """The number of rows of one study (an OuterRef to the study), as a subquery."""
    counted = rows.order_by().values("study").annotate(n=Count("pk")).values("n")
    return Coalesce(Subquery(counted, output_field=IntegerField()), Value(0))


def _figures(study: Study) -> StudyFigures:
    return StudyFigures(
        study=study,
        patients=study.patient_count,
        images=study.image_count,
        patients_ungraded=study.patients_ungraded,
        images_ungraded=study.images_ungraded,
        patients_complete=study.patients_complete,
        patients_waiting=study.patients_waiting,
    )


def _grader_bars(*, study_ids: list[int]) -> list[tuple[int, GraderBar]]:
    """(study id, bar) for each grader assigned to these studies, by name, in two queries."""
    assigned = (
        Study.graders.through.objects.filter(study_id__in=study_ids)
        .select_related("user")
        .order_by("user__first_name", "user__last_name", "user__username")
    )
    queues = {
        (queue.study_id, queue.grader_id): queue
        for queue in GraderQueue.objects.filter(study_id__in=study_ids).only(
            "study_id", "grader_id", "graded", "pending"
        )
    }
    return [
        (
            row.study_id,
            GraderBar(
                grader_id=row.user_id,
                name=_name(row.user),
                progress=Progress.of(queues.get((row.study_id, row.user_id))),
            ),
        )
        for row in assigned
    ]


def _name(user) -> str:
    return user.get_full_name() or user.get_username()


def _grades_per_day_add(by_id: dict[int, StudyFigures], *, days: list[date]) -> None:
    """Each study's grades per day and kind over `days` (local dates), from one grouped query."""
    start = timezone.make_aware(datetime.combine(days[0], time.min))
    index = {day: n for n, day in enumerate(days)}
    rows = (
        Grade.objects.filter(patient__study_id__in=list(by_id), created_at__gte=start)
        .annotate(day=TruncDate("created_at"), study_id=F("patient__study_id"))
        .order_by()
        .values("study_id", "day", "kind")
        .annotate(n=Count("pk"))
    )
    for row in rows:
        if row["day"] not in index:
            continue  # graded "tomorrow": a clock ahead of ours
        counts = by_id[row["study_id"]].grades_per_day.setdefault(row["kind"], [0] * len(days))
        counts[index[row["day"]]] += row["n"]
    kinds = list(Grade.Kind.values)
    for figures in by_id.values():  # in one order: regular, repeat, adjudication, reference
        figures.grades_per_day = dict(sorted(figures.grades_per_day.items(), key=lambda i: kinds.index(i[0])))


def _latest_imports(*, study_ids: list[int], per_study: int) -> QuerySet[ImageImport]:
    """The latest field-day imports of each study, newest first, without their (large) file lists."""
    newest_first = [F("created_at").desc(), F("pk").desc()]
    latest = Window(RowNumber(), partition_by=[F("study_id")], order_by=newest_first)
    return (
        ImageImport.objects.filter(study_id__in=study_ids)
        .select_related("created_by")
        .defer("manifest", "errors")
        .annotate(rank=latest)
        .filter(rank__lte=per_study)
        .order_by("study_id", "-created_at", "-pk")
    )
