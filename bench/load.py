"""Benchmark: many graders saving at once against gunicorn and PostgreSQL, with an exporter streaming.

Headless and on the loopback only; stops by itself after --seconds (or once every
grader has nothing left to grade):

1. (re)creates the PostgreSQL database --database (default gc_load: dropped and
   created, left behind afterwards for inspection), migrates it and, in a
   subprocess, builds one study (N patients, no photos, the WHO grade type from
   fixtures/grade_types.json, --wanted graders per patient, repeat share 0.1,
   randomized order), G graders assigned to it (which builds their queues) and
   one Data team member;
2. starts gunicorn (settings.prod, --workers x --threads) on 127.0.0.1 and a free
   port, its output in a log file; no static files are collected or fetched;
3. runs G grader clients in threads: each signs in through /admin/login/, then
   loops grading page -> POST random answers ("Save and next": the save answers
   with a redirect to the next grading page), and classifies every save by the
   message on the page it lands on ("Saved." accepted, "already has its"
   refused), timing each save POST;
4. runs one exporter client: a knox token from POST /api/auth/login/, then every
   --export-every seconds the whole GET /api/grades/?study=<id>&format=csv;
5. stops gunicorn (always, Ctrl-C included) and checks the database: every
   accepted save has its grade (else "lost"), no refused save has one, no two
   current regular grades of one grader for one patient (duplicates), no patient
   with more graders than wanted (over-graded).

Prints requests, errors, saves accepted and refused, grades per second, the
p50 / p95 / max latency of the save POST (and of GET next and the grading page),
the exporter's downloads, the CPU used by gunicorn, by our PostgreSQL backends,
by this client and by every other process meanwhile (read from /proc: the
benchmark is CPU-bound on a small machine, and shares it), then the database
check. Sign-ins (PBKDF2, about 0.5 s of CPU each) come before the clock starts.
Exits with status 1 when there were errors, lost grades, refused saves that
were saved anyway, duplicates or over-graded patients; the goal of 20 grades/s
is reported, not enforced. Server errors and their tracebacks are in gunicorn's
log, whose path is printed.

    .venv/bin/python bench/load.py [--seconds 60] [--graders 20] [--patients 200] [--wanted 3] \\
        [--workers 4] [--threads 4] [--export-every 3] [--database gc_load] [--log FILE]

Needs PostgreSQL at --postgres (default postgres://postgres@127.0.0.1:5432, trust
authentication) and the project's virtualenv (gunicorn, psycopg2): run it with
.venv/bin/python. The database's name must contain "load", so that no other
database is dropped by mistake.
"""

import argparse
import base64
import http.client
import json
import os
import random
import re
import secrets
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from http.cookies import SimpleCookie
from pathlib import Path
from urllib.parse import urlencode, urlsplit

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
VENV_BIN = Path(sys.executable).parent
HOST = "127.0.0.1"
TIMEOUT = 60  # seconds a client waits on one request
TARGET_GRADES_PER_SECOND = 20

RADIO_RE = re.compile(r'<input type="radio" name="(answer-\d+-\d+)" value="(\d+)"')
CSRF_RE = re.compile(r'name="csrfmiddlewaretoken" value="([^"]+)"')
SAVED = "Saved."
REFUSED = "already has its"
WAIT = "Try again in a few minutes"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60, help="how long the graders grade")
    parser.add_argument("--graders", type=int, default=20)
    parser.add_argument("--patients", type=int, default=200)
    parser.add_argument("--wanted", type=int, default=3, help="graders wanted per patient")
    parser.add_argument("--workers", type=int, default=4, help="gunicorn worker processes")
    parser.add_argument("--threads", type=int, default=4, help="gunicorn threads per worker")
    parser.add_argument("--export-every", type=float, default=3.0, help="seconds between exports")
    parser.add_argument("--database", default="gc_load", help="dropped and created anew (name with 'load')")
    parser.add_argument("--postgres", default="postgres://postgres@127.0.0.1:5432")
    parser.add_argument("--log", help="gunicorn's log file (default: a new temporary file)")
    parser.add_argument("--setup", help=argparse.SUPPRESS)  # JSON job of the data-building subprocess
    args = parser.parse_args()
    if args.setup:
        setup_child(json.loads(args.setup))
        return
    # Ctrl-C and SIGTERM end the run through its finally clauses, which stop gunicorn (also when
    # started in the background, where a shell leaves SIGINT ignored).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _terminated)
    try:
        status = run(args)
    except KeyboardInterrupt:
        print("interrupted; gunicorn was stopped", file=sys.stderr)
        status = 130
    sys.exit(status)


