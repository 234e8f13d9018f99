import io

import pytest
from django.test import Client

from accounts import roles
from studies.services import images_upload
from tests import images
from tests.factories import PatientFactory, StudyFactory, UserFactory
from tests.grading_support import follicles, graders, grading_study, make_patients, who  # noqa: F401  (fixtures)


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
