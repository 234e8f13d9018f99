"""Every studies admin page renders, in a number of queries that does not grow with the rows."""

import io

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from studies.models import ImageImport
from studies.services import images_upload
from tests import images
from tests.factories import PatientFactory, RegionFactory, StudyFactory


def populate(study, patients: int, collector):
    for n in range(patients):
        patient = PatientFactory(study=study)
        images_upload(
            patient=patient,
            files=[(f"{n}.jpg", io.BytesIO(images.jpeg((16, 16), seed=1000 * study.pk + n)))],
            eye="R" if n % 2 else "L",
            uploaded_by=collector,
        )
    ImageImport.objects.create(study=study, source="zip", created_by=collector)


def count_queries(client, url) -> int:
    with CaptureQueriesContext(connection) as queries:
        response = client.get(url)
    assert response.status_code == 200, url
    return len(queries)


CHANGELISTS = ["region", "study", "patient", "image", "imageimport"]


@pytest.mark.parametrize("model", CHANGELISTS)
def test_changelist_query_count_does_not_grow(admin_client, collector, model):
    small = StudyFactory()
    populate(small, 2, collector)
    url = reverse(f"admin:studies_{model}_changelist")
    few = count_queries(admin_client, url)
    for _ in range(3):
        populate(StudyFactory(region=RegionFactory()), 6, collector)
    many = count_queries(admin_client, url)
    assert many == few
    assert many <= 15


def test_change_pages_render_with_bounded_queries(admin_client, collector, django_assert_max_num_queries):
    study = StudyFactory()
    populate(study, 3, collector)
    patient = study.patients.first()
    for n in range(20):  # a patient with many photos (seeds apart from populate's 1000 * pk + n)
        images_upload(
            patient=patient,
            files=[(f"more{n}.jpg", io.BytesIO(images.jpeg((16, 16), seed=999_000 + n)))],
            eye="L",
            uploaded_by=collector,
        )
    image = patient.images.first()
    pages = [
        reverse("admin:studies_region_change", args=[study.region_id]),
        reverse("admin:studies_study_change", args=[study.pk]),
        reverse("admin:studies_patient_change", args=[patient.pk]),
        reverse("admin:studies_image_change", args=[image.pk]),
        reverse("admin:studies_imageimport_change", args=[study.imports.first().pk]),
        reverse("admin:studies_study_add"),
        reverse("admin:studies_patient_add"),
        reverse("admin:studies_region_add"),
        reverse("admin:studies_study_import", args=[study.pk]),
        reverse("admin:index"),
    ]
    for url in pages:
        with django_assert_max_num_queries(20):
            response = admin_client.get(url)
        assert response.status_code == 200, url


def test_patient_page_shows_thumbnails_and_eye_labels(admin_client, stored_images):
    patient = stored_images[0].patient
    response = admin_client.get(reverse("admin:studies_patient_change", args=[patient.pk]))
    html = response.content.decode()
    for image in stored_images:
        assert image.thumbnail.url in html
    assert html.count('alt="Right eye"') == 3


def test_image_changelist_filters_by_study_patient_and_eye(admin_client, collector):
    study = StudyFactory()
    populate(study, 4, collector)
    other = StudyFactory()
    populate(other, 2, collector)
    url = reverse("admin:studies_image_changelist")
    response = admin_client.get(url, {"study__id__exact": study.pk})
    assert response.context["cl"].result_count == 4
    response = admin_client.get(url, {"study__id__exact": study.pk, "eye__exact": "L"})
    assert response.context["cl"].result_count == 2
    patient = study.patients.first()
    response = admin_client.get(url, {"study__id__exact": study.pk, "patient": patient.pk})
    assert response.context["cl"].result_count == 1
    assert patient.code in response.content.decode()


def test_study_changelist_counts_patients_and_images(admin_client, collector):
    study = StudyFactory()
    populate(study, 3, collector)
    response = admin_client.get(reverse("admin:studies_study_changelist"))
    row = next(s for s in response.context["cl"].result_list if s.pk == study.pk)
    assert (row.patient_count, row.image_count) == (3, 3)


def test_region_can_be_added_from_the_study_form(admin_client):
    response = admin_client.get(reverse("admin:studies_study_add"))
    assert reverse("admin:studies_region_add") in response.content.decode()


def test_study_records_who_created_it(admin_client, admin_user):
    region = RegionFactory()
    response = admin_client.post(
        reverse("admin:studies_study_add"),
        {
            "name": "Wag Hemra 2026",
            "region": region.pk,
            "description": "",
            "is_active": "on",
            "masked_codes": "on",
            "randomized_order": "on",
            "graders_per_patient": 3,
            "repeat_share": "0.10",
            "repeat_gap_min": "10",
        },
    )
    assert response.status_code == 302
    from studies.models import Study

    assert Study.objects.get(name="Wag Hemra 2026").created_by == admin_user


def test_deleting_a_study_with_patients_is_refused(admin_client, patient):
    response = admin_client.post(
        reverse("admin:studies_study_delete", args=[patient.study_id]), {"post": "yes"}
    )
    assert response.status_code == 200
    assert "would require deleting the following protected related objects" in response.content.decode()
    assert type(patient.study).objects.filter(pk=patient.study_id).exists()


def test_study_page_links_to_the_field_day_import_and_patient_page_loads_the_uploader(admin_client, patient):
    study_page = admin_client.get(
        reverse("admin:studies_study_change", args=[patient.study_id])
    ).content.decode()
    assert reverse("admin:studies_study_import", args=[patient.study_id]) in study_page
    patient_page = admin_client.get(
        reverse("admin:studies_patient_change", args=[patient.pk])
    ).content.decode()
    assert "gradingcenter/upload.js" in patient_page and "gc-upload-progress" in patient_page
