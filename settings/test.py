"""The test suite: fast hashing, files in a temporary folder, tasks at once."""

import tempfile

from .base import *  # noqa: F403
from .base import STORAGES

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
MEDIA_ROOT = tempfile.mkdtemp(prefix="gc-test-media-")
if STORAGES["default"]["BACKEND"] == "studies.storage.PrivateFileSystemStorage":
    STORAGES["default"]["OPTIONS"]["location"] = MEDIA_ROOT
TASKS = {"default": {"BACKEND": "django_tasks.backends.immediate.ImmediateBackend"}}
# Chunks and uploads are prepared in the calling thread; the tests of the pool turn it on.
IMPORT_PROCESSES = 0
STORAGES["staticfiles"] = {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"}
