"""Writes for accounts: a user's own details and the local development users."""

from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractUser, Group
from django.db import transaction


def profile_update(*, user: AbstractUser, first_name: str, last_name: str, email: str) -> AbstractUser:
    """Change a user's own name and e-mail address; nothing else."""
    user.first_name = first_name.strip()
    user.last_name = last_name.strip()
    user.email = get_user_model().objects.normalize_email(email.strip())
    user.save(update_fields=["first_name", "last_name", "email"])
    return user


@transaction.atomic
def user_ensure(
    *,
    username: str,
    password: str,
    email: str = "",
    first_name: str = "",
    last_name: str = "",
    superuser: bool = False,
    groups: tuple[str, ...] = (),
) -> tuple[AbstractUser, bool]:
    """Create a staff user once; running again changes nothing. Returns (user, created)."""
    User = get_user_model()
    user, created = User.objects.get_or_create(
        username=username,
        defaults={
            "email": email,
            "first_name": first_name,
            "last_name": last_name,
            "is_staff": True,
            "is_superuser": superuser,
        },
    )
    if created:
        user.set_password(password)
        user.save(update_fields=["password"])
        user.groups.set(Group.objects.filter(name__in=groups))
    return user, created
