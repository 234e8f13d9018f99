"""Background work for grading, run by `manage.py db_worker` (or at once in the embedded run)."""

from django_tasks import task


@task()
def queue_build_task(study_id: int, grader_id: int) -> int:
    """Build a grader's queue of a large study away from the request that assigned them."""
    from django.contrib.auth import get_user_model

    from studies.models import Study

    from .services import queue_build

    study = Study.objects.get(pk=study_id)
    return queue_build(study=study, grader=get_user_model().objects.get(pk=grader_id)).pk
