"""Pages of the whole site that belong to no app: health, liveness, and the error pages in the admin's look.

The 500 page is Django's own handler rendering templates/500.html with no context: it must show when
the database (or anything a request context needs) is what failed.
"""

import dataclasses

from django.contrib import admin
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import Resolver404
from django.views.decorators.cache import never_cache
from health_check import checks
from health_check.exceptions import ServiceUnavailable
from health_check.views import HealthCheckView


@dataclasses.dataclass
class Database(checks.Database):
    """The library's check, saying only "unreachable" on a public page: the driver's message names the
    database host and port (the log keeps it)."""

    def run(self):
        try:
            super().run()
        except ServiceUnavailable as error:
            raise ServiceUnavailable("unreachable") from error


class Health(HealthCheckView):
    """Ready to serve: the database answers and the default storage (local or S3) writes, reads and deletes a
    small file. 503 when either fails, so a load balancer or Docker takes the server out of rotation."""

    checks = (Database, checks.Storage)

    async def get(self, request, *args, **kwargs):
        response = await super().get(request, *args, **kwargs)
        if response.status_code == 500:  # the library's "a check failed": not a crash of this server
            response.status_code = 503
        return response


@never_cache
def livez(request: HttpRequest) -> HttpResponse:
    """The process answers: no database, no storage (restarting the process would not mend those)."""
    return HttpResponse("ok", content_type="text/plain")


def permission_denied(request: HttpRequest, exception=None) -> HttpResponse:
    return _error_page(request, "403.html", 403, title="Not allowed", reason=_reason(exception))


def page_not_found(request: HttpRequest, exception=None) -> HttpResponse:
    reason = None if isinstance(exception, Resolver404) else _reason(exception)
    return _error_page(request, "404.html", 404, title="Page not found", reason=reason)


def _error_page(request: HttpRequest, template: str, status: int, **context) -> HttpResponse:
    """Staff see the page inside the admin (sidebar, menus); anyone else on the sign-in page's card."""
    staff = hasattr(request, "user") and admin.site.has_permission(request)
    if staff:
        context = {**admin.site.each_context(request), **context, "base_template": "admin/base_site.html"}
    else:
        context = {**context, "base_template": "registration/base.html"}
    return render(request, template, context, status=status)


def _reason(exception) -> str | None:
    """The message a view gave (they are written for the person who opened the page), if any."""
    message = exception.args[0] if exception is not None and exception.args else None
    return message if isinstance(message, str) and message else None
