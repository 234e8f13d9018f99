"""The grading page's rough edges, shown fixed at 1440 x 900 (issue 11, parts 3 and 5).

"TF is required." leaves once TF is answered by key (our message and the server's), the key list
is in view beside the photo, and every control has a name a screen reader can say.
"""

import re

import pytest

from tests.browser.conftest import axe_violations, screenshot_path
from tests.browser.test_grading_browser import (
    focused_field,
    grading_setup,
    login_with_keyboard,
    wait_for_grading_page,
)

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

WIDE = {"width": 1440, "height": 900}


def open_grading_page(page, live_server, unit: str = "patient"):
    page.set_viewport_size(WIDE)
    study, grader, _ = grading_setup(2, unit=unit)
    login_with_keyboard(page, live_server, grader)
    page.goto(f"{live_server.url}/admin/grading/study/{study.pk}/next/")
    wait_for_grading_page(page)
    return study


def required_messages(page) -> list[str]:
    return [text.strip() for text in page.locator(".gc-error").all_inner_texts()]


def test_the_required_message_leaves_once_the_field_is_answered_by_key(page, live_server, screenshot):
    open_grading_page(page, live_server)

    # Ours: Enter with TF unanswered.
    page.keyboard.press("Enter")
    assert required_messages(page) == ["TF is required."]
    assert page.locator(".gc-field[data-name=TF]").get_attribute("aria-invalid") == "true"
    screenshot("01-tf-required")
    page.keyboard.press("1")
    assert required_messages(page) == []
    assert page.locator(".gc-field[data-name=TF]").get_attribute("aria-invalid") is None
    assert focused_field(page) == "TI"
    assert page.locator("#gc-announce").inner_text() == "TF: Absent"  # said by a screen reader
    screenshot("02-tf-answered")

    # The server's: the form sent without the browser's check, every field unanswered but TF.
    with page.expect_navigation():
        page.evaluate("HTMLFormElement.prototype.submit.call(document.getElementById('gc-form'))")
    wait_for_grading_page(page)
    server_said = required_messages(page)
    assert "TI is required." in server_said and "TF is required." not in server_said, server_said
    assert focused_field(page) == "TI"
    page.keyboard.press("2")
    assert "TI is required." not in required_messages(page)
    screenshot("03-server-message-gone")


@pytest.mark.parametrize("unit", ["patient", "eye"])
def test_the_key_list_is_in_view_beside_the_photo_at_1440_by_900(page, live_server, request, unit):
    open_grading_page(page, live_server, unit=unit)
    keys = page.locator("#gc-shortcuts").bounding_box()
    viewer = page.locator("#gc-viewer").bounding_box()
    assert keys["y"] + keys["height"] <= WIDE["height"], keys  # above the fold
    assert viewer["height"] >= 450, viewer  # and the photo still large
    assert page.locator("#gc-shortcuts").inner_text().startswith("Keys:")
    page.screenshot(path=str(screenshot_path(request.node.name, "01-window")))  # the window, not the page


def test_every_control_of_the_grading_page_has_a_name(page, live_server, screenshot):
    open_grading_page(page, live_server, unit="eye")

    blocking = [v for v in axe_violations(page) if v["impact"] in ("serious", "critical")]
    assert not blocking, [(v["id"], [n["target"] for n in v["nodes"]]) for v in blocking]
    # What a screen reader announces: each field a required radio group named after it, each answer a
    # named radio, the viewer's buttons and sliders by name.
    tf_right = page.get_by_role("radiogroup", name=re.compile(r"^TF"))
    assert tf_right.count() == 2  # one per eye
    assert tf_right.first.get_attribute("aria-required") == "true"
    assert tf_right.first.get_by_role("radio", name=re.compile(r"Absent$")).count() == 1
    for name in ("Zoom out (-)", "Zoom in (+)", "Fit (0)", "Right eye", "Left eye"):
        assert page.get_by_role("button", name=name).count() >= 1, name
    for name in ("Brightness", "Contrast"):
        assert page.get_by_role("slider", name=name).count() == 1, name
    assert page.get_by_role("textbox", name=re.compile(r"^Note")).count() == 1
    assert page.get_by_role("button", name=re.compile(r"Save and next")).count() == 1
    assert page.get_by_role("heading", level=2).count() >= 2  # each grade type form under a heading
    screenshot("01-per-eye-page")
