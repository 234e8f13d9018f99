"""The same new photo uploaded to two patients at once: one is stored, the other is told it is a duplicate."""

import io
import threading

import pytest
from django.db import connections
from django.test import Client
from django.urls import reverse

from studies import services
from studies.models import Image
from studies.services import BatchRefused, images_upload
from tests import images
from tests.factories import PatientFactory
from tests.storage import local_files
from tests.studies.test_admin_upload import patient_form, photo


def stored_keys(image: Image) -> set[str]:
    return {key for key in local_files() if key.endswith((image.file.name, image.thumbnail.name))}


def check_ran_before_the_other_upload(monkeypatch):
    """The batch's duplicate check runs before the other upload commits: it sees no duplicate."""
    real_check = services._duplicate_refusals
    calls: list[int] = []

    def check(**kwargs):
        calls.append(1)
        return [] if len(calls) == 1 else real_check(**kwargs)

    monkeypatch.setattr(services, "_duplicate_refusals", check)


def upload_one(patient, user, name: str, data: bytes, eye: str = "R") -> list[Image]:
    return images_upload(patient=patient, files=[(name, io.BytesIO(data))], eye=eye, uploaded_by=user)


def test_upload_racing_another_gets_the_duplicate_message(client_for, collector, study, monkeypatch):
    first, second = PatientFactory(study=study), PatientFactory(study=study)
    data = images.jpeg(seed=7)
    (theirs,) = upload_one(first, collector, "theirs.jpg", data, eye="L")
    check_ran_before_the_other_upload(monkeypatch)
    client = client_for(collector)

    response = client.post(
        reverse("admin:studies_patient_change", args=[second.pk]),
        patient_form(study, code=second.code, files=[photo("mine.jpg", data)]),
    )

    assert response.status_code == 302
    page = client.get(response["Location"]).content.decode()
    assert (
        "Nothing was stored; 1 file(s) refused: mine.jpg: duplicate: the same file is already in this study "
        f"(patient {first.code}, left eye, image #{theirs.pk})"
    ) in page
    assert list(Image.objects.all()) == [theirs]
    assert local_files() == stored_keys(theirs), "the refused batch's files are removed"


def test_racing_upload_is_refused_like_a_sequential_duplicate(collector, study, monkeypatch):
    first, second = PatientFactory(study=study), PatientFactory(study=study)
    data = images.jpeg(seed=9)
    upload_one(first, collector, "theirs.jpg", data)
    with pytest.raises(BatchRefused) as sequential:
        upload_one(second, collector, "mine.jpg", data)
    check_ran_before_the_other_upload(monkeypatch)

    with pytest.raises(BatchRefused) as racing:
        upload_one(second, collector, "mine.jpg", data)

    assert racing.value.messages == sequential.value.messages
    assert Image.objects.count() == 1


@pytest.mark.django_db(transaction=True)
def test_two_uploads_of_the_same_new_photo_at_once(study, collector, monkeypatch):
    from django.db import connection

    if connection.vendor == "sqlite":
        pytest.skip("SQLite's shared in-memory test database cannot serve requests from several threads")

    patients = [PatientFactory(study=study), PatientFactory(study=study)]
    data = images.jpeg(seed=8)
    both_checked = threading.Barrier(2, timeout=30)
    real_save_rows = services._images_save_rows

    def insert_once_both_have_checked(**kwargs):
        both_checked.wait()
        return real_save_rows(**kwargs)

    monkeypatch.setattr(services, "_images_save_rows", insert_once_both_have_checked)
    pages: dict[int, tuple[int, str]] = {}
    errors: list[BaseException] = []

    def upload(patient) -> None:
        try:
            client = Client()
            client.force_login(collector)
            response = client.post(
                reverse("admin:studies_patient_change", args=[patient.pk]),
                patient_form(study, code=patient.code, files=[photo(f"{patient.code}.jpg", data)]),
                follow=True,
            )
            pages[patient.pk] = (response.status_code, response.content.decode())
        except BaseException as error:  # noqa: BLE001  (reported below)
            errors.append(error)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=upload, args=(patient,)) for patient in patients]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert not errors, errors
    assert {status for status, _ in pages.values()} == {200}
    stored = Image.objects.select_related("patient").get()
    (other,) = [patient for patient in patients if patient.pk != stored.patient_id]
    assert f"1 photo(s) added to {stored.patient.code}" in pages[stored.patient_id][1]
    assert (
        f"{other.code}.jpg: duplicate: the same file is already in this study "
        f"(patient {stored.patient.code}, right eye, image #{stored.pk})"
    ) in pages[other.pk][1]
    assert local_files() == stored_keys(stored)
