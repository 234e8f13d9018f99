"""The accounts admin's part: the users list with each user's roles.

Nothing is registered here: admin_site.py registers the users page, adding exports' API tokens action.
"""

from django.contrib import admin
from django.contrib.auth.admin import UserAdmin
from django.db.models import Prefetch
from django.utils.html import format_html_join

from . import roles

ROLE_NAMES = [
    roles.STUDY_ADMINISTRATORS, roles.IMAGE_COLLECTORS, roles.GRADERS, roles.ADJUDICATORS, roles.DATA_TEAM,
]  # fmt: skip


class UserAdminBase(UserAdmin):
    """Users with their roles; only superusers grant superuser status or edit superusers."""

    list_display = ["username", "full_name", "email", "roles", "is_staff", "is_active", "last_login"]

    def get_queryset(self, request):
        from django.contrib.auth.models import Group

        groups = Prefetch("groups", queryset=Group.objects.order_by("name"))
        return super().get_queryset(request).prefetch_related(groups)

    @admin.display(description="name", ordering="last_name")
    def full_name(self, user) -> str:
        return user.get_full_name() or "-"

    @admin.display(description="roles")
    def roles(self, user):
        names = [group.name for group in user.groups.all()]
        if user.is_superuser:
            names.insert(0, "Superuser")
        if not names:
            return "-"
        return format_html_join(
            " ", '<span class="badge {}">{}</span>', ((_role_class(name), name) for name in names)
        )

    def get_fieldsets(self, request, obj=None):
        fieldsets = super().get_fieldsets(request, obj)
        if request.user.is_superuser or obj is None:
            return fieldsets
        limited = []
        for name, options in fieldsets:
            kept = [f for f in options.get("fields", ()) if f not in ("is_superuser", "user_permissions")]
            limited.append((name, {**options, "fields": kept}))
        return limited

    def has_change_permission(self, request, obj=None):
        if obj is not None and obj.is_superuser and not request.user.is_superuser:
            return False
        return super().has_change_permission(request, obj)

    def has_delete_permission(self, request, obj=None):
        if obj is not None and obj.is_superuser and not request.user.is_superuser:
            return False
        return super().has_delete_permission(request, obj)


def _role_class(name: str) -> str:
    return "bg-primary" if name in ROLE_NAMES or name == "Superuser" else "bg-secondary"
