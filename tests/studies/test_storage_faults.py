"""The photo store failing mid-batch (a full local disk, an S3 server that stops): nothing is left behind."""

import errno
import io
import json

import pytest
from django.core.files import File
from django.core.files.storage import storages
from django.core.management import call_command
from django.urls import reverse
from PIL import Image as PILImage

from studies.models import Image, ImageImport, Patient
from studies.storage import PrivateFileSystemStorage
from tests.storage import local_files
from tests.studies.test_admin_upload import patient_form, photo
from tests.studies.test_field_day_import import zip_of

pytest_plugins = ["tests.s3server"]


def noisy_jpeg(seed: int, size=(640, 480)) -> bytes:
    """A photo that does not compress away, so a few of them fill a small disk."""
    import random

    generator = random.Random(seed)
    picture = PILImage.frombytes("RGB", size, generator.randbytes(size[0] * size[1] * 3))
    out = io.BytesIO()
    picture.save(out, "JPEG", quality=90)
    return out.getvalue()


class FillingDisk(PrivateFileSystemStorage):
    """Local storage on a disk with `capacity` bytes free: the write that passes it fails halfway (ENOSPC)."""

    def __init__(self, capacity: int, **options):
        super().__init__(**options)
        self.free = capacity
        self.failed: list[tuple[str, int]] = []  # (name, bytes written before the disk was full)

    def _save(self, name, content):
        return super()._save(name, _FillingContent(content, self, name))


class _FillingContent(File):
    def __init__(self, content, disk: FillingDisk, name: str):
        super().__init__(content, name=content.name)
        self.content, self.disk, self.target = content, disk, name

    def chunks(self, chunk_size=None):
        written = 0
        for chunk in self.content.chunks(4096):
            if len(chunk) > self.disk.free:
                self.disk.failed.append((self.target, written))
                raise OSError(errno.ENOSPC, "No space left on device")
            self.disk.free -= len(chunk)
            written += len(chunk)
            yield chunk


@pytest.fixture
def filling_disk(settings, tmp_path):
    """Point default storage at a disk with `capacity` bytes free; returns the storage."""

    def make(capacity: int) -> FillingDisk:
        settings.STORAGES = {
            **settings.STORAGES,
            "default": {
                "BACKEND": "tests.studies.test_storage_faults.FillingDisk",
                "OPTIONS": {"location": tmp_path / "media", "base_url": "/files/", "capacity": capacity},
            },
        }
        return storages["default"]

    return make


def _follow_messages(client, response) -> str:
    assert response.status_code == 302, response.content[:2000]
    return client.get(response["Location"]).content.decode()


# A local disk that fills mid-batch -------------------------------------------


