"""Field-day import benchmark: the whole import over HTTP against the bare Pillow pipeline.

    .venv/bin/python bench/import.py [--count 1000] [--size 1600x1200] [--s3]
        [--setups database,embedded] [--sources zip,folder] [--scaling] [--repeat N]

Builds N eyelid-like JPEGs with sensor-like noise (500 patients x 2 eyes for
1,000) in a temporary folder and as a ZIP of that folder, then:

1. the floor: the bare per-photo work on one core, in this process, over the
   same files: read, SHA-256, decode (draft mode), thumbnail, JPEG encode,
   and two file writes; timed at the start, and again just before each
   import, whose ratio is against that paired floor (this machine's speed
   drifts by 10 % and more within minutes);
2. the field-day import end to end, as the import page does it (the page
   opened, 3 s to pick the files, then start, the parts three at a time as
   request bodies with the ZIP's last part first, finish, the status until
   done), timed from the first byte to "done", with every server process
   warmed by a request for the import page first:
   - database: gunicorn (3 workers) + PostgreSQL (a throwaway database) +
     `manage.py run_workers` (TASK_WORKERS = the machine's cores);
   - embedded: `manage.py runserver` on SQLite, the immediate task backend and
     the IMPORT_PROCESSES pool, as `make run` runs it;
   with --s3 the photos go to a SeaweedFS S3 server started for the run;
3. with --scaling: database setup, the parts uploaded with no worker running,
   then one worker pinned to one core, then two workers pinned to one core
   each, each timed from its start to "done": the throughput ratio.

Prints for each import (the median of --repeat runs): seconds, photos per second, the ratio
`import time / (floor time / cores)`, the upload's share, and the peak memory
(VmHWM) of every server process. The project's goals: a ratio of at most 1.3
for the ZIP and 1.5 for the folder at 1,000 photos, memory flat from 1,000 to
5,000 photos, S3 at most 1.3x local disk, and two workers at least 1.6x one.
"""

import argparse
import hashlib
import io
import json
import multiprocessing
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
from pathlib import Path

PROJECT = Path(__file__).resolve().parent.parent
if str(PROJECT) not in sys.path:
    sys.path.insert(0, str(PROJECT))
PYTHON = sys.executable
MB = 1024 * 1024
PG_DATABASE = "gc_bench_import"
PICKING_SECONDS = 3  # between opening the import page and starting the upload: a user picking the files
PG_URL = f"postgres://postgres@127.0.0.1:5432/{PG_DATABASE}"


# Photos ----------------------------------------------------------------------


def _make_photo(job: tuple[int, str, tuple[int, int]]) -> tuple[str, int]:
    from PIL import Image, ImageChops

    from studies.demo import eyelid_photo

    index, folder, size = job
    with Image.open(io.BytesIO(eyelid_photo(seed=index, size=size, quality=95))) as base:
        noise = Image.effect_noise(size, 3).convert("RGB")
        photo = ImageChops.add(
            base.convert("RGB"), ImageChops.offset(noise, index * 7919, index * 104729), 1.0, -128
        )
    patient, eye = divmod(index, 2)
    path = Path(folder) / f"P{patient + 1:05d}" / ("R" if eye == 0 else "L") / f"IMG_{index:05d}.jpg"
    path.parent.mkdir(parents=True, exist_ok=True)
    photo.save(path, "JPEG", quality=80)
    return str(path), path.stat().st_size


def photos_build(count: int, size: tuple[int, int], root: Path) -> tuple[Path, Path, list[Path]]:
    folder = root / "field-day"
    with multiprocessing.get_context("spawn").Pool() as pool:
        made = pool.map(_make_photo, [(index, str(folder), size) for index in range(count)], chunksize=8)
    paths = [Path(path) for path, _ in made]
    archive = root / "field-day.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED, compresslevel=6) as out:
        for path in paths:
            out.write(path, path.relative_to(root).as_posix())
    return folder, archive, paths


def floor_seconds(paths: list[Path], workdir: Path) -> float:
    """The bare per-photo work on one core: what an import cannot do without."""
    from PIL import Image

    started = time.perf_counter()
    for number, path in enumerate(paths):
        data = path.read_bytes()
        hashlib.sha256(data).hexdigest()
        with Image.open(io.BytesIO(data)) as picture:
            picture.draft("RGB", (400, 400))
            picture.load()
            picture.thumbnail((400, 400))
            out = io.BytesIO()
            picture.save(out, "JPEG", quality=85)
        (workdir / f"{number}.jpg").write_bytes(data)
        (workdir / f"{number}-t.jpg").write_bytes(out.getvalue())
    return time.perf_counter() - started


