"""Studies, their patients and the patients' eyelid photos."""

import uuid
from decimal import Decimal

from django.conf import settings
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.db.models import Q


class Region(models.Model):
    name = models.CharField(max_length=200, unique=True)
    country = models.CharField(max_length=200, blank=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return f"{self.name} ({self.country})" if self.country else self.name


class Study(models.Model):
    name = models.CharField(max_length=200, unique=True)
    region = models.ForeignKey(Region, on_delete=models.PROTECT, related_name="studies")
    description = models.TextField(blank=True)
    graders = models.ManyToManyField(
        settings.AUTH_USER_MODEL,
        blank=True,
        related_name="graded_studies",
        help_text="Users allowed to grade this study.",
    )
    masked_codes = models.BooleanField(
        "mask patient codes",
        default=True,
        help_text="Graders see 'Patient 17 of 240' instead of the patient's code.",
    )
    randomized_order = models.BooleanField(
        default=True,
        help_text="Each grader sees patients and images in a random order of their own; "
        "otherwise in the order they were added.",
    )
    graders_per_patient = models.PositiveSmallIntegerField(
        "graders wanted per patient",
        default=3,
        validators=[MinValueValidator(1), MaxValueValidator(20)],
    )
    repeat_share = models.DecimalField(
        "share shown again for repeat grading",
        max_digits=3,
        decimal_places=2,
        default=Decimal("0.10"),
        validators=[MinValueValidator(Decimal("0")), MaxValueValidator(Decimal("1"))],
        help_text="Share of a grader's patients shown again, unannounced, to measure repeatability.",
    )
    repeat_gap_min = models.PositiveSmallIntegerField(
        "fewest patients before a repeat",
        default=10,
        validators=[MinValueValidator(1), MaxValueValidator(1000)],
        help_text="A repeat comes back after at least this many other patients (a random number more).",
    )
    is_certification = models.BooleanField(
        "certification set",
        default=False,
        help_text="Trainee graders grade this study and are measured against its reference grades.",
    )
    pass_kappa = models.DecimalField(
        "pass mark (kappa)",
        max_digits=3,
        decimal_places=2,
        default=Decimal("0.70"),
        validators=[MinValueValidator(Decimal("0")), MaxValueValidator(Decimal("1"))],
        help_text="A trainee passes with at least this Cohen's kappa against the reference on every field.",
    )
    certification_required = models.ForeignKey(
        "self",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="+",
        limit_choices_to={"is_certification": True},
        verbose_name="certification required",
        help_text="Only graders who passed this certification set may be assigned to this study.",
    )
    is_active = models.BooleanField("active", default=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        editable=False,
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]
        verbose_name_plural = "studies"
        constraints = [
            models.CheckConstraint(
                condition=Q(repeat_share__gte=0) & Q(repeat_share__lte=1),
                name="study_repeat_share_between_0_and_1",
            ),
            models.CheckConstraint(
                condition=Q(graders_per_patient__gte=1), name="study_graders_per_patient_positive"
            ),
            models.CheckConstraint(
                condition=Q(pass_kappa__gte=0) & Q(pass_kappa__lte=1), name="study_pass_kappa_between_0_and_1"
            ),
        ]

    def __str__(self) -> str:
        return self.name


class Patient(models.Model):
    class Sex(models.TextChoices):
        FEMALE = "F", "Female"
        MALE = "M", "Male"
        OTHER = "O", "Other"
        UNKNOWN = "U", "Unknown"

    study = models.ForeignKey(Study, on_delete=models.PROTECT, related_name="patients")
    code = models.CharField(max_length=64, help_text="The field team's code, unique within the study.")
    age_years = models.PositiveSmallIntegerField(
        "age (years)", null=True, blank=True, validators=[MaxValueValidator(130)]
    )
    sex = models.CharField(max_length=1, choices=Sex.choices, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["study", "code"]
        constraints = [
            models.UniqueConstraint(fields=["study", "code"], name="patient_code_unique_in_study"),
        ]

    def __str__(self) -> str:
        return f"{self.code} ({self.study})"


class Eye(models.TextChoices):
    RIGHT = "R", "Right"
    LEFT = "L", "Left"
    UNKNOWN = "U", "Unknown"


class Image(models.Model):
    """One photo of one eye. The stored file has EXIF orientation applied and no EXIF left."""

    patient = models.ForeignKey(Patient, on_delete=models.PROTECT, related_name="images")
    # Copied from the patient so the database can refuse the same file twice in a study.
    study = models.ForeignKey(Study, on_delete=models.PROTECT, related_name="images", editable=False)
    eye = models.CharField(max_length=1, choices=Eye.choices, default=Eye.UNKNOWN)
    file = models.FileField(max_length=255)
    thumbnail = models.FileField(max_length=255)
    sha256 = models.CharField(max_length=64, editable=False, help_text="SHA-256 of the file as uploaded.")
    width = models.PositiveIntegerField(editable=False)
    height = models.PositiveIntegerField(editable=False)
    bytes = models.PositiveBigIntegerField("size (bytes)", editable=False)
    original_name = models.CharField(max_length=255, editable=False)
    uploaded_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+", editable=False
    )
    uploaded_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["patient", "eye", "uploaded_at", "id"]
        constraints = [
            models.UniqueConstraint(fields=["study", "sha256"], name="image_file_unique_in_study"),
        ]
        indexes = [
            models.Index(fields=["file"], name="image_file_key"),
            models.Index(fields=["thumbnail"], name="image_thumbnail_key"),
            models.Index(fields=["patient", "eye"], name="image_patient_eye"),
        ]

    def __str__(self) -> str:
        return f"{self.patient.code}, {self.get_eye_display().lower()} eye, {self.original_name or 'photo'}"


def _new_token() -> str:
    return uuid.uuid4().hex


class ImageImport(models.Model):
    """A field day's photos, uploaded in parts and then checked and stored in the background."""

    class Source(models.TextChoices):
        ZIP = "zip", "ZIP file"
        FOLDER = "folder", "Folder"

    class Status(models.TextChoices):
        UPLOADING = "uploading", "Uploading"
        QUEUED = "queued", "Waiting to be processed"
        CHECKING = "checking", "Checking files"
        STORING = "storing", "Storing files"
        DONE = "done", "Done"
        FAILED = "failed", "Refused"

    study = models.ForeignKey(Study, on_delete=models.CASCADE, related_name="imports")
    source = models.CharField(max_length=10, choices=Source.choices)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.UPLOADING)
    # The uploaded files: [{"path": "P001/R/a.jpg", "size": 123, "parts": 1}, ...]. Read when the chunks are
    # planned; parts, chunks and status requests defer it (a folder's thousands of files, decoded each time).
    manifest = models.JSONField(default=list, editable=False)
    bytes_expected = models.PositiveBigIntegerField(default=0)
    files_total = models.PositiveIntegerField(default=0)
    files_done = models.PositiveIntegerField(default=0)
    patients_created = models.PositiveIntegerField(default=0)
    images_created = models.PositiveIntegerField(default=0)
    # [{"file": "P001/R/a.jpg", "reason": "not an image"}, ...]
    errors = models.JSONField(default=list, editable=False)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+", editable=False
    )
    created_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    # The upload is cut into parts of part_bytes (the ZIP, or the folder's files one after another).
    token = models.CharField(max_length=32, default=_new_token, editable=False)
    part_bytes = models.PositiveIntegerField(default=0, editable=False)
    parts_total = models.PositiveIntegerField(default=0, editable=False)
    parts_received = models.JSONField(default=list, editable=False)
    # Set once the chunks are planned: at the start for a folder, when a ZIP's directory has arrived.
    planned = models.BooleanField(default=False, editable=False)

    class Meta:
        ordering = ["-created_at"]
        verbose_name = "field-day import"

    def __str__(self) -> str:
        return f"Import #{self.pk} into {self.study}"

    @property
    def is_finished(self) -> bool:
        return self.status in {self.Status.DONE, self.Status.FAILED}


