"""A field-day import prepared in chunks: any number of workers, all or nothing, no orphans, few requests."""

import hashlib
import io
import json
import math
import os
import threading
import zipfile
from datetime import timedelta

import pytest
from django.conf import settings
from django.db import connection, connections
from django.db.models import F
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from studies import chunks, services, workers
from studies.models import Image, ImageImport, ImportChunk, Patient
from tests import images
from tests.factories import StudyFactory
from tests.storage import local_files
from tests.studies.test_field_day_import import zip_of

pytest_plugins = ["tests.s3server"]

# Chunks are queued for `db_worker` instead of prepared at once: the test says who prepares them, and when.
DATABASE_TASKS = {"default": {"BACKEND": "django_tasks_db.DatabaseBackend", "QUEUES": ["default"]}}
PART_BYTES = 2000  # a photo here is about 730 bytes: several photos per part, several chunks per import
LONG_AGO = timedelta(hours=1)  # past IMPORT_CHUNK_TIMEOUT_MINUTES: the worker is taken for dead


def field_day(count: int = 12, *, seed: int = 0) -> dict[str, bytes]:
    """`count` small photos in the <patient code>/<eye>/<file> layout, both eyes of each patient."""
    return {
        f"P{n // 2 + 1:03d}/{'RL'[n % 2]}/photo-{n:02d}.jpg": images.jpeg(seed=seed + n) for n in range(count)
    }


def upload_files(photos: dict[str, bytes], source: str) -> dict[str, bytes]:
    return {"day.zip": zip_of(photos)} if source == "zip" else photos


class Upload:
    """One import driven through its HTTP endpoints, its parts sent one by one in the order a test picks."""

    def __init__(self, client, study, files: dict[str, bytes], source: str, capture):
        self.client = client
        self.capture = capture
        self.files = files
        start = client.post(
            reverse("admin:studies_study_import_start", args=[study.pk]),
            json.dumps({"source": source, "files": [{"path": p, "size": len(d)} for p, d in files.items()]}),
            content_type="application/json",
        )
        assert start.status_code == 201, start.content
        self.opened = start.json()
        self.pk = self.opened["id"]
        self.sent = b"".join(files.values())  # a ZIP as it is, a folder's files one after the other
        self.part_requests = 0

    @property
    def parts_total(self) -> int:
        return self.opened["parts_total"]

    @property
    def part_bytes(self) -> int:
        return self.opened["part_bytes"]

    def send(self, *parts: int) -> None:
        size = self.part_bytes
        for part in parts:
            with self.capture(execute=True):
                response = self.client.post(
                    f"{self.opened['part_url']}?part_index={part}",
                    self.sent[part * size : (part + 1) * size],
                    content_type="application/octet-stream",
                )
            self.part_requests += 1
            assert response.status_code == 200, response.content
            self.wanted = response.json()["wanted"]

    def send_all(self) -> "Upload":
        self.send(*range(self.parts_total))
        return self

    def finish(self) -> dict:
        with self.capture(execute=True):
            response = self.client.post(self.opened["finish_url"])
        assert response.status_code == 200, response.content
        return self.status()  # the store ran once the finishing request's transaction committed

    def status(self) -> dict:
        with self.capture(execute=True):  # the status page hands out again what vanished workers held
            return self.client.get(self.opened["status_url"]).json()

    @property
    def image_import(self) -> ImageImport:
        return ImageImport.objects.get(pk=self.pk)

    def chunks(self) -> list[ImportChunk]:
        return list(ImportChunk.objects.filter(image_import_id=self.pk).order_by("index"))


@pytest.fixture
def importer(client_for, collector):
    return client_for(collector)


@pytest.fixture
def start(importer, django_capture_on_commit_callbacks):
    def make(study, files: dict[str, bytes], source: str) -> Upload:
        return Upload(importer, study, files, source, django_capture_on_commit_callbacks)

    return make


@pytest.fixture
def queued(settings):
    """Chunks wait in the database queue: nothing is prepared until the test runs a worker."""
    settings.TASKS = DATABASE_TASKS
    settings.IMPORT_PART_BYTES = PART_BYTES


