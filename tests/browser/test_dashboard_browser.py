"""A study administrator opens the admin and lands on the study dashboard, in Chromium at 1440 x 900:
figures, grading progress bars, the grades-per-day chart and the lists each of them opens."""

import re
from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.utils import timezone

from grading.models import Consensus, Grade
from studies.models import ImageImport, Patient, Study

# Transactional: the live server answers from another thread. The role groups are
# put back after each transactional test by tests/conftest.py.
pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

DEMO_PASSWORD = "grading-demo"  # fixtures/demo.json


@pytest.fixture
def demo():
    """The demo (`manage.py load_demo`), its grades spread over the last weeks, and three field days."""
    call_command("load_demo", stdout=open("/dev/null", "w"))
    study = Study.objects.get()
    now = timezone.now()
    for n, grade in enumerate(Grade.objects.order_by("pk")):
        Grade.objects.filter(pk=grade.pk).update(created_at=now - timedelta(days=(n * 5) % 40, hours=n % 7))
    collector = get_user_model().objects.get(username="collector")
    for days_ago, status, files, photos in [
        (20, "done", 24, 24),
        (9, "failed", 3, 0),
        (0, "storing", 40, 12),
    ]:
        image_import = ImageImport.objects.create(
            study=study, source=ImageImport.Source.ZIP, status=status, files_total=files,
            files_done=files if status != "storing" else photos, patients_created=photos // 2,
            images_created=photos, created_by=collector,
        )  # fmt: skip
        ImageImport.objects.filter(pk=image_import.pk).update(created_at=now - timedelta(days=days_ago))
    return study


@pytest.fixture
def errors(page):
    """Console errors, uncaught JavaScript errors and static files the page did not get."""
    found: list[str] = []
    page.on("console", lambda message: message.type == "error" and found.append(f"console: {message.text}"))
    page.on(
        "response",
        lambda response: (
            "/static/" in response.url
            and response.status >= 400
            and found.append(f"{response.status} {response.url}")
        ),
    )
    page.on("pageerror", lambda error: found.append(f"JavaScript error: {error}"))
    return found


def chart_drawn(page) -> None:
    """Wait until every canvas of the page holds a Chart.js chart."""
    page.wait_for_function(
        "() => typeof Chart !== 'undefined' && document.querySelectorAll('canvas.gc-grades-chart').length > 0"
        " && [...document.querySelectorAll('canvas.gc-grades-chart')].every((c) => Chart.getChart(c))"
    )


def test_a_study_administrator_starts_on_the_study_dashboard(
    demo, page, admin_login, live_server, screenshot, errors
):
    page.set_viewport_size({"width": 1440, "height": 900})
    admin_login(get_user_model().objects.get(username="studyadmin"), DEMO_PASSWORD)
    section = page.locator(f"#gc-study-{demo.pk}")

    chart_drawn(page)
    assert (
        page.locator("h3", has_text="Study dashboard").count()
        + page.locator("h1", has_text="Study dashboard").count()
        == 1
    )
    assert section.locator(".gc-patients .gc-number").inner_text() == "12"
    assert section.locator(".gc-images .gc-number").inner_text() == "24"
    waiting = Patient.objects.filter(consensus__method=Consensus.Method.PENDING).distinct().count()
    assert section.locator(".gc-waiting .gc-number").inner_text() == str(waiting)

    # The chart: one bar per day for 8 weeks, holding every grade of the demo, drawn on the canvas.
    chart = page.evaluate(
        """() => {
            const canvas = document.querySelector("canvas.gc-grades-chart");
            const chart = Chart.getChart(canvas);
            const pixels = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
            let painted = 0;
            for (let i = 3; i < pixels.length; i += 4) if (pixels[i] > 0) painted++;
            return {
                days: chart.data.labels.length,
                grades: chart.data.datasets.reduce((sum, d) => sum + d.data.reduce((a, b) => a + b, 0), 0),
                width: canvas.getBoundingClientRect().width,
                painted: painted,
            };
        }"""
    )
    assert chart["days"] == 56 and chart["grades"] == Grade.objects.count()
    assert chart["width"] > 400 and chart["painted"] > 1000, chart

    # A bar per grader, as wide as the share of their queue they graded.
    bars = section.locator(".gc-grader .progress")
    assert bars.count() == 3
    for n in range(3):
        percent = int(bars.nth(n).get_attribute("aria-valuenow"))
        inner = bars.nth(n).locator(".progress-bar").bounding_box()["width"]
        outer = bars.nth(n).bounding_box()["width"]
        assert abs(inner / outer * 100 - percent) < 2, (percent, inner, outer)
    assert section.locator(".gc-import").count() == 3
    assert section.locator(".gc-import[data-status=failed] .badge").inner_text() == "Refused"
    screenshot("dashboard")

    # Each figure opens the list behind it, filtered.
    section.locator("a.gc-waiting").click()
    page.wait_for_url(re.compile(r"/admin/grading/consensus/\?method__exact=pending"))
    assert page.locator("#result_list tbody tr").count() >= waiting
    page.go_back()
    section.locator("a.gc-ungraded").click()
    page.wait_for_url(re.compile(r"/admin/studies/patient/\?.*grades__isnull=True"))
    ungraded = Patient.objects.filter(study=demo, grades__isnull=True).count()
    assert page.locator("#result_list tbody tr").count() == ungraded
    page.go_back()
    section.locator(".gc-grader a").first.click()
    page.wait_for_url(re.compile(r"/admin/grading/grade/\?.*grader__id__exact=\d+"))
    assert page.locator("#result_list tbody tr").count() > 0
    page.go_back()

    # A click on a day's bar opens that day's grades.
    chart_drawn(page)
    point = page.evaluate(
        """() => {
            const canvas = document.querySelector("canvas.gc-grades-chart");
            canvas.scrollIntoView({block: "center"});
            const chart = Chart.getChart(canvas);
            const bars = chart.getDatasetMeta(0).data;
            const day = chart.data.datasets[0].data.findLastIndex((count) => count > 0);
            const box = canvas.getBoundingClientRect();
            return {x: box.left + bars[day].x, y: box.top + (bars[day].y + bars[day].base) / 2,
                    count: chart.data.datasets.reduce((sum, d) => sum + d.data[day], 0)};
        }"""
    )
    page.mouse.click(point["x"], point["y"])
    page.wait_for_url(re.compile(r"/admin/grading/grade/\?.*created_at__day=\d+"))
    assert page.locator("#result_list tbody tr").count() == point["count"]
    assert errors == []
