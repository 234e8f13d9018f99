"""Writes for exports: API tokens issued by an administrator."""

from django.conf import settings
from django.contrib.auth.base_user import AbstractBaseUser
from django.core.exceptions import ValidationError
from knox.models import AuthToken

from .permissions import is_data_team


def api_token_issue(*, user: AbstractBaseUser) -> tuple[AuthToken, str]:
    """A new API token for a Data team member; the raw token is returned once and never stored."""
    if not is_data_team(user):
        raise ValidationError(f"{user} is not in the Data team; only its members may hold API tokens.")
    return AuthToken.objects.create(
        user=user, expiry=settings.REST_KNOX["TOKEN_TTL"], prefix=settings.REST_KNOX["TOKEN_PREFIX"]
    )