def image_rows(study) -> list[tuple]:
    """What the patient pages show of each stored photo."""
    return sorted(
        Image.objects.filter(study=study).values_list(
            "patient__code", "eye", "sha256", "width", "height", "original_name", "bytes"
        )
    )


def files_of_rows() -> set[str]:
    """The files on disk that the stored photos name: their images and thumbnails."""
    location = str(settings.STORAGES["default"]["OPTIONS"]["location"])
    return {
        os.path.join(location, name)
        for file, thumbnail in Image.objects.values_list("file", "thumbnail")
        for name in (file, thumbnail)
    }


def process_in_order(upload: Upload, django_capture_on_commit_callbacks) -> list[bool]:
    """One worker preparing every chunk of the import, one after the other."""
    with django_capture_on_commit_callbacks(execute=True):
        return [services.image_import_chunk_process(chunk_id=chunk.pk) for chunk in upload.chunks()]


def reference_rows(start, photos, source, django_capture_on_commit_callbacks) -> list[tuple]:
    """The rows of the same photos imported into another study by one worker."""
    alone = StudyFactory()
    upload = start(alone, upload_files(photos, source), source)
    upload.send_all()
    assert upload.finish()["status"] == "checking"
    assert all(process_in_order(upload, django_capture_on_commit_callbacks))
    assert upload.status()["status"] == "done"
    return image_rows(alone)


def skip_on_sqlite() -> None:
    if connection.vendor == "sqlite":
        pytest.skip("SQLite's shared in-memory test database cannot serve requests from several threads")


def run_in_threads(*targets) -> list[BaseException]:
    """Run each target in a thread with its own database connection; return what they raised."""
    errors: list[BaseException] = []

    def run(target) -> None:
        try:
            target()
        except BaseException as error:  # noqa: BLE001  (reported by the caller)
            errors.append(error)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=run, args=(target,)) for target in targets]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not any(thread.is_alive() for thread in threads), "a worker thread hung"
    return errors


# 1. Two workers at once ---------------------------------------------------


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("source", ["zip", "folder"])
def test_two_workers_at_once_store_the_same_rows_as_one(
    start, study, queued, source, monkeypatch, django_capture_on_commit_callbacks
):
    skip_on_sqlite()
    photos = field_day(12)
    expected = reference_rows(start, photos, source, django_capture_on_commit_callbacks)
    assert len(expected) == 12

    upload = start(study, upload_files(photos, source), source)
    upload.send_all()
    assert upload.finish()["status"] == "checking"
    chunk_ids = [chunk.pk for chunk in upload.chunks()]
    assert len(chunk_ids) >= 3
    real_prepare = chunks.chunk_prepare

    def slow_prepare(spec):  # long enough that the other worker comes for the same chunks meanwhile
        threading.Event().wait(0.05)
        return real_prepare(spec)

    monkeypatch.setattr(chunks, "chunk_prepare", slow_prepare)
    both_ready = threading.Barrier(2, timeout=30)
    prepared_by: dict[str, list[bool]] = {"forward": [], "backward": []}

    def worker(name: str, order: list[int]):
        def run() -> None:
            both_ready.wait()
            for chunk_id in order:
                prepared_by[name].append(services.image_import_chunk_process(chunk_id=chunk_id))

        return run

    errors = run_in_threads(worker("forward", chunk_ids), worker("backward", chunk_ids[::-1]))

    assert not errors, errors
    assert sum(prepared_by["forward"]) + sum(prepared_by["backward"]) == len(chunk_ids)
    assert any(prepared_by["forward"]) and any(prepared_by["backward"]), "both workers prepared chunks"
    status = upload.status()
    assert status["status"] == "done", status["errors"]
    assert (status["images_created"], status["files_done"]) == (12, 12)
    assert image_rows(study) == expected
    assert local_files() == files_of_rows(), "exactly the files the rows name: no extra, none missing"


