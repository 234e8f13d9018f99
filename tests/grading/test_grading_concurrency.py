"""Graders saving at the same instant, each thread on a database connection of its own (PostgreSQL).

The row locks in grading.services keep a patient within its graders wanted and every count
exact however saves interleave; SQLite has no row locks to prove anything with, so it skips.
"""

import threading
from collections import Counter

import pytest
from django.core.exceptions import ValidationError
from django.db import connection
from django.db.models import Count

from accounts import roles
from grading import services
from grading.models import Consensus, Grade, GraderQueue, Presentation
from tests.factories import UserFactory
from tests.grading_support import answers_for, counts_agree, present

if connection.vendor != "postgresql":  # before any database is set up, so nothing is flushed either
    pytest.skip(
        "Row locks are proven on PostgreSQL only (set DATABASE_URL to a PostgreSQL database)",
        allow_module_level=True,
    )

pytestmark = pytest.mark.django_db(transaction=True)  # the threads must see what the test committed

GRADERS = 10
PATIENTS = 20
WAIT_SECONDS = 30  # a barrier nobody reaches in this long means a thread is stuck: fail, not hang


def in_threads(work, count: int) -> list[BaseException]:
    """Run work(n) for n in range(count), each in a thread with its own connection; the exceptions raised."""
    errors: list[BaseException] = []

    def run(n: int) -> None:
        try:
            work(n)
        except BaseException as error:  # noqa: B036  (every failure is reported by the test)
            errors.append(error)
        finally:
            connection.close()  # this thread's own connection

    threads = [threading.Thread(target=run, args=(n,), name=f"grader-{n}") for n in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=2 * WAIT_SECONDS)
    assert not any(thread.is_alive() for thread in threads), "a grading thread is still running"
    return errors


def more_graders(study, first: int, last: int) -> list:
    users = [UserFactory(username=f"grader{n}", groups=[roles.GRADERS]) for n in range(first, last + 1)]
    study.graders.add(*users)  # builds their queues
    return users


@pytest.mark.parametrize("wanted", [1, 2, 3])
def test_ten_graders_saving_the_same_patients_at_once_stay_within_graders_wanted(
    grading_study, graders, make_patients, wanted
):
    grading_study.graders_per_patient = wanted
    grading_study.save(update_fields=["graders_per_patient"])
    everyone = graders + more_graders(grading_study, len(graders) + 1, GRADERS)
    patients = make_patients(grading_study, PATIENTS)
    answers = answers_for(grading_study)
    # Every grader has every patient's page open before anyone saves.
    pages = {
        (grader.pk, patient.pk): present(grading_study, patient, grader)
        for grader in everyone
        for patient in patients
    }
    start = threading.Barrier(GRADERS, timeout=WAIT_SECONDS)
    lock = threading.Lock()
    saved: list[tuple[int, int, list[Grade]]] = []
    refused: list[tuple[int, int, ValidationError]] = []

    def grade(n: int) -> None:
        grader = everyone[n]
        try:
            for patient in patients:
                start.wait()  # all ten graders save this patient at the same instant
                page = pages[(grader.pk, patient.pk)]
                try:
                    grades = services.grade_submit(presentation=page, grader=grader, answers=answers)
                except ValidationError as error:
                    if error.code != "patient_full":
                        raise
                    with lock:
                        refused.append((patient.pk, grader.pk, error))
                else:
                    with lock:
                        saved.append((patient.pk, grader.pk, grades))
        except BaseException:
            start.abort()  # the others stop waiting for this grader
            raise

    errors = in_threads(grade, GRADERS)

    assert errors == []
    assert len(saved) == PATIENTS * wanted
    assert len(refused) == GRADERS * PATIENTS - len(saved)
    for _, _, error in refused:
        message = " ".join(error.messages)
        assert "already has its" in message and "not saved" in message, message
    for patient_id, grader_id, grades in saved:
        assert [grade.eye for grade in grades] == ["R", "L"]  # one per-eye grade type: a grade per eye
        assert Grade.objects.filter(patient_id=patient_id, grader_id=grader_id).count() == 2
    assert Grade.objects.count() == 2 * len(saved)  # a refused save left nothing
    assert {(p, g) for p, g, _ in saved} == set(Grade.objects.values_list("patient_id", "grader_id"))
    graders_of = dict(
        Grade.objects.values("patient_id")
        .annotate(n=Count("grader_id", distinct=True))
        .values_list("patient_id", "n")
    )
    assert graders_of == {patient.pk: min(wanted, GRADERS) for patient in patients}
    # The consensus, kept by each save under the patient's lock, counts every grader who got in.
    consensus = set(Consensus.objects.values_list("patient_id", "eye", "graders").distinct())
    assert consensus == {(p.pk, eye, min(wanted, GRADERS)) for p in patients for eye in "RL"}
    outcomes = Counter(Presentation.objects.values_list("outcome", flat=True))
    assert outcomes == {"saved": len(saved), "refused": len(refused)}
    saves_by = Counter(g for _, g, _ in saved)
    for queue in GraderQueue.objects.filter(study=grading_study):
        assert (queue.graded, queue.pending) == (saves_by[queue.grader_id], 0), queue
    counts_agree(grading_study)


def test_graders_walking_their_queues_at_once_grade_every_patient_exactly_once(
    grading_study, graders, make_patients
):
    grading_study.graders_per_patient = 1
    grading_study.save(update_fields=["graders_per_patient"])
    everyone = graders + more_graders(grading_study, len(graders) + 1, 4)
    patients = make_patients(grading_study, PATIENTS)
    answers = answers_for(grading_study)
    start = threading.Barrier(len(everyone), timeout=WAIT_SECONDS)
    lock = threading.Lock()
    saved: list[tuple[int, int]] = []

    def walk(n: int) -> None:
        grader = everyone[n]
        try:
            start.wait()
        except BaseException:
            start.abort()
            raise
        for _ in range(2 * PATIENTS):  # bounded: a queue that never empties fails below
            page = services.presentation_next(study=grading_study, grader=grader)
            if page is None:
                return
            services.grade_submit(presentation=page, grader=grader, answers=answers)
            with lock:
                saved.append((page.patient_id, grader.pk))
        raise AssertionError(f"{grader} was still offered patients after {2 * PATIENTS} saves")

    errors = in_threads(walk, len(everyone))

    assert errors == []
    assert sorted(p for p, _ in saved) == sorted(patient.pk for patient in patients)
    graders_of = dict(
        Grade.objects.values("patient_id")
        .annotate(n=Count("grader_id", distinct=True))
        .values_list("patient_id", "n")
    )
    assert graders_of == {patient.pk: 1 for patient in patients}
    assert Grade.objects.count() == 2 * PATIENTS  # a grade per eye
    assert set(Presentation.objects.values_list("outcome", flat=True)) == {"saved"}  # none left open
    assert set(GraderQueue.objects.filter(study=grading_study).values_list("pending", flat=True)) == {0}
    counts_agree(grading_study)
