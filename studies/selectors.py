"""Reads for studies, with their joins and counts done so callers cannot cause N+1 queries."""

from collections.abc import Collection
from datetime import datetime

from django.contrib.auth.base_user import AbstractBaseUser
from django.db.models import Count, IntegerField, OuterRef, Q, QuerySet, Subquery, Value
from django.db.models.functions import Coalesce

from .models import Image, ImageImport, Patient, Region, Study

FINISHED_IMPORT = [ImageImport.Status.DONE, ImageImport.Status.FAILED]


def regions_with_counts() -> QuerySet[Region]:
    return Region.objects.annotate(study_count=Count("studies", distinct=True))


def studies_with_counts() -> QuerySet[Study]:
    patients = (
        Patient.objects.filter(study=OuterRef("pk")).values("study").annotate(n=Count("pk")).values("n")
    )
    images = Image.objects.filter(study=OuterRef("pk")).values("study").annotate(n=Count("pk")).values("n")
    return Study.objects.select_related("region", "created_by").annotate(
        patient_count=_subquery_count(patients), image_count=_subquery_count(images)
    )


def patients_with_counts() -> QuerySet[Patient]:
    return Patient.objects.select_related("study").annotate(
        image_count=Count("images"),
        right_count=Count("images", filter=Q(images__eye="R")),
        left_count=Count("images", filter=Q(images__eye="L")),
    )


def images_listed() -> QuerySet[Image]:
    return Image.objects.select_related("patient", "study", "uploaded_by")


def imports_of(*, study: Study) -> QuerySet[ImageImport]:
    return ImageImport.objects.filter(study=study).select_related("created_by")[:20]


def image_for_file_key(*, key: str) -> Image | None:
    """The photo whose stored file or thumbnail has this storage key."""
    return Image.objects.select_related("study").filter(Q(file=key) | Q(thumbnail=key)).first()


def user_may_view_image(*, user: AbstractBaseUser, image: Image) -> bool:
    """Staff with the view permission see every photo; a grader sees those of their studies."""
    if not user.is_active:
        return False
    if user.has_perm("studies.view_image"):
        return True
    return image.study.graders.filter(pk=user.pk).exists()


def _subquery_count(subquery: QuerySet) -> Coalesce:
    return Coalesce(Subquery(subquery, output_field=IntegerField()), Value(0))


def imports_uploading_before(*, before: datetime) -> QuerySet[ImageImport]:
    """Imports still taking parts that were opened before `before`: the candidates for abandonment."""
    return ImageImport.objects.filter(status=ImageImport.Status.UPLOADING, created_at__lt=before).only("pk")


def import_ids_in_progress() -> set[int]:
    """Imports whose uploaded parts are still needed: uploading, queued, checking or storing."""
    return set(ImageImport.objects.exclude(status__in=FINISHED_IMPORT).values_list("pk", flat=True))


def study_ids_importing(*, excluding: Collection[int] = ()) -> set[int]:
    """Studies with an import in progress (but those `excluding`): its photos are staged before their rows."""
    busy = ImageImport.objects.exclude(status__in=FINISHED_IMPORT).exclude(pk__in=excluding)
    return set(busy.values_list("study_id", flat=True))


def image_keys_in_use(*, keys: Collection[str]) -> set[str]:
    """Those of `keys` that a photo's file or thumbnail refers to: two indexed lookups."""
    files = Image.objects.filter(file__in=keys).values_list("file", flat=True)
    thumbnails = Image.objects.filter(thumbnail__in=keys).values_list("thumbnail", flat=True)
    return set(files) | set(thumbnails)


def storage_sweep_waiting() -> bool:
    """Whether a storage sweep is queued for the worker already."""
    from django_tasks import TaskResultStatus
    from django_tasks_db.models import DBTaskResult

    from .tasks import storage_sweep_task

    return DBTaskResult.objects.filter(
        task_path=storage_sweep_task.module_path, status=TaskResultStatus.READY
    ).exists()
