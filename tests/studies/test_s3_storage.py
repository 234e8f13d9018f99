"""Photos on a real S3 server (SeaweedFS): where they land, who can read them, what is cleaned up."""

import hashlib
import io
import time
import urllib.error
import urllib.parse
import urllib.request

import pytest
from django.conf import settings
from django.core.files.storage import storages
from PIL import Image as PILImage
from storages.backends.s3 import S3Storage

from studies.models import Image
from studies.services import StorageFailed, images_delete, images_upload
from tests import images

pytest_plugins = ["tests.s3server"]
pytestmark = pytest.mark.s3

SIGNED_URL_PARAMETERS = {
    "X-Amz-Algorithm",
    "X-Amz-Credential",
    "X-Amz-Date",
    "X-Amz-Expires",
    "X-Amz-SignedHeaders",
    "X-Amz-Signature",
}


def _key(storage, name: str) -> str:
    """The object key of a stored file's name: the storage's prefix, then the name."""
    return f"{storage.location}/{name}"


def _prefix(storage) -> str:
    return f"{storage.location}/"


def _fetch(url: str) -> tuple[int, bytes]:
    """GET a URL the way a browser would: no credentials, only what is in the URL."""
    try:
        with urllib.request.urlopen(url, timeout=30) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def _upload(patient, user, photos: dict[str, bytes], eye: str = "R") -> list[Image]:
    return images_upload(
        patient=patient,
        files=[(name, io.BytesIO(data)) for name, data in photos.items()],
        eye=eye,
        uploaded_by=user,
    )


def test_upload_stores_each_photo_and_its_thumbnail_in_the_bucket(s3_storage, s3_server, patient, collector):
    plain = images.jpeg((640, 480), seed=1)
    photos = {"plain.jpg": plain, "turned.jpg": images.jpeg((640, 480), seed=2, orientation=6, gps=True)}

    _upload(patient, collector, photos)

    rows = {image.original_name: image for image in Image.objects.filter(patient=patient)}
    assert set(rows) == set(photos)
    client = s3_server.client()
    expected_keys = []
    for image in rows.values():
        assert image.file.name.startswith(f"images/study-{patient.study_id}/")
        assert image.thumbnail.name.startswith(f"thumbnails/study-{patient.study_id}/")
        stored = client.head_object(Bucket=s3_server.bucket, Key=_key(s3_storage, image.file.name))
        assert stored["ContentLength"] == image.bytes
        assert stored["ContentType"] == "image/jpeg"
        thumbnail = client.get_object(Bucket=s3_server.bucket, Key=_key(s3_storage, image.thumbnail.name))
        assert thumbnail["ContentType"] == "image/jpeg"
        with PILImage.open(io.BytesIO(thumbnail["Body"].read())) as small:
            assert max(small.size) == settings.IMAGE_THUMBNAIL_SIZE
            assert (small.width > small.height) == (image.width > image.height)  # upright, like the photo
        expected_keys += [_key(s3_storage, image.file.name), _key(s3_storage, image.thumbnail.name)]
    # Exactly those objects under this test's prefix: no leftovers, no temporary copies.
    assert s3_server.keys(_prefix(s3_storage)) == sorted(expected_keys)
    # A photo without metadata that needs no turning is stored as uploaded, byte for byte.
    plain_key = _key(s3_storage, rows["plain.jpg"].file.name)
    assert client.get_object(Bucket=s3_server.bucket, Key=plain_key)["Body"].read() == plain
    assert (rows["turned.jpg"].width, rows["turned.jpg"].height) == (480, 640)


