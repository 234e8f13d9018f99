"""Benchmark: every admin list and the study and patient pages at 1,000 and at 100,000 patients.

Builds one study on PostgreSQL with bulk `INSERT ... SELECT generate_series` (rows only, no image
files): each patient with 2 photos, a grade from each of 2 graders (the WHO grade type per patient,
5 answers each) and the consensus rows those grades keep, plus a field-day import per 10 patients.
Times each page with Django's test Client signed in as a superuser (the fastest of --repeat requests
after two warm-ups: on a shared machine, the least disturbed run) at the small size, grows the same
study to the large size, times again, and prints the milliseconds, the ratio and the queries of each
page; BENCH_SLOW_QUERIES=1 also prints each page's three slowest queries.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/gc_admin_bench \
        .venv/bin/python bench/admin_lists.py [--small 1000] [--large 100000] [--repeat 15]

Runs on a throwaway `test_<name>` PostgreSQL database (the estimates it measures are PostgreSQL's).
"""

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "settings.test")

GOAL = 1.3  # the most a page may slow down from the small study to the large one


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", type=int, default=1_000)
    parser.add_argument("--large", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=15)
    args = parser.parse_args()
    if not os.environ.get("DATABASE_URL", "").startswith("postgres"):
        sys.exit("Set DATABASE_URL to a PostgreSQL database: the lists' counts are PostgreSQL estimates.")

    from bench.testdb import test_databases

    with test_databases():
        run(args.small, args.large, args.repeat)


