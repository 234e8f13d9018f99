"""Remove abandoned field-day uploads and stored files that no row refers to."""

from datetime import timedelta

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from studies.services import storage_sweep
from studies.tasks import storage_sweep_schedule


class Command(BaseCommand):
    help = (
        "Remove the parts of field-day imports abandoned while uploading, and files under images/, "
        "thumbnails/ and imports/ that no photo or import in progress refers to."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--dry-run", action="store_true", help="List what would be removed; change nothing."
        )
        parser.add_argument(
            "--older-than",
            type=float,
            default=settings.STORAGE_SWEEP_AFTER_HOURS,
            metavar="HOURS",
            help="Only imports idle and files written this long ago (default: STORAGE_SWEEP_AFTER_HOURS, "
            "%(default)s).",
        )
        parser.add_argument(
            "--schedule",
            action="store_true",
            help="Instead of sweeping now, queue the worker's periodic sweep (TASKS_BACKEND=database).",
        )

    def handle(self, *, dry_run: bool, older_than: float, schedule: bool, **options):
        if schedule:
            queued = storage_sweep_schedule()
            self.stdout.write(
                f"Queued the storage sweep for {settings.STORAGE_SWEEP_EVERY_HOURS} hours from now."
                if queued
                else "Not queued: one is waiting already, the task backend cannot run tasks later, "
                "or STORAGE_SWEEP_EVERY_HOURS is 0."
            )
            return
        if older_than < 0:
            raise CommandError("--older-than takes a number of hours, 0 or more.")
        sweep = storage_sweep(older_than=timedelta(hours=older_than), dry_run=dry_run)
        would = "Would " if dry_run else ""
        for pk in sweep.abandoned_imports:
            self.stdout.write(f"{would}{'mark' if dry_run else 'Marked'} import #{pk} abandoned")
        for key in sweep.removed:
            self.stdout.write(f"{would}{'remove' if dry_run else 'Removed'} {key}")
        for key in sweep.not_removed:
            self.stderr.write(f"Could not remove {key}")
        self.stdout.write(
            f"{would}{'remove' if dry_run else 'Removed'} {len(sweep.removed)} stored file(s); "
            f"{len(sweep.abandoned_imports)} abandoned import(s)."
        )
        if sweep.not_removed:
            raise CommandError(f"{len(sweep.not_removed)} file(s) could not be removed; see above.")
