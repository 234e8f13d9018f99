"""Rough edges of the admin a new user met, each shown fixed in Chromium at 1440 x 900 (issue 11, part 3).

Grade type fields on one line, the patient's tables inside their card, the region "+" popup that takes
one click, the top bar's "Grading" link for graders only, the site's logo and whole sidebar headings,
the password pages, and one date format everywhere.
"""

import io
import re
from urllib.parse import urlparse

import pytest
from django.contrib.auth.tokens import default_token_generator
from django.utils.encoding import force_bytes
from django.utils.http import urlsafe_base64_encode

from accounts import roles
from grading import services
from studies.models import Region
from studies.services import images_upload
from tests import images
from tests.browser.conftest import PASSWORD, screenshot_path
from tests.factories import PatientFactory, StudyFactory, UserFactory
from tests.grading_support import SCHEMES, submit

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

WIDE = {"width": 1440, "height": 900}
# "26 Nov 2026" or "26 Nov 2026, 14:05": the one way dates are written (settings/formats/en/formats.py).
ONE_DATE_FORMAT = re.compile(r"^\d{1,2} [A-Z][a-z]{2} \d{4}(, \d{2}:\d{2})?$")
OTHER_DATE_FORMATS = re.compile(r"\d{1,2}/\d{1,2}/\d{4}|[A-Z][a-z]{2}\. \d|[ap]\.m\.")


@pytest.fixture
def wide(page):
    page.set_viewport_size(WIDE)
    return page


@pytest.fixture
def view_shot(request):
    """`view_shot(page, "step")` saves what the window shows (not the whole page), popups included."""

    def save(page, step: str):
        path = screenshot_path(request.node.name, step)
        page.screenshot(path=str(path))
        return path

    return save


def sign_in(page, live_server, user) -> None:
    page.goto(f"{live_server.url}/admin/login/")
    page.fill("input[name=username]", user.username)
    page.fill("input[name=password]", PASSWORD)
    with page.expect_navigation():
        page.click("[type=submit]")


def superuser():
    return UserFactory(username="root", is_superuser=True)


def graded_study(patients: int = 2):
    """A study graded with the WHO grade type: two graders, the first patient photographed and graded."""
    study = StudyFactory(name="Trachoma survey 2025", graders_per_patient=3, repeat_share=0)
    who = services.grade_types_import(data=SCHEMES[0])[0]
    study.grade_types.add(who)
    graders = [UserFactory(username=f"grader{n}", groups=[roles.GRADERS]) for n in (1, 2)]
    study.graders.add(*graders)
    made = [PatientFactory(study=study, code=f"TR-{n:04d}") for n in range(1, patients + 1)]
    for eye, seed in (("R", 1), ("L", 2)):
        photo = images.jpeg((1600, 1200), seed=seed)
        images_upload(
            patient=made[0],
            files=[(f"a-rather-long-original-file-name-of-the-{eye}-eye.jpg", io.BytesIO(photo))],
            eye=eye,
            uploaded_by=None,
        )
    note = "Lashes hard to see on the left photo; the right one is sharp. Graded from the right one."
    for grader in graders:
        submit(study, made[0], grader, "1", note=note)
    return study, who, graders, made


def box(locator) -> dict:
    found = locator.bounding_box()
    assert found, locator
    return found


def test_a_grade_fields_order_sits_beside_its_name(wide, live_server, screenshot, view_shot):
    _, who, _, _ = graded_study(patients=1)
    sign_in(wide, live_server, superuser())
    wide.goto(f"{live_server.url}/admin/grading/gradetype/{who.pk}/change/")

    blocks = wide.locator(".inline-related.has_original")
    assert blocks.count() == 5
    for n in range(5):
        name, order = box(wide.locator(f"#id_fields-{n}-name")), box(wide.locator(f"#id_fields-{n}-order"))
        assert abs(name["y"] - order["y"]) < 4, (n, name, order)  # one line, not wrapped under
        assert order["x"] > name["x"] + name["width"]
        # Each label names its own field (a screen reader reads "Order", not nothing).
        assert wide.locator(f"label[for='id_fields-{n}-order']").inner_text().strip().startswith("Order")
    screenshot("01-grade-type")
    wide.locator("#id_fields-0-name").scroll_into_view_if_needed()
    view_shot(wide, "02-first-field")