def test_presigned_url_gives_the_stored_bytes_and_the_unsigned_url_is_refused(
    s3_storage, s3_server, patient, collector
):
    original = images.jpeg((640, 480), seed=3)
    (image,) = _upload(patient, collector, {"photo.jpg": original})
    image = Image.objects.get(pk=image.pk)
    key = _key(s3_storage, image.file.name)

    url = image.file.url
    parsed = urllib.parse.urlsplit(url)
    query = urllib.parse.parse_qs(parsed.query)
    assert f"{parsed.scheme}://{parsed.netloc}" == s3_server.endpoint_url
    assert urllib.parse.unquote(parsed.path) == f"/{s3_server.bucket}/{key}"
    assert SIGNED_URL_PARAMETERS <= set(query)
    assert query["X-Amz-Expires"] == ["300"]
    assert query["X-Amz-Credential"][0].startswith(f"{s3_server.access_key}/")

    status, body = _fetch(url)
    assert status == 200
    assert body == original
    assert hashlib.sha256(body).hexdigest() == image.sha256
    stored = s3_server.client().get_object(Bucket=s3_server.bucket, Key=key)["Body"].read()
    assert body == stored

    status, thumbnail = _fetch(image.thumbnail.url)
    assert status == 200
    assert thumbnail.startswith(b"\xff\xd8")

    # The objects are private: no signature, no photo.
    status, refusal = _fetch(f"{s3_server.endpoint_url}/{s3_server.bucket}/{key}")
    assert status == 403, refusal
    assert b"AccessDenied" in refusal
    # Nor with a signature that does not match the URL.
    tampered = url.replace("X-Amz-Signature=", "X-Amz-Signature=0")
    assert _fetch(tampered)[0] == 403
    # Nor with a valid signature for another key.
    thumbnail_path = f"/{s3_server.bucket}/{_key(s3_storage, image.thumbnail.name)}"
    assert _fetch(urllib.parse.urlunsplit(parsed._replace(path=thumbnail_path)))[0] == 403


def test_presigned_url_stops_working_when_it_expires(s3_storage, s3_server, patient, collector):
    (image,) = _upload(patient, collector, {"photo.jpg": images.jpeg((64, 48), seed=4)})

    url = s3_storage.url(image.file.name, expire=1)
    assert _fetch(url)[0] == 200
    time.sleep(2.5)

    assert _fetch(url)[0] == 403


def test_storage_failing_midway_leaves_no_rows_and_no_objects(
    s3_storage, s3_server, patient, collector, monkeypatch, settings
):
    settings.IMPORT_STORAGE_THREADS = 1  # one write after another, so the failure comes at a known point
    from botocore.client import BaseClient

    backend = storages["default"]  # the real S3Storage behind default_storage
    assert isinstance(backend, S3Storage)
    real_call = BaseClient._make_api_call
    calls: list[str] = []
    in_bucket_at_failure: list[str] = []

    def put_then_fail(client, operation, params):
        if operation == "PutObject":
            calls.append(params["Key"])
            if len(calls) == 3:  # photo 1 and its thumbnail are written; photo 2 fails
                in_bucket_at_failure.extend(s3_server.keys(_prefix(s3_storage)))
                raise OSError("S3 connection reset (simulated)")
        return real_call(client, operation, params)

    monkeypatch.setattr(BaseClient, "_make_api_call", put_then_fail)
    photos = {f"photo{n}.jpg": images.jpeg((320, 240), seed=10 + n) for n in range(3)}

    with pytest.raises(StorageFailed, match="simulated"):
        _upload(patient, collector, photos)

    assert len(calls) == 3, "no write began after the failure"
    assert len(in_bucket_at_failure) == 2, "the first photo and its thumbnail really reached S3"
    assert not Image.objects.exists()
    assert s3_server.keys(_prefix(s3_storage)) == []


def test_delete_removes_the_objects_once_the_deletion_is_committed(
    s3_storage, s3_server, patient, collector, django_capture_on_commit_callbacks
):
    photos = {f"photo{n}.jpg": images.jpeg((320, 240), seed=20 + n) for n in range(3)}
    stored = _upload(patient, collector, photos)
    doomed, kept = stored[:2], stored[2:]
    all_keys = s3_server.keys(_prefix(s3_storage))
    assert len(all_keys) == 6

    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        assert images_delete(images=doomed) == 2
    assert not Image.objects.filter(pk__in=[image.pk for image in doomed]).exists()
    assert s3_server.keys(_prefix(s3_storage)) == all_keys, "nothing is removed before the commit"

    for callback in callbacks:
        callback()

    kept_names = [name for image in kept for name in (image.file.name, image.thumbnail.name)]
    assert s3_server.keys(_prefix(s3_storage)) == sorted(_key(s3_storage, name) for name in kept_names)
    for image in doomed:
        assert not s3_storage.exists(image.file.name)
        assert not s3_storage.exists(image.thumbnail.name)
        assert _fetch(image.file.url)[0] == 404