@pytest.mark.django_db(transaction=True)
def test_two_database_workers_share_one_import(start, study, queued, django_capture_on_commit_callbacks):
    from django_tasks_db.management.commands.db_worker import Worker
    from django_tasks_db.models import DBTaskResult

    skip_on_sqlite()
    photos = field_day(12, seed=20)
    expected = reference_rows(start, photos, "zip", django_capture_on_commit_callbacks)
    upload = start(study, upload_files(photos, "zip"), "zip")
    upload.send_all()
    assert upload.finish()["status"] == "checking"

    def db_worker(
        name: str,
    ):  # `manage.py db_worker --batch`, without the signal handlers a thread cannot set
        return Worker(
            queue_names=["default"],
            interval=0.01,
            batch=True,
            backend_name="default",
            startup_delay=False,
            max_tasks=None,
            worker_id=name,
            excluded_queue_names=[],
        ).run

    errors = run_in_threads(db_worker("one"), db_worker("two"))

    assert not errors, errors
    status = upload.status()
    assert status["status"] == "done", status["errors"]
    assert image_rows(study) == expected
    assert local_files() == files_of_rows()
    tasks = DBTaskResult.objects.filter(task_path__endswith="image_import_chunk_task")
    assert {task.status for task in tasks} == {"SUCCESSFUL"}
    # the reference import's chunks were prepared already: its tasks find nothing to do
    assert sum(task.return_value is True for task in tasks) == len(upload.chunks())


# 2. A refusal in the last chunk -------------------------------------------


def last_chunk_refusal_case(start, study, source: str, bad_kind: str) -> tuple[Upload, str]:
    photos = field_day(12, seed=40)
    bad_path = "P007/R/zz-last.jpg"
    photos[bad_path] = images.text_as_jpeg() if bad_kind == "not an image" else images.truncated_jpeg()
    upload = start(study, upload_files(photos, source), source)
    # parts in order: the earlier chunks are prepared (and staged) before the bad one is seen
    upload.send_all()
    return upload, bad_path


def assert_refused_and_named(upload: Upload, status: dict, bad_path: str, bad_kind: str) -> None:
    assert status["status"] == "failed"
    assert any(error["file"] == bad_path and bad_kind in error["reason"] for error in status["errors"]), (
        status["errors"]
    )
    assert Image.objects.count() == 0 and Patient.objects.count() == 0
    all_chunks = upload.chunks()
    assert len(all_chunks) >= 3
    assert bad_path in [entry["path"] for entry in all_chunks[-1].entries], (
        "the bad photo is in the last chunk"
    )
    assert any(chunk.prepared for chunk in all_chunks[:-1]), "earlier chunks had staged photos"


@pytest.mark.parametrize("bad_kind", ["not an image", "truncated"])
@pytest.mark.parametrize("source", ["zip", "folder"])
def test_a_refused_photo_in_the_last_chunk_refuses_all_and_leaves_no_file(
    start, study, settings, source, bad_kind
):
    settings.IMPORT_PART_BYTES = PART_BYTES
    upload, bad_path = last_chunk_refusal_case(start, study, source, bad_kind)
    status = upload.finish()
    assert_refused_and_named(upload, status, bad_path, bad_kind)
    assert local_files() == set(), "no part, no photo, no thumbnail left"


@pytest.mark.s3
@pytest.mark.parametrize("source", ["zip", "folder"])
def test_a_refused_photo_in_the_last_chunk_leaves_no_object_on_s3(
    start, study, settings, s3_storage, s3_server, source
):
    settings.IMPORT_PART_BYTES = PART_BYTES
    upload, bad_path = last_chunk_refusal_case(start, study, source, "truncated")
    assert any(key.startswith(f"{s3_storage.location}/images/") for key in s3_server.keys()), "staged"
    status = upload.finish()
    assert_refused_and_named(upload, status, bad_path, "truncated")
    assert s3_server.keys(prefix=f"{s3_storage.location}/") == []


# 3. Workers that vanish or fail -------------------------------------------


