"""The Grading Center's URLs: the admin (with its grading pages), accounts, private files."""

from django.contrib.auth import views as auth_views
from django.urls import include, path

import site_pages
from accounts import views as accounts_views
from admin_site import site as admin_site
from studies.views import stored_file

# The error pages in the admin's look; a 500 is Django's own handler with templates/500.html.
handler403 = site_pages.permission_denied
handler404 = site_pages.page_not_found

urlpatterns = [
    path(
        "admin/password_reset/",
        accounts_views.PasswordResetView.as_view(),
        name="admin_password_reset",
    ),
    path("admin/", admin_site.urls),  # every model's page: admin_site.py
    path("accounts/", include("accounts.urls")),
    path("api/", include("exports.urls")),
    path(
        "accounts/password-reset/done/",
        auth_views.PasswordResetDoneView.as_view(),
        name="password_reset_done",
    ),
    path(
        "accounts/reset/<uidb64>/<token>/",
        auth_views.PasswordResetConfirmView.as_view(),
        name="password_reset_confirm",
    ),
    path(
        "accounts/reset/done/",
        auth_views.PasswordResetCompleteView.as_view(),
        name="password_reset_complete",
    ),
    path("files/<path:key>", stored_file, name="stored_file"),
    path("healthz/", site_pages.Health.as_view(), name="healthz"),  # database and storage
    path("livez/", site_pages.livez, name="livez"),  # the process alone
]