def _terminated(signum, frame) -> None:
    raise SystemExit(128 + signum)


# The database, the data, the server ------------------------------------------------------------------


def server_env(args) -> dict:
    return {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "settings.prod",
        "DJANGO_SECRET_KEY": "load-bench-" + secrets.token_urlsafe(48),
        "DJANGO_ALLOWED_HOSTS": HOST,
        "DJANGO_SECURE_SSL_REDIRECT": "false",
        "DJANGO_DEBUG": "false",
        "DATABASE_URL": f"{args.postgres.rstrip('/')}/{args.database}",
    }


def database_create(args) -> None:
    import psycopg2

    if not re.fullmatch(r"[a-z_][a-z0-9_]*", args.database) or "load" not in args.database:
        raise SystemExit(
            f"--database {args.database!r}: it is dropped, so its name must contain 'load' "
            "(lower-case letters, digits and _ only)"
        )
    connection = psycopg2.connect(f"{args.postgres.rstrip('/')}/postgres")
    connection.autocommit = True
    try:
        with connection.cursor() as cursor:
            cursor.execute(f"DROP DATABASE IF EXISTS {args.database} WITH (FORCE)")
            cursor.execute(f"CREATE DATABASE {args.database}")
    finally:
        connection.close()


def setup_child(job: dict) -> None:
    """In a subprocess with the server's settings: the study, its patients, graders and a Data team user."""
    import django

    django.setup()
    from decimal import Decimal

    from django.contrib.auth import get_user_model
    from django.contrib.auth.hashers import make_password
    from django.contrib.auth.models import Group

    from accounts import roles
    from grading.services import grade_types_import
    from studies.models import Patient, Region, Study

    User = get_user_model()
    schemes = json.loads((ROOT / "fixtures" / "grade_types.json").read_text())
    grade_type = grade_types_import(data=schemes[0])[0]
    region = Region.objects.create(name="Load region")
    study = Study.objects.create(
        name="Load study",
        region=region,
        graders_per_patient=job["wanted"],
        repeat_share=Decimal("0.1"),
        randomized_order=True,
    )
    study.grade_types.add(grade_type)
    Patient.objects.bulk_create(
        [Patient(study=study, code=f"L{n:06d}") for n in range(job["patients"])], batch_size=2000
    )
    password = make_password(job["password"])  # hashed once: the same password for every user
    graders = [
        User.objects.create(username=f"load-grader{n:03d}", password=password, is_staff=True)
        for n in range(job["graders"])
    ]
    Group.objects.get(name=roles.GRADERS).user_set.add(*graders)
    member = User.objects.create(username="load-data", password=password, is_staff=True)
    Group.objects.get(name=roles.DATA_TEAM).user_set.add(member)
    study.graders.add(*graders)  # builds each grader's queue
    print(
        json.dumps(
            {
                "study": study.pk,
                "graders": [u.username for u in graders],
                "member": member.username,
                "fields": grade_type.fields.count(),
            }
        )
    )


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((HOST, 0))
        return probe.getsockname()[1]


def gunicorn_start(args, env: dict, port: int, log_path: Path) -> subprocess.Popen:
    command = [
        str(VENV_BIN / "gunicorn"),
        "wsgi:application",
        "--bind", f"{HOST}:{port}",
        "--workers", str(args.workers),
        "--threads", str(args.threads),
        "--worker-class", "gthread",
        "--preload",
        "--timeout", "120",
        "--graceful-timeout", "5",
        "--no-control-socket",  # no socket under ~/.gunicorn to share with another gunicorn
        "--error-logfile", "-",
        "--log-level", "info",
    ]  # fmt: skip
    log = log_path.open("ab")
    try:
        return subprocess.Popen(
            command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    finally:
        log.close()  # the child holds its own descriptor


def gunicorn_wait(server: subprocess.Popen, port: int, log_path: Path, limit: float = 60) -> float:
    started = time.perf_counter()
    while time.perf_counter() - started < limit:
        if server.poll() is not None:
            raise SystemExit(f"gunicorn exited with status {server.returncode}:\n{log_tail(log_path)}")
        try:
            connection = http.client.HTTPConnection(HOST, port, timeout=5)
            connection.request("GET", "/healthz/")
            response = connection.getresponse()
            response.read()
            connection.close()
            if response.status == 200:
                return time.perf_counter() - started
        except OSError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"gunicorn did not answer within {limit:.0f} s:\n{log_tail(log_path)}")


