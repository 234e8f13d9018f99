from importlib import import_module

from django.apps import AppConfig
from django.contrib.admin import apps as admin_apps


class GradingConfig(AppConfig):
    default = True
    name = "grading"
    verbose_name = "Grading"

    def ready(self) -> None:
        from . import receivers  # noqa: F401  (keeps graders' queues complete)


class GradingCenterAdminConfig(admin_apps.AdminConfig):
    """The admin, with the grading pages hung off its URLs; every model's page is registered in
    admin_site.py, once each app's admin module (its parts) is loaded."""

    default = False
    default_site = "grading.sites.GradingCenterAdminSite"

    def ready(self) -> None:
        super().ready()  # loads each installed app's admin module
        import_module("admin_site")
