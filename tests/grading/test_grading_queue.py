"""The queue: each grader's own order, graders wanted with reserved slots, repeats, counts that agree."""

import io
import re
from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from grading import selectors, services
from grading.models import Grade, GraderQueue, Presentation, QueueEntry
from studies.models import Image, Patient
from tests import images
from tests.factories import PatientFactory, StudyFactory
from tests.grading_support import (
    answers_for,
    counts_agree,
    next_for,
    next_presentation,
    present,
    progress_of,
    queue_order,
    submit,
)


def test_order_is_stable_per_grader_and_differs_between_graders(grading_study, graders, make_patients):
    make_patients(grading_study, 40)
    first = queue_order(grading_study, graders[0])
    assert first == queue_order(grading_study, graders[0])
    second = queue_order(grading_study, graders[1])
    assert sorted(first) == sorted(second)
    assert first != second
    assert first != sorted(first)


def test_order_is_the_order_added_when_the_study_does_not_randomize(grading_study, graders, make_patients):
    grading_study.randomized_order = False
    grading_study.save()
    patients = make_patients(grading_study, 5)
    assert queue_order(grading_study, graders[0]) == [p.pk for p in patients]


def test_queues_are_made_when_graders_are_assigned_and_patients_added(grading_study, graders, make_patients):
    first = make_patients(grading_study, 3)
    late = PatientFactory(study=grading_study)
    for grader in graders:
        assert sorted(queue_order(grading_study, grader)) == sorted([p.pk for p in first] + [late.pk])
        assert progress_of(grading_study, grader).to_grade == 4
    newcomer = StudyFactory().graders.model  # the user model
    newcomer = newcomer.objects.create_user("newcomer", is_staff=True)
    grading_study.graders.add(newcomer)
    assert progress_of(grading_study, newcomer).to_grade == 4
    counts_agree(grading_study)


def test_a_grader_assigned_late_finds_their_grades_and_the_full_patients(
    grading_study, graders, make_patients
):
    a, b, c = make_patients(grading_study, 3)
    submit(grading_study, a, graders[0])
    submit(grading_study, a, graders[1])  # a has its 2 graders
    submit(grading_study, b, graders[2])
    grading_study.graders.remove(graders[2])
    GraderQueue.objects.filter(grader=graders[2]).delete()
    grading_study.graders.add(graders[2])
    progress = progress_of(grading_study, graders[2])
    assert (progress.graded, progress.to_grade) == (1, 1)  # b graded; a closed; c to grade
    counts_agree(grading_study)


def test_next_patient_follows_the_order_and_skips_what_i_graded(grading_study, graders, make_patients):
    make_patients(grading_study, 5)
    grader = graders[0]
    expected = queue_order(grading_study, grader)
    seen = []
    while page := next_presentation(grading_study, grader):
        seen.append(page.patient_id)
        submit(grading_study, page.patient, grader, presentation=page)
    assert seen == expected
    assert next_for(grading_study, grader) is None


def test_patient_leaves_other_queues_once_it_has_the_graders_wanted(grading_study, graders, make_patients):
    (patient, other) = make_patients(grading_study, 2)
    submit(grading_study, patient, graders[0])
    assert patient.pk in queue_order(grading_study, graders[2])
    submit(grading_study, patient, graders[1])  # graders_per_patient is 2
    assert queue_order(grading_study, graders[2]) == [other.pk]
    progress = progress_of(grading_study, graders[2])
    assert (progress.graded, progress.to_grade) == (0, 1)
    counts_agree(grading_study)


def test_next_reserves_a_slot_so_others_get_other_patients(grading_study, graders, make_patients):
    grading_study.graders_per_patient = 1
    grading_study.randomized_order = False
    grading_study.save()
    first, second = make_patients(grading_study, 2)
    page = next_presentation(grading_study, graders[0])
    assert page.patient == first and page.reserved_until > timezone.now() + timedelta(minutes=14)
    assert next_presentation(grading_study, graders[1]).patient == second  # first is held
    assert next_presentation(grading_study, graders[2]) is None  # both held: nothing free now
    assert next_presentation(grading_study, graders[0]) == page  # the page left open comes back


