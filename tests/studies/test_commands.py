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
        "Adjudicators",
        "Data team",
    }
    assert study.graders.count() == 3
    # Three graders graded 6 patients each, per eye, through their queues; run twice, graded once.
    from grading.models import Consensus, Grade, GraderQueue

    first_grades = Grade.objects.filter(kind=Grade.Kind.REGULAR)
    assert 9 <= first_grades.order_by().values("patient").distinct().count() <= 12
    # 18 pages saved, a grade per eye each; a page may have been a repeat, drawn at random.
    assert Grade.objects.filter(eye="R").count() == Grade.objects.filter(eye="L").count() == 18
    queues = GraderQueue.objects.all()
    assert sum(queue.graded + queue.repeats_done for queue in queues) == 18
    assert set(Consensus.objects.values_list("method", flat=True)) <= {"majority", "pending", "too_few"}
    assert Consensus.objects.filter(method="pending").exists()  # something for the adjudicator
    image = Image.objects.first()
    with image.file.open("rb") as handle:
        assert PILImage.open(handle).size == (1600, 1200)
