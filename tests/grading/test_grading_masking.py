"""Masking and access: a grader sees only their own grades and never a masked patient's code or id."""

import io
import re
import threading

import pytest
from django.urls import reverse

from grading.models import Grade, Presentation
from studies.services import images_upload
from tests import images
from tests.factories import UserFactory
from tests.grading_support import answers_for, present, progress_of, submit


@pytest.fixture
def graded_patient(grading_study, graders, make_patients, collector):
    (patient,) = make_patients(grading_study, 1)
    images_upload(
        patient=patient, files=[("a.jpg", io.BytesIO(images.jpeg()))], eye="R", uploaded_by=collector
    )
    submit(grading_study, patient, graders[1], choice="1", note="OTHER-GRADERS-SECRET-NOTE")
    return patient


def next_page_url(client, study) -> str:
    response = client.get(reverse("admin:grading_next", args=[study.pk]))
    assert response.status_code == 302
    return response["Location"]


def regrade_url(client, study, number: int) -> str:
    response = client.post(reverse("admin:grading_regrade", args=[study.pk, number]))
    assert response.status_code == 302
    return response["Location"]


def test_masked_pages_show_no_code_and_no_other_graders_answers(
    grading_study, graded_patient, graders, client_for
):
    client = client_for(graders[0])
    page_url = next_page_url(client, grading_study)
    study_url = reverse("admin:grading_study", args=[grading_study.pk])
    for url in [reverse("admin:grading_dashboard"), study_url, page_url]:
        html = client.get(url).content.decode()
        assert graded_patient.code not in html, url
        assert "OTHER-GRADERS-SECRET-NOTE" not in html, url
        assert graders[1].username not in html, url
    page = client.get(page_url).content.decode()
    assert "Patient 1 of 1" in page
    assert "checked" not in page  # nothing prefilled from the other grader's grade


def test_the_grading_url_holds_no_patient_id(grading_study, graders, make_patients, client_for):
    patients = make_patients(grading_study, 30)
    client = client_for(graders[0])
    ids = {str(p.pk) for p in patients}
    for _ in range(5):
        url = next_page_url(client, grading_study)
        parts = url.rstrip("/").split("/")
        assert parts[:-1] == reverse("admin:grading_study", args=[grading_study.pk]).rstrip("/").split("/")
        assert re.fullmatch(r"[0-9a-f-]{36}", parts[-1]), url  # a random key, nothing else
        assert not ids & set(re.findall(r"\d+", parts[-1])) or len(parts[-1]) == 36
        response = client.post(url, answers_for(grading_study))
        assert response.status_code == 302


def test_a_repeat_and_a_regrade_of_one_patient_have_different_urls(
    grading_study, graders, make_patients, client_for
):
    grading_study.repeat_share = 1
    grading_study.repeat_gap_min = 1
    grading_study.save()
    patients = make_patients(grading_study, 3)
    client = client_for(graders[0])
    first_url = next_page_url(client, grading_study)
    client.post(first_url, answers_for(grading_study))
    regrade = regrade_url(client, grading_study, 1)
    repeat_keys = set()
    for _ in range(10):  # walk on until the first patient comes back as a repeat
        url = next_page_url(client, grading_study)
        if "/next/" in url or url.endswith(f"/study/{grading_study.pk}/"):
            break
        key = url.rstrip("/").split("/")[-1]
        presentation = Presentation.objects.get(key=key)
        if (
            presentation.kind == "repeat"
            and presentation.patient_id
            == Presentation.objects.get(key=first_url.rstrip("/").split("/")[-1]).patient_id
        ):
            repeat_keys.add(url)
        assert client.post(url, answers_for(grading_study)).status_code == 302
        if Grade.objects.filter(grader=graders[0], eye="R").count() >= 2 * len(patients):
            break
    assert repeat_keys, "the first patient never came back as a repeat"
    assert regrade not in repeat_keys and first_url not in repeat_keys and regrade != first_url


def test_unmasked_study_shows_the_code(grading_study, graded_patient, graders, client_for):
    grading_study.masked_codes = False
    grading_study.save()
    client = client_for(graders[0])
    page = client.get(next_page_url(client, grading_study)).content.decode()
    assert graded_patient.code in page