def claimed_by_a_dead_worker(chunk: ImportChunk, upload: Upload) -> None:
    """A worker claims the chunk, stages its photos, and dies before recording them."""
    claimed = ImportChunk.objects.filter(pk=chunk.pk, status=ImportChunk.Status.READY).update(
        status=ImportChunk.Status.RUNNING, claimed_at=timezone.now() - LONG_AGO, attempts=F("attempts") + 1
    )
    assert claimed
    chunks.chunk_prepare(services._chunk_spec(chunk, upload.image_import))


def queued_upload(start, study, photos, source="folder") -> Upload:
    upload = start(study, upload_files(photos, source), source)
    upload.send_all()
    assert upload.finish()["status"] == "checking"
    return upload


def test_an_import_whose_worker_died_while_storing_is_stored_again(
    start, study, queued, django_capture_on_commit_callbacks, monkeypatch
):
    upload = queued_upload(start, study, field_day(6, seed=70))
    real_store = services._import_store
    monkeypatch.setattr(services, "_import_store", lambda image_import: None)  # the worker dies here
    with django_capture_on_commit_callbacks(execute=True):
        assert all(services.image_import_chunk_process(chunk_id=c.pk) for c in upload.chunks())
    assert upload.image_import.status == "storing" and not Image.objects.exists()
    assert upload.status()["status"] == "storing", "a recent store is left to its worker"

    monkeypatch.setattr(services, "_import_store", real_store)
    ImportChunk.objects.filter(image_import_id=upload.pk).update(claimed_at=timezone.now() - LONG_AGO)
    status = upload.status()  # the page asks: the store is run again

    assert status["status"] == "done", status["errors"]
    assert status["images_created"] == 6 == Image.objects.count()
    assert local_files() == files_of_rows(), "the staged files are the rows' files, the parts are gone"


def test_a_chunk_whose_worker_died_is_handed_out_again_and_the_import_completes(
    start, study, queued, django_capture_on_commit_callbacks
):
    photos = field_day(12, seed=60)
    expected = reference_rows(start, photos, "folder", django_capture_on_commit_callbacks)
    upload = queued_upload(start, study, photos)
    all_chunks = upload.chunks()
    dead = all_chunks[1]
    claimed_by_a_dead_worker(dead, upload)
    with django_capture_on_commit_callbacks(execute=True):
        assert services.image_import_chunk_process(chunk_id=dead.pk) is False, "still claimed"
        assert all(services.image_import_chunk_process(chunk_id=c.pk) for c in all_chunks if c != dead)
    assert upload.image_import.status == "checking", "waits for the chunk of the dead worker"

    status = upload.status()  # the page asks: the chunk is handed out again

    assert status["status"] == "checking"
    assert ImportChunk.objects.get(pk=dead.pk).status == ImportChunk.Status.READY
    with django_capture_on_commit_callbacks(execute=True):
        assert services.image_import_chunk_process(chunk_id=dead.pk) is True
    status = upload.status()
    assert status["status"] == "done", status["errors"]
    assert image_rows(study) == expected
    assert local_files() == files_of_rows(), "the dead worker's staged files are the rows' files, no orphan"


def test_a_worker_taken_for_dead_cannot_record_over_the_one_that_replaced_it(
    start, study, queued, django_capture_on_commit_callbacks
):
    photos = field_day(12, seed=80)
    expected = reference_rows(start, photos, "folder", django_capture_on_commit_callbacks)
    upload = queued_upload(start, study, photos)
    all_chunks = upload.chunks()
    slow = all_chunks[-1]
    with django_capture_on_commit_callbacks(execute=True):
        assert all(services.image_import_chunk_process(chunk_id=c.pk) for c in all_chunks if c != slow)

    def prepare_too_slowly(spec):
        outcome = chunks.chunk_prepare(spec)
        ImportChunk.objects.filter(pk=slow.pk).update(claimed_at=timezone.now() - LONG_AGO)
        assert services.image_import_resume(image_import=upload.image_import) == [slow.pk]
        assert services.image_import_chunk_process(chunk_id=slow.pk) is True  # its replacement
        return outcome

    with django_capture_on_commit_callbacks(execute=True):
        assert services.image_import_chunk_process(chunk_id=slow.pk, prepare=prepare_too_slowly) is False

    status = upload.status()
    assert status["status"] == "done", status["errors"]
    assert (status["images_created"], status["files_done"]) == (12, 12)
    assert image_rows(study) == expected
    assert local_files() == files_of_rows()


