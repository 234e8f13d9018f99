import base64
import io

import pytest
from django.core.cache import cache
from django.test import Client
from knox.models import AuthToken

from accounts import roles
from studies.services import images_upload
from tests import images
from tests.factories import PatientFactory, UserFactory


@pytest.fixture(autouse=True)
def fresh_throttles():
    cache.clear()  # login throttling counts in the cache
    yield
    cache.clear()


@pytest.fixture
def data_user(db):
    return UserFactory(username="dana", groups=[roles.DATA_TEAM])


@pytest.fixture
def token(data_user) -> str:
    return AuthToken.objects.create(user=data_user)[1]


@pytest.fixture
def api(token) -> Client:
    """A client that sends a Data team member's token."""
    return Client(HTTP_AUTHORIZATION=f"Token {token}")


def basic(username: str, password: str = "pass-word-123") -> dict:
    raw = base64.b64encode(f"{username}:{password}".encode()).decode()
    return {"HTTP_AUTHORIZATION": f"Basic {raw}"}


@pytest.fixture
def photographed(grading_study, collector):
    """Three patients of the grading study, each with a right and a left photo."""
    patients = []
    for n in range(3):
        patient = PatientFactory(study=grading_study, code=f"EX-{n}")
        for eye in "RL":
            images_upload(
                patient=patient,
                files=[(f"{n}{eye}.jpg", io.BytesIO(images.jpeg(seed=700 + 10 * n + ord(eye))))],
                eye=eye,
                uploaded_by=collector,
            )
        patients.append(patient)
    return patients
