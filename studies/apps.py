from django.apps import AppConfig
from django.db.models.signals import post_migrate


class StudiesConfig(AppConfig):
    name = "studies"
    verbose_name = "Studies"

    def ready(self) -> None:
        from .tasks import storage_sweep_schedule_after_migrate

        post_migrate.connect(storage_sweep_schedule_after_migrate, sender=self)