def test_regrade_prefills_only_my_own_answers(grading_study, graded_patient, graders, client_for):
    submit(grading_study, graded_patient, graders[0], choice="0", note="my own note")
    client = client_for(graders[0])
    page = client.get(regrade_url(client, grading_study, 1)).content.decode()
    assert "my own note" in page and "OTHER-GRADERS-SECRET-NOTE" not in page
    assert page.count("checked") == 5
    assert "Re-grading Patient #1" in page and graded_patient.code not in page


def test_unassigned_grader_gets_403_on_every_study_page(grading_study, graded_patient, graders, client_for):
    page = present(grading_study, graded_patient, graders[0])
    page_url = reverse("admin:grading_page", args=[grading_study.pk, page.key])
    outsider = client_for(UserFactory(username="outsider", groups=["Graders"]))
    for url in [
        reverse("admin:grading_study", args=[grading_study.pk]),
        reverse("admin:grading_next", args=[grading_study.pk]),
        page_url,
    ]:
        assert outsider.get(url).status_code == 403, url
    assert outsider.post(page_url, answers_for(grading_study, patient=graded_patient)).status_code == 403
    assert outsider.post(reverse("admin:grading_keep", args=[grading_study.pk, page.key])).status_code == 403
    assert outsider.post(reverse("admin:grading_regrade", args=[grading_study.pk, 1])).status_code == 403
    assert outsider.get(reverse("admin:grading_dashboard")).status_code == 200


def test_another_graders_page_is_not_found(grading_study, graded_patient, graders, client_for):
    theirs = present(grading_study, graded_patient, graders[2])
    client = client_for(graders[0])
    url = reverse("admin:grading_page", args=[grading_study.pk, theirs.key])
    assert client.get(url).status_code == 404
    assert client.post(url, answers_for(grading_study, patient=graded_patient)).status_code == 404
    assert client.post(reverse("admin:grading_keep", args=[grading_study.pk, theirs.key])).status_code == 404
    assert client.post(reverse("admin:grading_regrade", args=[grading_study.pk, 1])).status_code == 404
    assert not Grade.objects.filter(grader=graders[0]).exists()


def test_anonymous_is_sent_to_login(client, grading_study, graded_patient, graders):
    page = present(grading_study, graded_patient, graders[0])
    for url in [
        reverse("admin:grading_dashboard"),
        reverse("admin:grading_study", args=[grading_study.pk]),
        reverse("admin:grading_page", args=[grading_study.pk, page.key]),
    ]:
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
    assert graded_patient.code not in page and "Patient #1" in page  # the study masks codes
    mine = Grade.objects.get(grader=graders[0])
    detail = client.get(reverse("admin:grading_grade_change", args=[mine.pk])).content.decode()
    assert graded_patient.code not in detail and "Patient #1" in detail


def test_sorting_the_grades_list_by_the_masked_patient_has_no_effect(
    grading_study, graders, make_patients, client_for
):
    import random

    patients = make_patients(grading_study, 8)
    random.Random(4).shuffle(patients)  # graded in an order unrelated to their codes
    for patient in patients:
        submit(grading_study, patient, graders[0])
    client = client_for(graders[0])
    url = reverse("admin:grading_grade_changelist")
    plain = [g.pk for g in client.get(url).context["cl"].result_list]
    for order in ("1", "-1"):
        response = client.get(url, {"o": order})
        assert response.status_code == 200
        assert [g.pk for g in response.context["cl"].result_list] == plain, order
    html = client.get(url).content.decode()
    assert 'href="?o=1"' not in html and 'href="?o=1.' not in html  # the column offers no sorting


def test_grader_cannot_open_entries_or_patient_history(grading_study, graded_patient, graders, client_for):
    client = client_for(graders[0])
    assert client.get(reverse("admin:grading_gradeentry_changelist")).status_code == 403
    assert client.get(reverse("admin:studies_patient_change", args=[graded_patient.pk])).status_code == 403