# Servers ---------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _manage(env: dict, *args: str, capture: bool = False) -> str:
    answer = subprocess.run(
        [PYTHON, "manage.py", *args], cwd=PROJECT, env=env, check=True, capture_output=True, text=True
    )
    return answer.stdout if capture else ""


SESSION_SCRIPT = """
from django.contrib.auth import get_user_model
from django.contrib.sessions.backends.db import SessionStore
user, _ = get_user_model().objects.get_or_create(
    username="bench", defaults={"is_staff": True, "is_superuser": True}
)
session = SessionStore()
session["_auth_user_id"] = str(user.pk)
session["_auth_user_backend"] = "django.contrib.auth.backends.ModelBackend"
session["_auth_user_hash"] = user.get_session_auth_hash()
session.create()
from studies.models import Region, Study
region, _ = Region.objects.get_or_create(name="Bench")
study = Study.objects.create(name=f"Bench {Study.objects.count() + 1}", region=region)
print(session.session_key, study.pk)
"""


class Setup:
    """A running server (and its workers) that the client imports into."""

    def __init__(self, name: str, root: Path, storage_env: dict, workers: int | None):
        self.name = name
        self.root = root
        self.port = _free_port()
        self.processes: list[subprocess.Popen] = []
        self.worker_count = 0
        self.log_name = f"{name}-{self.port}"  # logs of this setup only
        env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "settings.dev",
            "DJANGO_DEBUG": "false",
            "DJANGO_ALLOWED_HOSTS": "127.0.0.1",
            "MEDIA_ROOT": str(root / f"media-{name}"),
            **storage_env,
        }
        if name == "database":
            env |= {"DATABASE_URL": PG_URL, "TASKS_BACKEND": "database"}
            subprocess.run(
                ["dropdb", "-h", "127.0.0.1", "-U", "postgres", "--if-exists", PG_DATABASE], check=True
            )
            subprocess.run(["createdb", "-h", "127.0.0.1", "-U", "postgres", PG_DATABASE], check=True)
        else:
            env |= {"DATABASE_URL": f"sqlite:///{root / 'embedded.sqlite3'}", "TASKS_BACKEND": "immediate"}
        self.env = env
        _manage(env, "migrate", "--noinput")
        output = _manage(env, "shell", "-c", SESSION_SCRIPT, capture=True)
        self.session, self.study = output.strip().splitlines()[-1].split()
        log = open(root / f"{self.log_name}-server.log", "ab")
        if name == "database":
            command = [
                PYTHON, "-m", "gunicorn", "wsgi:application", "--bind", f"127.0.0.1:{self.port}",
                "--workers", "3", "--timeout", "120",
            ]  # fmt: skip
        else:
            command = [PYTHON, "manage.py", "runserver", "--noreload", f"127.0.0.1:{self.port}"]
        self.processes.append(subprocess.Popen(command, cwd=PROJECT, env=env, stdout=log, stderr=log))
        if name == "database" and workers:
            self.workers_start(workers)
        self._wait_ready()

    def workers_start(self, count: int, pin: bool = False) -> subprocess.Popen:
        self.worker_count += count
        log = open(self.root / f"{self.log_name}-workers.log", "ab")
        process = subprocess.Popen(
            [PYTHON, "manage.py", "run_workers", "--workers", str(count), "--interval", "0.1"],
            cwd=PROJECT, env=self.env, stdout=log, stderr=log,
        )  # fmt: skip
        self.processes.append(process)
        if pin:  # each db_worker on a core of its own
            deadline = time.time() + 30
            while len(children := _children(process.pid)) < count and time.time() < deadline:
                time.sleep(0.05)
            for core, child in enumerate(sorted(children)):
                os.sched_setaffinity(child, {core % os.cpu_count()})
        return process

    def _wait_ready(self) -> None:
        """Every server process has loaded the app (a request each), and every worker is polling."""
        import urllib3

        http = urllib3.PoolManager(maxsize=8)
        deadline = time.time() + 120
        while time.time() < deadline:
            try:
                if http.request("GET", f"http://127.0.0.1:{self.port}/livez/", timeout=5).status == 200:
                    break
            except urllib3.exceptions.HTTPError:
                time.sleep(0.2)
        else:
            log = self.root / f"{self.log_name}-server.log"
            raise RuntimeError(f"{self.name} server did not start; see {log}")
        # Every server process has served the import page once, as a server that has been up for a while
        # has: the admin's modules are loaded, its URLs compiled (several requests at once reach each).
        page = f"http://127.0.0.1:{self.port}/admin/studies/study/{self.study}/import/"
        headers = {"Cookie": f"sessionid={self.session}"}
        threads = [
            threading.Thread(target=http.request, args=("GET", page), kwargs={"headers": headers})
            for _ in range(12)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        self.workers_ready()

    def workers_ready(self) -> None:
        """Every db_worker started has begun its loop (it logs "Starting worker")."""
        log = self.root / f"{self.log_name}-workers.log"
        deadline = time.time() + 120
        while self.worker_count and time.time() < deadline:
            if log.read_text().count("Starting worker") >= self.worker_count:
                return
            time.sleep(0.05)

    def peak_memory(self) -> dict[str, float]:
        """VmHWM (peak resident memory) of every process of the setup, in MB."""
        peaks = {}
        for top in self.processes:
            for pid in [top.pid, *_descendants(top.pid)]:
                try:
                    status = Path(f"/proc/{pid}/status").read_text()
                    command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()[:60]
                except OSError:
                    continue
                for line in status.splitlines():
                    if line.startswith("VmHWM:"):
                        peaks[f"{pid} {command.strip()}"] = int(line.split()[1]) / 1024
        return peaks

    def cpu_seconds(self) -> dict[str, float]:
        """CPU time used so far: the web server, the workers (db_workers or the pool), PostgreSQL, S3."""
        tick = os.sysconf("SC_CLK_TCK")
        used = {"web": 0.0, "workers": 0.0, "postgres": 0.0, "s3": 0.0}
        web, *workers = self.processes
        roles = {pid: "web" for pid in [web.pid, *_descendants(web.pid)]}
        for top in workers:
            roles |= {pid: "workers" for pid in [top.pid, *_descendants(top.pid)]}
        if self.name == "embedded":  # the pool's processes are the web process's children
            roles |= {pid: "workers" for pid in _descendants(web.pid)}
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
                name = stat.read_text().split("(", 1)[1].split(")", 1)[0]
            except OSError:
                continue
            pid = int(stat.parent.name)
            servers = {"weed": "s3"} | ({name: "postgres"} if name.startswith("postgres") else {})
            role = roles.get(pid) or servers.get(name)
            if role:
                used[role] += (int(fields[11]) + int(fields[12])) / tick
        return used

    def stop(self) -> None:
        for process in reversed(self.processes):
            process.send_signal(signal.SIGTERM)
        for process in self.processes:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()


def _children(pid: int) -> list[int]:
    """Children of every thread of `pid` (a pool started from a thread is that thread's child)."""
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            found += [int(child) for child in (task / "children").read_text().split()]
        except OSError:
            continue
    return found


def _descendants(pid: int) -> list[int]:
    found = []
    for child in _children(pid):
        found += [child, *_descendants(child)]
    return found


# The client: what the import page's script does ------------------------------


class Client:
    def __init__(self, setup: Setup):
        import urllib3

        self.base = f"http://127.0.0.1:{setup.port}"
        self.http = urllib3.PoolManager(maxsize=8, timeout=urllib3.Timeout(connect=10, read=300))
        self.csrf = "b" * 32
        self.headers = {
            "Cookie": f"sessionid={setup.session}; csrftoken={self.csrf}",
            "X-CSRFToken": self.csrf,
            "Referer": self.base + "/admin/",
        }

    def post_json(self, path: str, body: dict) -> dict:
        answer = self.http.request(
            "POST", self.base + path, body=json.dumps(body).encode(),
            headers={**self.headers, "Content-Type": "application/json"},
        )  # fmt: skip
        if answer.status >= 300:
            raise RuntimeError(f"{path}: {answer.status} {answer.data[:300]!r}")
        return json.loads(answer.data)

    def get_json(self, path: str) -> dict:
        return json.loads(self.http.request("GET", self.base + path, headers=self.headers).data)

    def send_part(self, url: str, index: int, data: bytes) -> list[int]:
        """Send one part; return the parts the server wants next (the rest of a ZIP's directory)."""
        answer = self.http.request(
            "POST", f"{self.base}{url}?part_index={index}", body=data,
            headers={**self.headers, "Content-Type": "application/octet-stream"},
        )  # fmt: skip
        if answer.status != 200:
            raise RuntimeError(f"part {index}: {answer.status} {answer.data[:300]!r}")
        return json.loads(answer.data).get("wanted", [])

    def open_page(self, study: str) -> None:
        """Open the import page, as a user does before picking the files (the embedded pool starts)."""
        answer = self.http.request(
            "GET", f"{self.base}/admin/studies/study/{study}/import/", headers=self.headers
        )
        if answer.status != 200:
            raise RuntimeError(f"import page: {answer.status}")

    def import_files(
        self, study: str, source: str, files: list[tuple[str, Path]], finish: bool = True
    ) -> dict:
        """Upload and (with `finish`) wait for "done"; returns the timings."""
        started = time.perf_counter()
        opened = self.post_json(
            f"/admin/studies/study/{study}/import/start/",
            {
                "source": source,
                "files": [{"path": name, "size": path.stat().st_size} for name, path in files],
            },
        )
        space = _UploadSpace(files)
        order = opened["parts_first"] + [
            p for p in range(opened["parts_total"]) if p not in opened["parts_first"]
        ]
        queue = list(reversed(order))
        lock = threading.Lock()
        errors: list[Exception] = []

        def sender() -> None:
            while True:
                with lock:
                    if not queue or errors:
                        return
                    index = queue.pop()
                try:
                    data = space.read(index * opened["part_bytes"], opened["part_bytes"])
                    wanted = self.send_part(opened["part_url"], index, data)
                except Exception as error:
                    errors.append(error)
                    continue
                with lock:  # the queue pops from its end: wanted parts go there
                    for part in wanted:
                        if part in queue:
                            queue.remove(part)
                            queue.append(part)

        senders = [threading.Thread(target=sender) for _ in range(3)]
        for thread in senders:
            thread.start()
        for thread in senders:
            thread.join()
        if errors:
            raise errors[0]
        uploaded = time.perf_counter()
        if not finish:
            return {"opened": opened, "upload": uploaded - started}
        self.post_json(opened["finish_url"], {})
        status = self.wait(opened["status_url"])
        done = time.perf_counter()
        return {"seconds": done - started, "upload": uploaded - started, "status": status, "opened": opened}

    def wait(self, status_url: str) -> dict:
        while True:
            status = self.get_json(status_url)
            if status["finished"]:
                if status["status"] != "done":
                    raise RuntimeError(f"import refused: {status['errors'][:3]}")
                return status
            time.sleep(0.25)  # as the page's script, once the upload is over


class _UploadSpace:
    """The files one after the other, as the page's script slices them."""

    def __init__(self, files: list[tuple[str, Path]]):
        self.files = []
        offset = 0
        for _, path in files:
            size = path.stat().st_size
            self.files.append((offset, size, path))
            offset += size

    def read(self, start: int, length: int) -> bytes:
        end, pieces = start + length, []
        for offset, size, path in self.files:
            if offset + size <= start or offset >= end:
                continue
            with open(path, "rb") as source:
                source.seek(max(start, offset) - offset)
                pieces.append(source.read(min(end, offset + size) - max(start, offset)))
        return b"".join(pieces)


# The runs --------------------------------------------------------------------


def run(args) -> int:
    cores = os.cpu_count() or 1
    size = tuple(int(side) for side in args.size.split("x"))
    root = Path(tempfile.mkdtemp(prefix="gc-bench-import-"))
    weed = None
    try:
        print(f"Building {args.count} photos of {size[0]}x{size[1]} in {root} ...", flush=True)
        folder, archive, paths = photos_build(args.count, size, root)
        total = sum(path.stat().st_size for path in paths)
        print(f"  {args.count} photos, {total / MB:.0f} MB; ZIP {archive.stat().st_size / MB:.0f} MB")
        floor_dir = root / "floor"
        floor_dir.mkdir()
        floor = min(floor_seconds(paths, floor_dir) for _ in range(2))
        shutil.rmtree(floor_dir)
        print(f"Floor (bare Pillow pipeline, one core): {floor:.2f} s, {args.count / floor:.0f} photos/s; "
              f"on {cores} cores at best {floor / cores:.2f} s")  # fmt: skip

        storage_env: dict = {}
        if args.s3:
            from tests.s3server import start_weed, weed_binary

            weed, server = start_weed(weed_binary(), root / "weed")
            storage_env = {
                "S3_BUCKET": server.bucket,
                "S3_ENDPOINT_URL": server.endpoint_url,
                "S3_REGION": server.region,
                "S3_ACCESS_KEY_ID": server.access_key,
                "S3_SECRET_ACCESS_KEY": server.secret_key,
                "S3_PREFIX": "bench",
            }
            print(f"Storage: S3 on SeaweedFS at {server.endpoint_url}")
        else:
            print("Storage: local disk")

        inputs = {
            "zip": [(archive.name, archive)],
            "folder": [(path.relative_to(folder.parent).as_posix(), path) for path in paths],
        }
        goals = {"zip": 1.3, "folder": 1.5}
        print()
        print(
            "Each import is paired with a floor timed just before it, on the same machine in the same state;"
        )
        print(f"ratio = seconds / (that floor / {cores} cores). With --repeat, the median run and the range.")
        print()
        print(f"{'setup':<10} {'source':<7} {'seconds':>8} {'photos/s':>9} {'floor':>6} {'ratio':>6} "
              f"{'goal':>5} {'upload':>7}  peak memory per process (MB)")  # fmt: skip
        floor_dir = root / "floor"
        for name in args.setups.split(","):
            for source in args.sources.split(","):
                runs = []
                for _ in range(args.repeat):
                    floor_dir.mkdir()
                    paired_floor = floor_seconds(paths, floor_dir)
                    shutil.rmtree(floor_dir)
                    setup = Setup(name, root, storage_env, workers=cores)
                    try:
                        client = Client(setup)
                        client.open_page(setup.study)
                        time.sleep(PICKING_SECONDS)
                        cpu_before = setup.cpu_seconds()
                        timing = client.import_files(setup.study, source, inputs[source])
                        cpu_after = setup.cpu_seconds()
                        peaks = setup.peak_memory()
                    finally:
                        setup.stop()
                    cpu = {role: cpu_after[role] - cpu_before[role] for role in cpu_after}
                    ratio = timing["seconds"] / (paired_floor / cores)
                    runs.append((ratio, timing, paired_floor, cpu, peaks))
                runs.sort(key=lambda run: run[0])
                ratio, timing, paired_floor, cpu, peaks = runs[len(runs) // 2]
                seconds = timing["seconds"]
                memory = ", ".join(f"{value:.0f}" for value in sorted(peaks.values(), reverse=True))
                share = timing["upload"] / seconds
                print(
                    f"{name:<10} {source:<7} {seconds:8.2f} {args.count / seconds:9.0f} {paired_floor:6.2f} "
                    f"{ratio:6.2f} {goals[source]:5.1f} {share:6.0%}  [{memory}]",
                    flush=True,
                )
                if len(runs) > 1:
                    print(
                        f"{'':<18} ratios of the {len(runs)} runs: "
                        + ", ".join(f"{run[0]:.2f}" for run in runs)
                    )
                workers = f"workers {cpu['workers']:.1f} ({cpu['workers'] / paired_floor:.2f}x the floor)"
                print(
                    f"{'':<18} CPU seconds: {workers}, web {cpu['web']:.1f}, PostgreSQL {cpu['postgres']:.1f}"
                    + (f", S3 server {cpu['s3']:.1f}" if args.s3 else "")
                )

        if args.scaling:
            print()
            print("Workers: the parts uploaded first, then the workers started, each pinned to a core")
            rates = {}
            for count in (1, 2):
                setup = Setup("database", root, storage_env, workers=None)
                try:
                    client = Client(setup)
                    opened = client.import_files(setup.study, "zip", inputs["zip"], finish=False)["opened"]
                    client.post_json(opened["finish_url"], {})
                    setup.workers_start(count, pin=True)
                    setup.workers_ready()
                    started = time.perf_counter()
                    client.wait(opened["status_url"])
                    seconds = time.perf_counter() - started
                finally:
                    setup.stop()
                rates[count] = args.count / seconds
                print(f"  {count} worker(s): {seconds:.2f} s, {rates[count]:.0f} photos/s")
            print(f"  two workers / one: {rates[2] / rates[1]:.2f}x (goal at least 1.6x)")
    finally:
        if weed is not None:
            weed.stop()
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
        subprocess.run(
            ["dropdb", "-h", "127.0.0.1", "-U", "postgres", "--if-exists", PG_DATABASE], check=False
        )
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--size", default="1600x1200", help="photo size, e.g. 4000x3000 for 12 MP")
    parser.add_argument(
        "--s3", action="store_true", help="store in a SeaweedFS S3 server started for the run"
    )
    parser.add_argument("--setups", default="database,embedded")
    parser.add_argument("--sources", default="zip,folder")
    parser.add_argument("--scaling", action="store_true", help="also time one worker against two")
    parser.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="runs of each import (each with its own floor); the median is shown",
    )
    parser.add_argument("--keep", action="store_true", help="keep the photos and logs")
    return run(parser.parse_args())


if __name__ == "__main__":
    sys.exit(main())