def gunicorn_stop(server: subprocess.Popen) -> None:
    """SIGTERM to the master we started (it stops its workers), SIGKILL to its process group if it lingers."""
    if server.poll() is not None:
        return
    server.terminate()
    try:
        server.wait(timeout=15)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(server.pid, signal.SIGKILL)  # our own session: gunicorn and its workers only
        except ProcessLookupError:
            pass
        server.wait(timeout=5)


def log_tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


# CPU accounting from /proc (read only) --------------------------------------------------------------


def _proc_stats() -> dict[int, tuple[str, int, float]]:
    """pid -> (command line, parent pid, CPU seconds) of every process we can read."""
    ticks = os.sysconf("SC_CLK_TCK")
    stats = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            raw = Path(f"/proc/{entry}/stat").read_text()
            command = (
                Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            )
        except OSError:
            continue
        fields = raw[raw.rindex(")") + 2 :].split()
        stats[int(entry)] = (command, int(fields[1]), (int(fields[11]) + int(fields[12])) / ticks)
    return stats


def cpu_snapshot(server_pid: int, database: str) -> dict[str, dict[int, float]]:
    """CPU seconds so far: gunicorn (master and workers), the PostgreSQL backends of our database, us."""
    stats = _proc_stats()
    backend = "postgres: "
    return {
        "server": {
            pid: cpu for pid, (_, ppid, cpu) in stats.items() if pid == server_pid or ppid == server_pid
        },
        "postgres": {
            pid: cpu
            for pid, (command, _, cpu) in stats.items()
            if command.startswith(backend) and f" {database} " in command
        },
        "client": {0: sum(os.times()[:2])},
        "machine": _machine_cpu(),
    }


def _machine_cpu() -> dict[int, float]:
    """The whole machine's CPU seconds from /proc/stat: 0 busy, 1 idle (iowait included), 2 stolen."""
    ticks = os.sysconf("SC_CLK_TCK")
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    user, nice, system, idle, iowait, irq, softirq, steal = values[:8]
    return {0: (user + nice + system + irq + softirq) / ticks, 1: (idle + iowait) / ticks, 2: steal / ticks}


def cpu_merged(earlier: dict, later: dict) -> dict:
    """The later snapshot, keeping the last figure of processes that ended since the earlier one."""
    return {side: {**earlier[side], **later[side]} if side != "machine" else later[side] for side in later}


def cpu_used(before: dict, after: dict) -> dict[str, float]:
    """CPU seconds per side between two snapshots (processes that ran between two samples are missed)."""
    used = {side: sum(cpu - before[side].get(pid, 0.0) for pid, cpu in after[side].items()) for side in after}
    used["machine"], used["idle"], used["steal"] = (
        after["machine"][n] - before["machine"][n] for n in range(3)
    )
    return used


# HTTP clients ----------------------------------------------------------------------------------------


