"""Production counts login and password-reset throttles in the database, shared by every worker."""

import base64
import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.db import connection

ROOT = Path(__file__).resolve().parents[2]
PRODUCTION = {
    "DJANGO_SECRET_KEY": "k3y-f0r-t3sts-" + "abcdefghijklmnopqrstuvwxyz0123456789" * 2,
    "DJANGO_ALLOWED_HOSTS": "grading.example.org",
    "DJANGO_SETTINGS_MODULE": "settings.prod",
}
# The API's throttles count in the default cache; print what that is under production settings.
PRINT_CACHE = (
    "import django; django.setup(); from django.conf import settings; from django.core import cache; "
    "from rest_framework.throttling import SimpleRateThrottle; "
    "assert SimpleRateThrottle.cache is cache.cache; "
    "print(settings.CACHES['default']['BACKEND'], settings.CACHES['default'].get('LOCATION'), "
    "type(cache.caches['default']).__name__)"
)


def production_cache(**extra: str) -> list[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "CACHE_"))}
    result = subprocess.run(
        [sys.executable, "-c", PRINT_CACHE],
        cwd=ROOT,
        env={**base, **PRODUCTION, **extra},
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.split()


def test_production_throttles_count_in_the_database_cache():
    backend, location, instance = production_cache()
    assert backend == "django.core.cache.backends.db.DatabaseCache"
    assert location == "gc_cache"
    assert instance == "DatabaseCache"


def test_production_may_choose_the_per_process_cache():
    backend, *_ = production_cache(CACHE_BACKEND="local")
    assert backend == "django.core.cache.backends.locmem.LocMemCache"


def test_a_bad_cache_backend_is_refused():
    base = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "CACHE_"))}
    result = subprocess.run(
        [sys.executable, "manage.py", "check"],
        cwd=ROOT,
        env={**base, **PRODUCTION, "CACHE_BACKEND": "redis"},
        capture_output=True,
        text=True,
    )
    assert result.returncode != 0
    assert "CACHE_BACKEND must be 'database' or 'local'" in result.stderr


@pytest.mark.django_db
def test_migrate_makes_the_cache_table():
    assert "gc_cache" in connection.introspection.table_names()


@pytest.fixture
def database_cache(settings, db):
    settings.CACHES = {
        "default": {"BACKEND": "django.core.cache.backends.db.DatabaseCache", "LOCATION": "gc_cache"}
    }
    settings.AXES_FAILURE_LIMIT = 100  # this test is about the throttle alone


def test_the_api_login_throttle_counts_in_the_shared_table(client, database_cache):
    raw = base64.b64encode(b"nobody:wrong").decode()
    statuses = [
        client.post("/api/auth/login/", HTTP_AUTHORIZATION=f"Basic {raw}").status_code for _ in range(11)
    ]
    assert statuses[:10] == [401] * 10
    assert statuses[10] == 429
    with connection.cursor() as cursor:
        cursor.execute("SELECT COUNT(*) FROM gc_cache")
        assert cursor.fetchone()[0] >= 1
