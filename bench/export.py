"""Benchmark: the streamed grade export against PostgreSQL's own COPY, at 10,000 and 100,000 grades.

Builds, with bulk inserts, one study per size (N/2 patients with a right and a
left photo, two graders, a WHO grade with 5 answers per grader and patient),
then, for each size in a fresh subprocess:

- times GET /api/grades/?study=<id>&format=csv end to end through Django's test
  Client with a real knox token of a Data team member, consuming
  response.streaming_content fully (bytes and rows counted);
- times PostgreSQL's COPY (<the same table as one SQL query>) TO STDOUT WITH CSV
  through psycopg2's copy_expert into a counting sink;
- times both twice over: with the server's settings, and with SET jit = off (the
  JIT compiles for 0.2-0.5 s on either side's queries at these sizes, which
  would otherwise decide the ratio);
- measures the export's memory: RSS growth (VmHWM, reset through
  /proc/self/clear_refs just before the export) and, in a separate run, the
  tracemalloc peak of Python allocations; it also lists the server-side cursors
  open mid-stream and the temporary files the server wrote meanwhile.

Prints times (medians), the export / COPY ratio, rows per second and peak memory,
and checks the targets: ratio <= 2 and memory growth <= 30 MB from the smallest
to the largest size.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/gradingcenter .venv/bin/python bench/export.py \\
        [--sizes 10000 100000] [--repeats 3] [--profile auto|always|never]

PostgreSQL only (the export's server-side cursors are the point): without a
postgres DATABASE_URL it exits with status 2. The test database is created and
dropped as the test suite does, under a name of its own (test_<name>_bench_export),
so a concurrent test run is not disturbed.
"""

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "settings.test")

GRADERS_PER_PATIENT = 2
RATIO_TARGET = 2.0
MEMORY_TARGET_MB = 30.0
MB = 1024 * 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of each figure (median)")
    parser.add_argument(
        "--profile",
        choices=["auto", "always", "never"],
        default="auto",
        help="cProfile the export at the largest size (auto: when it misses the ratio target)",
    )
    parser.add_argument("--child", help=argparse.SUPPRESS)  # JSON job of a measuring subprocess
    args = parser.parse_args()

    url = os.environ.get("DATABASE_URL", "")
    if not url.startswith(("postgres://", "postgresql://", "pgsql://")):
        print(
            "bench/export.py needs PostgreSQL (it compares the export with COPY and checks that the\n"
            "server-side cursors stream). Set DATABASE_URL, e.g.\n"
            "    DATABASE_URL=postgres://postgres@127.0.0.1:5432/gradingcenter \\\n"
            "        .venv/bin/python bench/export.py",
            file=sys.stderr,
        )
        sys.exit(2)
    if args.child:
        child(json.loads(args.child))
    else:
        parent(args)


# Parent: the database, the data, one subprocess per size ---------------------------------------


def parent(args) -> None:
    import django
    from django.conf import settings

    django.setup()
    from django.db import connection
    from django.test.utils import get_runner, setup_test_environment

    database = settings.DATABASES["default"]
    database.setdefault("TEST", {})
    database["TEST"]["NAME"] = f"test_{database['NAME']}_bench_export"
    setup_test_environment()
    media_roots = [settings.MEDIA_ROOT, tempfile.mkdtemp(prefix="gc-bench-")]  # settings.test's, ours
    settings.MEDIA_ROOT = media_roots[-1]
    runner = get_runner(settings)(verbosity=0, interactive=False)
    started = time.perf_counter()
    old_config = runner.setup_databases()
    try:
        print(
            f"database: {connection.vendor} {connection.pg_version // 10000}, test database "
            f"{connection.settings_dict['NAME']} (created in {time.perf_counter() - started:.1f} s); "
            f"autocommit={connection.get_autocommit()}"
        )
        jobs = build_all(args.sizes)
        figures = {}
        for size in args.sizes:
            job = {
                **jobs[size],
                "size": size,
                "database": connection.settings_dict["NAME"],
                "repeats": args.repeats,
                "profile": args.profile if size == max(args.sizes) else "never",
            }
            figures[size] = run_child(job)
        report(args.sizes, figures)
        for size in args.sizes:
            if figures[size]["log"]:
                print()
                print(f"at {size:,} grades:")
                print("\n".join(figures[size]["log"]))
    finally:
        connection.close()
        runner.teardown_databases(old_config)
        remove_empty(media_roots)