def test_a_chunk_whose_worker_vanishes_three_times_refuses_the_import_and_leaves_no_file(
    start, study, queued, django_capture_on_commit_callbacks
):
    upload = queued_upload(start, study, field_day(12, seed=100))
    all_chunks = upload.chunks()
    doomed = all_chunks[0]
    with django_capture_on_commit_callbacks(execute=True):
        assert all(services.image_import_chunk_process(chunk_id=c.pk) for c in all_chunks if c != doomed)
    for attempt in (1, 2):
        claimed_by_a_dead_worker(doomed, upload)
        assert upload.status()["status"] == "checking", f"handed out again after attempt {attempt}"
        assert ImportChunk.objects.get(pk=doomed.pk).status == ImportChunk.Status.READY
    claimed_by_a_dead_worker(doomed, upload)
    assert any("/images/" in name for name in local_files()), "photos were staged"

    upload.status()  # hands the chunk out no more: the import is refused
    status = upload.status()

    assert status["status"] == "failed"
    assert "the worker stopped 3 times" in status["errors"][0]["reason"]
    assert Image.objects.count() == 0 and Patient.objects.count() == 0
    assert local_files() == set()


def test_the_status_answer_that_gives_up_on_a_chunk_says_the_import_is_refused(
    start, study, queued, django_capture_on_commit_callbacks
):
    upload = queued_upload(start, study, field_day(6, seed=110))
    doomed, *others = upload.chunks()
    with django_capture_on_commit_callbacks(execute=True):
        assert all(services.image_import_chunk_process(chunk_id=c.pk) for c in others)
    ImportChunk.objects.filter(pk=doomed.pk).update(
        status=ImportChunk.Status.RUNNING,
        attempts=services.CHUNK_ATTEMPTS,
        claimed_at=timezone.now() - LONG_AGO,
    )

    status = upload.status()

    assert upload.image_import.status == "failed"
    assert status["status"] == "failed", "the page is told what was just decided"


@pytest.mark.parametrize("how", ["prepare argument", "patched chunk_prepare"])
def test_a_chunk_whose_preparation_raises_refuses_the_import_cleanly(
    start, study, settings, monkeypatch, how, django_capture_on_commit_callbacks
):
    settings.IMPORT_PART_BYTES = PART_BYTES
    real_prepare = chunks.chunk_prepare
    calls: list[int] = []

    def stage_then_crash(spec):
        calls.append(1)
        outcome = real_prepare(spec)  # the photos are staged, then the worker's code fails
        if len(calls) == 2:
            raise RuntimeError("worker crashed")
        return outcome

    if how == "patched chunk_prepare":  # the embedded run, every chunk prepared as its parts arrive
        monkeypatch.setattr(chunks, "chunk_prepare", stage_then_crash)
        upload = start(study, field_day(12, seed=120), "folder")
        upload.send_all()
        status = upload.finish()
    else:
        settings.TASKS = DATABASE_TASKS
        upload = queued_upload(start, study, field_day(12, seed=120))
        with django_capture_on_commit_callbacks(execute=True):
            for chunk in upload.chunks():
                services.image_import_chunk_process(chunk_id=chunk.pk, prepare=stage_then_crash)
        status = upload.status()

    assert len(calls) == 2, "the chunks after the failed one are not prepared"
    assert status["status"] == "failed"
    assert "worker crashed" in status["errors"][0]["reason"]
    assert Image.objects.count() == 0 and Patient.objects.count() == 0
    assert local_files() == set()


# 4. Folder parts carry many files -----------------------------------------