class ImportChunk(models.Model):
    """A run of an import's photos that any worker may prepare once the parts under it have arrived."""

    class Status(models.TextChoices):
        WAITING = "waiting", "Waiting for its parts"
        READY = "ready", "Ready"
        RUNNING = "running", "Being prepared"
        DONE = "done", "Prepared"

    image_import = models.ForeignKey(ImageImport, on_delete=models.CASCADE, related_name="chunks")
    index = models.PositiveIntegerField()
    # [{"i": 0, "path": "P001/R/a.jpg", "start": 0, "end": 1234, ...ZIP member fields}, ...]
    entries = models.JSONField(default=list)
    first_part = models.PositiveIntegerField()
    last_part = models.IntegerField()  # first_part - 1 when the chunk needs no part (empty files)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.WAITING)
    attempts = models.PositiveSmallIntegerField(default=0)
    claimed_at = models.DateTimeField(null=True, blank=True)
    # [{"i", "path", "sha256", "width", "height", "bytes", "file", "thumbnail"}, ...] once prepared
    prepared = models.JSONField(default=list)
    refusals = models.JSONField(default=list)  # [{"file": ..., "reason": ...}]

    class Meta:
        ordering = ["image_import", "index"]
        constraints = [
            models.UniqueConstraint(fields=["image_import", "index"], name="import_chunk_unique_index"),
        ]

    def __str__(self) -> str:
        return f"Chunk {self.index} of import #{self.image_import_id}"
