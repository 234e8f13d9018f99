"""A study administrator reads a certification set's report in Chromium: who passed, and why not."""

import pytest
from django.urls import reverse

from accounts import roles
from tests.factories import StudyFactory, UserFactory
from tests.grading.test_certification import REFERENCE_20, TRAINEE_9137, grade_all, reference

# Transactional: the live server answers from another thread.
pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_the_report_says_who_passed_and_by_which_kappa(
    page, admin_login, live_server, screenshot, graders, who, make_patients
):
    study = StudyFactory(name="WHO certification set", is_certification=True, graders_per_patient=20)
    study.grade_types.add(who)
    study.graders.add(*graders[:2])
    admin = UserFactory(username="studyadmin", groups=[roles.STUDY_ADMINISTRATORS])
    patients = make_patients(study, 20)
    for patient, value in zip(patients, REFERENCE_20, strict=True):
        reference(study, patient, admin, {"TF": value})
    grade_all(study, graders[0], patients, REFERENCE_20)  # matches the reference on TF
    grade_all(study, graders[1], patients, TRAINEE_9137)  # kappa 0.6 on TF
    page.set_viewport_size({"width": 1440, "height": 900})
    admin_login(admin)
    page.goto(live_server.url + reverse("admin:studies_study_certification", args=[study.pk]))
    page.wait_for_selector("#gc-trainees")
    assert "0.70" in page.locator("#gc-pass-mark").inner_text()
    results = {
        row.get_attribute("data-trainee"): row.locator("td").nth(1).inner_text().strip()
        for row in page.locator("tr.gc-trainee").all()
    }
    assert results == {"grader1": "passed", "grader2": "failed"}
    why = page.locator("tr.gc-trainee[data-trainee=grader2] td").nth(2).inner_text()
    assert "TF, right eye" in why and "0.60" in why
    screenshot("report")