def remove_empty(folders) -> None:
    for folder in folders:
        try:
            os.rmdir(folder)  # only if empty: nothing is stored
        except OSError:
            pass


def build_all(sizes: list[int]) -> dict:
    from django.db import connection
    from knox.models import AuthToken

    from accounts import roles
    from accounts.services import user_ensure
    from grading.services import grade_types_import

    schemes = json.loads((ROOT / "fixtures" / "grade_types.json").read_text())
    grade_type = grade_types_import(data=schemes[0])[0]
    fields = [(f.pk, [o.pk for o in f.options.all()]) for f in grade_type.fields.order_by("order", "pk")]
    assert len(fields) == 5, f"{grade_type.name} has {len(fields)} fields, not 5"
    graders = [
        user_ensure(username=f"bench-grader{n}", password="x", groups=(roles.GRADERS,))[0]
        for n in range(GRADERS_PER_PATIENT)
    ]
    member = user_ensure(username="bench-data", password="x", groups=(roles.DATA_TEAM,))[0]
    _, token = AuthToken.objects.create(user=member)
    warm_study = build(200, "warm-up", graders, grade_type, fields)[0]
    jobs = {}
    for size in sizes:
        study, seconds = build(size, f"Bench export {size}", graders, grade_type, fields)
        print(
            f"built {size:,} grades ({size // GRADERS_PER_PATIENT:,} patients x {GRADERS_PER_PATIENT} "
            f"graders, 2 photos each, {size * len(fields):,} answers) in {seconds:.1f} s"
        )
        jobs[size] = {"study": study.pk, "warm_study": warm_study.pk, "token": token}
    started = time.perf_counter()
    with connection.cursor() as cursor:
        for table in (
            "studies_patient",
            "studies_image",
            "grading_grade",
            "grading_gradeentry",
            "grading_gradeoption",
        ):
            cursor.execute(f"VACUUM ANALYZE {table}")
    print(f"vacuum analyze in {time.perf_counter() - started:.1f} s")
    return jobs


