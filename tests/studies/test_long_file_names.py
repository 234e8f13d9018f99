"""A photo with a very long file name: the person is told to rename it, not shown a bare 400."""

import io

from django.test import Client
from django.urls import reverse

from studies.models import Image
from tests import images
from tests.storage import local_files
from tests.studies.test_admin_upload import patient_form


def named(name: str, data: bytes) -> io.BytesIO:
    """A file as the browser sends it: its whole name (Django's own upload classes would shorten it)."""
    upload = io.BytesIO(data)
    upload.name = name
    return upload


def test_thousand_character_file_name_gets_a_message_saying_to_rename_it(collector, patient):
    client = Client(enforce_csrf_checks=True)  # the CSRF check reads the upload first, as in production
    client.force_login(collector)
    url = reverse("admin:studies_patient_change", args=[patient.pk])
    client.get(url)
    form = patient_form(patient.study, code=patient.code, files=[named("a" * 996 + ".jpg", images.jpeg())])
    form["csrfmiddlewaretoken"] = client.cookies["csrftoken"].value

    response = client.post(url, form)

    assert response.status_code == 400
    page = response.content.decode()
    assert "A file name in this upload is too long to be read" in page
    assert "Rename the file and upload it again; nothing was stored." in page
    assert f'href="{url}"' in page, "a way back to the patient's page"
    assert not Image.objects.exists() and local_files() == set()


def test_the_import_endpoints_answer_json(collector, study):
    client = Client()
    client.force_login(collector)
    form = {"file_index": 0, "part_index": 0, "data": named("b" * 1000, b"part")}

    response = client.post(
        reverse("admin:studies_imageimport_part", args=[1]), form, HTTP_ACCEPT="application/json"
    )

    assert response.status_code == 400
    assert response.json()["error"].startswith("A file name in this upload is too long to be read")


def test_a_long_but_readable_name_is_stored_shortened(client_for, collector, patient):
    response = client_for(collector).post(
        reverse("admin:studies_patient_change", args=[patient.pk]),
        patient_form(patient.study, code=patient.code, files=[named("c" * 600 + ".jpg", images.jpeg())]),
    )

    assert response.status_code == 302
    assert len(Image.objects.get().original_name) == 255