def test_a_folder_is_sent_in_parts_of_several_files(start, study, settings):
    photos = field_day(10, seed=140)
    biggest = max(len(data) for data in photos.values())
    settings.IMPORT_PART_BYTES = 3 * biggest
    upload = start(study, photos, "folder")
    total = sum(len(data) for data in photos.values())

    assert upload.parts_total == math.ceil(total / settings.IMPORT_PART_BYTES)
    assert upload.parts_total <= len(photos) // 2, "far fewer requests than files"
    ends, offset = [], 0
    for data in photos.values():
        ends.append((offset, offset + len(data)))
        offset += len(data)
    for part in range(upload.parts_total - 1):  # the last part carries what is left
        lo, hi = part * upload.part_bytes, (part + 1) * upload.part_bytes
        files_in_part = [begin for begin, end in ends if begin < hi and end > lo]
        assert len(files_in_part) >= 2, f"part {part} carries several files"
    upload.send_all()
    status = upload.finish()
    assert upload.part_requests == upload.parts_total
    assert status["status"] == "done", status["errors"]
    assert status["images_created"] == 10


def test_parts_chunks_and_status_do_not_load_a_folders_file_list(start, study, settings):
    """A folder's list of files (thousands at a field day) is read when its chunks are planned, not after."""
    photos = field_day(6, seed=150)
    settings.IMPORT_PART_BYTES = 2 * max(len(data) for data in photos.values())
    upload = start(study, photos, "folder")
    with CaptureQueriesContext(connection) as queries:
        upload.send_all()
        status = upload.finish()
        upload.status()
    assert status["status"] == "done", status["errors"]
    assert status["images_created"] == 6
    reads = [query["sql"] for query in queries if query["sql"].lstrip().upper().startswith("SELECT")]
    assert reads and not [sql for sql in reads if '"manifest"' in sql]


def test_a_file_larger_than_a_part_spans_several_parts_and_imports(start, study, settings):
    settings.IMPORT_PART_BYTES = PART_BYTES
    big = images.jpeg((640, 480), seed=160, quality=95)
    assert len(big) > 2 * PART_BYTES
    photos = {
        "P001/R/small.jpg": images.jpeg(seed=161),
        "P001/L/big.jpg": big,
        "P002/R/tail.jpg": images.jpeg(),
    }
    upload = start(study, photos, "folder")
    upload.send_all()
    status = upload.finish()
    assert status["status"] == "done", status["errors"]
    stored = Image.objects.get(original_name="P001/L/big.jpg")
    assert (stored.width, stored.height, stored.eye) == (640, 480, "L")
    assert stored.sha256 == hashlib.sha256(big).hexdigest()


# 5. Processing overlaps the upload ----------------------------------------


def test_folder_chunks_are_prepared_while_the_rest_is_still_uploading(start, study, settings):
    settings.IMPORT_PART_BYTES = PART_BYTES
    upload = start(study, field_day(12, seed=180), "folder")
    first = upload.chunks()[0]
    assert first.last_part < upload.parts_total - 1

    upload.send(*range(first.first_part, first.last_part + 1))

    status = upload.status()
    assert status["status"] == "uploading"
    assert status["files_done"] == len(first.entries) > 0
    assert ImportChunk.objects.get(pk=first.pk).status == ImportChunk.Status.DONE
    assert ImportChunk.objects.filter(image_import_id=upload.pk, status="waiting").exists()
    assert Image.objects.count() == 0, "rows wait for the whole import"
    upload.send(*range(first.last_part + 1, upload.parts_total))
    status = upload.finish()
    assert status["status"] == "done", status["errors"]
    assert status["images_created"] == 12


ZIP_READ_BLOCK = 250  # the ZIP's directory is read in blocks; parts are whole blocks, as 8 MB parts are


def zip_part_bytes(data: bytes, *, directory_in_last_part: bool) -> int:
    """A part size about PART_BYTES whose last part holds the ZIP's whole directory, or only its end."""
    start_dir = zipfile.ZipFile(io.BytesIO(data)).start_dir
    for part_bytes in range(PART_BYTES, 3 * PART_BYTES, ZIP_READ_BLOCK):
        last_part_start = (len(data) - 1) // part_bytes * part_bytes
        if (last_part_start <= start_dir) == directory_in_last_part:
            return part_bytes
    raise AssertionError("no such part size")


