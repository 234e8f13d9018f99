"""Batches are all-or-nothing: one bad file and nothing is stored, rows or files."""

import io

import pytest
from django.core.files.storage import default_storage

from studies.models import Image
from studies.services import BatchRefused, StorageFailed, images_upload
from tests import images
from tests.factories import PatientFactory
from tests.storage import local_files


def batch(*items):
    return [(name, io.BytesIO(data)) for name, data in items]


def test_several_files_at_once(patient, collector):
    stored = images_upload(
        patient=patient,
        files=batch(*[(f"p{n}.jpg", images.jpeg(seed=n)) for n in range(4)]),
        eye="L",
        uploaded_by=collector,
    )
    assert len(stored) == 4
    assert {image.eye for image in patient.images.all()} == {"L"}
    assert all(default_storage.exists(image.file.name) for image in stored)
    assert all(default_storage.exists(image.thumbnail.name) for image in stored)


def test_one_bad_file_refuses_the_whole_batch_and_lists_every_reason(patient, collector):
    before = local_files()
    with pytest.raises(BatchRefused) as refused:
        images_upload(
            patient=patient,
            files=batch(
                ("good1.jpg", images.jpeg(seed=1)),
                ("empty.jpg", b""),
                ("good2.jpg", images.jpeg(seed=2)),
                ("notes.jpg", images.text_as_jpeg()),
            ),
            eye="R",
            uploaded_by=collector,
        )
    assert [r.file for r in refused.value.refusals] == ["empty.jpg", "notes.jpg"]
    assert Image.objects.count() == 0
    assert local_files() == before


def test_duplicate_in_the_batch_is_refused(patient, collector):
    data = images.jpeg(seed=5)
    with pytest.raises(BatchRefused, match="same file as a.jpg in this upload"):
        images_upload(
            patient=patient, files=batch(("a.jpg", data), ("b.jpg", data)), eye="R", uploaded_by=collector
        )
    assert Image.objects.count() == 0


def test_duplicate_of_a_file_in_the_study_is_refused_even_for_another_patient(patient, collector):
    data = images.jpeg(seed=6)
    images_upload(patient=patient, files=batch(("a.jpg", data)), eye="R", uploaded_by=collector)
    other = PatientFactory(study=patient.study)
    with pytest.raises(BatchRefused, match=f"already in this study \\(patient {patient.code}, right eye"):
        images_upload(patient=other, files=batch(("again.jpg", data)), eye="L", uploaded_by=collector)
    assert Image.objects.count() == 1


def test_same_file_in_another_study_is_accepted(patient, collector):
    data = images.jpeg(seed=7)
    images_upload(patient=patient, files=batch(("a.jpg", data)), eye="R", uploaded_by=collector)
    elsewhere = PatientFactory()
    images_upload(patient=elsewhere, files=batch(("a.jpg", data)), eye="R", uploaded_by=collector)
    assert Image.objects.count() == 2


def test_storage_failure_midway_rolls_back_rows_and_removes_written_files(
    patient, collector, monkeypatch, settings
):
    settings.IMPORT_STORAGE_THREADS = 1  # one write after another: the fourth write is a known one
    before = local_files()
    from studies.storage import PrivateFileSystemStorage

    real_save = PrivateFileSystemStorage._save
    calls = {"n": 0}

    def failing_save(self, name, content):
        calls["n"] += 1
        if calls["n"] == 4:  # after the first photo and its thumbnail, and the second photo
            raise OSError("disk full")
        return real_save(self, name, content)

    monkeypatch.setattr(PrivateFileSystemStorage, "_save", failing_save)
    with pytest.raises(StorageFailed, match="disk full"):
        images_upload(
            patient=patient,
            files=batch(*[(f"p{n}.jpg", images.jpeg(seed=n)) for n in range(3)]),
            eye="R",
            uploaded_by=collector,
        )
    assert calls["n"] == 4
    assert Image.objects.count() == 0
    assert local_files() == before


def test_empty_batch_is_refused(patient, collector):
    with pytest.raises(BatchRefused, match="no files were chosen"):
        images_upload(patient=patient, files=[], eye="R", uploaded_by=collector)
