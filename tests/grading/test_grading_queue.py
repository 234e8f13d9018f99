"""The queue: each grader's own stable random order, graders wanted, repeats, constant queries."""

import io

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from grading import selectors
from grading.models import Grade
from studies.models import Image, Patient
from tests import images
from tests.factories import StudyFactory
from tests.grading_support import next_for, progress_of, queue_order, submit


def order_of(study, grader):
    return queue_order(study, grader)


def test_order_is_stable_per_grader_and_differs_between_graders(grading_study, graders, make_patients):
    make_patients(grading_study, 40)
    first = order_of(grading_study, graders[0])
    assert first == order_of(grading_study, graders[0])
    second = order_of(grading_study, graders[1])
    assert sorted(first) == sorted(second)
    assert first != second
    assert first != sorted(first)


def test_order_is_the_order_added_when_the_study_does_not_randomize(grading_study, graders, make_patients):
    grading_study.randomized_order = False
    grading_study.save()
    patients = make_patients(grading_study, 5)
    assert order_of(grading_study, graders[0]) == [p.pk for p in patients]


def test_patients_added_later_join_the_queue(grading_study, graders, make_patients):
    from tests.factories import PatientFactory

    first = make_patients(grading_study, 3)
    assert len(order_of(grading_study, graders[0])) == 3
    late = PatientFactory(study=grading_study)
    assert sorted(order_of(grading_study, graders[0])) == sorted([p.pk for p in first] + [late.pk])
    assert progress_of(grading_study, graders[0]).to_grade == 4


def test_next_patient_follows_the_order_and_skips_what_i_graded(grading_study, graders, make_patients):
    make_patients(grading_study, 5)
    grader = graders[0]
    expected = order_of(grading_study, grader)
    seen = []
    for _ in range(5):
        patient = next_for(grading_study, grader)
        seen.append(patient.pk)
        submit(grading_study, patient, grader)
    assert seen == expected
    assert next_for(grading_study, grader) is None


def test_patient_leaves_other_queues_once_it_has_the_graders_wanted(grading_study, graders, make_patients):
    (patient, other) = make_patients(grading_study, 2)
    submit(grading_study, patient, graders[0])
    assert patient.pk in order_of(grading_study, graders[2])
    submit(grading_study, patient, graders[1])  # graders_per_patient is 2
    assert order_of(grading_study, graders[2]) == [other.pk]
    progress = progress_of(grading_study, graders[2])
    assert (progress.graded, progress.to_grade) == (0, 1)


def test_repeat_share_comes_back_later_as_a_repeat(grading_study, graders, make_patients):
    grading_study.repeat_share = "0.2"
    grading_study.graders_per_patient = 3
    grading_study.save()
    patients = make_patients(grading_study, 100)
    grader = graders[0]
    served = []
    for _ in range(200):
        patient = next_for(grading_study, grader)
        if patient is None:
            break
        served.append(patient.pk)
        submit(grading_study, patient, grader)
    repeats = Grade.objects.filter(grader=grader, kind="repeat")
    regulars = Grade.objects.filter(grader=grader, kind="regular")
    assert regulars.count() == 100
    assert 8 <= repeats.count() <= 35  # a share of about a fifth, drawn per patient
    assert len(set(served)) == len(patients)
    gaps = []
    for grade in repeats:
        first = served.index(grade.patient_id)
        gaps.append(len(served) - 1 - served[::-1].index(grade.patient_id) - first)
    # each repeat comes back after at least 10 other patients, but for the last few at the very end
    assert sum(gap <= 10 for gap in gaps) <= 3, gaps
    assert repeats.values("patient").distinct().count() == repeats.count()  # once each


def test_no_repeats_when_the_share_is_zero(grading_study, graders, make_patients):
    make_patients(grading_study, 15)
    while patient := next_for(grading_study, graders[0]):
        submit(grading_study, patient, graders[0])
    assert not Grade.objects.filter(kind="repeat").exists()


