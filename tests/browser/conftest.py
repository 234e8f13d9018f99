"""Fixtures for the browser tests: Debian's Chromium driven by Playwright's sync API.

The app is served by pytest-django's `live_server` (static files through the
staticfiles handler). Every test gets a fresh browser context; screenshots go
to `artifacts/screenshots/<test name>-<step>.png` under the project root.
"""

import os
import re
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

# Playwright's sync API keeps an event loop running in this thread, and Django
# refuses database access from a thread with a running loop unless told it is safe.
os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
PROJECT_ROOT = Path(__file__).resolve().parents[2]
SCREENSHOTS = PROJECT_ROOT / "artifacts" / "screenshots"
PASSWORD = "pass-word-123"  # tests.factories.UserFactory's password
TIMEOUT_MS = 10_000


def chromium_path() -> str:
    """Debian's Chromium; skip the browser tests without it, or fail them when CI=true."""
    if os.path.exists(CHROMIUM) or shutil.which(CHROMIUM):
        return CHROMIUM
    message = f"Chromium is not installed at {CHROMIUM}; install Debian's `chromium` package."
    if os.environ.get("CI") == "true":
        pytest.fail(f"Browser tests cannot run in CI: {message}", pytrace=False)
    pytest.skip(message)


@pytest.fixture(scope="session")
def browser() -> Iterator:
    executable = chromium_path()
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS, headless=True)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def page(browser) -> Iterator:
    """A page in a fresh context (no cookies shared between tests), 1400 x 900."""
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    try:
        yield page
    finally:
        context.close()


CSP_VIOLATION = re.compile(r"Content Security Policy|Refused to", re.I)


@pytest.fixture(autouse=True)
def csp_violations(request) -> Iterator[list[str]]:
    """Every Content-Security-Policy violation the browser reports on the test's pages (the `page`
    fixture and any page opened in its context); the test fails at teardown if there is one."""
    violations: list[str] = []
    if "page" not in request.fixturenames:
        yield violations
        return
    first = request.getfixturevalue("page")

    def watch(page) -> None:
        def record(message) -> None:
            if CSP_VIOLATION.search(message.text):
                violations.append(f"{page.url}: {message.text}")

        page.on("console", record)

    watch(first)
    first.context.on("page", watch)
    yield violations
    if violations:
        pytest.fail("Content-Security-Policy violations:\n" + "\n".join(violations), pytrace=False)


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    report = yield
    setattr(item, f"report_{report.when}", report)
    return report


def screenshot_path(test_name: str, step: str) -> Path:
    clean = [re.sub(r"[^A-Za-z0-9_.-]+", "_", part).strip("_") for part in (test_name, step)]
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    return SCREENSHOTS / f"{clean[0]}-{clean[1]}.png"


@pytest.fixture
def screenshot(page, request) -> Iterator[Callable[[str], Path]]:
    """`screenshot("step")` saves the whole page as artifacts/screenshots/<test>-<step>.png.

    A test that fails leaves `<test>-failed.png` showing where it stopped.
    """

    def save(step: str) -> Path:
        path = screenshot_path(request.node.name, step)
        # From the top: Jazzmin's sidebar is sticky and would be drawn wherever the page was scrolled.
        page.evaluate("window.scrollTo(0, 0)")
        page.screenshot(path=str(path), full_page=True)
        return path

    screenshot_path(request.node.name, "failed").unlink(missing_ok=True)  # left by an earlier run
    yield save
    report = getattr(request.node, "report_call", None)
    if report is not None and report.failed and not page.is_closed():
        try:
            save("failed")
        except Exception:  # the failure itself matters more than its picture
            pass


@pytest.fixture
def admin_login(page, live_server) -> Callable:
    """Log a user in through the real admin login form; returns the page on the admin index."""

    def login(user, password: str = PASSWORD):
        page.goto(f"{live_server.url}/admin/login/")
        page.fill("input[name=username]", user.username)
        page.fill("input[name=password]", password)
        page.click("[type=submit]")
        page.wait_for_url(f"{live_server.url}/admin/")
        return page

    return login


AXE_CORE = Path(__file__).parent / "vendor" / "axe-core" / "axe.min.js"
AXE_BLOCKING = ("serious", "critical")


def axe_violations(page, *, disable: tuple[str, ...] = ()) -> list[dict]:
    """axe-core's violations on the page as it is now (each with its impact and nodes).

    axe is run through the DevTools protocol (`page.evaluate` of the file's text), which the page's
    Content-Security-Policy does not govern: a <script> tag added to the page would be refused by its
    script-src, and the CSP check of the other tests stays on. `disable` turns off rules by id.
    """
    if not page.evaluate("() => typeof window.axe === 'object'"):
        page.evaluate(AXE_CORE.read_text())
    options = {"resultTypes": ["violations"], "rules": {rule: {"enabled": False} for rule in disable}}
    return page.evaluate("async (options) => (await window.axe.run(document, options)).violations", options)
