"""Every page, as each role, passes axe-core with no serious or critical violation.

The pages and what each role gets come from tests/test_every_page.py (one table for both): here
every HTML page a role may open is opened in Chromium as that role and checked with axe-core
(vendored under tests/browser/vendor/axe-core/). Each role's findings, serious or not, are written
to artifacts/axe/<role>.json.
"""

import json
from urllib.parse import urlparse

import pytest
from django.conf import settings
from django.contrib.auth.tokens import default_token_generator
from django.test import Client
from django.utils.encoding import force_bytes
from django.utils.http import urlsafe_base64_encode

from tests.browser.conftest import AXE_BLOCKING, PROJECT_ROOT, axe_violations
from tests.test_every_page import ANON, PAGES, ROLES, SUPER, _world

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

# Pages that are not HTML (files, JSON, CSV, the API): nothing for axe to read.
NOT_HTML = {"jsi18n", "agreement csv", "photo file", "thumbnail file", "field-day import status",
            "healthz", "livez"}  # fmt: skip
# Swagger UI's own markup (drf-spectacular serves its bundle as it ships) breaks one rule that no
# template or stylesheet of ours can reach: each operation's summary is a <button> holding another
# (the copy-path button), built by its React code. Everything else on /api/docs/ is checked (its
# language and colours are fixed by templates/drf_spectacular/swagger_ui.html and swagger.css).
THIRD_PARTY_RULES = {"api docs": ("nested-interactive",)}
REPORTS = PROJECT_ROOT / "artifacts" / "axe"


def pages_for(role: str) -> list[tuple[str, str]]:
    """(name, path-maker) of each HTML page the role may open, then one page it is refused (403, 404)."""
    chosen = [p for p in PAGES if p.method == "get" and p.name not in NOT_HTML and p.expected[role] == 200]
    chosen = [p for p in chosen if p.auth == "session" or p.name == "api docs"]
    refused = [p for p in PAGES if p.method == "get" and p.expected[role] == 403 and p.auth == "session"]
    chosen += refused[:1] + [p for p in PAGES if p.name == "no such admin page" and p.expected[role] == 404]
    return [(p.name, p.path) for p in chosen]


def set_password_path(user) -> str:
    """The password reset link's page ("set a new password") for the user, as the e-mail gives it."""
    uid = urlsafe_base64_encode(force_bytes(user.pk))
    return f"/accounts/reset/{uid}/{default_token_generator.make_token(user)}/"


def sign_in(page, live_server, user) -> None:
    """The role's session cookie in the browser (the login form has its own test and its own check here)."""
    client = Client()
    client.force_login(user)
    cookie = client.cookies[settings.SESSION_COOKIE_NAME].value
    host = urlparse(live_server.url).hostname
    page.context.add_cookies(
        [{"name": settings.SESSION_COOKIE_NAME, "value": cookie, "domain": host, "path": "/"}]
    )


def summary(violation: dict) -> str:
    targets = ", ".join(" ".join(target[-1:]) for target in violation["targets"][:3])
    return f"{violation['impact']} {violation['id']} x{violation['nodes']}: {violation['help']} [{targets}]"


@pytest.mark.parametrize("role", ROLES)
def test_every_page_passes_axe_as_each_role(page, live_server, role):
    world = _world()
    pages = pages_for(role)
    if role == ANON:
        pages.append(("set password", lambda w: set_password_path(w.users[SUPER])))
    else:
        sign_in(page, live_server, world.users[role])

    found: dict[str, list[dict]] = {}
    for name, path in pages:
        response = page.goto(live_server.url + path(world))
        assert response.headers["content-type"].startswith("text/html"), name
        page.wait_for_load_state("load")
        violations = axe_violations(page, disable=THIRD_PARTY_RULES.get(name, ()))
        found[f"{name} {urlparse(page.url).path}"] = [
            {"id": v["id"], "impact": v["impact"], "nodes": len(v["nodes"]), "help": v["help"],
             "targets": [node["target"] for node in v["nodes"][:5]]}
            for v in violations
        ]  # fmt: skip

    REPORTS.mkdir(parents=True, exist_ok=True)
    (REPORTS / f"{role.replace(' ', '-')}.json").write_text(json.dumps(found, indent=1))
    blocking = {
        name: [summary(v) for v in violations if v["impact"] in AXE_BLOCKING]
        for name, violations in found.items()
    }
    blocking = {name: lines for name, lines in blocking.items() if lines}
    assert not blocking, json.dumps(blocking, indent=1)
