"""Masking and access: a grader sees only their own grades and never a masked patient's code."""

import io

import pytest
from django.urls import reverse

from grading.models import Grade
from studies.services import images_upload
from tests import images
from tests.factories import UserFactory
from tests.grading_support import answers_for, progress_of, submit


@pytest.fixture
def graded_patient(grading_study, graders, make_patients, collector):
    (patient,) = make_patients(grading_study, 1)
    images_upload(
        patient=patient, files=[("a.jpg", io.BytesIO(images.jpeg()))], eye="R", uploaded_by=collector
    )
    submit(grading_study, patient, graders[1], choice="1", note="OTHER-GRADERS-SECRET-NOTE")
    return patient


def pages(study, patient):
    return [
        reverse("admin:grading_dashboard"),
        reverse("admin:grading_study", args=[study.pk]),
        reverse("admin:grading_patient", args=[study.pk, patient.pk]),
        reverse("admin:grading_patient", args=[study.pk, patient.pk]) + "?regrade=1",
    ]


def test_masked_pages_show_no_code_and_no_other_graders_answers(
    grading_study, graded_patient, graders, client_for
):
    client = client_for(graders[0])
    for url in pages(grading_study, graded_patient):
        html = client.get(url).content.decode()
        assert graded_patient.code not in html, url
        assert "OTHER-GRADERS-SECRET-NOTE" not in html, url
        assert graders[1].username not in html, url
    page = client.get(pages(grading_study, graded_patient)[2]).content.decode()
    assert "Patient 1 of 1" in page
    assert "checked" not in page  # nothing prefilled from the other grader's grade


def test_unmasked_study_shows_the_code(grading_study, graded_patient, graders, client_for):
    grading_study.masked_codes = False
    grading_study.save()
    page = client_for(graders[0]).get(pages(grading_study, graded_patient)[2]).content.decode()
    assert graded_patient.code in page


def test_regrade_prefills_only_my_own_answers(grading_study, graded_patient, graders, client_for):
    submit(grading_study, graded_patient, graders[0], choice="0", note="my own note")
    page = client_for(graders[0]).get(pages(grading_study, graded_patient)[3]).content.decode()
    assert "my own note" in page and "OTHER-GRADERS-SECRET-NOTE" not in page
    assert page.count("checked") == 5


def test_unassigned_grader_gets_403_on_every_study_page(grading_study, graded_patient, client_for):
    outsider = client_for(UserFactory(username="outsider", groups=["Graders"]))
    for url in pages(grading_study, graded_patient)[1:] + [
        reverse("admin:grading_next", args=[grading_study.pk])
    ]:
        assert outsider.get(url).status_code == 403, url
    response = outsider.post(pages(grading_study, graded_patient)[2], answers_for(grading_study))
    assert response.status_code == 403
    assert outsider.get(reverse("admin:grading_dashboard")).status_code == 200


def test_patient_of_another_study_is_not_found(grading_study, graders, client_for):
    from tests.factories import PatientFactory

    stranger = PatientFactory()
    url = reverse("admin:grading_patient", args=[grading_study.pk, stranger.pk])
    assert client_for(graders[0]).get(url).status_code == 404


def test_anonymous_is_sent_to_login(client, grading_study, graded_patient):
    for url in pages(grading_study, graded_patient):
        response = client.get(url)
        assert response.status_code == 302 and "/admin/login/" in response["Location"]


def test_grader_sees_only_their_own_grades_in_the_admin(grading_study, graded_patient, graders, client_for):
    submit(grading_study, graded_patient, graders[0], note="mine")
    client = client_for(graders[0])
    response = client.get(reverse("admin:grading_grade_changelist"))
    assert response.status_code == 200
    shown = list(response.context["cl"].result_list)
    assert {g.grader_id for g in shown} == {graders[0].pk}
    other = Grade.objects.get(grader=graders[1])
    assert client.get(reverse("admin:grading_grade_change", args=[other.pk])).status_code == 302  # not found
    page = client.get(reverse("admin:grading_grade_changelist")).content.decode()
    assert "OTHER-GRADERS-SECRET-NOTE" not in page
    assert graded_patient.code not in page and "masked" in page  # the study masks codes
    mine = Grade.objects.get(grader=graders[0])
    detail = client.get(reverse("admin:grading_grade_change", args=[mine.pk])).content.decode()
    assert graded_patient.code not in detail and "masked" in detail