class Browser:
    """One keep-alive connection with its own cookie jar (the server's cookies are Secure; we are on http)."""

    def __init__(self, port: int, stats: "Stats"):
        self.connection = http.client.HTTPConnection(HOST, port, timeout=TIMEOUT)
        self.base = f"http://{HOST}:{port}"
        self.cookies: dict[str, str] = {}
        self.stats = stats

    def request(self, method: str, path: str, body: bytes | None = None, headers: dict | None = None):
        headers = dict(headers or {})
        if self.cookies:
            headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        for attempt in (1, 2):
            reused = self.connection.sock is not None
            try:
                self.stats.requests += 1
                self.connection.request(method, path, body=body, headers=headers)
                response = self.connection.getresponse()
                data = response.read()
                break
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                self.connection.close()
                if attempt == 2 or not reused:
                    raise
                self.stats.reconnects += 1  # the server closed an idle keep-alive connection: once more
        for header in response.msg.get_all("Set-Cookie") or []:
            jar = SimpleCookie()
            jar.load(header)
            for name, morsel in jar.items():
                if morsel["max-age"] == "0" or not morsel.value:
                    self.cookies.pop(name, None)
                else:
                    self.cookies[name] = morsel.coded_value
        if response.status >= 400:
            self.stats.error(f"{method} {path}: HTTP {response.status}", data)
        return response.status, response.getheader("Location", ""), data

    def get(self, path: str):
        return self.request("GET", path)

    def post(self, path: str, fields: dict, referer: str):
        body = urlencode(fields).encode()
        headers = {"Content-Type": "application/x-www-form-urlencoded", "Referer": self.base + referer}
        return self.request("POST", path, body=body, headers=headers)

    def close(self) -> None:
        self.connection.close()


class Stats:
    def __init__(self):
        self.requests = 0
        self.reconnects = 0
        self.errors = 0
        self.samples: list[str] = []
        self.latencies: list[float] = []  # the save POSTs
        self.next_latencies: list[float] = []
        self.page_latencies: list[float] = []
        self.accepted: list[str] = []  # grading page keys (= the grades' submission keys)
        self.refused: list[str] = []
        self.unclassified: list[str] = []
        self.waits = 0
        self.finished_at: float | None = None
        self.stop_reason = ""

    def error(self, what: str, body: bytes = b"") -> None:
        self.errors += 1
        if len(self.samples) < 5:
            snippet = re.sub(r"\s+", " ", body[:300].decode(errors="replace")) if body else ""
            self.samples.append(f"{what} {snippet}".strip())


def path_of(location: str) -> str:
    parts = urlsplit(location)
    return parts.path + (f"?{parts.query}" if parts.query else "")


def login_admin(browser: Browser, username: str, password: str) -> bool:
    status, _, html = browser.get("/admin/login/")
    token = CSRF_RE.search(html.decode(errors="replace")) if status == 200 else None
    if token is None:
        browser.stats.error(f"login form of {username}: HTTP {status}, no csrf token", html)
        return False
    fields = {
        "csrfmiddlewaretoken": token.group(1),
        "username": username,
        "password": password,
        "next": "/admin/",
    }
    status, location, html = browser.post("/admin/login/?next=/admin/", fields, referer="/admin/login/")
    if status != 302 or "sessionid" not in browser.cookies:
        browser.stats.error(f"login of {username}: HTTP {status} to {location!r}", html)
        return False
    return True