def build_study(who, graders, size: int, collector):
    from grading.services import answer_key  # noqa: F401
    from tests.factories import PatientFactory

    study = StudyFactory(graders_per_patient=3, repeat_share="0.1")
    study.grade_types.add(who)
    study.graders.add(*graders)
    patients = PatientFactory.create_batch(size, study=study)
    for n, patient in enumerate(patients[:3]):
        Image.objects.bulk_create(
            [
                Image(
                    patient=patient, study=study, eye=eye, file=f"images/x{size}-{n}{eye}.jpg",
                    thumbnail=f"thumbnails/x{size}-{n}{eye}.jpg", sha256=f"{size}-{n}-{eye}",
                    width=10, height=10, bytes=1, original_name="x.jpg",
                )
                for eye in "RL"
            ]
        )  # fmt: skip
    for patient in patients[: size // 3]:
        submit(study, patient, graders[1])
    return study


@pytest.mark.parametrize("page", ["patient", "next", "study", "dashboard"])
def test_grading_pages_use_the_same_few_queries_at_10_and_1000_patients(who, graders, client_for, page):
    client = client_for(graders[0])
    counts = []
    for size in (10, 1000):
        study = build_study(who, graders, size, None)
        patient = next_for(study, graders[0])
        submit(study, Patient.objects.get(pk=queue_order(study, graders[0])[-1]), graders[0])
        url = {
            "patient": reverse("admin:grading_patient", args=[study.pk, patient.pk]),
            "next": reverse("admin:grading_next", args=[study.pk]),
            "study": reverse("admin:grading_study", args=[study.pk]),
            "dashboard": reverse("admin:grading_dashboard"),
        }[page]
        client.get(url)  # warm the session and permission caches like a grader mid-session
        with CaptureQueriesContext(connection) as queries:
            response = client.get(url)
        assert response.status_code in (200, 302)
        counts.append(len(queries))
        study.graders.remove(graders[0])  # the dashboard lists one study at a time
    assert counts[0] == counts[1], counts
    assert counts[1] <= 10, counts


def test_images_are_shown_in_an_order_of_the_graders_own(grading_study, graders, make_patients, collector):
    from studies.services import images_upload

    (patient,) = make_patients(grading_study, 1)
    images_upload(
        patient=patient,
        files=[(f"{n}.jpg", io.BytesIO(images.jpeg(seed=300 + n))) for n in range(8)],
        eye="R",
        uploaded_by=collector,
    )
    first = [i.pk for i in selectors.patient_images(patient=patient, grader=graders[0], randomized=True)]
    again = [i.pk for i in selectors.patient_images(patient=patient, grader=graders[0], randomized=True)]
    other = [i.pk for i in selectors.patient_images(patient=patient, grader=graders[1], randomized=True)]
    assert first == again and sorted(first) == sorted(other) and first != other


def test_masked_label_counts_on_through_repeats(grading_study, graders, make_patients, client_for):
    grading_study.repeat_share = "0.5"
    grading_study.save()
    make_patients(grading_study, 14)
    client = client_for(graders[0])
    labels = []
    while patient := next_for(grading_study, graders[0]):
        page = client.get(reverse("admin:grading_patient", args=[grading_study.pk, patient.pk]))
        labels.append(page.context["label"])
        submit(grading_study, patient, graders[0])
    assert Grade.objects.filter(kind="repeat").exists()
    numbers = [int(label.split()[1]) for label in labels]
    assert numbers == list(range(1, len(labels) + 1))  # a repeat looks like the next new patient
    assert all(label.startswith("Patient ") and " of " in label for label in labels)


def test_a_patient_committed_late_still_joins_the_queue(grading_study, graders, make_patients):
    from grading.models import QueueEntry
    from tests.factories import PatientFactory

    early, *_ = make_patients(grading_study, 3)
    queue_order(grading_study, graders[0])
    # As if `early` had been committed after a later patient was already queued.
    QueueEntry.objects.filter(patient=early).delete()
    late = PatientFactory(study=grading_study)
    order = queue_order(grading_study, graders[0])
    assert early.pk in order and late.pk in order and len(order) == 4


def test_next_finds_a_late_committed_patient_before_saying_done(
    grading_study, graders, make_patients, client_for
):
    from grading.models import QueueEntry

    early, other = make_patients(grading_study, 2)
    queue_order(grading_study, graders[0])
    QueueEntry.objects.filter(patient=early).delete()  # as if committed after `other` was queued
    from grading.models import GraderQueue

    GraderQueue.objects.filter(grader=graders[0]).update(known_patients=1)
    submit(grading_study, other, graders[0])
    response = client_for(graders[0]).get(reverse("admin:grading_next", args=[grading_study.pk]))
    assert response["Location"] == reverse("admin:grading_patient", args=[grading_study.pk, early.pk])