def test_an_expired_reservation_frees_the_slot(grading_study, graders, make_patients):
    grading_study.graders_per_patient = 1
    grading_study.save()
    (patient,) = make_patients(grading_study, 1)
    page = next_presentation(grading_study, graders[0])
    Presentation.objects.filter(pk=page.pk).update(reserved_until=timezone.now() - timedelta(seconds=1))
    other = next_presentation(grading_study, graders[1])
    assert other.patient == patient
    submit(grading_study, patient, graders[1], presentation=other)
    assert next_presentation(grading_study, graders[0]) is None  # the open page is withdrawn
    page.refresh_from_db()
    assert page.outcome == Presentation.Outcome.WITHDRAWN
    counts_agree(grading_study)


def test_next_mends_a_patient_left_open_after_a_missed_close(grading_study, graders, make_patients):
    grading_study.randomized_order = False
    grading_study.save()
    a, b = make_patients(grading_study, 2)
    submit(grading_study, a, graders[0])
    submit(grading_study, a, graders[1])
    # As if the close step after the completing save had not run.
    QueueEntry.objects.filter(patient=a, queue__grader=graders[2]).update(state="pending")
    GraderQueue.objects.filter(grader=graders[2]).update(pending=2)
    assert next_for(grading_study, graders[2]) == b
    counts_agree(grading_study)


def walk(study, grader) -> list[tuple[int, str]]:
    """Grade the grader's whole queue through `next`: (patient id, page kind) in the order shown."""
    shown = []
    while page := next_presentation(study, grader):
        shown.append((page.patient_id, page.kind))
        submit(study, page.patient, grader, presentation=page)
    return shown


@pytest.mark.parametrize("seed", range(3))
def test_repeats_come_after_a_random_gap_never_below_the_minimum_and_spread(
    grading_study, graders, make_patients, seed
):
    grading_study.repeat_share = "0.25"
    grading_study.repeat_gap_min = 5
    grading_study.graders_per_patient = 3
    grading_study.save()
    make_patients(grading_study, 80)
    shown = walk(grading_study, graders[seed])
    firsts = {patient: n for n, (patient, kind) in enumerate(shown) if kind == "first"}
    repeats = [(n, patient) for n, (patient, kind) in enumerate(shown) if kind == "repeat"]
    assert len(firsts) == 80
    assert 8 <= len(repeats) <= 35
    gaps = [n - firsts[patient] - 1 for n, patient in repeats]
    assert min(gaps) >= 5, gaps
    assert len(set(gaps)) > 3, gaps  # not a fixed distance a grader could learn
    kinds = [kind for _, kind in shown]
    assert not any(a == b == "repeat" for a, b in zip(kinds, kinds[1:], strict=False)), kinds
    assert Grade.objects.filter(grader=graders[seed], kind="repeat", eye="R").count() == len(repeats)
    assert len({patient for _, patient in repeats}) == len(repeats)  # once each


def test_no_repeats_when_the_share_is_zero(grading_study, graders, make_patients):
    make_patients(grading_study, 15)
    walk(grading_study, graders[0])
    assert not Grade.objects.filter(kind="repeat").exists()


