"""Every page carries a strict Content-Security-Policy, and every inline script on it is allowed by hash.

The browser tests prove the pages work under the policy; these find at once an inline script
(say, from a Jazzmin upgrade) whose hash the policy lacks, and print the hash to add.
"""

import base64
import hashlib
import re

import pytest
from django.urls import reverse

INLINE_SCRIPT = re.compile(r"<script(?P<attrs>[^>]*)>(?P<body>.*?)</script>", re.S)


def directives(response) -> dict[str, list[str]]:
    header = response["Content-Security-Policy"]
    parts = [part.strip().split() for part in header.split(";") if part.strip()]
    return {part[0]: part[1:] for part in parts}


def inline_script_hashes(html: str) -> set[str]:
    """The CSP hash source of each inline script (no src, JavaScript) on the page."""
    found = set()
    for match in INLINE_SCRIPT.finditer(html):
        attrs = match["attrs"]
        if "src=" in attrs or re.search(r'type="application/(ld\+)?json"', attrs):
            continue
        digest = base64.b64encode(hashlib.sha256(match["body"].encode()).digest()).decode()
        found.add(f"'sha256-{digest}'")
    return found


def assert_strict_policy(response) -> None:
    policy = directives(response)
    assert policy["default-src"] == ["'self'"]
    assert policy["object-src"] == ["'none'"]
    assert policy["frame-ancestors"] == ["'none'"]
    assert policy["base-uri"] == ["'self'"]
    assert policy["form-action"] == ["'self'"]
    scripts = policy["script-src"]
    assert "'unsafe-inline'" not in scripts and "'unsafe-eval'" not in scripts
    missing = inline_script_hashes(response.content.decode()) - set(scripts)
    assert not missing, f"inline scripts not allowed by the policy: add {sorted(missing)}"


@pytest.fixture
def grading_page_url(grading_study, graders, make_patients, client_for):
    make_patients(grading_study, 1)
    response = client_for(graders[0]).get(reverse("admin:grading_next", args=[grading_study.pk]))
    assert response.status_code == 302
    return response["Location"]


def test_sign_in_and_password_reset_pages_carry_the_policy(client, db):
    for url in [reverse("admin:login"), reverse("admin_password_reset")]:
        response = client.get(url)
        assert response.status_code == 200, url
        assert_strict_policy(response)


def test_api_docs_carry_the_policy_and_load_their_script_from_a_url(client, db):
    response = client.get(reverse("api-docs"))
    assert response.status_code == 200
    assert_strict_policy(response)
    assert not inline_script_hashes(response.content.decode())
    script = client.get(reverse("api-docs") + "?script=")
    assert script.status_code == 200
    assert script["Content-Type"].startswith("application/javascript")


def test_grading_page_carries_the_policy(grading_page_url, graders, client_for):
    response = client_for(graders[0]).get(grading_page_url)
    assert response.status_code == 200
    assert_strict_policy(response)


def test_admin_pages_carry_the_policy(admin_client, study, patient, admin_user):
    urls = [
        reverse("admin:index"),
        reverse("admin:studies_study_changelist"),
        reverse("admin:studies_study_change", args=[study.pk]),
        reverse("admin:studies_patient_change", args=[patient.pk]),
        reverse("admin:studies_study_import", args=[study.pk]),
        reverse("admin:studies_patient_export") + f"?study__id__exact={study.pk}",
        reverse("admin:auth_user_changelist"),
        reverse("admin:auth_user_password_change", args=[admin_user.pk]),
        reverse("admin:password_change"),
        reverse("admin:grading_dashboard"),
        reverse("accounts:profile"),
    ]
    for url in urls:
        response = admin_client.get(url)
        assert response.status_code == 200, url
        assert_strict_policy(response)