def test_disk_filling_during_a_bulk_upload_leaves_no_rows_and_no_files(
    client_for, collector, patient, filling_disk, settings
):
    settings.IMPORT_STORAGE_THREADS = 1  # one write after another: the disk fills inside the second photo
    photos = [noisy_jpeg(seed) for seed in range(4)]
    disk = filling_disk(capacity=len(photos[0]) + len(photos[1]) // 2 + 40_000)
    client = client_for(collector)

    response = client.post(
        reverse("admin:studies_patient_change", args=[patient.pk]),
        patient_form(
            patient.study, code=patient.code, files=[photo(f"p{n}.jpg", d) for n, d in enumerate(photos)]
        ),
    )

    page = _follow_messages(client, response)
    assert "No space left on device" in page and "nothing from this batch was stored" in page
    (failed_name, bytes_written), *_ = disk.failed
    assert failed_name.startswith("images/") and bytes_written > 0, "a photo was left half written"
    assert not Image.objects.exists()
    assert local_files() == set(), "no photo, no thumbnail, not even the half-written one"


def test_disk_filling_while_an_import_stores_leaves_no_rows_and_no_files(
    client_for, collector, study, filling_disk, django_capture_on_commit_callbacks, settings
):
    from tests.studies.test_field_day_import import _upload

    settings.IMPORT_STORAGE_THREADS = 1  # one write after another: the disk fills inside the second photo

    day = {f"P00{n}/R/a.jpg": noisy_jpeg(10 + n) for n in range(4)}
    archive = zip_of(day)
    photos = list(day.values())
    # The ZIP's parts fit; the first photo and its thumbnail fit; the second photo does not.
    disk = filling_disk(capacity=len(archive) + len(photos[0]) + len(photos[1]) // 2 + 40_000)

    status = _upload(
        client_for(collector), study, {"day.zip": archive}, "zip", None, django_capture_on_commit_callbacks
    )

    assert status["status"] == "failed"
    assert "No space left on device" in status["errors"][0]["reason"]
    assert "nothing from this batch was stored" in status["errors"][0]["reason"]
    assert disk.failed and disk.failed[0][0].startswith("images/") and disk.failed[0][1] > 0
    assert not Image.objects.exists() and not Patient.objects.exists()
    assert local_files() == set(), "no photo, no thumbnail, no uploaded part, not even the half-written file"


def test_disk_filling_while_a_part_arrives_answers_an_error_and_keeps_no_half_part(
    client_for, collector, study, filling_disk, settings
):
    settings.IMPORT_PART_BYTES = 64 * 1024
    data = noisy_jpeg(30)
    disk = filling_disk(capacity=20_000)
    client = client_for(collector)
    start = client.post(
        reverse("admin:studies_study_import_start", args=[study.pk]),
        json.dumps({"source": "folder", "files": [{"path": "P001/R/a.jpg", "size": len(data)}]}),
        content_type="application/json",
    ).json()

    response = client.post(start["part_url"], {"part_index": 0, "data": io.BytesIO(data[: 64 * 1024])})

    assert response.status_code == 503, "the page's script sends a part again after a 5xx"
    assert "Part 0 could not be stored (" in response.json()["error"]
    assert "No space left on device" in response.json()["error"]
    assert disk.failed and disk.failed[0][1] > 0
    assert local_files() == set()
    assert ImageImport.objects.get().status == ImageImport.Status.UPLOADING, "the part may be sent again"


# An S3 server that stops mid-batch -------------------------------------------


@pytest.fixture
def stoppable_s3_storage(settings, stoppable_s3_server):
    """Default storage on the test's own S3 server, failing fast (one attempt) once it is stopped."""
    import uuid

    from botocore.config import Config

    from tests.s3server import storage_settings

    options = storage_settings(stoppable_s3_server.server)["OPTIONS"]
    options = {
        **options,
        "location": f"test-{uuid.uuid4().hex}",
        "client_config": Config(
            signature_version="s3v4",
            s3={"addressing_style": "path"},
            connect_timeout=2,
            read_timeout=10,
            retries={"max_attempts": 1, "mode": "standard"},
        ),
    }
    settings.STORAGES = {
        **settings.STORAGES,
        "default": {"BACKEND": "storages.backends.s3.S3Storage", "OPTIONS": options},
    }
    return storages["default"]


@pytest.mark.s3
def test_s3_server_stopping_during_a_bulk_upload(
    client_for, collector, patient, stoppable_s3_server, stoppable_s3_storage, monkeypatch, settings
):
    """A clear error, no rows, and no objects once the server is back (the sweep removes what it kept)."""
    settings.IMPORT_STORAGE_THREADS = 1  # one write after another: the server stops between two writes
    from botocore.client import BaseClient

    backend = stoppable_s3_storage
    real_call = BaseClient._make_api_call
    saved: list[str] = []

    def put_until_the_server_stops(client, operation, params):
        if operation == "PutObject":
            if len(saved) == 4:  # two photos and their thumbnails are in the bucket
                stoppable_s3_server.stop()
            saved.append(params["Key"])
        return real_call(client, operation, params)

    monkeypatch.setattr(BaseClient, "_make_api_call", put_until_the_server_stops)
    prefix = f"{backend.location}/"
    client = client_for(collector)

    response = client.post(
        reverse("admin:studies_patient_change", args=[patient.pk]),
        patient_form(
            patient.study,
            code=patient.code,
            files=[photo(f"p{n}.jpg", noisy_jpeg(40 + n, (320, 240))) for n in range(8)],
        ),
    )

    assert len(saved) == 5, "the upload stopped at the first write after the server did"
    page = _follow_messages(client, response)
    assert "The photo store could not save the files" in page
    assert "nothing from this batch was stored" in page
    assert not Image.objects.exists()

    stoppable_s3_server.start()
    left_while_down = stoppable_s3_server.server.keys(prefix)
    assert len(left_while_down) == 4, "the server was down, so the clean-up could not remove them"
    out = io.StringIO()
    call_command("storage_sweep", "--older-than", "0", stdout=out)
    assert stoppable_s3_server.server.keys(prefix) == []
    assert "Removed 4 stored file(s)" in out.getvalue()