class Grader(threading.Thread):
    def __init__(self, port, study: int, username: str, password: str, start_gate, stop, seed: int):
        super().__init__(name=username, daemon=True)
        self.stats = Stats()
        self.browser = Browser(port, self.stats)
        self.username, self.password = username, password
        self.start_gate, self.stop = start_gate, stop
        self.deadline = 0.0
        self.random = random.Random(seed)
        self.next_path = f"/admin/grading/study/{study}/next/"
        self.study_path = f"/admin/grading/study/{study}/"
        self.page_re = re.compile(rf"^/admin/grading/study/{study}/([0-9a-f-]{{36}})/$")

    def running(self) -> bool:
        return not self.stop.is_set() and time.monotonic() < self.deadline

    def run(self) -> None:
        try:
            ok = login_admin(self.browser, self.username, self.password)
        except Exception as error:  # noqa: BLE001  (counted, never raised out of the thread)
            self.stats.error(f"login of {self.username}: {error!r}")
            ok = False
        self.browser.connection.close()  # idle while the others sign in: the server would drop it
        try:
            self.deadline = self.start_gate.wait_start()
        except threading.BrokenBarrierError:
            ok = False
        try:
            if ok:
                self.grade()
            else:
                self.stats.stop_reason = "login failed"
        finally:
            self.stats.finished_at = time.monotonic()
            self.browser.close()

    def land(self, location: str | None = None):
        """The page `next` (or a save, which answers like next) sends to: ("page" | "study", path, html)."""
        if location is None:
            started = time.perf_counter()
            status, location, body = self.browser.get(self.next_path)
            self.stats.next_latencies.append(time.perf_counter() - started)
            if status != 302:
                if status < 400:
                    self.stats.error(f"GET next: HTTP {status}, not a redirect", body)
                return None
        path = path_of(location)
        kind = "page" if self.page_re.match(path) else "study" if path == self.study_path else None
        if kind is None:
            self.stats.error(f"GET next: redirected to {location!r}")
            return None
        started = time.perf_counter()
        status, _, body = self.browser.get(path)
        if kind == "page":
            self.stats.page_latencies.append(time.perf_counter() - started)
        if status != 200:
            if status < 400:
                self.stats.error(f"GET {path}: HTTP {status}", body)
            return None
        return kind, path, body.decode(errors="replace")

    def land_safely(self, location: str | None = None):
        try:
            return self.land(location)
        except Exception as error:  # noqa: BLE001
            self.stats.error(f"GET next: {error!r}")
            self.browser.connection.close()
            return None

    def grade(self) -> None:
        failures = 0
        landed = self.land_safely()
        while True:
            if landed is None:
                failures += 1
                if failures >= 5:
                    self.stats.stop_reason = "5 failures in a row"
                    return
                if not self.running():
                    return
                time.sleep(0.2)
                landed = self.land_safely()
                continue
            kind, path, html = landed
            if kind == "study":
                if WAIT not in html:
                    self.stats.stop_reason = "nothing left"
                    return
                if not self.running():
                    return
                self.stats.waits += 1  # the patients left are on other graders' open pages: they save soon
                time.sleep(0.25)
                landed = self.land_safely()
                continue
            if not self.running():
                return
            key = self.page_re.match(path).group(1)
            try:
                posted = self.save(path, key, html)
            except Exception as error:  # noqa: BLE001
                self.stats.error(f"POST {path}: {error!r}")
                self.browser.connection.close()
                posted = None
            failures = 0 if posted else failures + 1
            landed = self.land_safely(posted)  # the next page, which shows what became of this save
            if posted:
                shown = landed[2] if landed else ""
                if SAVED in shown:
                    self.stats.accepted.append(key)
                elif REFUSED in shown:
                    self.stats.refused.append(key)
                else:
                    self.stats.unclassified.append(key)

    def save(self, path: str, key: str, html: str) -> str | None:
        """POST random answers: where the server sent the grader on (saved or refused), or None."""
        options: dict[str, list[str]] = {}
        for name, value in RADIO_RE.findall(html):
            options.setdefault(name, []).append(value)
        token = CSRF_RE.search(html)
        if not options or token is None:
            self.stats.error(f"GET {path}: no answers or no csrf token on the grading page", html.encode())
            return None
        fields = {"csrfmiddlewaretoken": token.group(1), "note": ""}
        fields.update({name: self.random.choice(values) for name, values in options.items()})
        started = time.perf_counter()
        status, location, body = self.browser.post(path, fields, referer=path)
        self.stats.latencies.append(time.perf_counter() - started)
        if status == 302 and (self.page_re.match(path_of(location)) or path_of(location) == self.study_path):
            return location
        if status < 400:
            self.stats.error(f"POST {path}: HTTP {status} to {location!r}", body)
        return None


class Exporter(threading.Thread):
    def __init__(self, port, study: int, username: str, password: str, start_gate, stop, every: float):
        super().__init__(name="exporter", daemon=True)
        self.stats = Stats()
        self.browser = Browser(port, self.stats)
        self.study, self.username, self.password = study, username, password
        self.start_gate, self.stop, self.every = start_gate, stop, every
        self.downloads: list[tuple[float, int, int]] = []  # seconds, bytes, rows

    def run(self) -> None:
        token = None
        try:
            token = self.login()
        except Exception as error:  # noqa: BLE001
            self.stats.error(f"API login: {error!r}")
        try:
            self.start_gate.wait_start()
        except threading.BrokenBarrierError:
            return
        try:
            while token and not self.stop.is_set():
                started = time.monotonic()
                self.browser.connection.close()  # idle for seconds since the last one: a fresh connection
                try:
                    self.download(token)
                except Exception as error:  # noqa: BLE001
                    self.stats.error(f"export: {error!r}")
                    self.browser.connection.close()
                self.stop.wait(max(0.0, self.every - (time.monotonic() - started)))
        finally:
            self.browser.close()

    def login(self) -> str | None:
        credentials = base64.b64encode(f"{self.username}:{self.password}".encode()).decode()
        status, _, body = self.browser.request(
            "POST", "/api/auth/login/", headers={"Authorization": f"Basic {credentials}"}
        )
        return json.loads(body)["token"] if status == 200 else None

    def download(self, token: str) -> None:
        """The whole CSV, read as it streams (not through Browser.request, which reads all at once)."""
        connection = self.browser.connection
        started = time.perf_counter()
        self.stats.requests += 1
        connection.request(
            "GET", f"/api/grades/?study={self.study}&format=csv", headers={"Authorization": f"Token {token}"}
        )
        response = connection.getresponse()
        size = lines = 0
        first = b""
        while chunk := response.read(65536):
            size += len(chunk)
            lines += chunk.count(b"\n")
            first = first or chunk
        if response.status != 200:
            self.stats.error(f"export: HTTP {response.status}", first)
            return
        self.downloads.append((time.perf_counter() - started, size, lines - 1))


