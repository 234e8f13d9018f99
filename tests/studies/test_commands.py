"""The development commands: a local superuser and the demo, both safe to run again."""

from django.contrib.auth import get_user_model
from django.core.management import call_command
from PIL import Image as PILImage

from studies.models import Image, Patient, Study


def test_create_dev_user_is_idempotent(db):
    call_command("create_dev_user")
    call_command("create_dev_user", "--password", "other")
    user = get_user_model().objects.get(username="admin")
    assert user.is_superuser and user.is_staff
    assert user.check_password("admin")


def test_load_demo_builds_a_study_with_photos_of_both_eyes_and_users(db):
    call_command("load_demo")
    call_command("load_demo")
    study = Study.objects.get()
    assert Patient.objects.filter(study=study).count() == 12
    assert Image.objects.filter(study=study, eye="R").count() == 12
    assert Image.objects.filter(study=study, eye="L").count() == 12
    users = get_user_model().objects.filter(groups__isnull=False)
    assert {group for user in users for group in user.groups.values_list("name", flat=True)} == {
        "Study administrators",
        "Image collectors",
        "Graders",
        "Data team",
    }
    assert study.graders.count() == 2
    image = Image.objects.first()
    with image.file.open("rb") as handle:
        assert PILImage.open(handle).size == (1600, 1200)
