"""The Content-Security-Policy in Chromium: the admin, the API docs and the lockout page work under it,
and it does block a script slipped into a page. (Every browser test fails on any violation:
see `csp_violations` in conftest.py.)"""

import pytest
from django.contrib.auth import get_user_model

from accounts import roles
from tests.browser.conftest import PASSWORD
from tests.factories import StudyFactory, UserFactory

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def superuser():
    return get_user_model().objects.create_superuser("chief", "chief@example.org", PASSWORD)


def test_admin_pages_run_their_scripts_under_the_policy(page, live_server, admin_login, screenshot):
    user = superuser()
    study = StudyFactory()
    admin_login(user)
    pages = [
        "/admin/studies/study/",
        f"/admin/studies/study/{study.pk}/change/",
        f"/admin/studies/study/{study.pk}/import/",
        "/admin/studies/patient/add/",
        f"/admin/auth/user/{user.pk}/password/",
        "/admin/password_change/",
        "/admin/grading/",
        "/accounts/profile/",
    ]
    for path in pages:
        response = page.goto(live_server.url + path)
        assert response.status == 200, path
        assert "default-src 'self'" in response.headers["content-security-policy"], path
        # Jazzmin's own scripts ran: jQuery and Bootstrap are there.
        assert page.evaluate("typeof jQuery === 'function' && typeof bootstrap === 'object'"), path
    # The changelist's filters are select2 widgets built by Jazzmin's script.
    page.goto(live_server.url + "/admin/auth/user/")
    page.wait_for_selector(".select2-container", state="attached")
    screenshot("user-list")


def test_api_docs_work_under_the_policy(page, live_server, screenshot):
    response = page.goto(live_server.url + "/api/docs/")
    assert "script-src 'self'" in response.headers["content-security-policy"]
    page.wait_for_selector(".swagger-ui .info .title")
    assert "Grading Center API" in page.inner_text(".swagger-ui .info .title")
    page.wait_for_selector("text=/api/studies/")
    screenshot("swagger")


def test_the_lockout_page_shows_in_the_sign_in_look(page, live_server, settings, screenshot):
    settings.AXES_FAILURE_LIMIT = 2
    user = UserFactory(username="locked", groups=[roles.DATA_TEAM])
    for password in ["wrong-1", "wrong-2", PASSWORD]:
        page.goto(live_server.url + "/admin/login/")
        page.fill("input[name=username]", user.username)
        page.fill("input[name=password]", password)
        page.click("[type=submit]")
    assert page.url.endswith("/admin/login/")
    assert "Sign-in paused" in page.inner_text("#gc-lockout")
    assert page.evaluate("getComputedStyle(document.querySelector('.login-box')).width") != "auto"
    screenshot("lockout")


def test_the_policy_blocks_an_injected_inline_script(page, live_server, csp_violations):
    page.goto(live_server.url + "/admin/login/")
    page.evaluate(
        """() => {
            const script = document.createElement("script");
            script.textContent = "window.injected = true";
            document.body.appendChild(script);
        }"""
    )
    page.wait_for_timeout(200)  # the console message arrives asynchronously
    assert page.evaluate("window.injected === undefined")
    assert any("inline script" in violation for violation in csp_violations), csp_violations
    csp_violations.clear()  # the one violation this test causes on purpose