class StartGate:
    """Every client signs in first; the clock starts when the last one has (or gave up)."""

    def __init__(self, parties: int, seconds: float):
        self.barrier = threading.Barrier(parties, timeout=300)
        self.seconds = seconds
        self.started = 0.0

    def wait_start(self) -> float:
        if self.barrier.wait() == 0:
            self.started = time.monotonic()
        self.barrier.wait()  # everyone sees the same start
        return self.started + self.seconds


# The run ---------------------------------------------------------------------------------------------


def run(args) -> int:
    if not (VENV_BIN / "gunicorn").exists():
        raise SystemExit(f"no gunicorn beside {sys.executable}: run this with the project's .venv/bin/python")
    env = server_env(args)
    log_path = Path(args.log) if args.log else Path(tempfile.mkstemp(prefix="gc-load-", suffix=".log")[1])
    started = time.perf_counter()
    database_create(args)
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"], cwd=ROOT, env=env, check=True
    )
    password = secrets.token_urlsafe(16)
    job = {"patients": args.patients, "graders": args.graders, "wanted": args.wanted, "password": password}
    done = subprocess.run(
        [sys.executable, __file__, "--setup", json.dumps(job)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        sys.stderr.write(done.stdout + done.stderr)
        raise SystemExit("building the data failed")
    data = json.loads(done.stdout.splitlines()[-1])
    print(
        f"database {args.database}: migrated and built in {time.perf_counter() - started:.1f} s "
        f"({args.patients} patients, {args.graders} graders, {args.wanted} wanted, WHO grade type of "
        f"{data['fields']} fields)"
    )

    port = free_port()
    server = gunicorn_start(args, env, port, log_path)
    try:
        ready = gunicorn_wait(server, port, log_path)
        print(
            f"gunicorn: {args.workers} workers x {args.threads} threads on {HOST}:{port}, answering after "
            f"{ready:.1f} s; log {log_path}"
        )
        figures = load(args, port, data, password, server.pid)
    finally:
        gunicorn_stop(server)
    checks = database_check(args, env["DATABASE_URL"], data["study"], figures)
    return report(args, figures, checks, log_path)


def load(args, port: int, data: dict, password: str, server_pid: int) -> dict:
    stop = threading.Event()
    gate = StartGate(args.graders + 2, args.seconds)  # graders, the exporter, this thread
    graders = [
        Grader(port, data["study"], name, password, gate, stop, seed=n)
        for n, name in enumerate(data["graders"])
    ]
    exporter = Exporter(port, data["study"], data["member"], password, gate, stop, args.export_every)
    login_started = time.perf_counter()
    for client in [*graders, exporter]:
        client.start()
    try:
        deadline = gate.wait_start()
        logins = time.perf_counter() - login_started
        cpu_before = cpu_after = cpu_snapshot(server_pid, args.database)
        while any(g.is_alive() for g in graders) and time.monotonic() < deadline + TIMEOUT:
            next(g for g in graders if g.is_alive()).join(timeout=0.5)
            # Sampled as we go: PostgreSQL backends end when Django recycles connections (CONN_MAX_AGE).
            cpu_after = cpu_merged(cpu_after, cpu_snapshot(server_pid, args.database))
        graded = max((g.stats.finished_at or time.monotonic() for g in graders), default=time.monotonic())
    finally:
        stop.set()
        gate.barrier.abort()  # no-op once started; frees clients still waiting if we were interrupted
    exporter.join(timeout=TIMEOUT)
    stats = [g.stats for g in graders]
    return {
        "logins": logins,
        "seconds": graded - gate.started,
        "cpu": cpu_used(cpu_before, cpu_after),
        "graders": stats,
        "exporter": exporter.stats,
        "downloads": exporter.downloads,
        "accepted": {key: s for s in stats for key in s.accepted},
        "refused": {key for s in stats for key in s.refused},
        "unclassified": {key for s in stats for key in s.unclassified},
        "alive": [t.name for t in [*graders, exporter] if t.is_alive()],
    }


def database_check(args, url: str, study: int, figures: dict) -> dict:
    import psycopg2

    connection = psycopg2.connect(url)
    try:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT g.submission::text, g.kind FROM grading_grade g "
                "JOIN studies_patient p ON p.id = g.patient_id WHERE p.study_id = %s",
                [study],
            )
            grades = cursor.fetchall()
            cursor.execute(
                "SELECT count(*) FROM (SELECT 1 FROM grading_grade g"
                " JOIN studies_patient p ON p.id = g.patient_id"
                " WHERE p.study_id = %s AND g.kind = 'regular' AND g.is_current"
                " GROUP BY g.patient_id, g.grader_id, g.grade_type_id HAVING count(*) > 1) d",
                [study],
            )
            duplicates = cursor.fetchone()[0]
            cursor.execute(
                "SELECT count(*) FILTER (WHERE n > %s), count(*) FILTER (WHERE n = %s) FROM ("
                " SELECT p.id, count(DISTINCT g.grader_id) AS n FROM studies_patient p"
                " LEFT JOIN grading_grade g ON g.patient_id = p.id AND g.kind = 'regular' AND g.is_current"
                " WHERE p.study_id = %s GROUP BY p.id) c",
                [args.wanted, args.wanted, study],
            )
            over, complete = cursor.fetchone()
            cursor.execute(
                "SELECT key::text FROM grading_presentation"
                " WHERE outcome = 'refused' AND key::text = ANY(%s)",
                [list(figures["refused"] | figures["unclassified"])],
            )
            refused_in_db = {row[0] for row in cursor.fetchall()}
    finally:
        connection.close()
    saved = {key for key, _ in grades}
    accepted, refused = set(figures["accepted"]), figures["refused"]
    return {
        "grades": len(grades),
        "regular": sum(kind == "regular" for _, kind in grades),
        "repeat": sum(kind == "repeat" for _, kind in grades),
        "lost": len(accepted - saved),
        "refused_saved": len(refused & saved),
        "refused_unconfirmed": len(refused - refused_in_db),
        "unseen": len(saved - accepted),
        "unclassified_saved": len(figures["unclassified"] & saved),
        "unclassified_refused": len(figures["unclassified"] & refused_in_db),
        "duplicates": duplicates,
        "over": over,
        "complete": complete,
    }


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(share * len(ordered)) - 1))]


