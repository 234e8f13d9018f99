import io

import pytest
from django.core.cache import cache
from django.test import Client

from accounts import roles
from studies.services import images_upload
from tests import images
from tests.factories import PatientFactory, StudyFactory, UserFactory
from tests.grading_support import follicles, graders, grading_study, make_patients, who  # noqa: F401  (fixtures)


def role_groups_made() -> None:
    """The role groups with their permissions as the accounts migration makes them, if missing."""
    from django.contrib.auth.models import Group
    from django.db import connection
    from django.db.migrations.loader import MigrationLoader

    if Group.objects.filter(name__in=roles.ROLE_PERMISSIONS).count() == len(roles.ROLE_PERMISSIONS):
        return
    # The migration's own function, on the historical models it expects.
    roles.roles_sync(MigrationLoader(connection, ignore_no_migrations=True).project_state().apps)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item, nextitem):
    """A transactional test ends by flushing the database, groups included: put them back for the next.

    (`serialized_rollback` cannot do it for live-server tests: while Playwright's event loop runs in
    the test's thread, asgiref hands the test another connection object than the one the
    serialized contents were saved on, and the rollback silently restores nothing.)
    """
    result = yield
    marker = item.get_closest_marker("django_db")
    transactional = "live_server" in item.fixturenames or (marker and marker.kwargs.get("transaction"))
    if transactional and nextitem is not None:  # after the last test the database is gone
        from pytest_django.plugin import blocking_manager_key

        with item.config.stash[blocking_manager_key].unblock():
            role_groups_made()
    return result


@pytest.fixture(autouse=True)
def fresh_throttle_counts(settings):
    """Login and password-reset throttles count in the cache: every test starts from zero."""
    if settings.CACHES["default"]["BACKEND"].endswith("LocMemCache"):
        cache.clear()


@pytest.fixture(autouse=True)
def private_media(settings, tmp_path):
    """Each test stores its files in a folder of its own."""
    storages = {**settings.STORAGES}
    if storages["default"]["BACKEND"] == "studies.storage.PrivateFileSystemStorage":
        storages["default"] = {
            **storages["default"],
            "OPTIONS": {"location": tmp_path / "media", "base_url": "/files/"},
        }
        settings.STORAGES = storages
        settings.MEDIA_ROOT = tmp_path / "media"


@pytest.fixture
def study(db):
    return StudyFactory()


@pytest.fixture
def patient(study):
    return PatientFactory(study=study)


def _user_in(role: str, username: str):
    return UserFactory(username=username, groups=[role])


@pytest.fixture
def study_admin(db):
    return _user_in(roles.STUDY_ADMINISTRATORS, "studyadmin")


@pytest.fixture
def collector(db):
    return _user_in(roles.IMAGE_COLLECTORS, "collector")


@pytest.fixture
def grader(db):
    return _user_in(roles.GRADERS, "grader")


@pytest.fixture
def data_member(db):
    return _user_in(roles.DATA_TEAM, "datateam")


@pytest.fixture
def client_for():
    """A test client logged in as the given user."""

    def make(user) -> Client:
        client = Client()
        client.force_login(user)
        return client

    return make


@pytest.fixture
def stored_images(patient, collector):
    """Three stored photos of the patient's right eye."""
    return images_upload(
        patient=patient,
        files=[(f"photo{n}.jpg", io.BytesIO(images.jpeg(seed=n))) for n in range(3)],
        eye="R",
        uploaded_by=collector,
    )
