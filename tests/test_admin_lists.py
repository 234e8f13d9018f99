"""The admin's lists and the study and patient pages cost the same number of queries at any size.

(Their speed on PostgreSQL at 1,000 and 100,000 patients is measured by bench/admin_lists.py.)
"""

import io

import pytest
from django.core.paginator import Paginator
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from studies.admin import EstimatedCountPaginator, counts_by_study, estimated_count
from studies.models import Image, ImageImport, Patient
from studies.services import images_upload
from tests import images
from tests.factories import PatientFactory
from tests.grading_support import submit

PAGES = {
    "studies": lambda study, patient: reverse("admin:studies_study_changelist"),
    "study": lambda study, patient: reverse("admin:studies_study_change", args=[study.pk]),
    "patients": lambda study, patient: reverse("admin:studies_patient_changelist"),
    "patients of the study": lambda study, patient: (
        reverse("admin:studies_patient_changelist") + f"?study__id__exact={study.pk}"
    ),
    "patients searched": lambda study, patient: reverse("admin:studies_patient_changelist") + "?q=AL-",
    "patient": lambda study, patient: reverse("admin:studies_patient_change", args=[patient.pk]),
    "images": lambda study, patient: reverse("admin:studies_image_changelist"),
    "images of the study": lambda study, patient: (
        reverse("admin:studies_image_changelist") + f"?study__id__exact={study.pk}"
    ),
    "imports": lambda study, patient: reverse("admin:studies_imageimport_changelist"),
    "grades": lambda study, patient: reverse("admin:grading_grade_changelist"),
    "grades of the study": lambda study, patient: (
        reverse("admin:grading_grade_changelist") + f"?patient__study__id__exact={study.pk}"
    ),
    "grade entries": lambda study, patient: reverse("admin:grading_gradeentry_changelist"),
    "consensus": lambda study, patient: reverse("admin:grading_consensus_changelist"),
}


def add_patients(study, graders, collector, start: int, count: int) -> None:
    """Patients with a photo of each eye, graded by two graders, and a field-day import each."""
    for n in range(start, start + count):
        patient = PatientFactory(study=study, code=f"AL-{n:04d}")
        for eye in "RL":
            data = images.jpeg((16, 16), seed=9000 + 2 * n + (eye == "L"))
            images_upload(
                patient=patient, files=[(f"{n}{eye}.jpg", io.BytesIO(data))], eye=eye, uploaded_by=collector
            )
        for grader in graders:
            submit(study, patient, grader)
        ImageImport.objects.create(study=study, source="zip", bytes_expected=8584457, created_by=collector)


def queries_of(client, url: str) -> int:
    with CaptureQueriesContext(connection) as queries:
        response = client.get(url)
    assert response.status_code == 200, url
    return len(queries)


def test_pages_cost_the_same_queries_with_more_rows(admin_client, grading_study, graders, collector):
    add_patients(grading_study, graders[:2], collector, 0, 2)
    first = grading_study.patients.order_by("code").first()
    for url in PAGES.values():  # once, so that caches (content types) are warm in both counts
        queries_of(admin_client, url(grading_study, first))
    few = {name: queries_of(admin_client, url(grading_study, first)) for name, url in PAGES.items()}

    add_patients(grading_study, graders[:2], collector, 2, 12)
    many = {name: queries_of(admin_client, url(grading_study, first)) for name, url in PAGES.items()}

    assert many == few
    assert max(many.values()) <= 16, many


@pytest.mark.parametrize("listed", ["patients", "images", "grades", "grade entries", "consensus"])
def test_large_lists_do_not_count_the_whole_table_twice(
    admin_client, grading_study, graders, collector, listed
):
    add_patients(grading_study, graders[:2], collector, 0, 2)
    url = PAGES[listed](grading_study, None)
    with CaptureQueriesContext(connection) as queries:
        response = admin_client.get(url)
    counts = [
        q["sql"] for q in queries.captured_queries if "COUNT(" in q["sql"].upper() and " FROM" in q["sql"]
    ]
    assert len([sql for sql in counts if "GROUP BY" not in sql.upper()]) <= 1, counts
    assert response.context["cl"].full_result_count is None  # "(N total)" would count every row again


def test_counts_are_exact_off_postgresql(grading_study, collector):
    patient = PatientFactory(study=grading_study)
    images_upload(
        patient=patient,
        files=[("a.jpg", io.BytesIO(images.jpeg((16, 16), seed=1)))],
        eye="R",
        uploaded_by=collector,
    )
    assert estimated_count(Patient.objects.all()) == (1, False)
    assert (
        EstimatedCountPaginator(Image.objects.order_by("pk"), 10).count
        == Paginator(Image.objects.all(), 10).count
    )
    assert counts_by_study(Image, [grading_study.pk]) == {grading_study.pk: (1, False)}


def test_patient_counts_are_for_the_rows_shown(admin_client, grading_study, graders, collector):
    add_patients(grading_study, graders[:2], collector, 0, 1)
    patient = grading_study.patients.get()
    images_upload(
        patient=patient,
        files=[("extra.jpg", io.BytesIO(images.jpeg((16, 16), seed=77)))],
        eye="L",
        uploaded_by=collector,
    )
    response = admin_client.get(reverse("admin:studies_patient_changelist"))
    row = response.context["cl"].result_list[0]
    assert (row.image_count, row.right_count, row.left_count) == (3, 1, 2)