def test_grader_cannot_open_entries_or_patient_history(grading_study, graded_patient, graders, client_for):
    client = client_for(graders[0])
    assert client.get(reverse("admin:grading_gradeentry_changelist")).status_code == 403
    assert client.get(reverse("admin:studies_patient_change", args=[graded_patient.pk])).status_code == 403


def test_administrator_sees_every_grade_and_the_history(grading_study, graded_patient, graders, admin_client):
    submit(grading_study, graded_patient, graders[1], choice="0", regrade=True)
    response = admin_client.get(reverse("admin:grading_grade_changelist"))
    assert response.context["cl"].result_count == 2
    response = admin_client.get(reverse("admin:grading_grade_changelist"), {"current": "no"})
    assert response.context["cl"].result_count == 1
    page = admin_client.get(
        reverse("admin:studies_patient_change", args=[graded_patient.pk])
    ).content.decode()
    assert "Grade history" in page and "OTHER-GRADERS-SECRET-NOTE" in page


def test_grading_page_form_errors_keep_the_answers(grading_study, graded_patient, graders, client_for):
    client = client_for(graders[0])
    url = pages(grading_study, graded_patient)[2]
    page = client.get(url)
    token = page.context["token"]
    answers = answers_for(grading_study, choice="1")
    first_key = next(iter(answers))
    chosen = answers.pop(first_key)  # TF left out
    response = client.post(url, {**answers, "token": token, "note": "kept note"})
    assert response.status_code == 400
    html = response.content.decode()
    assert "TF is required." in html and "kept note" in html
    assert html.count("checked") == 4
    assert not Grade.objects.filter(grader=graders[0]).exists()
    response = client.post(url, {**answers, first_key: chosen, "token": token})
    assert response.status_code == 302
    assert Grade.objects.filter(grader=graders[0]).count() == 1


def test_forged_or_foreign_token_is_refused(grading_study, graded_patient, graders, client_for):
    url = pages(grading_study, graded_patient)[2]
    response = client_for(graders[0]).post(url, {**answers_for(grading_study), "token": "forged"})
    assert response.status_code == 400
    assert "This page has expired" in response.content.decode()
    token_of_other = client_for(graders[2]).get(url).context["token"]
    response = client_for(graders[0]).post(url, {**answers_for(grading_study), "token": token_of_other})
    assert response.status_code == 400
    assert not Grade.objects.filter(grader=graders[0]).exists()


def test_back_and_resubmit_saves_one_grade(grading_study, graded_patient, graders, client_for):
    client = client_for(graders[0])
    url = pages(grading_study, graded_patient)[2]
    token = client.get(url).context["token"]
    data = {**answers_for(grading_study), "token": token}
    assert client.post(url, data).status_code == 302
    assert client.post(url, data).status_code == 302
    assert Grade.objects.filter(grader=graders[0]).count() == 1


def test_seconds_spent_come_from_the_page_token(
    grading_study, graded_patient, graders, client_for, monkeypatch
):
    from datetime import timedelta

    from django.utils import timezone

    client = client_for(graders[0])
    url = pages(grading_study, graded_patient)[2]
    token = client.get(url).context["token"]
    real = timezone.now
    monkeypatch.setattr(timezone, "now", lambda: real() + timedelta(seconds=37))
    client.post(url, {**answers_for(grading_study), "token": token})
    assert 36 <= Grade.objects.get(grader=graders[0]).seconds_spent <= 40


def test_next_redirects_to_the_grading_page_then_to_the_study_when_done(
    grading_study, graded_patient, graders, client_for
):
    client = client_for(graders[0])
    url = reverse("admin:grading_next", args=[grading_study.pk])
    response = client.get(url)
    assert response["Location"] == reverse(
        "admin:grading_patient", args=[grading_study.pk, graded_patient.pk]
    )
    submit(grading_study, graded_patient, graders[0])
    response = client.get(url, follow=True)
    assert "You have graded every patient of this study" in response.content.decode()
    assert progress_of(grading_study, graders[0]).graded == 1