def test_administrator_sees_every_grade_and_the_history(grading_study, graded_patient, graders, admin_client):
    submit(grading_study, graded_patient, graders[1], choice="0", regrade=True)
    response = admin_client.get(reverse("admin:grading_grade_changelist"))
    assert response.context["cl"].result_count == 2
    assert graded_patient.code in response.content.decode()
    response = admin_client.get(reverse("admin:grading_grade_changelist"), {"current": "no"})
    assert response.context["cl"].result_count == 1
    page = admin_client.get(
        reverse("admin:studies_patient_change", args=[graded_patient.pk])
    ).content.decode()
    assert "Grade history" in page and "OTHER-GRADERS-SECRET-NOTE" in page


def test_grading_page_form_errors_keep_the_answers(grading_study, graded_patient, graders, client_for):
    client = client_for(graders[0])
    url = next_page_url(client, grading_study)
    answers = answers_for(grading_study, choice="1", patient=graded_patient)
    first_key = next(iter(answers))
    chosen = answers.pop(first_key)  # TF left out
    response = client.post(url, {**answers, "note": "kept note"})
    assert response.status_code == 400
    html = response.content.decode()
    assert "TF (right eye) is required." in html and "kept note" in html
    assert html.count("checked") == 4
    assert not Grade.objects.filter(grader=graders[0]).exists()
    response = client.post(url, {**answers, first_key: chosen})
    assert response.status_code == 302
    assert Grade.objects.filter(grader=graders[0]).count() == 1


def test_back_and_resubmit_saves_one_grade(grading_study, graded_patient, graders, client_for):
    client = client_for(graders[0])
    url = next_page_url(client, grading_study)
    data = answers_for(grading_study, patient=graded_patient)
    assert client.post(url, data).status_code == 302
    assert client.post(url, data).status_code == 302
    assert Grade.objects.filter(grader=graders[0]).count() == 1


def test_an_old_page_resubmitted_with_other_answers_says_it_was_saved(
    grading_study, graded_patient, graders, client_for
):
    client = client_for(graders[0])
    url = next_page_url(client, grading_study)
    assert client.post(url, answers_for(grading_study, "0", patient=graded_patient)).status_code == 302
    response = client.post(url, answers_for(grading_study, "1", patient=graded_patient))
    assert response.status_code == 409
    html = response.content.decode()
    assert "This page was already saved" in html and "not saved" in html
    assert reverse("admin:grading_regrade", args=[grading_study.pk, 1]) in html  # the re-grade button
    assert set(Grade.objects.get(grader=graders[0]).entries.values_list("option__value", flat=True)) == {"0"}


def test_seconds_spent_count_from_the_first_showing(
    grading_study, graded_patient, graders, client_for, monkeypatch
):
    from datetime import timedelta

    from django.utils import timezone

    client = client_for(graders[0])
    url = next_page_url(client, grading_study)
    real = timezone.now
    monkeypatch.setattr(timezone, "now", lambda: real() + timedelta(seconds=37))
    answers = answers_for(grading_study, patient=graded_patient)
    assert client.post(url, {**answers, next(iter(answers)): ""}).status_code == 400  # refused first
    monkeypatch.setattr(timezone, "now", lambda: real() + timedelta(seconds=110))
    client.post(url, answers)
    assert 109 <= Grade.objects.get(grader=graders[0]).seconds_spent <= 112


def test_next_redirects_to_the_grading_page_then_to_the_study_when_done(
    grading_study, graded_patient, graders, client_for
):
    client = client_for(graders[0])
    url = next_page_url(client, grading_study)
    assert next_page_url(client, grading_study) == url  # the page left open comes back
    client.post(url, answers_for(grading_study, patient=graded_patient))
    response = client.get(reverse("admin:grading_next", args=[grading_study.pk]), follow=True)
    assert "You have graded every patient of this study" in response.content.decode()
    assert progress_of(grading_study, graders[0]).graded == 1