def row(label: str, value) -> None:
    print(f"{label:<19}{value}")


def report(args, figures: dict, checks: dict, log_path: Path) -> int:
    graders, exporter = figures["graders"], figures["exporter"]
    seconds = figures["seconds"]
    requests = sum(s.requests for s in graders) + exporter.requests
    errors = sum(s.errors for s in graders) + exporter.errors
    accepted, refused = len(figures["accepted"]), len(figures["refused"])
    latencies = [value * 1000 for s in graders for value in s.latencies]
    reasons: dict[str, int] = {}
    for s in graders:
        reasons[s.stop_reason or "time up"] = reasons.get(s.stop_reason or "time up", 0) + 1
    rate = accepted / seconds if seconds > 0 else 0.0
    downloads = figures["downloads"]
    cpu = figures["cpu"]
    cores = os.cpu_count() or 1
    ours = cpu["server"] + cpu["postgres"] + cpu["client"]
    tracebacks = log_path.read_text(errors="replace").count("Traceback") if log_path.exists() else 0

    print(f"sign-ins: {args.graders} graders and the exporter in {figures['logins']:.1f} s (not timed below)")
    print()
    row("graders", args.graders)
    row("patients", f"{args.patients} ({args.wanted} graders wanted each)")
    stopped = ", ".join(f"{n} {reason}" for reason, n in reasons.items())
    row("seconds", f"{seconds:.1f} of {args.seconds:g} (graders: {stopped})")
    reconnects = sum(s.reconnects for s in graders)
    row("requests", f"{requests} ({requests / seconds:.1f}/s; {reconnects} keep-alive reconnects)")
    row("errors", errors)
    row("saves accepted", accepted)
    row("refused", f"{refused} (the patient already had its graders)")
    if figures["unclassified"]:
        row("unclassified", f"{len(figures['unclassified'])} (POST redirected, no message seen)")
    row("waits", f"{sum(s.waits for s in graders)} (the patients left were on others' open pages)")
    row("grades per second", f"{rate:.1f}")
    if latencies:
        p50, p95 = percentile(latencies, 0.5), percentile(latencies, 0.95)
        row(
            "save POST", f"p50 {p50:.0f} ms, p95 {p95:.0f} ms, max {max(latencies):.0f} ms ({len(latencies)})"
        )
    for label, name in (("GET next", "next_latencies"), ("GET grading page", "page_latencies")):
        values = [value * 1000 for s in graders for value in getattr(s, name)]
        if values:
            p50, p95 = percentile(values, 0.5), percentile(values, 0.95)
            row(label, f"p50 {p50:.0f} ms, p95 {p95:.0f} ms, max {max(values):.0f} ms ({len(values)})")
    if downloads:
        median = statistics.median(d[0] for d in downloads) * 1000
        _, size, rows = downloads[-1]
        row(
            "exports",
            f"{len(downloads)} downloads, {exporter.errors} errors "
            f"(median {median:.0f} ms; the last {rows} rows, {size / 1024:.0f} KB)",
        )
    else:
        row("exports", f"0 downloads, {exporter.errors} errors")
    if accepted:
        server_ms, postgres_ms = (cpu[side] / accepted * 1000 for side in ("server", "postgres"))
        row(
            "CPU per grade",
            f"gunicorn {server_ms:.0f} ms, postgres {postgres_ms:.0f} ms "
            f"({requests / accepted:.1f} requests per grade)",
        )
    row(
        "CPU seconds",
        f"gunicorn {cpu['server']:.1f}, postgres {cpu['postgres']:.1f}, this client {cpu['client']:.1f}, "
        f"other processes {cpu['machine'] - ours:.1f}, idle {cpu['idle']:.1f}, stolen {cpu['steal']:.1f} "
        f"({cores} cores x {seconds:.0f} s)",
    )
    print()
    row("grades in DB", f"{checks['grades']} ({checks['regular']} regular, {checks['repeat']} repeat)")
    row("lost", f"{checks['lost']} (accepted saves without a grade)")
    row("refused yet saved", checks["refused_saved"])
    if checks["refused_unconfirmed"]:
        row("refused, not so", f"{checks['refused_unconfirmed']} (presentation not marked refused)")
    row("saved unseen", f"{checks['unseen']} (grades whose save no client saw accepted)")
    if figures["unclassified"]:
        row("unclassified", f"{checks['unclassified_saved']} saved, {checks['unclassified_refused']} refused")
    row("duplicates", checks["duplicates"])
    row("over-graded", checks["over"])
    row("patients complete", f"{checks['complete']} of {args.patients}")
    print()
    met = "met" if rate >= TARGET_GRADES_PER_SECOND else "MISSED"
    print(f"target {TARGET_GRADES_PER_SECOND} grades/s: {met}; server tracebacks in the log: {tracebacks}")
    samples = [sample for s in [*graders, exporter] for sample in s.samples][:10]
    if samples:
        print("first errors:")
        for sample in samples:
            print(f"  {sample[:400]}")
    if figures["alive"]:
        print(f"clients still running at the end: {', '.join(figures['alive'])}")
    failed = (
        errors
        or checks["lost"]
        or checks["duplicates"]
        or checks["over"]
        or checks["refused_saved"]
        or figures["alive"]
    )
    return 1 if failed else 0


if __name__ == "__main__":
    main()
