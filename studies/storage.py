"""Where files live: private local storage, and listing what a storage holds (local disk or S3)."""

import os
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from django.core.files.storage import FileSystemStorage, Storage, default_storage
from storages.backends.s3 import S3Storage


class PrivateFileSystemStorage(FileSystemStorage):
    """Files under MEDIA_ROOT, served only by `studies.views.stored_file`."""


def storage_is_local() -> bool:
    return isinstance(default_storage, FileSystemStorage)


@dataclass(frozen=True)
class StoredFile:
    name: str  # the storage key, as rows hold it
    modified: datetime


def stored_files(*, prefix: str, storage: Storage = default_storage) -> Iterator[StoredFile]:
    """Every file whose key starts with `prefix` (a folder such as "images/"), with when it was written.

    Streams: on S3 one listing request per 1,000 keys, locally one folder at a time.
    """
    if isinstance(storage, S3Storage):  # default_storage is a lazy proxy; isinstance sees through it
        location = storage.location.strip("/")
        root = f"{location}/" if location else ""
        for item in storage.bucket.objects.filter(Prefix=root + prefix):
            yield StoredFile(item.key[len(root) :], item.last_modified)
    elif isinstance(storage, FileSystemStorage):
        base = Path(storage.location)
        for folder, _, names in os.walk(base / prefix):
            for name in sorted(names):
                path = Path(folder, name)
                try:
                    modified = datetime.fromtimestamp(path.stat().st_mtime, tz=UTC)
                except FileNotFoundError:  # removed while we listed
                    continue
                yield StoredFile(path.relative_to(base).as_posix(), modified)
    else:
        yield from _listed_files(storage, prefix.rstrip("/"))


def _listed_files(storage: Storage, folder: str) -> Iterator[StoredFile]:
    try:
        folders, names = storage.listdir(folder)
    except FileNotFoundError:
        return
    for name in names:
        key = f"{folder}/{name}"
        yield StoredFile(key, storage.get_modified_time(key))
    for sub in folders:
        yield from _listed_files(storage, f"{folder}/{sub}")