def inline_fits(page, heading: str) -> dict:
    """How wide an inline's table is against the card it sits in, and where its last column ends."""
    return page.evaluate(
        """(heading) => {
            const group = Array.from(document.querySelectorAll(".inline-group")).find(
                (g) => g.closest(".card, .tab-pane, fieldset")?.textContent.includes(heading) ||
                       g.textContent.includes(heading));
            const table = group.querySelector("table");
            const card = group.closest(".card") || group;
            const last = table.querySelector("tbody tr:not(.empty-form) td:last-child");
            return {
                table: table.getBoundingClientRect().right, card: card.getBoundingClientRect().right,
                scroll: table.parentElement.scrollWidth, client: table.parentElement.clientWidth,
                last: last ? last.getBoundingClientRect().right : 0, text: group.innerText,
            };
        }""",
        heading,
    )


def test_the_patients_photos_and_grade_history_fit_their_card(wide, live_server, screenshot):
    _, _, _, (graded, waiting) = graded_study()
    sign_in(wide, live_server, superuser())

    wide.goto(f"{live_server.url}/admin/studies/patient/{graded.pk}/change/")
    for heading in ("Delete", "Answers"):  # the photos' last column, and the grade history's
        fits = inline_fits(wide, heading)
        assert fits["scroll"] <= fits["client"] + 1, fits  # nothing to scroll to
        assert fits["table"] <= fits["card"] + 1 and 0 < fits["last"] <= fits["card"], fits
    delete = wide.locator("#id_images-0-DELETE")
    assert delete.is_visible()
    assert box(delete)["x"] + box(delete)["width"] <= WIDE["width"]
    assert wide.get_by_label(re.compile(r"^Delete ")).count() == 2  # each box named for screen readers
    screenshot("01-graded-patient")

    wide.goto(f"{live_server.url}/admin/studies/patient/{waiting.pk}/change/")
    assert wide.get_by_text("No grades yet.").is_visible()
    assert wide.get_by_text("No images yet.").is_visible()
    screenshot("02-patient-without-grades")


def test_the_region_popup_takes_one_click(wide, live_server, screenshot, view_shot):
    StudyFactory()  # a region to choose from besides the new one
    sign_in(wide, live_server, superuser())
    wide.goto(f"{live_server.url}/admin/studies/study/add/")

    with wide.expect_popup() as opened:
        wide.click("#add_id_region")
    popup = opened.value
    popup.wait_for_load_state()
    name = popup.locator("#id_name")
    # Nothing lies over the form: the point under the name field's centre is the field itself.
    centre = box(name)
    on_top = popup.evaluate(
        "([x, y]) => document.elementFromPoint(x, y)?.id",
        [centre["x"] + centre["width"] / 2, centre["y"] + centre["height"] / 2],
    )
    assert on_top == "id_name"
    view_shot(popup, "01-popup")
    name.click()  # one click: the field has the focus
    assert popup.evaluate("document.activeElement.id") == "id_name"
    popup.keyboard.type("Amhara")
    popup.fill("#id_country", "Ethiopia")
    with popup.expect_event("close"):
        popup.click("[type=submit][name=_save]")

    region = Region.objects.get(name="Amhara")
    assert wide.locator("#id_region").input_value() == str(region.pk)
    screenshot("02-region-chosen")


def top_bar_links(page) -> list[str]:
    links = page.locator("#jazzy-navbar .navbar-nav .nav-link:visible")
    return [text.strip() for text in links.all_inner_texts()]


def test_grading_is_in_the_top_bar_only_for_those_who_grade(wide, live_server, screenshot):
    _, _, (grader, _), _ = graded_study(patients=1)
    data_team = UserFactory(username="dana", groups=[roles.DATA_TEAM])

    sign_in(wide, live_server, data_team)
    assert "Grading" not in top_bar_links(wide)
    assert wide.locator("#jazzy-navigation a[href='/admin/grading/']").count() == 0
    screenshot("01-data-team")

    wide.context.clear_cookies()
    sign_in(wide, live_server, grader)
    assert "Grading" in top_bar_links(wide)
    screenshot("02-grader")


