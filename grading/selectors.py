"""Reads for grading: the grader's queue, progress, the grading page's data, grade types.

Every function here runs a fixed number of queries, whatever the study's size.
"""

import hashlib
from dataclasses import dataclass, field

from django.contrib.auth.base_user import AbstractBaseUser
from django.db.models import Count, Exists, F, IntegerField, OuterRef, Q, QuerySet, Subquery, Value
from django.db.models.functions import Coalesce, Mod

from studies.models import Image, Patient, Study

from .models import Grade, GradeEntry, GradeField, GradeOption, GradeType

# A prime just under 2**31: keys stay inside 64-bit arithmetic in SQLite and PostgreSQL.
ORDER_MODULUS = 2_147_483_629
# A repeat is shown again only after this many other patients, so the grader cannot remember it.
REPEAT_GAP = 10


def _seed(*parts: object) -> int:
    digest = hashlib.sha256(":".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:8], "big")


@dataclass(frozen=True)
class GraderOrder:
    """A grader's own stable random order of a study's patients: key = (id * a + b) mod p."""

    multiplier: int
    offset: int
    randomized: bool

    @classmethod
    def of(cls, *, study: Study, grader: AbstractBaseUser, purpose: str = "order") -> "GraderOrder":
        seed = _seed(purpose, study.pk, grader.pk)
        return cls(
            multiplier=1 + seed % (ORDER_MODULUS - 1),
            offset=(seed >> 31) % ORDER_MODULUS,
            randomized=study.randomized_order,
        )

    def expression(self, id_field: str = "pk"):
        return Mod(F(id_field) * Value(self.multiplier) + Value(self.offset), Value(ORDER_MODULUS))

    def key(self, patient_id: int) -> int:
        return (patient_id * self.multiplier + self.offset) % ORDER_MODULUS

    def ordered(self, patients: QuerySet[Patient]) -> QuerySet[Patient]:
        if not self.randomized:
            return patients.order_by("code", "pk")
        return patients.annotate(grading_key=self.expression()).order_by("grading_key", "pk")


def grader_studies(*, grader: AbstractBaseUser) -> QuerySet[Study]:
    """The active studies a grader is assigned to."""
    return Study.objects.filter(graders=grader, is_active=True).select_related("region").order_by("name")


def assigned_study(*, study_id: int, grader: AbstractBaseUser) -> Study | None:
    """The study if the grader may grade it (assigned and active), else None."""
    return Study.objects.filter(pk=study_id, graders=grader, is_active=True).first()


def _regular_graders(patient_ref) -> Subquery:
    return Coalesce(
        Subquery(
            Grade.objects.filter(patient=patient_ref, kind=Grade.Kind.REGULAR, is_current=True)
            .values("patient")
            .annotate(n=Count("grader", distinct=True))
            .values("n"),
            output_field=IntegerField(),
        ),
        Value(0),
    )


def _graded_by(grader: AbstractBaseUser, kind: str = Grade.Kind.REGULAR) -> Exists:
    return Exists(Grade.objects.filter(patient=OuterRef("pk"), grader=grader, kind=kind, is_current=True))


def queue_for(*, study: Study, grader: AbstractBaseUser) -> QuerySet[Patient]:
    """Patients still to grade by this grader, in the grader's order.

    A patient leaves the queue once the grader has graded it, or once it has
    the study's "graders wanted" regular grades from distinct graders.
    """
    patients = (
        Patient.objects.filter(study=study)
        .annotate(graders_so_far=_regular_graders(OuterRef("pk")))
        .filter(~_graded_by(grader), graders_so_far__lt=study.graders_per_patient)
    )
    return GraderOrder.of(study=study, grader=grader).ordered(patients)


def repeats_due(*, study: Study, grader: AbstractBaseUser, gap: int = REPEAT_GAP) -> QuerySet[Patient]:
    """Patients this grader graded that come back, unannounced, for a repeat grade.

    A share (the study's repeat share) of the grader's patients, chosen by a
    stable draw, each once, and only after `gap` other grades by the grader,
    so that the grader is unlikely to remember the patient.
    """
    share = float(study.repeat_share)
    if share <= 0:
        return Patient.objects.none()
    draw = GraderOrder.of(study=study, grader=grader, purpose="repeat")
    first_graded = Subquery(
        Grade.objects.filter(patient=OuterRef("pk"), grader=grader, kind=Grade.Kind.REGULAR)
        .order_by("created_at")
        .values("created_at")[:1]
    )
    patients = (
        Patient.objects.filter(study=study)
        .annotate(repeat_key=draw.expression())
        .filter(repeat_key__lt=int(share * ORDER_MODULUS))
        .filter(_graded_by(grader), ~_graded_by(grader, Grade.Kind.REPEAT))
        .annotate(first_graded_at=first_graded)
    )
    if gap:
        recent = (
            Grade.objects.filter(patient__study=study, grader=grader)
            .order_by("-created_at")
            .values_list("created_at", flat=True)[gap : gap + 1]
        )
        patients = patients.filter(first_graded_at__lte=Subquery(recent))
    return patients.order_by("first_graded_at", "pk")