def test_the_masked_label_counts_patients_never_repeat_slots(
    grading_study, graders, make_patients, client_for
):
    grading_study.repeat_share = "0.5"
    grading_study.repeat_gap_min = 2
    grading_study.save()
    make_patients(grading_study, 14)
    client = client_for(graders[0])
    labels, kinds = [], []
    while (response := client.get(reverse("admin:grading_next", args=[grading_study.pk])))["Location"] != (
        reverse("admin:grading_study", args=[grading_study.pk])
    ):
        page = client.get(response["Location"])
        labels.append(page.context["page"].label)
        kinds.append(page.context["page"].presentation.kind)
        assert client.post(response["Location"], answers_for(grading_study)).status_code == 302
    assert "repeat" in kinds
    numbers = [tuple(map(int, re.fullmatch(r"Patient (\d+) of (\d+)", label).groups())) for label in labels]
    assert {total for _, total in numbers} == {14}  # repeats never add to the total
    firsts = [n for (n, _), kind in zip(numbers, kinds, strict=True) if kind == "first"]
    assert firsts == list(range(1, 15))
    for (n, _), kind, following in zip(numbers, kinds, [*numbers[1:], (15, 14)], strict=True):
        if kind == "repeat":  # reads like the next new patient
            assert n == min(following[0], 14)


def test_counts_on_every_page_agree_through_deletes_additions_and_rule_changes(
    grading_study, graders, make_patients, client_for, admin_client
):
    patients = make_patients(grading_study, 6)
    submit(grading_study, patients[0], graders[0])
    submit(grading_study, patients[0], graders[1])
    client = client_for(graders[2])

    def agree(graded: int, to_grade: int) -> None:
        counts_agree(grading_study)
        dashboard = client.get(reverse("admin:grading_dashboard")).content.decode()
        assert f'class="gc-graded">{graded}<' in dashboard and f'class="gc-to-grade">{to_grade}<' in dashboard
        study = client.get(reverse("admin:grading_study", args=[grading_study.pk])).content.decode()
        assert f'id="gc-to-grade">{to_grade}<' in study
        response = client.get(reverse("admin:grading_next", args=[grading_study.pk]))
        if to_grade:
            assert re.search(r"/[0-9a-f-]{36}/$", response["Location"]), response["Location"]
            Presentation.objects.filter(queue__grader=graders[2]).update(ended_at=timezone.now())
        else:
            assert response["Location"] == reverse("admin:grading_study", args=[grading_study.pk])

    agree(0, 5)
    response = admin_client.post(
        reverse("admin:studies_patient_delete", args=[patients[5].pk]), {"post": "yes"}
    )
    assert response.status_code == 302 and not Patient.objects.filter(pk=patients[5].pk).exists()
    agree(0, 4)
    PatientFactory(study=grading_study)
    agree(0, 5)
    services.patients_delete(patients=Patient.objects.filter(pk__in=[patients[3].pk, patients[4].pk]))
    agree(0, 3)
    grading_study.graders_per_patient = 3
    grading_study.save()
    services.queues_refresh(study=grading_study)
    agree(0, 4)  # patients[0] wants a third grader again
    grading_study.graders_per_patient = 1
    grading_study.save()
    services.queues_refresh(study=grading_study)
    agree(0, 3)


