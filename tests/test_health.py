"""/healthz/ answers 503 when the database or the storage is down; /livez/ answers for the process alone."""

import socket

import pytest
from django.core.files.storage import FileSystemStorage
from django.db import connections

from tests.storage import local_files

TEXT = {"HTTP_ACCEPT": "text/plain"}


class FullDiskStorage(FileSystemStorage):
    """Local storage on a disk with no room left."""

    def _save(self, name, content):
        raise OSError(28, "No space left on device")


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def unreachable_database(monkeypatch):
    """Connections opened from now on go to a PostgreSQL server that is not there (the test's own,
    already open, is kept)."""
    monkeypatch.setitem(
        connections.settings,
        "default",
        {
            **connections.settings["default"],
            "ENGINE": "django.db.backends.postgresql",
            "NAME": "gradingcenter",
            "HOST": "127.0.0.1",
            "PORT": str(closed_port()),
            "USER": "nobody",
            "PASSWORD": "",
            "OPTIONS": {"connect_timeout": 2},
        },
    )


def test_healthy_answers_200_and_leaves_no_file_behind(client, db):
    response = client.get("/healthz/", **TEXT)

    assert response.status_code == 200
    lines = response.content.decode().splitlines()
    assert any(line.startswith("Database") and line.endswith(": OK") for line in lines)
    assert any(line.startswith("Storage") and line.endswith(": OK") for line in lines)
    assert local_files() == set()
    assert "no-cache" in response["Cache-Control"]


def test_database_unreachable_answers_503(client, db, unreachable_database):
    response = client.get("/healthz/", **TEXT)

    assert response.status_code == 503
    lines = dict(line.split(": ", 1) for line in response.content.decode().splitlines())
    assert [check for check, state in lines.items() if state != "OK"] == ["Database(alias='default')"]
    # Not the host and port the driver's message names: the page is public.
    assert lines["Database(alias='default')"] == "Unavailable: unreachable"


def test_storage_failing_answers_503(client, db, settings):
    settings.STORAGES = {
        **settings.STORAGES,
        "default": {
            "BACKEND": "tests.test_health.FullDiskStorage",
            "OPTIONS": {"location": settings.MEDIA_ROOT},
        },
    }

    response = client.get("/healthz/", **TEXT)

    assert response.status_code == 503
    lines = dict(line.split(": ", 1) for line in response.content.decode().splitlines())
    assert [check for check, state in lines.items() if state != "OK"] == ["Storage(alias='default')"]


def test_healthz_answers_json_for_monitors(client, db):
    response = client.get("/healthz/", HTTP_ACCEPT="application/json")

    assert response.status_code == 200
    assert set(response.json().values()) == {"OK"}


def test_livez_answers_without_touching_the_database(client, db, django_assert_num_queries):
    with django_assert_num_queries(0):
        response = client.get("/livez/")

    assert response.status_code == 200
    assert response.content == b"ok"


def test_livez_answers_while_the_database_is_unreachable(client, unreachable_database):
    """No `db` fixture either: any query would fail the test."""
    assert client.get("/livez/").status_code == 200