def build(size: int, name: str, graders, grade_type, fields):
    import random

    from grading.models import Grade, GradeEntry
    from studies.models import Image, Patient, Region, Study

    started = time.perf_counter()
    rng = random.Random(size)
    region, _ = Region.objects.get_or_create(name="Bench region")
    study = Study.objects.create(name=name, region=region, graders_per_patient=GRADERS_PER_PATIENT)
    study.graders.add(*graders)
    grade_type.studies.add(study)
    patients = Patient.objects.bulk_create(
        [Patient(study=study, code=f"E{size}-{n:06d}") for n in range(size // GRADERS_PER_PATIENT)],
        batch_size=5000,
    )
    Image.objects.bulk_create(
        (
            Image(
                patient_id=p.pk, study=study, eye=eye, file=f"images/bench/{p.pk}-{eye}.jpg",
                thumbnail=f"thumbnails/bench/{p.pk}-{eye}.jpg", sha256=f"{p.pk}-{eye}", width=4000,
                height=3000, bytes=4_000_000, original_name=f"{p.pk}-{eye}.jpg",
            )
            for p in patients
            for eye in "RL"
        ),
        batch_size=5000,
    )  # fmt: skip
    notes = ["", "", "", "blurred upper lid", "=not a formula", 'said "ouch", twice']
    grades = Grade.objects.bulk_create(
        (
            Grade(
                patient_id=p.pk, grade_type=grade_type, grader=grader, submission=uuid.uuid4(),
                seconds_spent=rng.randint(5, 90), note=rng.choice(notes),
            )
            for p in patients
            for grader in graders
        ),
        batch_size=5000,
    )  # fmt: skip
    GradeEntry.objects.bulk_create(
        (
            GradeEntry(grade_id=g.pk, field_id=field, option_id=options[rng.randrange(len(options))])
            for g in grades
            for field, options in fields
        ),
        batch_size=10000,
    )
    return study, time.perf_counter() - started


def run_child(job: dict) -> dict:
    env = {**os.environ}
    url = env["DATABASE_URL"]
    # The child connects straight to the test database the parent made (no setup_databases).
    env["DATABASE_URL"] = url[: url.rindex("/") + 1] + job["database"]
    done = subprocess.run(
        [sys.executable, __file__, "--child", json.dumps(job)],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        sys.stderr.write(done.stdout + done.stderr)
        raise SystemExit(f"the measuring subprocess for {job['size']} grades failed")
    sys.stderr.write(done.stderr)
    lines = done.stdout.splitlines()
    figures = json.loads(lines[-1])
    figures["log"] = lines[:-1]  # the profile, if any: printed after the figures
    return figures


# Child: one size, measured in a fresh process ----------------------------------------------------


def vm(name: str) -> int:
    """VmRSS / VmHWM of this process, in bytes."""
    status = Path("/proc/self/status").read_text()
    return int(re.search(rf"^{name}:\s+(\d+) kB", status, re.M).group(1)) * 1024


def reset_peak_rss() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS (Linux >= 4.0)
        return True
    except OSError:
        return False


def child(job: dict) -> None:
    import warnings

    import django

    warnings.filterwarnings("ignore", message="No directory at")  # whitenoise: no collected static

    django.setup()
    from django.conf import settings
    from django.db import connection
    from django.test import Client
    from django.test.utils import setup_test_environment

    setup_test_environment()
    client = Client(HTTP_AUTHORIZATION=f"Token {job['token']}")
    url = f"/api/grades/?study={job['study']}&format=csv"
    size = job["size"]
    out = {"size": size}

    # Warm up: code paths, imports, the connection, the token check, on a tiny study.
    export(client, f"/api/grades/?study={job['warm_study']}&format=csv")
    copy_csv(job["study"])

    # 1. RSS: a fresh peak, then the first full export of this size (nothing of its size ran yet).
    temp_before = server_temp_files()
    baseline = vm("VmRSS")
    can_reset = reset_peak_rss()
    first = export(client, url, probe_cursors=True)
    connection.close()  # the server process ends and flushes its statistics (temp files)
    time.sleep(1)
    out["temp_files"], out["temp_bytes"] = (
        a - b for a, b in zip(server_temp_files(), temp_before, strict=True)
    )
    out["rss_growth"] = (vm("VmHWM") if can_reset else first["rss_max"]) - baseline
    out["rss_sampled_growth"] = first["rss_max"] - baseline
    out["cursors"] = first["cursors"]
    out["bytes"], out["rows"] = first["bytes"], first["rows"]
    assert first["status"] == 200, first
    assert out["rows"] == size, f"exported {out['rows']} rows, expected {size}"

    # 2. Times: the export and COPY, with the server's settings and with JIT off, alternated; medians.
    times = {"export": [first["seconds"]], "export_nojit": [], "copy": [], "copy_nojit": []}
    for n in range(job["repeats"]):
        if n:
            times["export"].append(export(client, url)["seconds"])
        with jit_off():
            times["export_nojit"].append(export(client, url)["seconds"])
        copied = copy_csv(job["study"])
        times["copy"].append(copied["seconds"])
        assert copied["rows"] == size, copied
        with jit_off():
            times["copy_nojit"].append(copy_csv(job["study"])["seconds"])
    out.update({f"{name}_seconds": statistics.median(values) for name, values in times.items()})
    out["copy_bytes"] = copied["bytes"]
    out["first_row"] = first["first_row"]

    # 3. Python's own peak: tracemalloc (slows allocation down, so not timed).
    import tracemalloc

    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    tracemalloc.reset_peak()
    traced = export(client, url)
    out["tracemalloc_peak"] = tracemalloc.get_traced_memory()[1] - before
    tracemalloc.stop()
    assert traced["rows"] == size

    missed = any(
        out[f"export{kind}_seconds"] / out[f"copy{kind}_seconds"] > RATIO_TARGET for kind in ("", "_nojit")
    )
    if job["profile"] == "always" or (job["profile"] == "auto" and missed):
        profile(client, url)
    connection.close()
    remove_empty([settings.MEDIA_ROOT])
    print(json.dumps(out))


def export(client, url: str, probe_cursors: bool = False) -> dict:
    """One export, consumed chunk by chunk: time, bytes, rows, sampled RSS (and open cursors once)."""
    started = time.perf_counter()
    response = client.get(url)
    first_row = None
    size = lines = chunks = 0
    rss_max = vm("VmRSS")
    cursors = None
    next_sample = 1000
    for chunk in response.streaming_content:
        size += len(chunk)
        lines += chunk.count(b"\n")
        chunks += 1
        if first_row is None and lines > 1:
            first_row = time.perf_counter() - started  # the header comes before any query runs
        if lines >= next_sample:
            next_sample += 5000
            rss_max = max(rss_max, vm("VmRSS"))
            if probe_cursors and cursors is None:
                cursors = open_cursors()
    seconds = time.perf_counter() - started
    response.close()
    rss_max = max(rss_max, vm("VmRSS"))
    return {
        "status": response.status_code,
        "seconds": seconds,
        "first_row": first_row,
        "bytes": size,
        "rows": lines - 1,  # the header
        "chunks": chunks,
        "rss_max": rss_max,
        "cursors": cursors,
    }


@contextmanager
def jit_off():
    """PostgreSQL's JIT off on Django's connection (which the in-process export and COPY use)."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SET jit = off")
    try:
        yield
    finally:
        with connection.cursor() as cursor:
            cursor.execute("RESET jit")


def open_cursors() -> list:
    """The server-side cursors open on this connection, mid-stream (pg_cursors)."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT name, is_holdable FROM pg_cursors WHERE NOT is_binary ORDER BY name")
        return cursor.fetchall()


def server_temp_files() -> tuple[int, int]:
    """Temporary files PostgreSQL wrote for this database so far (count, bytes), from a side connection."""
    import psycopg2
    from django.db import connection

    side = psycopg2.connect(**connection.get_connection_params())
    try:
        with side.cursor() as cursor:
            cursor.execute(
                "SELECT temp_files, temp_bytes FROM pg_stat_database WHERE datname = current_database()"
            )
            return cursor.fetchone()
    finally:
        side.close()


class CountingSink:
    def __init__(self):
        self.bytes = 0
        self.lines = 0

    def write(self, data) -> int:
        if isinstance(data, str):
            data = data.encode()
        self.bytes += len(data)
        self.lines += data.count(b"\n")
        return len(data)


def copy_sql(study_id: int) -> tuple[str, list]:
    """The export's table as one query: the same columns, answers pivoted, in grade order."""
    from django.contrib.auth import get_user_model

    from grading.models import Grade, GradeEntry, GradeField, GradeOption, GradeType
    from studies.models import Image, Patient, Study

    grade_types = list(
        GradeType.objects.filter(studies=study_id).order_by("name").values_list("pk", flat=True)
    )
    fields = list(
        GradeField.objects.filter(grade_type__in=grade_types)
        .order_by("grade_type__name", "order", "pk")
        .values_list("pk", "name")
    )
    table = {
        model: model._meta.db_table
        for model in (Grade, GradeEntry, GradeOption, GradeType, Image, Patient, Study, get_user_model())
    }
    user = table[get_user_model()]
    # Table names from the models, ids and field names of the benchmark's own generated study.
    eyes = ", ".join(
        f"CASE WHEN EXISTS (SELECT 1 FROM {table[Image]} i WHERE i.patient_id = g.patient_id "
        f"AND i.eye = '{eye}') THEN '{eye}' END"  # nosec B608 # no outside input, as said above
        for eye in "RLU"
    )
    answers = ", ".join(
        f'max(CASE WHEN e.field_id = {pk} THEN o.value END) AS "{name}"' for pk, name in fields
    )
    sql = f"""
        SELECT g.id, s.name, p.code, concat_ws(';', {eyes}) AS eyes, u.username, t.name, g.kind,
               g.is_current, g.superseded_by_id, g.created_at, g.seconds_spent, g.note, {answers}
        FROM {table[Grade]} g
        JOIN {table[Patient]} p ON p.id = g.patient_id
        JOIN {table[Study]} s ON s.id = p.study_id
        JOIN {user} u ON u.id = g.grader_id
        JOIN {table[GradeType]} t ON t.id = g.grade_type_id
        LEFT JOIN {table[GradeEntry]} e ON e.grade_id = g.id
        LEFT JOIN {table[GradeOption]} o ON o.id = e.option_id
        WHERE p.study_id = %s AND g.grade_type_id = ANY(%s)
        GROUP BY g.id, s.name, p.code, u.username, t.name
        ORDER BY g.id
    """  # nosec B608 # no outside input, as above
    return sql, [study_id, grade_types]


def copy_csv(study_id: int) -> dict:
    """COPY of the same table into a counting sink."""
    from django.db import connection

    sql, params = copy_sql(study_id)
    connection.ensure_connection()
    with connection.connection.cursor() as cursor:
        query = cursor.mogrify(sql, params).decode()
        sink = CountingSink()
        started = time.perf_counter()
        cursor.copy_expert(f"COPY ({query}) TO STDOUT WITH CSV HEADER", sink)
        seconds = time.perf_counter() - started
    return {"seconds": seconds, "bytes": sink.bytes, "rows": sink.lines - 1}


def profile(client, url: str) -> None:
    import cProfile
    import io
    import pstats

    profiler = cProfile.Profile()
    profiler.enable()
    export(client, url)
    profiler.disable()
    for order in ("tottime", "cumulative"):
        text = io.StringIO()
        pstats.Stats(profiler, stream=text).strip_dirs().sort_stats(order).print_stats(18)
        lines = text.getvalue().splitlines()
        start = next(i for i, line in enumerate(lines) if "ncalls" in line)
        print(f"profile of the export (cProfile, sorted by {order}):")
        for line in lines[start - 2 : start + 19]:
            if line.strip():
                print("  " + line.rstrip()[:150])


# Report ----------------------------------------------------------------------------------------


def report(sizes: list[int], figures: dict) -> None:
    print()
    print("times (s, medians)     server settings (JIT as configured)      JIT off (SET jit = off)")
    header = (
        f"{'grades':>9} {'CSV MB':>7} {'1st row':>8} {'export':>8} {'COPY':>7} {'ratio':>6}"
        f"{'export':>12} {'COPY':>7} {'ratio':>6}{'export rows/s':>15} {'COPY rows/s':>12}"
    )
    print(header)
    print("-" * len(header))
    for size in sizes:
        f = figures[size]
        print(
            f"{size:>9,} {f['bytes'] / MB:>7.1f} {f['first_row']:>8.2f} {f['export_seconds']:>8.2f} "
            f"{f['copy_seconds']:>7.2f} {f['export_seconds'] / f['copy_seconds']:>6.2f}"
            f"{f['export_nojit_seconds']:>12.2f} {f['copy_nojit_seconds']:>7.2f} "
            f"{f['export_nojit_seconds'] / f['copy_nojit_seconds']:>6.2f}"
            f"{size / f['export_seconds']:>15,.0f} {size / f['copy_seconds']:>12,.0f}"
        )
    print("rows/s: with the server's settings; 1st row: time to the first data row of the first export")
    print()
    print("export memory (fresh process per size)")
    header = f"{'grades':>9} {'RSS peak growth MB':>19} {'(sampled) MB':>13} {'tracemalloc peak MB':>20}"
    print(header)
    print("-" * len(header))
    for size in sizes:
        f = figures[size]
        print(
            f"{size:>9,} {f['rss_growth'] / MB:>19.1f} {f['rss_sampled_growth'] / MB:>13.1f} "
            f"{f['tracemalloc_peak'] / MB:>20.2f}"
        )
    print()
    largest, smallest = figures[max(sizes)], figures[min(sizes)]
    cursors = largest["cursors"] or []
    holdable = sum(1 for _, hold in cursors if hold)
    print(
        f"server-side cursors open mid-stream at {max(sizes):,} grades: {len(cursors)}, {holdable} WITH HOLD "
        f"(autocommit: PostgreSQL runs each query to the end and keeps the result at DECLARE)"
    )
    for size in sizes:
        print(
            f"server temp files during the first export of {size:,} grades: {figures[size]['temp_files']} "
            f"({figures[size]['temp_bytes'] / MB:.1f} MB): WITH HOLD results beyond work_mem go to disk"
        )
    print(
        f"bytes at {max(sizes):,}: export {largest['bytes']:,}, COPY {largest['copy_bytes']:,} (same "
        "columns; the export writes ISO dates and quotes formula-like cells)"
    )
    for label, export_key, copy_key in (
        ("server settings", "export_seconds", "copy_seconds"),
        ("JIT off", "export_nojit_seconds", "copy_nojit_seconds"),
    ):
        worst = max(figures[s][export_key] / figures[s][copy_key] for s in sizes)
        verdict = "met" if worst <= RATIO_TARGET else "MISSED"
        print(f"target export / COPY <= {RATIO_TARGET:g} ({label}): worst {worst:.2f} -> {verdict}")
    rss_delta = (largest["rss_growth"] - smallest["rss_growth"]) / MB
    traced_delta = (largest["tracemalloc_peak"] - smallest["tracemalloc_peak"]) / MB
    verdict = "met" if max(rss_delta, traced_delta) <= MEMORY_TARGET_MB else "MISSED"
    print(
        f"target memory growth <= {MEMORY_TARGET_MB:g} MB from {min(sizes):,} to {max(sizes):,} grades: "
        f"RSS {rss_delta:+.1f} MB, tracemalloc {traced_delta:+.2f} MB -> {verdict}"
    )


if __name__ == "__main__":
    main()
