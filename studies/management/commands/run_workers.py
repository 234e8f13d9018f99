"""Start TASK_WORKERS `db_worker` processes on this machine and keep them running.

    python manage.py run_workers [--workers N] [--interval SECONDS]

Each worker takes one task at a time from the database queue, so N workers
prepare N chunks of a field-day import at once. Workers on other machines
share the same queue: run this command (or `db_worker`) on each of them.
A worker that exits is started again; SIGTERM or Ctrl-C stops them all.
"""

import signal
import subprocess
import sys
import time

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError


class Command(BaseCommand):
    help = "Run TASK_WORKERS database task workers (field-day import chunks, the storage sweep)."

    def add_arguments(self, parser):
        parser.add_argument("--workers", type=int, default=None, help="How many (default: TASK_WORKERS).")
        parser.add_argument(
            "--interval", type=float, default=0.2, help="Seconds an idle worker waits before looking again."
        )

    def handle(self, *args, workers: int | None, interval: float, **options):
        if settings.TASKS["default"]["BACKEND"] != "django_tasks_db.DatabaseBackend":
            raise CommandError("Set TASKS_BACKEND=database: the embedded run prepares imports itself.")
        count = workers if workers is not None else settings.TASK_WORKERS
        if count < 1:
            raise CommandError("--workers must be at least 1.")
        manage = str(settings.BASE_DIR / "manage.py")
        command = [
            sys.executable,
            manage,
            "db_worker",
            "--no-reload",
            "--interval",
            str(interval),
            "--queue-name",
            "*",
        ]
        stopping = False

        def stop(signum, frame):
            nonlocal stopping
            stopping = True

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        running = [subprocess.Popen(command) for _ in range(count)]
        self.stdout.write(f"{count} worker(s) started: {', '.join(str(p.pid) for p in running)}")
        try:
            while not stopping:
                for index, process in enumerate(running):
                    if process.poll() is not None:
                        self.stderr.write(
                            f"Worker {process.pid} exited ({process.returncode}); starting another."
                        )
                        running[index] = subprocess.Popen(command)
                time.sleep(1)
        finally:
            for process in running:
                process.terminate()
            for process in running:
                try:
                    process.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    process.kill()
            self.stdout.write("Workers stopped.")
