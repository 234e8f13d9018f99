"""Benchmark: a study's agreement report at 10,000 patients, bootstrap included.

Builds, with bulk inserts, a study graded with the WHO grade type (5 fields, per eye as in
the fixture, or per patient with --unit patient) by 3 graders (each patient by all three,
about 85 % agreement, a few ungradable answers, and repeats for a tenth of the patients),
then times `grading.reports.agreement_report` with 1,000 bootstrap resamples, both ways of
counting ungradable, and prints the seconds, the queries and a few of the figures.

    .venv/bin/python bench/agreement.py [--patients 10000] [--rounds 1000] [--unit eye|patient]

Runs on a throwaway SQLite database, or on PostgreSQL when DATABASE_URL is set.
"""

import argparse
import os
import random
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "settings.test")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=1000)
    parser.add_argument("--unit", choices=["eye", "patient"], default="eye")
    args = parser.parse_args()

    from bench.testdb import test_databases

    with test_databases():
        run(args.patients, args.rounds, args.unit)


def build(size: int, unit: str):
    from accounts.services import user_ensure
    from grading.models import Grade, GradeEntry
    from grading.services import grade_types_import
    from studies.models import Patient, Region, Study
    from tests.grading_support import SCHEMES

    draw = random.Random(7)
    grade_type = grade_types_import(data={**SCHEMES[0], "unit": unit})[0]
    eyes = ["R", "L"] if unit == "eye" else [""]
    graders = [
        user_ensure(username=f"bench-grader{n}", password="x", groups=("Graders",))[0] for n in range(3)
    ]
    study = Study.objects.create(name="Agreement bench", region=Region.objects.create(name="Bench"))
    grade_type.studies.add(study)
    Patient.objects.bulk_create(
        [Patient(study=study, code=f"A-{n:06d}") for n in range(size)], batch_size=5000
    )
    patients = list(Patient.objects.filter(study=study).values_list("pk", flat=True))
    fields = [(f, list(f.options.order_by("order"))) for f in grade_type.fields.all()]
    truth = {
        (pk, eye, f.pk): ("1" if draw.random() < 0.2 else "0")
        for pk in patients
        for eye in eyes
        for f, _ in fields
    }
    grades = [
        Grade(patient_id=pk, grade_type=grade_type, eye=eye, grader=grader, kind=kind, submission=submission)
        for pk in patients
        for grader in graders
        for kind in (["regular", "repeat"] if draw.random() < 0.1 else ["regular"])
        for submission in [uuid.uuid4()]
        for eye in eyes
    ]
    Grade.objects.bulk_create(grades, batch_size=5000)

    def answer(pk, eye, field_pk, options):
        if draw.random() < 0.05:
            return options[-1]  # ungradable
        value = truth[(pk, eye, field_pk)] if draw.random() < 0.85 else draw.choice("01")
        return next(o for o in options if o.value == value)

    GradeEntry.objects.bulk_create(
        [
            GradeEntry(grade=g, field=f, option=answer(g.patient_id, g.eye, f.pk, opts))
            for g in grades
            for f, opts in fields
        ],
        batch_size=10000,
    )
    return study, len(grades)


def run(size: int, rounds: int, unit: str) -> None:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from grading.reports import Ungradable, agreement_report

    started = time.perf_counter()
    study, grades = build(size, unit)
    built = time.perf_counter() - started
    print(
        f"database: {connection.vendor}; built {size} patients, {grades} grades (per {unit}) in {built:.1f} s"
    )
    if os.environ.get("PROFILE"):
        import cProfile

        cProfile.runctx(
            "agreement_report(study=study, rounds=rounds, seed=0)", globals(), locals(), sort="cumtime"
        )
        return
    for ungradable in Ungradable.CHOICES:
        with CaptureQueriesContext(connection) as queries:
            started = time.perf_counter()
            report = agreement_report(study=study, ungradable=ungradable, rounds=rounds, seed=0)
            seconds = time.perf_counter() - started
        tf = report.fields[0]
        kappa = tf.coefficients["fleiss_kappa"]
        print(
            f"ungradable {ungradable:9}: {seconds:5.2f} s, {len(queries)} queries, "
            f"{len(report.fields)} fields, {rounds} resamples; {tf.title} Fleiss' kappa {kappa.value:.3f} "
            f"[{kappa.interval[0]:.3f}, {kappa.interval[1]:.3f}] on {kappa.units} patients"
        )


if __name__ == "__main__":
    main()
