"""An adjudicator at work in Chromium: the queue, one patient's answers side by side, keyboard answers."""

import io
import json
from pathlib import Path

import pytest
from django.conf import settings

from accounts import roles
from grading import services
from grading.models import Consensus, Grade
from studies.services import images_upload
from tests import images
from tests.browser.conftest import PASSWORD
from tests.factories import PatientFactory, StudyFactory, UserFactory
from tests.grading_support import answers_where, submit

# Transactional: the live server answers from another thread (role groups are put back by tests/conftest.py).
pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def page(browser):
    """A page at 1440 x 900, the adjudicators' usual screen."""
    context = browser.new_context(viewport={"width": 1440, "height": 900})
    context.set_default_timeout(10_000)
    page = context.new_page()
    try:
        yield page
    finally:
        context.close()


@pytest.fixture
def problems(page):
    """Console errors, JavaScript errors, and static files or photos the page did not get."""
    found: list[str] = []
    page.on("console", lambda message: message.type == "error" and found.append(f"console: {message.text}"))
    page.on("pageerror", lambda error: found.append(f"JavaScript error: {error}"))
    page.on(
        "response",
        lambda response: (
            ("/static/" in response.url or "/files/" in response.url)
            and response.status >= 400
            and found.append(f"{response.status} {response.url}")
        ),
    )
    return found


def disputed_study(patients: int):
    """A masked WHO study with two graders who disagree on TF of the right eye of every patient."""
    schemes = json.loads((Path(settings.BASE_DIR) / "fixtures" / "grade_types.json").read_text())
    (who,) = services.grade_types_import(data=schemes[0])
    study = StudyFactory(
        name="Trachoma survey 2025", graders_per_patient=2, repeat_share=0, masked_codes=True
    )
    study.grade_types.add(who)
    graders = [
        UserFactory(username=f"grader{n}", first_name=first, last_name="Grader", groups=[roles.GRADERS])
        for n, first in enumerate(["Amina", "Bekele"], 1)
    ]
    study.graders.add(*graders)
    made = []
    for n in range(patients):
        patient = PatientFactory(study=study, code=f"TT-{n + 1:04d}")
        for eye, color in (("R", (200, 70, 80)), ("L", (80, 150, 200))):
            photo = images.jpeg((1600, 1200), color=color, seed=10 * n + (1 if eye == "R" else 2))
            images_upload(
                patient=patient, files=[(f"{eye}.jpg", io.BytesIO(photo))], eye=eye, uploaded_by=None
            )
        for grader, tf in zip(graders, ["0", "1"], strict=True):
            submit(study, patient, grader, answers=answers_where(study, {"TF/R": tf}, patient=patient))
        made.append(patient)
    return study, made


def login(page, live_server, user) -> None:
    """The real login form; an adjudicator with no other role lands on the adjudication index."""
    page.goto(f"{live_server.url}/admin/login/")
    page.fill("input[name=username]", user.username)
    page.fill("input[name=password]", PASSWORD)
    with page.expect_navigation():
        page.press("input[name=password]", "Enter")
    page.wait_for_url(f"{live_server.url}/admin/grading/adjudication/")


def highlighted(page) -> str:
    """The field grading.js highlights (name and eye), which must be the only one."""
    return page.evaluate(
        """() => {
            const found = Array.from(document.querySelectorAll(".gc-field.gc-focused"));
            if (found.length !== 1) return `${found.length} fields highlighted`;
            return `${found[0].dataset.name}/${found[0].dataset.eye}`;
        }"""
    )


def wait_for_patient_page(page) -> None:
    page.wait_for_selector(".gc-field.gc-focused")
    page.wait_for_function(
        "() => { const img = document.getElementById('gc-main'); return img && img.naturalWidth > 0; }"
    )


def test_adjudicator_settles_two_patients_with_the_keyboard(page, live_server, screenshot, problems):
    study, patients = disputed_study(2)
    adjudicator = UserFactory(
        username="adjudicator", first_name="Ada", last_name="Judge", groups=[roles.ADJUDICATORS]
    )

    login(page, live_server, adjudicator)
    row = page.locator(f".gc-adjudication-study[data-study='{study.pk}']")
    assert row.locator(".gc-to-do").inner_text().strip() == "2 waiting for adjudication"
    # Jazzmin shows the link twice: in the top menu and in the side menu.
    assert page.locator("a[href='/admin/grading/adjudication/']").count() == 2
    screenshot("01-index")

    with page.expect_navigation():
        row.get_by_role("link", name="Open queue").click()
    queue_rows = page.locator(".gc-queue-row")
    assert queue_rows.count() == 2
    assert [queue_rows.nth(n).locator("a").inner_text() for n in range(2)] == ["TT-0001", "TT-0002"]
    assert "TF, right eye" in queue_rows.nth(0).inner_text()
    screenshot("02-queue")

    with page.expect_navigation():
        queue_rows.nth(0).get_by_role("link", name="TT-0001").click()
    wait_for_patient_page(page)
    assert page.get_by_role("heading", name="Adjudication: TT-0001").is_visible()
    right = page.locator("table.gc-side-by-side").first
    assert [h.strip() for h in right.locator("thead th").all_inner_texts()] == [
        "Field", "Amina Grader", "Bekele Grader", "Consensus", "Adjudication",
    ]  # fmt: skip
    tf = right.locator("tr[data-field='TF']")
    assert tf.locator("td.gc-disagree").all_inner_texts() == ["Absent", "Present"]
    assert "No majority" in tf.locator(".gc-consensus").inner_text()
    # Agreed fields start from their majority: the highlight waits on the one disputed field.
    assert highlighted(page) == "TF/R"
    assert page.locator("#gc-eye").inner_text() == "Right eye"  # the photo of the eye being answered
    screenshot("03-patient")

    page.keyboard.press("2")  # Present
    assert (
        tf.locator("input:checked")
        .evaluate("(input) => input.closest('label').textContent")
        .strip()
        .endswith("Present")
    )
    assert highlighted(page) == "TI/R"
    with page.expect_navigation():
        page.keyboard.press("Enter")
    wait_for_patient_page(page)
    assert page.url.endswith(f"/admin/grading/adjudication/{study.pk}/{patients[1].pk}/")  # save and next
    assert "Saved the adjudication of TT-0001." in page.locator(".alert-success").inner_text()
    tf_right = Consensus.objects.get(patient=patients[0], field__name="TF", eye="R")
    assert (tf_right.method, tf_right.option.value) == ("adjudicated", "1")

    page.keyboard.press("1")  # Absent, for the second patient
    with page.expect_navigation():
        page.keyboard.press("Enter")
    page.wait_for_url(f"{live_server.url}/admin/grading/adjudication/{study.pk}/")
    assert page.locator(".gc-queue-row").count() == 0
    assert page.locator("#gc-queue-empty").is_visible()
    assert "Saved the adjudication of TT-0002." in page.locator(".alert-success").inner_text()
    screenshot("04-queue-empty")

    assert Grade.objects.filter(kind=Grade.Kind.ADJUDICATION, grader=adjudicator).count() == 4
    assert not Consensus.objects.filter(patient__study=study, method="pending").exists()
    assert problems == []