def test_the_site_has_its_logo_and_whole_sidebar_headings(wide, live_server, view_shot):
    sign_in(wide, live_server, superuser())
    logo = wide.locator("#jazzy-logo img")
    assert logo.get_attribute("src").endswith("/static/gradingcenter/logo.svg")
    assert logo.evaluate("(img) => img.complete && img.naturalWidth > 0")
    assert wide.locator("link[rel=icon]").first.get_attribute("href").endswith("gradingcenter/logo.svg")
    headings = wide.locator("#jazzy-navigation .nav-header")
    assert headings.count() >= 3
    cut = headings.evaluate_all(
        "(all) => all.filter((h) => h.scrollWidth > h.clientWidth + 1).map((h) => h.textContent)"
    )
    assert not cut
    assert "Authentication and Authorization" in headings.all_inner_texts()
    view_shot(wide, "01-sidebar")


def labelled(label: str) -> re.Pattern:
    """A field's label text: the label, maybe our "*" and AdminLTE's " (required)" for screen readers."""
    return re.compile(rf"^{re.escape(label)}\s*\*?\s*(\(required\))?$")


def test_password_pages_lead_back_and_have_labelled_styled_inputs(wide, live_server, screenshot):
    user = UserFactory(username="sam", email="sam@example.org", groups=[roles.STUDY_ADMINISTRATORS])

    # "E-mail sent": a way back to the sign-in page.
    wide.goto(f"{live_server.url}/admin/password_reset/")
    wide.fill("input[name=email]", user.email)
    with wide.expect_navigation():
        wide.click("[type=submit]")
    assert urlparse(wide.url).path == "/accounts/password-reset/done/"
    screenshot("01-email-sent")
    with wide.expect_navigation():
        wide.get_by_role("link", name="Back to sign in").click()
    assert urlparse(wide.url).path == "/admin/login/"

    # The link's page: two labelled password inputs, the user name hidden for password managers only.
    uid = urlsafe_base64_encode(force_bytes(user.pk))
    wide.goto(f"{live_server.url}/accounts/reset/{uid}/{default_token_generator.make_token(user)}/")
    visible = wide.locator("form input:not([type=hidden]):visible")
    assert [visible.nth(n).get_attribute("type") for n in range(visible.count())] == ["password", "password"]
    assert wide.locator("input[autocomplete=username]").get_attribute("value") == "sam"
    assert wide.get_by_label(labelled("New password")).is_visible()
    screenshot("02-set-password")

    # Signed in: the password change inputs look like every other input, with their labels.
    wide.context.clear_cookies()
    sign_in(wide, live_server, user)
    wide.goto(f"{live_server.url}/admin/password_change/")
    for label in ("Old password", "New password", "New password confirmation"):
        field = wide.get_by_label(labelled(label))
        assert "form-control" in field.get_attribute("class")
        assert field.evaluate("(input) => getComputedStyle(input).width") != "auto"
    old = box(wide.get_by_label(labelled("Old password")))
    assert old["width"] > 300 and old["height"] >= 30  # Bootstrap's input, not the browser's bare one
    screenshot("03-password-change")


def test_dates_are_written_one_way_in_the_admin_and_on_grading_pages(wide, live_server, screenshot):
    study, _, (grader, _), (graded, _) = graded_study()
    sign_in(wide, live_server, superuser())

    wide.goto(f"{live_server.url}/admin/studies/patient/{graded.pk}/change/")
    uploaded = wide.locator("td.field-uploaded_at").first.inner_text().strip()
    created = wide.locator("td.field-created_at").first.inner_text().strip()
    assert ONE_DATE_FORMAT.match(uploaded) and ONE_DATE_FORMAT.match(created), (uploaded, created)
    wide.goto(f"{live_server.url}/admin/grading/grade/")
    assert not OTHER_DATE_FORMATS.search(wide.locator("#result_list").inner_text())
    screenshot("01-admin-grades")

    wide.context.clear_cookies()
    sign_in(wide, live_server, grader)
    wide.goto(f"{live_server.url}/admin/grading/study/{study.pk}/")
    graded_at = wide.locator("#gc-graded-list .text-muted.small").first.inner_text().strip()
    assert ONE_DATE_FORMAT.match(graded_at), graded_at
    screenshot("02-grading-study")