def build_study(who, graders, size: int):
    study = StudyFactory(graders_per_patient=3, repeat_share="0.1")
    study.grade_types.add(who)
    study.graders.add(*graders)
    Patient.objects.bulk_create([Patient(study=study, code=f"Q{size}-{n:05d}") for n in range(size)])
    patients = list(Patient.objects.filter(study=study).order_by("pk"))
    services.queue_entries_add(study=study, patient_ids=[p.pk for p in patients])
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
    for patient in patients[:: max(1, size // 20)]:  # some patients graded by another grader
        submit(study, patient, graders[1])
    return study


@pytest.mark.parametrize("page", ["grading page", "next", "study", "dashboard", "keep"])
def test_grading_pages_use_the_same_few_queries_at_10_and_1000_patients(who, graders, client_for, page):
    client = client_for(graders[0])
    counts = []
    for size in (10, 1000):
        study = build_study(who, graders, size)
        submit(study, Patient.objects.get(pk=queue_order(study, graders[0])[-1]), graders[0])
        presentation = next_presentation(study, graders[0])
        url = {
            "grading page": reverse("admin:grading_page", args=[study.pk, presentation.key]),
            "next": reverse("admin:grading_next", args=[study.pk]),
            "study": reverse("admin:grading_study", args=[study.pk]),
            "dashboard": reverse("admin:grading_dashboard"),
            "keep": reverse("admin:grading_keep", args=[study.pk, presentation.key]),
        }[page]
        method = client.post if page == "keep" else client.get
        method(url)  # warm the session and permission caches like a grader mid-session
        with CaptureQueriesContext(connection) as queries:
            response = method(url)
        assert response.status_code in (200, 302)
        counts.append(len(queries))
        if page in ("grading page", "study", "dashboard"):  # reading a page writes nothing
            writes = [q["sql"] for q in queries if re.match(r"\s*(INSERT|UPDATE|DELETE)", q["sql"])]
            assert not [w for w in writes if "django_session" not in w], writes
        study.graders.remove(graders[0])  # the dashboard lists one study at a time
    assert counts[0] == counts[1], counts
    assert counts[1] <= 12, counts


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


def test_the_graded_list_pages_without_counting(grading_study, graders, make_patients, client_for):
    patients = make_patients(grading_study, 60)
    for patient in patients:
        submit(grading_study, patient, graders[0])
    client = client_for(graders[0])
    html = client.get(reverse("admin:grading_study", args=[grading_study.pk]), {"page": 2}).content.decode()
    assert "page 2 of 2" in html and "Patient #51" in html and "Patient #60" in html
    assert "Patient #50<" not in html
    assert present(grading_study, patients[0], graders[0], "regrade")  # the numbers lead to re-grade pages


def test_a_grader_taken_off_the_study_frees_the_slot_they_held(grading_study, graders, make_patients):
    grading_study.graders_per_patient = 1
    grading_study.save()
    (patient,) = make_patients(grading_study, 1)
    held = next_presentation(grading_study, graders[0])
    assert next_presentation(grading_study, graders[1]) is None
    grading_study.graders.remove(graders[0])
    held.refresh_from_db()
    assert held.outcome == Presentation.Outcome.WITHDRAWN
    assert next_presentation(grading_study, graders[1]).patient == patient


def test_a_page_whose_hold_ran_out_is_not_given_back_when_others_took_the_slot(
    grading_study, graders, make_patients
):
    grading_study.graders_per_patient = 1
    grading_study.save()
    (patient,) = make_patients(grading_study, 1)
    mine = next_presentation(grading_study, graders[0])
    Presentation.objects.filter(pk=mine.pk).update(reserved_until=timezone.now() - timedelta(minutes=1))
    theirs = next_presentation(grading_study, graders[1])
    assert theirs.patient == patient
    assert next_presentation(grading_study, graders[0]) is None
    mine.refresh_from_db()
    assert mine.outcome == Presentation.Outcome.WITHDRAWN


def test_a_large_study_builds_a_new_graders_queue_in_the_background(
    grading_study, graders, make_patients, client_for, monkeypatch, django_capture_on_commit_callbacks
):
    from grading import receivers

    make_patients(grading_study, 3)
    monkeypatch.setattr(receivers, "QUEUE_BUILT_AT_ONCE", 2)  # as if the study were large
    newcomer = graders[0].__class__.objects.create_user("newcomer", is_staff=True)
    with django_capture_on_commit_callbacks() as callbacks:
        grading_study.graders.add(newcomer)
    assert selectors.queue_of(study=grading_study, grader=newcomer) is None  # nothing built in the request
    client = client_for(newcomer)
    assert "Your queue is being prepared" in client.get(reverse("admin:grading_dashboard")).content.decode()
    response = client.get(reverse("admin:grading_next", args=[grading_study.pk]), follow=True)
    assert "being prepared" in response.content.decode()
    for callback in callbacks:  # the task, which the embedded run's backend runs at once
        callback()
    assert progress_of(grading_study, newcomer).to_grade == 3
    counts_agree(grading_study)