class World:
    """The study, its grade type and the people the bench signs in as or grades with."""

    def __init__(self):
        from accounts.services import user_ensure
        from grading.services import grade_types_import
        from studies.models import Region, Study
        from tests.grading_support import SCHEMES

        self.grade_type = grade_types_import(data={**SCHEMES[0], "unit": "patient"})[0]
        self.graders = [
            user_ensure(username=f"bench-grader{n}", password="x", groups=("Graders",))[0] for n in range(2)
        ]
        self.superuser = user_ensure(username="bench-admin", password="x")[0]
        self.superuser.is_staff = self.superuser.is_superuser = True
        self.superuser.save()
        self.study = Study.objects.create(
            name="Admin lists bench", region=Region.objects.create(name="Bench"), graders_per_patient=2
        )
        self.study.grade_types.add(self.grade_type)
        self.study.graders.add(*self.graders)
        self.fields = [
            (field.pk, [option.pk for option in field.options.order_by("order")])
            for field in self.grade_type.fields.order_by("order")
        ]
        self.patients = 0

    def grow(self, to: int) -> None:
        """Adds patients `self.patients + 1 .. to` with their photos, grades, answers and consensus."""
        from django.db import connection

        start, self.patients = self.patients + 1, to
        with connection.cursor() as cursor:
            for sql, params in self._statements(start, to):
                cursor.execute(sql, params)
            cursor.execute(
                "SELECT setval(pg_get_serial_sequence('studies_imageimport', 'id'), "
                "coalesce(max(id), 1)) FROM studies_imageimport"
            )
        self._imports(start, to)
        with connection.cursor() as cursor:
            cursor.execute("VACUUM ANALYZE")

    def _statements(self, start: int, to: int):
        study, grade_type, uploader = self.study.pk, self.grade_type.pk, self.superuser.pk
        new = "SELECT id, study_id, code FROM studies_patient WHERE study_id = %s AND code >= %s"
        first_code = f"BP-{start:06d}"
        yield (
            "INSERT INTO studies_patient (study_id, code, age_years, sex, created_at) "
            "SELECT %s, 'BP-' || lpad(n::text, 6, '0'), 1 + n %% 80, "
            "(ARRAY['F', 'M'])[1 + n %% 2], now() - n * interval '1 minute' "
            "FROM generate_series(%s, %s) AS n",
            [study, start, to],
        )
        yield (
            "INSERT INTO studies_image (patient_id, study_id, eye, file, thumbnail, sha256, width, height, "  # nosec B608 # constant subquery text; every value is a parameter
            "bytes, original_name, uploaded_by_id, uploaded_at) "
            "SELECT p.id, p.study_id, e.eye, 'bench/' || p.code || e.eye || '.jpg', "
            "'bench/thumbs/' || p.code || e.eye || '.jpg', md5(p.code || e.eye) || md5(e.eye || p.code), "
            "4000, 3000, 3000000 + p.id, 'IMG_' || p.code || '_' || e.eye || '.JPG', %s, now() "
            f"FROM ({new}) AS p CROSS JOIN (VALUES ('R'), ('L')) AS e(eye)",
            [uploader, study, first_code],
        )
        yield (
            "INSERT INTO grading_grade (patient_id, grade_type_id, grader_id, eye, created_at, "  # nosec B608 # constant subquery text; every value is a parameter
            "seconds_spent, note, kind, is_current, superseded_by_id, submission) "
            "SELECT p.id, %s, g.id, '', now() - (p.id %% 60) * interval '1 day', 30, '', 'regular', true, "
            f"NULL, gen_random_uuid() FROM ({new}) AS p CROSS JOIN unnest(%s::bigint[]) AS g(id)",
            [grade_type, study, first_code, [grader.pk for grader in self.graders]],
        )
        grades = (
            "SELECT grading_grade.id, grading_grade.patient_id FROM grading_grade "
            "JOIN studies_patient p ON p.id = grading_grade.patient_id WHERE p.study_id = %s AND p.code >= %s"
        )
        for field, options in self.fields:
            absent, present = options[0], options[1]
            yield (
                "INSERT INTO grading_gradeentry (grade_id, field_id, option_id) "  # nosec B608 # constant subquery text; every value is a parameter
                f"SELECT g.id, %s, CASE WHEN g.patient_id %% 5 = 0 THEN %s ELSE %s END FROM ({grades}) AS g",
                [field, present, absent, study, first_code],
            )
            yield (
                "INSERT INTO grading_consensus (patient_id, grade_type_id, eye, field_id, option_id, method, "  # nosec B608 # constant subquery text; every value is a parameter
                "graders, votes, updated_at) "
                "SELECT p.id, %s, '', %s, CASE WHEN p.id %% 5 = 0 THEN %s ELSE %s END, 'majority', 2, "
                f"'0:2', now() FROM ({new}) AS p",
                [grade_type, field, present, absent, study, first_code],
            )

    def _imports(self, start: int, to: int) -> None:
        from studies.models import ImageImport

        ImageImport.objects.bulk_create(
            ImageImport(
                study=self.study,
                source=ImageImport.Source.ZIP,
                status=ImageImport.Status.DONE,
                bytes_expected=6_000_000_000,
                files_total=2000,
                files_done=2000,
                patients_created=1000,
                images_created=2000,
                created_by=self.superuser,
            )  # fmt: skip
            for _ in range(max(1, (to - start + 1) // 10))
        )


def pages(world: World) -> list[tuple[str, str]]:
    from django.urls import reverse

    from grading.models import Grade
    from studies.models import Patient

    study = world.study.pk
    grades = reverse("admin:grading_grade_changelist")
    patient = Patient.objects.filter(study=world.study).order_by("code").first()
    grade = Grade.objects.order_by("pk").first()
    return [
        ("studies list", reverse("admin:studies_study_changelist")),
        ("study page", reverse("admin:studies_study_change", args=[study])),
        ("patients list", reverse("admin:studies_patient_changelist")),
        ("patients of the study", reverse("admin:studies_patient_changelist") + f"?study__id__exact={study}"),
        ("patients searched", reverse("admin:studies_patient_changelist") + "?q=BP-00042"),
        ("patient page", reverse("admin:studies_patient_change", args=[patient.pk])),
        ("images list", reverse("admin:studies_image_changelist")),
        ("images of the study", reverse("admin:studies_image_changelist") + f"?study__id__exact={study}"),
        ("grades list", grades),
        ("grades of the study", f"{grades}?patient__study__id__exact={study}"),
        ("grade page", reverse("admin:grading_grade_change", args=[grade.pk])),
        ("grade entries list", reverse("admin:grading_gradeentry_changelist")),
        ("consensus list", reverse("admin:grading_consensus_changelist")),
        ("imports list", reverse("admin:studies_imageimport_changelist")),
        ("users list", reverse("admin:auth_user_changelist")),
    ]  # fmt: skip


def measure(client, url: str, repeat: int) -> tuple[float, int]:
    """The fastest of `repeat` requests after two warm-ups, in milliseconds, and the queries of one."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    for _ in range(2):
        response = client.get(url)
        assert response.status_code == 200, (url, response.status_code)
    with CaptureQueriesContext(connection):
        client.get(url)
        queries = list(connection.queries)  # the log restarts with each request
    if os.environ.get("BENCH_SLOW_QUERIES"):
        for query in sorted(queries, key=lambda q: -float(q["time"]))[:3]:
            print(f"    {float(query['time']) * 1000:7.1f}ms {query['sql'][:400]}")
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        client.get(url)
        times.append((time.perf_counter() - started) * 1000)
    return min(times), len(queries)


def run(small: int, large: int, repeat: int) -> None:
    from django.db import connection
    from django.test import Client

    world = World()
    client = Client()
    client.force_login(world.superuser)
    results: dict[str, list[tuple[float, int]]] = {}
    for size in (small, large):
        started = time.perf_counter()
        world.grow(size)
        print(f"{connection.vendor}: {size:,} patients built in {time.perf_counter() - started:.1f} s")
        for name, url in pages(world):
            results.setdefault(name, []).append(measure(client, url, repeat))
    print(f"\n{'page':26} {small:>9,} {large:>9,}  ratio  queries")
    slow = []
    for name, ((small_ms, small_queries), (large_ms, large_queries)) in results.items():
        ratio = large_ms / small_ms
        mark = "" if ratio <= GOAL else "  <- over " + str(GOAL)
        if mark:
            slow.append(name)
        figures = f"{small_ms:7.1f}ms {large_ms:7.1f}ms  {ratio:5.2f}  {small_queries:3} / {large_queries:3}"
        print(f"{name:26} {figures}{mark}")
    print(f"\n{len(results) - len(slow)} of {len(results)} pages within {GOAL}x")


if __name__ == "__main__":
    main()
