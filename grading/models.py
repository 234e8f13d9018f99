"""Grade types that administrators define, and the grades graders give.

A grade type (e.g. the WHO simplified trachoma grading system) has fields
(TF, TI, ...), each with options (present, absent, ungradable). A grade type grades
the patient as a whole or each eye on its own. A grade is one grader's answer
for one patient (and eye) and one grade type: one entry per field.
Grades are never overwritten: a re-grade supersedes the old one, which stays.
"""

import uuid

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone

from studies.models import Eye, Patient, Study


class GradeType(models.Model):
    class Unit(models.TextChoices):
        PATIENT = "patient", "The patient"
        EYE = "eye", "Each eye"

    name = models.CharField(max_length=200, unique=True)
    description = models.TextField(blank=True)
    unit = models.CharField(
        "grades",
        max_length=10,
        choices=Unit.choices,
        default=Unit.PATIENT,
        help_text="Each eye: graders fill one form per eye photographed, next to that eye's photos.",
    )
    is_active = models.BooleanField("active", default=True)
    studies = models.ManyToManyField(
        Study, blank=True, related_name="grade_types", help_text="Studies graded with this grade type."
    )

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class GradeField(models.Model):
    grade_type = models.ForeignKey(GradeType, on_delete=models.CASCADE, related_name="fields")
    name = models.CharField(max_length=100, help_text="The exported column name, e.g. TF.")
    help_text = models.TextField(blank=True, help_text="The definition graders see beside the field.")
    order = models.PositiveSmallIntegerField(default=0)
    required = models.BooleanField(default=True)

    class Meta:
        ordering = ["grade_type", "order", "id"]
        constraints = [
            models.UniqueConstraint(fields=["grade_type", "name"], name="grade_field_name_unique_in_type"),
        ]

    def __str__(self) -> str:
        return f"{self.grade_type.name}: {self.name}"


class GradeOption(models.Model):
    field = models.ForeignKey(GradeField, on_delete=models.CASCADE, related_name="options")
    value = models.CharField(max_length=50, help_text="The exported code, e.g. TF or 1.")
    label = models.CharField(max_length=200)
    order = models.PositiveSmallIntegerField(default=0)
    ungradable = models.BooleanField(
        default=False, help_text="Choosing this says the photo cannot be graded for this field."
    )

    class Meta:
        ordering = ["field", "order", "id"]
        constraints = [
            models.UniqueConstraint(fields=["field", "value"], name="grade_option_value_unique_in_field"),
        ]

    def __str__(self) -> str:
        return self.label