def test_zip_chunks_are_prepared_once_the_directory_and_their_parts_arrived(
    start, study, settings, monkeypatch
):
    monkeypatch.setattr(chunks, "READ_BLOCK", ZIP_READ_BLOCK)
    files = upload_files(field_day(12, seed=200), "zip")
    settings.IMPORT_PART_BYTES = zip_part_bytes(files["day.zip"], directory_in_last_part=True)
    upload = start(study, files, "zip")
    last = upload.parts_total - 1
    assert upload.opened["parts_first"] == [last], "the page sends the directory first"

    upload.send(last)
    first = upload.chunks()[0]
    assert first.last_part < last - 1, "more parts are still to come"
    upload.send(*range(first.first_part, first.last_part + 1))

    status = upload.status()
    assert status["status"] == "uploading"
    assert ImportChunk.objects.get(pk=first.pk).status == ImportChunk.Status.DONE
    assert status["files_done"] >= len(first.entries) > 0
    assert ImportChunk.objects.filter(image_import_id=upload.pk, status="waiting").exists()
    upload.send(*range(first.last_part + 1, last))
    status = upload.finish()
    assert status["status"] == "done", status["errors"]
    assert status["images_created"] == 12


def test_zip_whose_directory_spans_the_last_two_parts_is_still_prepared_during_the_upload(
    start, study, settings, monkeypatch
):
    monkeypatch.setattr(chunks, "READ_BLOCK", ZIP_READ_BLOCK)
    files = upload_files(field_day(12, seed=210), "zip")
    settings.IMPORT_PART_BYTES = zip_part_bytes(files["day.zip"], directory_in_last_part=False)
    upload = start(study, files, "zip")
    last = upload.parts_total - 1
    assert last >= 3

    assert upload.opened["parts_first"] == [last]
    upload.send(last)
    assert upload.wanted == [last - 1], "the server asks for the part holding the rest of the directory"
    upload.send(last - 1, *range(last - 2))  # then everything but one part

    assert upload.image_import.planned, "the directory is known before the upload's last request"
    assert upload.status()["files_done"] > 0, "photos are prepared while the upload goes on"
    upload.send(last - 2)
    assert upload.finish()["status"] == "done"


# 6. No avoidable request on S3 --------------------------------------------


@pytest.fixture
def s3_calls(monkeypatch):
    """Every S3 request the code makes, from any thread: (operation, key)."""
    from botocore.client import BaseClient

    calls: list[tuple[str, str]] = []
    real_call = BaseClient._make_api_call

    def counted(self, operation_name, api_params):
        calls.append((operation_name, api_params.get("Key", "")))
        return real_call(self, operation_name, api_params)

    monkeypatch.setattr(BaseClient, "_make_api_call", counted)
    return calls


@pytest.mark.s3
@pytest.mark.parametrize("source", ["zip", "folder"])
def test_an_import_on_s3_makes_no_avoidable_request(start, study, settings, s3_storage, s3_calls, source):
    settings.IMPORT_PART_BYTES = PART_BYTES
    photos = field_day(6, seed=220)
    upload = start(study, upload_files(photos, source), source)
    upload.send_all()
    status = upload.finish()
    assert status["status"] == "done", status["errors"]

    operations = [operation for operation, _ in s3_calls]
    assert operations.count("HeadObject") == 0, "no name check before a write, no existence check"
    assert operations.count("PutObject") == upload.parts_total + 2 * len(photos)
    photo_keys = {
        f"{s3_storage.location}/{name}"
        for row in Image.objects.values_list("file", "thumbnail")
        for name in row
    }
    assert not [key for operation, key in s3_calls if operation == "GetObject" and key in photo_keys], (
        "no read-back of a photo just written"
    )
    assert {operation for operation in operations} <= {"PutObject", "GetObject", "DeleteObjects"}, operations


# 7. The embedded run's process pool ---------------------------------------


@pytest.fixture(scope="module")
def pool_stopped_at_the_end():
    """One pool for the module's tests (its processes take seconds to start), stopped after them."""
    yield
    if workers._processes is not None:
        workers._processes.shutdown()
    if workers._threads is not None:
        workers._threads.shutdown()
    workers._processes = None
    workers._threads = None


