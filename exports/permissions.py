"""Who may use the API: members of the Data team, and superusers."""

from django.contrib.auth.base_user import AbstractBaseUser
from rest_framework.permissions import BasePermission

from accounts.roles import DATA_TEAM


def is_data_team(user: AbstractBaseUser) -> bool:
    if not (user and user.is_authenticated and user.is_active):
        return False
    return user.is_superuser or user.groups.filter(name=DATA_TEAM).exists()


class IsDataTeam(BasePermission):
    message = "The API is for members of the Data team; ask an administrator to add you."

    def has_permission(self, request, view) -> bool:
        return is_data_team(request.user)