def test_keep_renews_only_an_open_first_grade_page(grading_study, graded_patient, graders, client_for):
    client = client_for(graders[0])
    url = next_page_url(client, grading_study)
    key = url.rstrip("/").split("/")[-1]
    keep = reverse("admin:grading_keep", args=[grading_study.pk, key])
    before = Presentation.objects.get(key=key).reserved_until
    assert client.get(keep).status_code == 405
    assert client.post(keep).json() == {"kept": True}
    assert Presentation.objects.get(key=key).reserved_until > before
    client.post(url, answers_for(grading_study, patient=graded_patient))
    assert client.post(keep).json() == {"kept": False}


@pytest.mark.django_db(transaction=True)
def test_threaded_server_never_shows_a_grader_a_real_code(live_server, grading_study, graders, make_patients):
    """A data-team user browsing the grades list at the same time must not unmask the grader's list."""
    from django.db import connection
    from django.test import Client

    if connection.vendor == "sqlite":
        pytest.skip("SQLite's shared in-memory test database cannot serve requests from several threads")

    from accounts import roles

    patients = make_patients(grading_study, 8)
    for patient in patients:
        submit(grading_study, patient, graders[0])
        submit(grading_study, patient, graders[1])
    data_member = UserFactory(username="dana", groups=[roles.DATA_TEAM])
    codes = {p.code for p in patients}
    url = live_server.url + reverse("admin:grading_grade_changelist")
    leaks, errors = [], []

    def session_cookie(user) -> str:
        client = Client()
        client.force_login(user)
        return f"sessionid={client.cookies['sessionid'].value}"

    def browse(cookie: str, rounds: int, check: bool) -> None:
        import urllib.request

        try:
            for _ in range(rounds):
                request = urllib.request.Request(url, headers={"Cookie": cookie})
                html = urllib.request.urlopen(request, timeout=30).read().decode()
                if check and any(code in html for code in codes):
                    leaks.append(html)
        except Exception as error:  # noqa: BLE001  (reported below)
            errors.append(error)

    data_cookie, grader_cookie = session_cookie(data_member), session_cookie(graders[0])
    threads = [threading.Thread(target=browse, args=(data_cookie, 15, False)) for _ in range(2)]
    threads += [threading.Thread(target=browse, args=(grader_cookie, 15, True)) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors
    assert not leaks, f"{len(leaks)} grader page loads showed real codes"


def test_keep_does_not_revive_a_hold_that_ran_out(grading_study, graded_patient, graders, client_for):
    from datetime import timedelta

    from django.utils import timezone

    client = client_for(graders[0])
    key = next_page_url(client, grading_study).rstrip("/").split("/")[-1]
    Presentation.objects.filter(key=key).update(reserved_until=timezone.now() - timedelta(seconds=1))
    assert client.post(reverse("admin:grading_keep", args=[grading_study.pk, key])).json() == {"kept": False}
    assert next_page_url(client, grading_study).endswith(f"/{key}/")  # `next` checks the slot, then revives
    assert Presentation.objects.get(key=key).reserved_until > timezone.now()


@pytest.mark.parametrize("role", ["Study administrators", "Image collectors", "Data team", "superuser"])
def test_every_other_role_is_refused_the_grading_pages_of_a_study_it_does_not_grade(
    grading_study, graded_patient, graders, client_for, role
):
    user = UserFactory(
        username=f"someone-{role.split()[0].lower()}", groups=[] if role == "superuser" else [role]
    )
    if role == "superuser":
        user.is_superuser = True
        user.save()
    page = present(grading_study, graded_patient, graders[0])
    client = client_for(user)
    assert client.get(reverse("admin:grading_dashboard")).status_code == 200  # lists nothing to grade
    for method, url in [
        ("get", reverse("admin:grading_study", args=[grading_study.pk])),
        ("get", reverse("admin:grading_next", args=[grading_study.pk])),
        ("get", reverse("admin:grading_page", args=[grading_study.pk, page.key])),
        ("post", reverse("admin:grading_page", args=[grading_study.pk, page.key])),
        ("post", reverse("admin:grading_keep", args=[grading_study.pk, page.key])),
        ("post", reverse("admin:grading_regrade", args=[grading_study.pk, 1])),
    ]:
        assert getattr(client, method)(url).status_code == 403, (method, url)
    assert not Grade.objects.filter(grader=user).exists()
