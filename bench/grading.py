"""Benchmark: the grading pages at 1,000 and at 100,000 patients.

Builds, with bulk inserts, a study of N patients x 2 photos with 2 grades per
patient from two graders, then assigns 3 graders (which builds their queues,
as the study page does), and times for the third grader, on their first
visit and after: the dashboard, the study page, the next-patient redirect,
the grading page and a submit. Prints median times, query counts and the
ratio between the two sizes.

    .venv/bin/python bench/grading.py [--sizes 1000 100000] [--repeats 15]

Runs on a throwaway SQLite database, or on PostgreSQL when DATABASE_URL is set
(the test database, `test_<name>`, is created and dropped as the test suite does).
"""

import argparse
import os
import statistics
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "settings.test")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000, 100_000])
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args()

    from bench.testdb import test_databases

    with test_databases():
        run(args.sizes, args.repeats)


def build(size: int, graders, grade_type):
    from django.db import connection

    from grading.models import Grade, GradeEntry
    from studies.models import Image, Patient, Region, Study

    started = time.perf_counter()
    region, _ = Region.objects.get_or_create(name="Bench region")
    study = Study.objects.create(
        name=f"Bench {size}", region=region, graders_per_patient=3, repeat_share="0.1"
    )
    grade_type.studies.add(study)
    Patient.objects.bulk_create(
        [Patient(study=study, code=f"B{size}-{n:06d}") for n in range(size)], batch_size=5000
    )
    patients = list(Patient.objects.filter(study=study).values_list("pk", flat=True))
    Image.objects.bulk_create(
        [
            Image(
                patient_id=pk, study=study, eye="RL"[k % 2], file=f"images/bench/{pk}-{k}.jpg",
                thumbnail=f"thumbnails/bench/{pk}-{k}.jpg", sha256=f"{pk}-{k}", width=4000, height=3000,
                bytes=4_000_000, original_name=f"{pk}-{k}.jpg",
            )
            for pk in patients
            for k in range(2)
        ],
        batch_size=5000,
    )  # fmt: skip
    fields = [(f, list(f.options.all())) for f in grade_type.fields.all()]
    grades = [
        Grade(patient_id=pk, grade_type=grade_type, grader=grader, submission=uuid.uuid4(), seconds_spent=20)
        for pk in patients
        for grader in graders[1:]
    ]
    Grade.objects.bulk_create(grades, batch_size=5000)
    ids = Grade.objects.filter(patient__study=study).values_list("pk", flat=True)
    GradeEntry.objects.bulk_create(
        [GradeEntry(grade_id=g, field=f, option=options[g % 2]) for g in ids for f, options in fields],
        batch_size=10000,
    )
    built = time.perf_counter() - started
    started = time.perf_counter()
    study.graders.add(*graders)  # builds each grader's queue, as assigning on the study page does
    queues = time.perf_counter() - started
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("ANALYZE")  # as autovacuum would, soon after bulk inserts
    return study, built, queues, len(grades)


def timed(client, method: str, url: str, data=None):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    with CaptureQueriesContext(connection) as queries:
        started = time.perf_counter()
        response = client.get(url) if method == "get" else client.post(url, data)
        elapsed = time.perf_counter() - started
    assert response.status_code in (200, 302), (url, response.status_code)
    return elapsed, len(queries), response


def measure(study, grader, repeats: int) -> dict:
    from django.test import Client
    from django.urls import reverse

    from tests.grading_support import answers_for, progress_of

    client = Client()
    client.force_login(grader)
    dashboard = reverse("admin:grading_dashboard")
    study_page = reverse("admin:grading_study", args=[study.pk])
    next_url = reverse("admin:grading_next", args=[study.pk])
    first_visit, first_queries, _ = timed(client, "get", dashboard)
    results = {"dashboard": [], "study": [], "next": [], "page": [], "submit": []}
    queries = {}
    answers = answers_for(study, "0")
    for _ in range(repeats):
        for name, url in (("dashboard", dashboard), ("study", study_page)):
            elapsed, queries[name], _ = timed(client, "get", url)
            results[name].append(elapsed)
        elapsed, queries["next"], response = timed(client, "get", next_url)
        results["next"].append(elapsed)
        page_url = response["Location"]
        elapsed, queries["page"], _ = timed(client, "get", page_url)
        results["page"].append(elapsed)
        elapsed, queries["submit"], _ = timed(client, "post", page_url, answers)
        results["submit"].append(elapsed)
    assert progress_of(study, grader).graded == repeats
    figures = {name: (statistics.median(values) * 1000, queries[name]) for name, values in results.items()}
    figures["first visit"] = (first_visit * 1000, first_queries)
    return figures


def run(sizes: list[int], repeats: int) -> None:
    from django.db import connection

    from accounts.services import user_ensure
    from grading.services import grade_types_import
    from tests.grading_support import SCHEMES

    graders = [
        user_ensure(username=f"bench-grader{n}", password="x", groups=("Graders",))[0] for n in range(3)
    ]
    grade_type = grade_types_import(data=SCHEMES[0])[0]
    print(f"database: {connection.vendor}; {repeats} samples per figure; times are medians")
    figures = {}
    for size in sizes:
        study, seconds, queues, grade_count = build(size, graders, grade_type)
        print(
            f"built {size} patients x 2 photos, {grade_count} grades in {seconds:.1f} s; "
            f"3 graders assigned (their queues built) in {queues:.1f} s"
        )
        figures[size] = measure(study, graders[0], repeats)
        study.graders.remove(graders[0])  # the dashboard lists one study at each size
    print()
    print(f"{'':12}" + "".join(f"{f'{size} patients':>24}" for size in sizes) + f"{'ratio':>10}")
    for name in ("first visit", "dashboard", "study", "next", "page", "submit"):
        row = f"{name:12}"
        for size in sizes:
            ms, count = figures[size][name]
            row += f"{f'{ms:7.1f} ms, {count:2d} queries':>24}"
        ratio = figures[sizes[-1]][name][0] / figures[sizes[0]][name][0]
        print(row + f"{ratio:10.2f}")


if __name__ == "__main__":
    main()
