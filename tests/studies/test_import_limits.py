"""Limits on what a field-day import may hold: expanded size, number of entries, one entry per path."""

import io
import json
import warnings
import zipfile

import pytest
from django.template.defaultfilters import filesizeformat
from django.urls import reverse

from studies.models import Image, Patient
from tests import images
from tests.storage import local_files
from tests.studies.test_field_day_import import FIELD_DAY, _upload, zip_of


@pytest.fixture
def upload(django_capture_on_commit_callbacks):
    """Send a field day through the import endpoints as the page's script does; the final status."""

    def run(client, study, files: dict[str, bytes], source="zip"):
        return _upload(client, study, files, source, None, django_capture_on_commit_callbacks)

    return run


@pytest.fixture
def importer(client_for, collector):
    return client_for(collector)


def bomb(members: int = 10, zeros: int = 5 * 1024 * 1024) -> bytes:
    """The ZIP seen in the field: each member a valid JPEG followed by megabytes of zeros, deflated."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as archive:
        for n in range(members):
            archive.writestr(f"P{n:03d}/R/photo.jpg", images.jpeg(seed=n) + bytes(zeros))
    return out.getvalue()


@pytest.fixture
def members_opened(monkeypatch):
    """The ZIP members the import read: none may be, when the directory already breaks a limit."""
    opened: list[str] = []
    real_open = zipfile.ZipFile.open

    def spy(archive, name, mode="r", *args, **kwargs):
        if mode == "r":  # the test's own ZIPs are written with open(..., "w")
            opened.append(getattr(name, "filename", name))
        return real_open(archive, name, mode, *args, **kwargs)

    monkeypatch.setattr(zipfile.ZipFile, "open", spy)
    return opened


def nothing_stored() -> None:
    assert not Image.objects.exists() and not Patient.objects.exists()
    assert local_files() == set(), "no photo, no thumbnail, no uploaded part"


def test_zip_bomb_is_refused_naming_the_limit_before_anything_is_extracted(
    upload, importer, study, members_opened
):
    archive = bomb()
    assert len(archive) < 600_000 and len(archive) * 80 < 10 * (len(images.jpeg()) + 5 * 1024 * 1024)

    status = upload(importer, study, {"day.zip": archive})

    assert status["status"] == "failed"
    (refusal,) = status["errors"]
    assert refusal["file"] == "day.zip"
    limit = filesizeformat(10 * len(archive)).replace("\xa0", " ")
    assert f"over the limit of {limit} on what a ZIP may expand to" in refusal["reason"]
    assert "IMPORT_MAX_EXPANSION: 10 times" in refusal["reason"]
    assert members_opened == []
    nothing_stored()


def test_expansion_limit_is_capped_by_the_largest_import(upload, importer, study, settings):
    settings.IMPORT_MAX_EXPANSION = 10_000
    settings.IMPORT_MAX_BYTES = 3 * 1024 * 1024  # under ten thousand times the ZIP's size
    status = upload(importer, study, {"day.zip": bomb(members=1, zeros=4 * 1024 * 1024)})

    assert status["status"] == "failed"
    assert "over the limit of 3.0 MB on what a ZIP may expand to" in status["errors"][0]["reason"]
    assert "never more than IMPORT_MAX_BYTES, 3.0 MB" in status["errors"][0]["reason"]
    nothing_stored()


def lying_zip(real_size: int, declared: int) -> bytes:
    """A ZIP whose one member expands to `real_size` bytes while its headers declare `declared`."""
    import struct

    data = bytearray(zip_of({"P001/R/a.jpg": bytes(real_size)}))
    local = data.index(b"PK\x03\x04")
    central = data.index(b"PK\x01\x02")
    struct.pack_into("<I", data, local + 22, declared)
    struct.pack_into("<I", data, central + 24, declared)
    return bytes(data)


def test_a_member_expanding_past_its_declared_size_is_refused(upload, importer, study):
    """A member's declared size can lie: reading stops at what it declared, and the lie refuses the import."""
    status = upload(importer, study, {"day.zip": lying_zip(real_size=5_000_000, declared=1_000)})

    assert status["status"] == "failed"
    (refusal,) = status["errors"]
    assert refusal["file"] == "P001/R/a.jpg"
    assert "expands to more than the 1000 bytes its ZIP entry declares" in refusal["reason"]
    nothing_stored()


def test_ordinary_field_day_stays_well_inside_the_limits(upload, importer, study):
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for path, data in FIELD_DAY.items():
            archive.writestr(path, data)

    status = upload(importer, study, {"day.zip": out.getvalue()})

    assert status["status"] == "done", status["errors"]
    assert status["images_created"] == len(FIELD_DAY)


def test_too_many_entries_are_refused_naming_the_limit(upload, importer, study, settings, members_opened):
    settings.IMPORT_MAX_FILES = 3

    status = upload(importer, study, {"day.zip": zip_of(FIELD_DAY)})

    assert status["status"] == "failed"
    assert status["errors"] == [
        {
            "file": "day.zip",
            "reason": "holds 4 entries, over the limit of 3 (IMPORT_MAX_FILES); "
            "split the field day into several imports",
        }
    ]
    assert members_opened == []
    nothing_stored()


def test_too_many_files_in_a_folder_are_refused_before_the_upload(importer, study, settings):
    settings.IMPORT_MAX_FILES = 3
    response = importer.post(
        reverse("admin:studies_study_import_start", args=[study.pk]),
        json.dumps({"source": "folder", "files": [{"path": p, "size": 10} for p in FIELD_DAY]}),
        content_type="application/json",
    )
    assert response.status_code == 400
    assert response.json()["error"] == (
        "The upload holds 4 files; the limit is 3 (IMPORT_MAX_FILES). Split the field day."
    )


def test_two_entries_with_the_same_path_are_refused(upload, importer, study, members_opened):
    out = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # zipfile warns of the duplicate name: that is the point
        with zipfile.ZipFile(out, "w") as archive:
            archive.writestr("P001/R/a.jpg", images.jpeg(seed=1))
            archive.writestr("P001/R/b.jpg", images.jpeg(seed=2))
            archive.writestr("P001/R/a.jpg", images.jpeg(seed=3))
            archive.writestr("P001/./R/b.jpg", images.jpeg(seed=4))

    status = upload(importer, study, {"day.zip": out.getvalue()})

    assert status["status"] == "failed"
    assert status["errors"] == [
        {"file": "P001/R/a.jpg", "reason": "is in the ZIP more than once; each path may appear once"},
        {"file": "P001/R/b.jpg", "reason": "is in the ZIP more than once; each path may appear once"},
    ]
    assert members_opened == []
    nothing_stored()


def test_a_folder_listing_a_path_twice_is_refused(importer, study):
    files = [{"path": "P001/R/a.jpg", "size": 10}, {"path": "P001\\R\\a.jpg", "size": 12}]
    response = importer.post(
        reverse("admin:studies_study_import_start", args=[study.pk]),
        json.dumps({"source": "folder", "files": files}),
        content_type="application/json",
    )
    assert response.status_code == 400
    assert response.json()["error"] == "P001/R/a.jpg is in the upload twice; each path may appear once."
