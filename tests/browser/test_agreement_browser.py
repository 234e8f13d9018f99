"""The Data team reads a study's agreement page in Chromium: tables, heat map and charts, no errors."""

import pytest
from django.urls import reverse

from accounts import roles
from tests.browser.conftest import screenshot_path
from tests.factories import UserFactory
from tests.grading_support import answers_where, submit

# Transactional: the live server answers from another thread. The role groups are
# put back after each transactional test by tests/conftest.py.
pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

WHO_FIELDS = ["TF", "TI", "TS", "TT", "CO"]


@pytest.fixture
def graded_study(grading_study, graders, make_patients):
    """Three graders, two per patient, on 12 patients; TF and TS answers that differ now and then."""
    patients = make_patients(grading_study, 12)
    for n, patient in enumerate(patients):
        pair = [graders[n % 3], graders[(n + 1) % 3]]
        for m, grader in enumerate(pair):
            tf = "1" if (n + m * (n % 4 == 0)) % 3 == 0 else "0"
            ts = "U" if (n == 5 and m == 1) else ("1" if n % 5 == 0 else "0")
            submit(grading_study, patient, grader, answers=answers_where(grading_study, {"TF": tf, "TS": ts}))
    return grading_study


@pytest.fixture
def errors(page):
    """Console errors, uncaught JavaScript errors and static files the page did not get."""
    found: list[str] = []

    def console(message):
        if message.type == "error":
            found.append(f"console: {message.text}")

    def response(response):
        if "/static/" in response.url and response.status >= 400:
            found.append(f"{response.status} {response.url}")

    page.on("console", console)
    page.on("response", response)
    page.on("pageerror", lambda error: found.append(f"JavaScript error: {error}"))
    return found


def charts_drawn(page) -> None:
    """Wait until every canvas of the page holds a Chart.js chart."""
    page.wait_for_function(
        "() => typeof Chart !== 'undefined' && document.querySelectorAll('canvas').length > 0"
        " && [...document.querySelectorAll('canvas')].every((canvas) => Chart.getChart(canvas) !== undefined)"
    )


def test_the_data_team_reads_the_agreement_page(
    graded_study, page, admin_login, live_server, screenshot, errors, request
):
    member = UserFactory(username="datateam", groups=[roles.DATA_TEAM])
    page.set_viewport_size({"width": 1440, "height": 900})
    admin_login(member)
    page.goto(live_server.url + reverse("admin:studies_study_agreement", args=[graded_study.pk]))

    charts_drawn(page)
    assert page.locator(".gc-field").count() == 2 * len(WHO_FIELDS)  # per eye
    assert page.locator("canvas.gc-coefficients-chart").count() == 2 * len(WHO_FIELDS)  # per eye
    assert page.locator("canvas.gc-options-chart").count() == 2 * len(WHO_FIELDS)  # per eye
    assert "ungradable answers left out" in page.locator("#gc-ungradable-says").inner_text()
    assert "Fleiss' kappa" in page.locator("#gc-field-0 .gc-coefficients").inner_text()
    assert page.locator("#gc-field-0 .gc-pairwise td[style]").count() == 6  # 3 graders, off the diagonal
    screenshot("excluded")
    page.locator("#gc-field-0").screenshot(path=str(screenshot_path(request.node.name, "tf-card")))

    page.select_option("#gc-ungradable", "category")
    page.click("#gc-ungradable-form [type=submit]")
    page.wait_for_url("**ungradable=category")
    charts_drawn(page)
    assert "ungradable counted as a category" in page.locator("#gc-ungradable-says").inner_text()
    screenshot("category")
    assert errors == []