class Grade(models.Model):
    class Kind(models.TextChoices):
        REGULAR = "regular", "Regular"
        REPEAT = "repeat", "Repeat (repeatability)"
        ADJUDICATION = "adjudication", "Adjudication"
        REFERENCE = "reference", "Reference (certification)"

    patient = models.ForeignKey(Patient, on_delete=models.PROTECT, related_name="grades")
    grade_type = models.ForeignKey(GradeType, on_delete=models.PROTECT, related_name="grades")
    grader = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="grades")
    # The eye a per-eye grade type's grade is for; blank for a grade of the whole patient.
    eye = models.CharField(max_length=1, choices=Eye.choices, blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    seconds_spent = models.PositiveIntegerField(default=0)
    note = models.TextField(blank=True)
    kind = models.CharField(max_length=20, choices=Kind.choices, default=Kind.REGULAR)
    is_current = models.BooleanField(default=True, editable=False)
    superseded_by = models.OneToOneField(
        "self", null=True, blank=True, on_delete=models.PROTECT, related_name="supersedes", editable=False
    )
    # The grading page's one-time key: the same form submitted twice makes one grade.
    submission = models.UUIDField(editable=False)

    class Meta:
        ordering = ["-created_at", "-id"]
        permissions = [
            ("view_all_grades", "Can see every grader's grades"),
            ("adjudicate_grade", "Can adjudicate disagreements and enter reference grades"),
        ]
        constraints = [
            models.UniqueConstraint(
                fields=["grader", "submission", "grade_type", "eye"], name="grade_submitted_once"
            ),
            models.UniqueConstraint(
                fields=["patient", "grade_type", "eye", "grader", "kind"],
                condition=Q(is_current=True),
                name="grade_one_current_per_grader_and_kind",
            ),
            models.CheckConstraint(
                condition=Q(is_current=True, superseded_by__isnull=True) | Q(is_current=False),
                name="grade_current_is_not_superseded",
            ),
        ]
        indexes = [
            models.Index(fields=["grader", "patient"], name="grade_grader_patient"),
            models.Index(fields=["patient", "kind", "is_current"], name="grade_patient_kind_current"),
        ]

    def __str__(self) -> str:
        # No patient code: graders see this title, and codes may be masked from them.
        eye = f", {self.get_eye_display().lower()} eye" if self.eye else ""
        return f"{self.grade_type}{eye} grade #{self.pk} by {self.grader}"


class GradeEntry(models.Model):
    grade = models.ForeignKey(Grade, on_delete=models.CASCADE, related_name="entries")
    field = models.ForeignKey(GradeField, on_delete=models.PROTECT, related_name="entries")
    option = models.ForeignKey(
        GradeOption, on_delete=models.PROTECT, related_name="entries", null=True, blank=True
    )

    class Meta:
        ordering = ["grade", "field__order", "field_id"]
        verbose_name_plural = "grade entries"
        constraints = [
            models.UniqueConstraint(fields=["grade", "field"], name="grade_entry_one_per_field"),
        ]

    def __str__(self) -> str:
        return f"{self.field.name}={self.option.value if self.option else ''}"


class GraderQueue(models.Model):
    """One grader's queue of one study, with its counts.

    The counts change only in grading.services, inside the transaction that
    changes the entries they count and under its lock order, so they always
    equal the entries: pages read them instead of counting rows.
    """

    study = models.ForeignKey(Study, on_delete=models.CASCADE, related_name="grader_queues")
    grader = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="grader_queues"
    )
    pending = models.PositiveIntegerField(default=0, help_text="Patients still to grade.")
    graded = models.PositiveIntegerField(default=0, help_text="Patients graded (first grades).")
    repeats_done = models.PositiveIntegerField(default=0)
    # So that two repeats never come back to back while new patients remain.
    last_was_repeat = models.BooleanField(default=False)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["study", "grader"], name="grader_queue_one_per_study")]

    def __str__(self) -> str:
        return f"{self.grader} in {self.study}"

    @property
    def presented(self) -> int:
        """Patients shown and saved so far, repeats included: the clock that repeats wait on."""
        return self.graded + self.repeats_done


class QueueEntry(models.Model):
    """A patient in a grader's queue, at the grader's own random position."""

    class State(models.TextChoices):
        PENDING = "pending", "To grade"
        GRADED = "graded", "Graded"
        CLOSED = "closed", "Has enough graders"

    queue = models.ForeignKey(GraderQueue, on_delete=models.CASCADE, related_name="entries")
    patient = models.ForeignKey(Patient, on_delete=models.CASCADE, related_name="queue_entries")
    position = models.BigIntegerField()
    state = models.CharField(max_length=10, choices=State.choices, default=State.PENDING)
    # Drawn once for repeat grading; once graded, pending until the repeat grade is in.
    repeat_chosen = models.BooleanField(default=False)
    repeat_pending = models.BooleanField(default=False)
    # The queue's `presented` count from which the repeat may come back (a random gap).
    repeat_due = models.PositiveIntegerField(null=True, blank=True)
    # The grader's own number for the patient ("Patient #12"), in the order graded.
    shown_number = models.PositiveIntegerField(null=True, blank=True)
    graded_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["queue", "patient"], name="queue_entry_once")]
        indexes = [
            models.Index(fields=["queue", "state", "position"], name="queue_entry_next"),
            models.Index(fields=["queue", "state", "shown_number"], name="queue_entry_graded"),
            models.Index(fields=["queue", "repeat_pending", "repeat_due"], name="queue_entry_repeat"),
            models.Index(fields=["patient", "state"], name="queue_entry_patient_state"),
        ]

    def __str__(self) -> str:
        return f"entry #{self.pk} of {self.queue}"


