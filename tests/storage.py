import os

from django.conf import settings


def local_files() -> set[str]:
    """Every file in local storage, to prove that a refused batch left none behind."""
    found = set()
    for root, _, files in os.walk(settings.STORAGES["default"]["OPTIONS"]["location"]):
        found |= {os.path.join(root, name) for name in files}
    return found
