"""Background work for studies, run by `manage.py db_worker` (or at once in the embedded run)."""

from django_tasks import task


@task()
def image_import_process_task(image_import_id: int) -> str:
    from .services import image_import_process

    return image_import_process(image_import_id=image_import_id).status
