"""Every core at work for the embedded run: a pool of processes that prepares photos.

With TASKS_BACKEND=database each chunk of a field-day import is a task that
any `db_worker` process takes (`manage.py run_workers` starts TASK_WORKERS of
them; more can run on other machines). The embedded run has no worker: its
chunks go to a pool of IMPORT_PROCESSES processes in the web process (a
thread per process claims the chunk and records the result; the process does
the Pillow and storage work). The patient page's uploads use the same pool.
IMPORT_PROCESSES=0 prepares everything in the calling thread.
"""

import json
import logging
import multiprocessing
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

import django
from django.conf import settings
from django.db import connections

from . import chunks
from .pipeline import ImageRefused, PreparedImage, image_prepare

logger = logging.getLogger(__name__)

_lock = threading.Lock()
_processes: ProcessPoolExecutor | None = None
_threads: ThreadPoolExecutor | None = None


def _child_start(settings_module: str) -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", settings_module)
    django.setup()
    threading.Thread(target=_exit_with_parent, args=(os.getppid(),), daemon=True).start()


def _exit_with_parent(parent: int) -> None:
    """A pool process outlives a killed web process (its siblings keep the work queue open): it checks."""
    while os.getppid() == parent:
        time.sleep(1)
    os._exit(0)


def _pool() -> ProcessPoolExecutor | None:
    """The process pool, started on first use; None when IMPORT_PROCESSES is 0."""
    global _processes
    if settings.IMPORT_PROCESSES <= 0:
        return None
    with _lock:
        if _processes is None:
            _processes = ProcessPoolExecutor(
                max_workers=settings.IMPORT_PROCESSES,
                # spawn, not fork: the web process has threads, and a fork copies their held locks
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_child_start,
                initargs=(os.environ.get("DJANGO_SETTINGS_MODULE", "settings.dev"),),
            )
        return _processes


def _pool_reset(broken: ProcessPoolExecutor) -> None:
    global _processes
    with _lock:
        if _processes is broken:
            _processes = None
    broken.shutdown(wait=False, cancel_futures=True)


def _in_pool(function: Callable, argument):
    """Run `function(argument)` in the pool; a pool whose process died is replaced for the next call."""
    pool = _pool()
    if pool is None:
        return function(argument)
    try:
        return pool.submit(function, argument).result()
    except BrokenProcessPool:
        logger.error("A pool process died; starting a new pool for the next work")
        _pool_reset(pool)
        raise


def _with_context(spec: dict) -> dict:
    """A chunk's spec with what a pool process needs to know of this process's settings."""
    return {
        **spec,
        "settings": chunks.spec_settings(),
        "storage": json.dumps(settings.STORAGES["default"], default=str, sort_keys=True),
    }


def uses_pool() -> bool:
    """Whether chunks go to this process's pool rather than to `db_worker` tasks."""
    from django_tasks.backends.immediate import ImmediateBackend

    from .tasks import image_import_chunk_task

    return settings.IMPORT_PROCESSES > 0 and isinstance(
        image_import_chunk_task.get_backend(), ImmediateBackend
    )


def warm() -> None:
    """Start the pool's processes ahead of the work (each takes about a second to start), without waiting."""
    if not uses_pool():
        return
    pool = _pool()
    for _ in range(settings.IMPORT_PROCESSES):
        pool.submit(os.getpid)


def chunks_dispatch(chunk_ids: list[int]) -> None:
    """Hand ready chunks to the pool (embedded run) or queue them for the `db_worker` processes."""
    from .tasks import image_import_chunk_task

    if not uses_pool():
        for chunk_id in chunk_ids:
            image_import_chunk_task.enqueue(chunk_id)
        return
    global _threads
    with _lock:
        if _threads is None:
            _threads = ThreadPoolExecutor(
                max_workers=settings.IMPORT_PROCESSES, thread_name_prefix="gc-chunk"
            )
    for chunk_id in chunk_ids:
        _threads.submit(_chunk_run, chunk_id)


def _chunk_run(chunk_id: int) -> None:
    from .services import image_import_chunk_process

    try:
        image_import_chunk_process(
            chunk_id=chunk_id, prepare=lambda spec: _in_pool(chunks.chunk_prepare, _with_context(spec))
        )
    except Exception:
        logger.exception("Chunk %s could not be processed", chunk_id)
    finally:
        connections.close_all()  # this thread's own connections


def _prepare_file(job: tuple[str, str, str, dict]) -> PreparedImage | str:
    """Prepare one uploaded file (pool side); a refusal comes back as its reason."""
    path, name, workdir, limits = job
    for setting, value in limits.items():
        setattr(settings, setting, value)
    try:
        with open(path, "rb") as source:
            return image_prepare(source, name=name, workdir=Path(workdir))
    except ImageRefused as refused:
        return str(refused)


def files_prepare(files: list[tuple[str, Path]], *, workdir: Path) -> list[PreparedImage | str]:
    """Prepare uploaded files (name, path on disk) on every core; each gives its photo or its refusal."""
    jobs = [(str(path), name, str(workdir), chunks.spec_settings()) for name, path in files]
    pool = _pool() if len(jobs) > 1 else None
    if pool is None:
        return [_prepare_file(job) for job in jobs]
    try:
        return list(pool.map(_prepare_file, jobs))
    except BrokenProcessPool:
        _pool_reset(pool)
        raise