class Presentation(models.Model):
    """One showing of a patient to a grader: the grading page's opaque address.

    The random key is the page's URL and its one-time submission key; a
    first grade's presentation also holds one of the patient's wanted slots
    until `reserved_until`, so other graders are offered other patients.
    """

    class Kind(models.TextChoices):
        FIRST = "first", "First grade"
        REPEAT = "repeat", "Repeat"
        REGRADE = "regrade", "Re-grade"

    class Outcome(models.TextChoices):
        SAVED = "saved", "Saved"
        REFUSED = "refused", "Refused: the patient had its graders"
        WITHDRAWN = "withdrawn", "Withdrawn: the patient had its graders"

    key = models.UUIDField(unique=True, default=uuid.uuid4, editable=False)
    queue = models.ForeignKey(GraderQueue, on_delete=models.CASCADE, related_name="presentations")
    entry = models.ForeignKey(QueueEntry, on_delete=models.CASCADE, related_name="presentations")
    patient = models.ForeignKey(Patient, on_delete=models.CASCADE, related_name="+")
    kind = models.CharField(max_length=10, choices=Kind.choices)
    shown_at = models.DateTimeField(default=timezone.now)
    reserved_until = models.DateTimeField(null=True, blank=True)
    ended_at = models.DateTimeField(null=True, blank=True)
    outcome = models.CharField(max_length=10, choices=Outcome.choices, blank=True)

    class Meta:
        indexes = [
            models.Index(fields=["queue"], condition=Q(ended_at__isnull=True), name="presentation_open"),
            models.Index(
                fields=["patient", "reserved_until"],
                condition=Q(ended_at__isnull=True, kind="first"),
                name="presentation_reserving",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} presentation of {self.queue}"


class Consensus(models.Model):
    """A patient's agreed answer for one field (and eye), and how it was reached.

    Kept by grading.consensus inside the transaction that saves the grades it
    rests on, under the patient's lock, so lists and exports read it directly.
    """

    class Method(models.TextChoices):
        MAJORITY = "majority", "Majority"
        ADJUDICATED = "adjudicated", "Adjudicated"
        PENDING = "pending", "Waiting for adjudication"
        TOO_FEW = "too_few", "Too few graders"

    patient = models.ForeignKey(Patient, on_delete=models.CASCADE, related_name="consensus")
    grade_type = models.ForeignKey(GradeType, on_delete=models.CASCADE, related_name="+")
    eye = models.CharField(max_length=1, choices=Eye.choices, blank=True, default="")
    field = models.ForeignKey(GradeField, on_delete=models.CASCADE, related_name="consensus")
    option = models.ForeignKey(GradeOption, null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    method = models.CharField(max_length=12, choices=Method.choices)
    graders = models.PositiveSmallIntegerField(default=0, help_text="Distinct graders with a current grade.")
    # "0:1;1:2": each option value with the number of graders who chose it.
    votes = models.CharField(max_length=500, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name_plural = "consensus"
        constraints = [
            models.UniqueConstraint(
                fields=["patient", "field", "eye"], name="consensus_one_per_field_and_eye"
            ),
        ]
        indexes = [models.Index(fields=["method", "patient"], name="consensus_method_patient")]

    def __str__(self) -> str:
        eye = f" ({self.get_eye_display().lower()} eye)" if self.eye else ""
        return f"{self.field.name}{eye}: {self.get_method_display()}"
