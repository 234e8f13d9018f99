"""Background work for studies, run by `manage.py db_worker` (or at once in the embedded run).

django-tasks has no scheduler: the storage sweep queues its own next run
(STORAGE_SWEEP_EVERY_HOURS later) when it ends, and `migrate` (or
`manage.py storage_sweep --schedule`) queues the first one.
"""

from datetime import timedelta

from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, connections
from django.utils import timezone
from django_tasks import task


@task()
def image_import_chunk_task(chunk_id: int) -> bool:
    """Prepare one chunk of a field-day import; any number of `db_worker` processes share them."""
    from .services import image_import_chunk_process

    return image_import_chunk_process(chunk_id=chunk_id)


@task()
def storage_sweep_task() -> dict:
    """Remove abandoned import uploads and unreferenced files, then queue the next sweep."""
    from .services import image_import_resume, storage_sweep

    image_import_resume()  # chunks of imports whose worker vanished, in case nobody watches the page
    try:
        sweep = storage_sweep(older_than=timedelta(hours=settings.STORAGE_SWEEP_AFTER_HOURS))
    finally:
        storage_sweep_schedule()
    return {
        "abandoned_imports": sweep.abandoned_imports,
        "removed": len(sweep.removed),
        "not_removed": sweep.not_removed,
    }


def storage_sweep_schedule() -> bool:
    """Queue a sweep STORAGE_SWEEP_EVERY_HOURS from now, unless one is waiting already.

    Only with a task backend that can run tasks later (the database one, run by
    `manage.py db_worker`); the embedded run's immediate backend cannot, and
    STORAGE_SWEEP_EVERY_HOURS=0 turns the periodic sweep off. Returns whether
    a sweep was queued.
    """
    from . import selectors

    if settings.STORAGE_SWEEP_EVERY_HOURS <= 0 or not storage_sweep_task.get_backend().supports_defer:
        return False
    if selectors.storage_sweep_waiting():
        return False
    run_after = timezone.now() + timedelta(hours=settings.STORAGE_SWEEP_EVERY_HOURS)
    storage_sweep_task.using(run_after=run_after).enqueue()
    return True


def storage_sweep_schedule_after_migrate(*, using: str = DEFAULT_DB_ALIAS, **kwargs) -> None:
    """post_migrate: every release's `migrate` makes sure the sweep's chain of runs is going."""
    from django_tasks_db.models import DBTaskResult

    if using != DEFAULT_DB_ALIAS or not storage_sweep_task.get_backend().supports_defer:
        return
    if DBTaskResult._meta.db_table in connections[using].introspection.table_names():  # not a partial migrate
        storage_sweep_schedule()
