"""Nobody sees what is not theirs: role denials and private photo files."""

import pytest
from django.contrib.auth.models import Group
from django.urls import reverse

from accounts import roles
from tests.factories import UserFactory


def test_migration_creates_the_four_roles(db):
    assert set(Group.objects.values_list("name", flat=True)) >= {
        roles.STUDY_ADMINISTRATORS,
        roles.IMAGE_COLLECTORS,
        roles.GRADERS,
        roles.DATA_TEAM,
    }


@pytest.mark.parametrize(
    "url_name",
    ["admin:studies_study_changelist", "admin:studies_patient_changelist", "admin:studies_image_changelist"],
)
def test_anonymous_is_sent_to_login(client, db, url_name):
    response = client.get(reverse(url_name))
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("admin:login"))


@pytest.mark.parametrize(
    "url_name",
    [
        "admin:studies_study_changelist",
        "admin:studies_patient_changelist",
        "admin:studies_image_changelist",
        "admin:studies_region_changelist",
        "admin:studies_patient_add",
    ],
)
def test_grader_cannot_open_the_studies_admin(client_for, grader, url_name):
    assert client_for(grader).get(reverse(url_name)).status_code == 403


def test_grader_sees_no_studies_app_on_the_admin_index(client_for, grader):
    response = client_for(grader).get(reverse("admin:index"))
    assert response.status_code == 200
    assert reverse("admin:studies_study_changelist") not in response.content.decode()


def test_image_collector_cannot_delete_a_study(client_for, collector, study):
    client = client_for(collector)
    assert client.get(reverse("admin:studies_study_delete", args=[study.pk])).status_code == 403
    assert (
        client.post(reverse("admin:studies_study_delete", args=[study.pk]), {"post": "yes"}).status_code
        == 403
    )
    assert type(study).objects.filter(pk=study.pk).exists()


def test_image_collector_cannot_change_a_study_or_add_one(client_for, collector, study):
    client = client_for(collector)
    response = client.post(reverse("admin:studies_study_change", args=[study.pk]), {"name": "renamed"})
    assert response.status_code == 403
    assert client.get(reverse("admin:studies_study_add")).status_code == 403


def test_image_collector_can_add_patients(client_for, collector):
    assert client_for(collector).get(reverse("admin:studies_patient_add")).status_code == 200


def test_data_team_reads_but_cannot_change(client_for, data_member, patient):
    client = client_for(data_member)
    assert client.get(reverse("admin:studies_patient_changelist")).status_code == 200
    assert client.get(reverse("admin:studies_patient_add")).status_code == 403
    response = client.post(reverse("admin:studies_patient_change", args=[patient.pk]), {"code": "X"})
    assert response.status_code == 403


def test_staff_without_a_role_is_denied(client_for, study):
    nobody = UserFactory(username="nobody")
    assert client_for(nobody).get(reverse("admin:studies_study_changelist")).status_code == 403


# Private files ----------------------------------------------------------


def test_photo_url_is_the_permission_checked_view(stored_images):
    image = stored_images[0]
    assert image.file.url == f"/files/{image.file.name}"
    assert image.thumbnail.url == f"/files/{image.thumbnail.name}"


def test_staff_with_permission_gets_the_file(client_for, collector, stored_images):
    from django.core.files.storage import default_storage

    image = stored_images[0]
    response = client_for(collector).get(image.file.url)
    assert response.status_code == 200
    assert response["Content-Type"] == "image/jpeg"
    assert response["Cache-Control"] == "private, max-age=300"
    with default_storage.open(image.file.name, "rb") as handle:
        assert b"".join(response.streaming_content) == handle.read()
    assert client_for(collector).get(image.thumbnail.url).status_code == 200


def test_anonymous_cannot_fetch_a_file(client, stored_images):
    response = client.get(stored_images[0].file.url)
    assert response.status_code == 302
    assert "login" in response["Location"]


def test_unassigned_grader_cannot_fetch_a_file(client_for, grader, stored_images):
    image = stored_images[0]
    assert client_for(grader).get(image.file.url).status_code == 403
    assert client_for(grader).get(image.thumbnail.url).status_code == 403


def test_assigned_grader_can_fetch_the_photos_of_their_study(client_for, grader, stored_images):
    image = stored_images[0]
    image.study.graders.add(grader)
    assert client_for(grader).get(image.file.url).status_code == 200


def test_staff_without_a_role_cannot_fetch_a_file(client_for, stored_images):
    nobody = UserFactory(username="nobody")
    assert client_for(nobody).get(stored_images[0].file.url).status_code == 403


@pytest.mark.parametrize("key", ["imports/1/000000-000000", "../settings/base.py", "images/nothing.jpg"])
def test_files_that_are_not_photos_are_not_served(admin_client, stored_images, key):
    assert admin_client.get(f"/files/{key}").status_code == 404
