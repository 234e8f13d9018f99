from django.apps import AppConfig
from django.contrib.admin import apps as admin_apps


class GradingConfig(AppConfig):
    default = True
    name = "grading"
    verbose_name = "Grading"

    def ready(self) -> None:
        from . import receivers  # noqa: F401  (keeps graders' queues complete)


class GradingCenterAdminConfig(admin_apps.AdminConfig):
    """The admin, with the grading pages hung off its URLs."""

    default = False
    default_site = "grading.sites.GradingCenterAdminSite"