@pytest.fixture
def pool(settings, pool_stopped_at_the_end):
    settings.IMPORT_PROCESSES = 2


def prepared_fields(item) -> tuple:
    assert not isinstance(item, str), item
    return (item.sha256, item.width, item.height, item.extension, item.stored_bytes, item.thumbnail)


def test_the_pool_prepares_uploaded_files_as_the_calling_thread_does(pool, settings, tmp_path):
    sources = [
        ("a.jpg", images.jpeg(seed=1, gps=True)),
        ("b.png", images.png()),
        ("c.jpg", images.jpeg(seed=3)),
    ]
    files = []
    for name, data in [*sources, ("bad.jpg", images.text_as_jpeg())]:
        (tmp_path / name).write_bytes(data)
        files.append((name, tmp_path / name))

    in_pool = workers.files_prepare(files, workdir=tmp_path)
    assert workers._processes is not None, "the pool was used"
    settings.IMPORT_PROCESSES = 0
    inline = workers.files_prepare(files, workdir=tmp_path)

    assert [prepared_fields(item) for item in in_pool[:3]] == [prepared_fields(item) for item in inline[:3]]
    assert "not an image" in in_pool[3] and in_pool[3] == inline[3]


def test_chunks_prepared_in_the_pool_store_the_same_rows_as_inline(
    pool, start, study, queued, django_capture_on_commit_callbacks
):
    photos = field_day(8, seed=240)
    expected = reference_rows(start, photos, "zip", django_capture_on_commit_callbacks)
    upload = queued_upload(start, study, photos, "zip")
    with django_capture_on_commit_callbacks(execute=True):
        for chunk in upload.chunks():
            assert services.image_import_chunk_process(
                chunk_id=chunk.pk,
                prepare=lambda spec: workers._in_pool(chunks.chunk_prepare, workers._with_context(spec)),
            )
    assert workers._processes is not None, "the pool was used"
    status = upload.status()
    assert status["status"] == "done", status["errors"]
    assert image_rows(study) == expected
    assert local_files() == files_of_rows()


@pytest.mark.django_db(transaction=True)
def test_the_embedded_run_imports_with_its_pool(pool, start, study, settings):
    import time

    skip_on_sqlite()  # the pool's threads record the chunks on connections of their own
    settings.IMPORT_PART_BYTES = PART_BYTES
    assert workers.uses_pool()
    upload = start(study, field_day(12, seed=260), "folder")
    upload.send_all()
    upload.finish()
    deadline = time.monotonic() + 30
    while (status := upload.status())["status"] not in ("done", "failed") and time.monotonic() < deadline:
        time.sleep(0.1)
    assert status["status"] == "done", status["errors"]
    assert status["images_created"] == 12
    assert local_files() == files_of_rows()


def test_pool_processes_exit_when_the_web_process_is_killed(tmp_path):
    """A killed web process (runserver restarting, the OOM killer) leaves no pool process behind."""
    import os
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    script = (
        "import os, django\n"
        "os.environ['DJANGO_SETTINGS_MODULE'] = 'settings.test'\n"
        "django.setup()\n"
        "from django.conf import settings\n"
        "settings.IMPORT_PROCESSES = 2\n"
        "from studies import workers\n"
        "pool = workers._pool()\n"
        "pids = {pool.submit(os.getpid).result() for _ in range(8)}\n"
        "print(' '.join(str(pid) for pid in pids), flush=True)\n"
        "import time; time.sleep(60)\n"
    )
    web = subprocess.Popen(
        [sys.executable, "-c", script],
        cwd=Path(__file__).resolve().parents[2],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        children = [int(pid) for pid in web.stdout.readline().split()]
        assert children and web.pid not in children
        os.kill(web.pid, signal.SIGKILL)
        web.wait(timeout=10)
        deadline = time.monotonic() + 10
        while any(Path(f"/proc/{pid}").exists() for pid in children) and time.monotonic() < deadline:
            time.sleep(0.1)
        alive = [pid for pid in children if Path(f"/proc/{pid}").exists()]
        assert alive == [], "pool processes outlived the web process"
    finally:
        web.kill()