def next_patient_for(*, study: Study, grader: AbstractBaseUser) -> Patient | None:
    """The next patient this grader should see: a repeat that is due, else the queue's first.

    When the queue is empty, the remaining repeats come without waiting.
    """
    repeat = repeats_due(study=study, grader=grader).first()
    if repeat is not None:
        return repeat
    upcoming = queue_for(study=study, grader=grader).first()
    if upcoming is not None:
        return upcoming
    return repeats_due(study=study, grader=grader, gap=0).first()


@dataclass
class Progress:
    """A grader's progress in a study: patients graded, left, and repeat grades given."""

    graded: int
    to_grade: int
    repeats_done: int = 0
    repeat_share: float = 0.0

    @property
    def total(self) -> int:
        return self.graded + self.to_grade

    @property
    def percent(self) -> int:
        return round(100 * self.graded / self.total) if self.total else 100

    @property
    def shown(self) -> int:
        """Patients shown so far, repeats included: the masked label counts these."""
        return self.graded + self.repeats_done

    @property
    def expected_total(self) -> int:
        """Patients the grader will be shown, repeats included, as the masked label says."""
        return self.total + max(self.repeats_done, round(self.repeat_share * self.total))


def study_progress(*, study: Study, grader: AbstractBaseUser) -> Progress:
    """How many patients this grader has graded in the study, and how many are left."""
    counts = (
        Patient.objects.filter(study=study)
        .annotate(
            graders_so_far=_regular_graders(OuterRef("pk")),
            mine=_graded_by(grader),
            mine_repeat=_graded_by(grader, Grade.Kind.REPEAT),
        )
        .aggregate(
            graded=Count("pk", filter=Q(mine=True)),
            to_grade=Count("pk", filter=Q(mine=False, graders_so_far__lt=study.graders_per_patient)),
            repeats=Count("pk", filter=Q(mine_repeat=True)),
        )
    )
    return Progress(
        graded=counts["graded"],
        to_grade=counts["to_grade"],
        repeats_done=counts["repeats"],
        repeat_share=float(study.repeat_share),
    )


def graded_by_me(*, study: Study, grader: AbstractBaseUser) -> QuerySet[Patient]:
    """Patients the grader has graded (regular grades), first graded first, with when."""
    first = (
        Grade.objects.filter(patient=OuterRef("pk"), grader=grader, kind=Grade.Kind.REGULAR)
        .order_by("created_at")
        .values("created_at")[:1]
    )
    last = (
        Grade.objects.filter(patient=OuterRef("pk"), grader=grader, is_current=True)
        .order_by("-created_at")
        .values("created_at")[:1]
    )
    return (
        Patient.objects.filter(study=study)
        .filter(_graded_by(grader))
        .annotate(first_graded_at=Subquery(first), last_graded_at=Subquery(last))
        .order_by("first_graded_at", "pk")
    )


@dataclass
class FieldForm:
    field: GradeField
    options: list[GradeOption] = field(default_factory=list)


@dataclass
class GradeTypeForm:
    grade_type: GradeType
    fields: list[FieldForm] = field(default_factory=list)


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
    """The patient's photos, in an order of this grader's own when the study randomizes."""
    images = list(Image.objects.filter(patient=patient).order_by("eye", "pk"))
    if randomized:
        images.sort(key=lambda image: _seed("image", grader.pk, image.pk))
    return images


def my_current_answers(*, patient: Patient, grader: AbstractBaseUser) -> dict:
    """The grader's current grades of a patient: their kinds, regular answers and note.

    {"kinds": {kind}, "answers": {(grade_type_id, field_id): option_id}, "note": str}
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
            answers[(entry.grade.grade_type_id, entry.field_id)] = entry.option_id
            note = entry.grade.note or note
    return {"kinds": kinds, "answers": answers, "note": note}


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
