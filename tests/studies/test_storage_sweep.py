"""The storage sweep: abandoned import uploads and files no row refers to go; everything in use stays."""

import io
import os
import time
from datetime import timedelta

import pytest
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.core.management import call_command
from django.utils import timezone
from django_tasks import TaskResultStatus
from django_tasks_db.models import DBTaskResult

from studies.models import ImageImport
from studies.services import images_upload
from studies.tasks import storage_sweep_task
from tests import images
from tests.factories import StudyFactory

pytest_plugins = ["tests.s3server"]

DB_TASKS = {"default": {"BACKEND": "django_tasks_db.DatabaseBackend", "QUEUES": ["default"]}}


@pytest.fixture(params=["local", pytest.param("s3", marks=pytest.mark.s3)])
def where(request):
    """Sweep local storage, and S3 (where a file's age cannot be set: those tests sweep with 0 hours)."""
    if request.param == "s3":
        request.getfixturevalue("s3_storage")
    return request.param


def put(key: str, *, hours_old: float = 48) -> str:
    saved = default_storage.save(key, ContentFile(b"stored bytes"))
    assert saved == key
    if hours_old and default_storage.__class__.__name__ != "S3Storage":
        then = time.time() - hours_old * 3600
        os.utime(default_storage.path(key), (then, then))
    return key


def an_import(study, status: str, *, hours_old: float = 48) -> ImageImport:
    image_import = ImageImport.objects.create(
        study=study,
        source=ImageImport.Source.FOLDER,
        status=status,
        manifest=[{"path": "P001/R/a.jpg", "size": 10, "parts": 1}],
    )
    ImageImport.objects.filter(pk=image_import.pk).update(
        created_at=timezone.now() - timedelta(hours=hours_old)
    )
    return image_import


def sweep(*arguments: str) -> str:
    out = io.StringIO()
    call_command("storage_sweep", *arguments, stdout=out)
    return out.getvalue()


@pytest.fixture
def leftovers(where, patient, collector):
    """A study's stored photos in use, and around them what a sweep must remove and must keep."""
    photos = images_upload(
        patient=patient,
        files=[(f"p{n}.jpg", io.BytesIO(images.jpeg(seed=n))) for n in range(2)],
        eye="R",
        uploaded_by=collector,
    )
    study = patient.study
    abandoned = an_import(study, ImageImport.Status.UPLOADING)
    refused = an_import(study, ImageImport.Status.FAILED)
    busy_study = StudyFactory()
    storing = an_import(busy_study, ImageImport.Status.STORING)
    return {
        "in use": [key for image in photos for key in (image.file.name, image.thumbnail.name)],
        "orphans": [
            put(f"images/study-{study.pk}/orphan.jpg"),
            put(f"thumbnails/study-{study.pk}/orphan.jpg"),
            put(f"imports/{abandoned.pk}/000000-000000"),
            put(f"imports/{refused.pk}/000000-000000"),
        ],
        "kept": [
            put(f"images/study-{busy_study.pk}/being-stored.jpg"),  # its import's rows come last
            put(f"imports/{storing.pk}/000000-000000"),
            put("exports/not-ours.csv"),  # outside the swept folders
        ],
        "abandoned": abandoned,
    }


def hours_for(where: str) -> str:
    return "24" if where == "local" else "0"


def test_dry_run_lists_what_would_go_and_changes_nothing(where, leftovers):
    output = sweep("--dry-run", "--older-than", hours_for(where))

    for key in leftovers["orphans"]:
        assert f"Would remove {key}" in output
    for key in leftovers["in use"] + leftovers["kept"]:
        assert key not in output
    assert f"Would mark import #{leftovers['abandoned'].pk} abandoned" in output
    assert "Would remove 4 stored file(s); 1 abandoned import(s)." in output
    for key in leftovers["orphans"] + leftovers["in use"] + leftovers["kept"]:
        assert default_storage.exists(key)
    assert ImageImport.objects.get(pk=leftovers["abandoned"].pk).status == ImageImport.Status.UPLOADING


