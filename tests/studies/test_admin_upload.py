"""Uploading photos on the patient page of the admin, the way staff do it."""

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from studies.models import Image, Patient
from tests import images


def photo(name: str, data: bytes) -> SimpleUploadedFile:
    return SimpleUploadedFile(name, data, content_type="image/jpeg")


def patient_form(study, code="TR-0001", files=(), eye="R", **extra):
    return {
        "study": study.pk,
        "code": code,
        "age_years": "7",
        "sex": "F",
        "new_images_eye": eye,
        "new_images": list(files),
        "images-TOTAL_FORMS": "0",
        "images-INITIAL_FORMS": "0",
        "images-MIN_NUM_FORMS": "0",
        "images-MAX_NUM_FORMS": "1000",
        "grades-TOTAL_FORMS": "0",
        "grades-INITIAL_FORMS": "0",
        **extra,
    }


def test_new_patient_with_several_photos(client_for, collector, study):
    client = client_for(collector)
    files = [photo(f"IMG_{n}.JPG", images.jpeg(seed=n, gps=True)) for n in range(3)]
    response = client.post(reverse("admin:studies_patient_add"), patient_form(study, files=files, eye="L"))
    assert response.status_code == 302
    patient = Patient.objects.get(code="TR-0001")
    assert [i.original_name for i in patient.images.order_by("original_name")] == [
        "IMG_0.JPG",
        "IMG_1.JPG",
        "IMG_2.JPG",
    ]
    assert set(patient.images.values_list("eye", flat=True)) == {"L"}
    assert set(patient.images.values_list("uploaded_by", flat=True)) == {collector.pk}
    page = client.get(response["Location"])
    assert "3 photo(s) added to TR-0001" in page.content.decode()


BAD_FILES = [
    ("empty.jpg", b"", "empty file"),
    ("half.jpg", images.truncated_jpeg(), "truncated image data"),
    ("notes.jpg", images.text_as_jpeg(), "not an image"),
    ("bomb.png", images.decompression_bomb(), "decompression bomb"),
]


@pytest.mark.parametrize(("name", "data", "reason"), BAD_FILES)
def test_bad_file_refuses_the_batch_with_its_reason(client_for, collector, patient, name, data, reason):
    client = client_for(collector)
    url = reverse("admin:studies_patient_change", args=[patient.pk])
    response = client.post(
        url,
        patient_form(
            patient.study, code=patient.code, files=[photo("good.jpg", images.jpeg()), photo(name, data)]
        ),
    )
    assert response.status_code == 200
    html = response.content.decode()
    assert "Nothing was stored; 1 file(s) refused" in html
    assert f"{name}: " in html and reason in html
    assert Image.objects.count() == 0


def test_oversized_file_is_refused(client_for, collector, patient, settings):
    settings.IMAGE_MAX_BYTES = 2000
    response = client_for(collector).post(
        reverse("admin:studies_patient_change", args=[patient.pk]),
        patient_form(patient.study, code=patient.code, files=[photo("big.jpg", images.jpeg((400, 300)))]),
    )
    assert "big.jpg: larger than the limit of 0.0 MB" in response.content.decode()
    assert Image.objects.count() == 0


def test_duplicate_upload_is_refused(client_for, collector, stored_images):
    patient = stored_images[0].patient
    response = client_for(collector).post(
        reverse("admin:studies_patient_change", args=[patient.pk]),
        patient_form(patient.study, code=patient.code, files=[photo("again.jpg", images.jpeg(seed=1))]),
    )
    assert "again.jpg: duplicate: the same file is already in this study" in response.content.decode()
    assert Image.objects.count() == 3


def test_new_patient_with_a_bad_photo_is_not_created(client_for, collector, study):
    response = client_for(collector).post(
        reverse("admin:studies_patient_add"),
        patient_form(study, files=[photo("notes.jpg", images.text_as_jpeg())]),
    )
    assert response.status_code == 200
    assert not Patient.objects.exists()


def test_duplicate_patient_code_in_a_study_is_refused(client_for, collector, patient):
    response = client_for(collector).post(
        reverse("admin:studies_patient_add"), patient_form(patient.study, code=patient.code)
    )
    assert response.status_code == 200
    assert "Patient with this Study and Code already exists" in response.content.decode()


def test_deleting_a_photo_on_the_patient_page_removes_its_files(
    admin_client, stored_images, django_capture_on_commit_callbacks
):
    from django.core.files.storage import default_storage

    image = stored_images[0]
    patient = image.patient
    data = patient_form(patient.study, code=patient.code)
    data.update({"images-TOTAL_FORMS": "3", "images-INITIAL_FORMS": "3"})
    for n, item in enumerate(patient.images.order_by("eye", "uploaded_at", "id")):
        data.update(
            {f"images-{n}-id": item.pk, f"images-{n}-patient": patient.pk, f"images-{n}-eye": item.eye}
        )
        if item.pk == image.pk:
            data[f"images-{n}-DELETE"] = "on"
    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client.post(reverse("admin:studies_patient_change", args=[patient.pk]), data)
    assert response.status_code == 302
    assert patient.images.count() == 2
    assert not default_storage.exists(image.file.name)
    assert not default_storage.exists(image.thumbnail.name)
