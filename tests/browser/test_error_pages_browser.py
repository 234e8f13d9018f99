"""The error pages in Chromium: a grader on a staff page and a visitor on a missing page see the site."""

import pytest

from accounts import roles
from tests.factories import UserFactory

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_a_grader_on_a_staff_page_and_a_visitor_on_a_missing_page(page, live_server, admin_login, screenshot):
    grader = UserFactory(username="grace", groups=[roles.GRADERS])
    page.set_viewport_size({"width": 1440, "height": 900})
    admin_login(grader)
    response = page.goto(live_server.url + "/admin/studies/study/")
    assert response.status == 403
    assert page.locator(".main-sidebar, .brand-link").first.is_visible()  # inside the admin's frame
    assert "You may not open this page" in page.content()
    screenshot("403-grader")
    page.context.clear_cookies()
    response = page.goto(live_server.url + "/no/such/page/")
    assert response.status == 404
    assert "Grading Center" in page.content()
    screenshot("404-visitor")