def test_sweep_removes_abandoned_parts_and_unreferenced_files_only(where, leftovers):
    output = sweep("--older-than", hours_for(where))

    assert "Removed 4 stored file(s); 1 abandoned import(s)." in output
    for key in leftovers["orphans"]:
        assert not default_storage.exists(key), key
    for key in leftovers["in use"] + leftovers["kept"]:
        assert default_storage.exists(key), key
    abandoned = ImageImport.objects.get(pk=leftovers["abandoned"].pk)
    assert abandoned.status == ImageImport.Status.FAILED
    assert f"abandoned: no part arrived for {hours_for(where)} hours" in abandoned.errors[0]["reason"]
    assert abandoned.finished_at is not None
    assert "Removed 0 stored file(s); 0 abandoned import(s)." in sweep("--older-than", hours_for(where))


def test_recent_files_and_uploads_still_receiving_parts_are_kept(patient):
    study = patient.study
    slow = an_import(study, ImageImport.Status.UPLOADING, hours_old=30)
    recent = [
        put(f"images/study-{study.pk}/just-written.jpg", hours_old=1),  # a batch whose rows come next
        put(f"imports/{slow.pk}/000000-000000", hours_old=48),
        put(f"imports/{slow.pk}/000001-000000", hours_old=2),  # a part arrived two hours ago
    ]

    assert "Removed 0 stored file(s); 0 abandoned import(s)." in sweep("--older-than", "24")
    assert all(default_storage.exists(key) for key in recent)
    assert ImageImport.objects.get(pk=slow.pk).status == ImageImport.Status.UPLOADING


def test_negative_age_is_refused(db):
    from django.core.management.base import CommandError

    with pytest.raises(CommandError, match="0 or more"):
        sweep("--older-than", "-1")


# The worker's periodic sweep ---------------------------------------------------


def waiting_sweeps():
    return DBTaskResult.objects.filter(
        task_path=storage_sweep_task.module_path, status=TaskResultStatus.READY
    )


def test_schedule_queues_one_sweep_for_the_worker(db, settings):
    settings.TASKS = DB_TASKS

    assert "Queued the storage sweep for 6 hours from now." in sweep("--schedule")
    assert "Not queued: one is waiting already" in sweep("--schedule")

    (waiting,) = waiting_sweeps()
    assert abs(waiting.run_after - (timezone.now() + timedelta(hours=6))) < timedelta(minutes=1)


def test_every_release_migrate_queues_the_sweep(db, settings):
    settings.TASKS = DB_TASKS
    call_command("migrate", verbosity=0)
    assert waiting_sweeps().count() == 1


def test_the_worker_runs_a_due_sweep_and_queues_the_next(db, patient, settings, monkeypatch):
    # The worker drops connections that look stale; the test's open transaction looks so on PostgreSQL.
    monkeypatch.setattr("django_tasks_db.management.commands.db_worker.close_old_connections", lambda: None)
    settings.TASKS = DB_TASKS
    orphan = put(f"images/study-{patient.study_id}/orphan.jpg", hours_old=48)
    sweep("--schedule")
    waiting_sweeps().update(run_after=timezone.now() - timedelta(seconds=1))

    call_command("db_worker", "--batch", "--no-startup-delay", "--no-reload", verbosity=0)

    assert not default_storage.exists(orphan)
    done = DBTaskResult.objects.get(
        task_path=storage_sweep_task.module_path, status=TaskResultStatus.SUCCESSFUL
    )
    assert done.return_value == {"abandoned_imports": [], "removed": 1, "not_removed": []}
    (next_one,) = waiting_sweeps()
    assert next_one.run_after > timezone.now() + timedelta(hours=5)


def test_without_a_worker_nothing_is_queued(db):
    assert "Not queued" in sweep("--schedule")  # the embedded run's immediate backend cannot wait
    assert not DBTaskResult.objects.exists()
