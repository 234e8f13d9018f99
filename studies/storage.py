"""Where files live: private local storage, and listing what a storage holds (local disk or S3)."""

import logging
import os
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.core.files import File
from django.core.files.base import ContentFile
from django.core.files.storage import FileSystemStorage, Storage, default_storage
from storages.backends.s3 import S3Storage

logger = logging.getLogger(__name__)


class PrivateFileSystemStorage(FileSystemStorage):
    """Files under MEDIA_ROOT, served only by `studies.views.stored_file`; a key written again is replaced."""

    def __init__(self, *args, allow_overwrite: bool = True, **kwargs):
        super().__init__(*args, allow_overwrite=allow_overwrite, **kwargs)


def storage_is_local() -> bool:
    return isinstance(default_storage, FileSystemStorage)


@dataclass(frozen=True)
class StoredFile:
    name: str  # the storage key, as rows hold it
    modified: datetime


def stored_files(*, prefix: str, storage: Storage = default_storage) -> Iterator[StoredFile]:
    """Every file whose key starts with `prefix` ("images/", or "images/study-1/<token>-"), and its age.

    Streams: on S3 one listing request per 1,000 keys, locally one folder at a time.
    """
    if isinstance(storage, S3Storage):  # default_storage is a lazy proxy; isinstance sees through it
        location = storage.location.strip("/")
        root = f"{location}/" if location else ""
        for item in storage.bucket.objects.filter(Prefix=root + prefix):
            yield StoredFile(item.key[len(root) :], item.last_modified)
    elif isinstance(storage, FileSystemStorage):
        base = Path(storage.location)
        folder_of_prefix = prefix if prefix.endswith("/") else prefix.rsplit("/", 1)[0] + "/"
        for folder, _, names in os.walk(base / folder_of_prefix):
            for name in sorted(names):
                path = Path(folder, name)
                key = path.relative_to(base).as_posix()
                if not key.startswith(prefix):
                    continue
                try:
                    modified = datetime.fromtimestamp(path.stat().st_mtime, tz=UTC)
                except FileNotFoundError:  # removed while we listed
                    continue
                yield StoredFile(key, modified)
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


# Reads and writes, one request each -----------------------------------------
#
# Every key written here is unique by construction (a random name, or an
# import's token and a number), so the stores overwrite instead of asking for
# a free name first (a HEAD per file on S3): a resent part or a retried chunk
# writes the same key again.


def _s3_key(storage: S3Storage, key: str) -> str:
    location = storage.location.strip("/")
    return f"{location}/{key}" if location else key


def file_write(key: str, content: bytes | Path | File, *, storage: Storage = default_storage) -> None:
    """Write `content` (bytes, a file at a path, or an uploaded file) under `key`, replacing what is there.

    On S3 one PutObject, with the storage's own object parameters (content type,
    ACL): less than half the CPU of Storage.save's transfer manager, which counts
    when thousands of photos and thumbnails go out.
    """
    if isinstance(storage, S3Storage):
        _s3_put(storage, key, content)
        return
    if isinstance(content, Path):
        with open(content, "rb") as source:
            saved = storage.save(key, File(source, name=key))
    elif isinstance(content, bytes):
        saved = storage.save(key, ContentFile(content, name=key))
    else:
        saved = storage.save(key, content)
    if saved != key:  # a store set up to keep old files would have renamed it
        storage.delete(saved)
        raise ImproperlyConfigured(f"The file store renamed {key} to {saved}; it must overwrite.")


def _s3_put(storage: S3Storage, key: str, content: bytes | Path | File) -> None:
    params = storage._get_write_parameters(key, content if isinstance(content, File) else None)
    # The storage keeps one Bucket, and so one client, for every thread (clients are thread-safe);
    # its `connection` would make a new client, about 0.2 s of CPU, in each new thread.
    client = storage.bucket.meta.client
    target = {"Bucket": storage.bucket_name, "Key": _s3_key(storage, key), **params}
    if isinstance(content, Path):
        with open(content, "rb") as body:
            client.put_object(Body=body, **target)
    elif isinstance(content, bytes):
        client.put_object(Body=content, **target)
    else:
        content.seek(0)
        client.put_object(Body=content, **target)


class ParallelWrites:
    """Writes files IMPORT_STORAGE_THREADS at a time (S3 requests in flight at once).

    On local disk, or with one thread, each write happens in the caller's
    thread: a write to the page cache takes a fraction of a millisecond, and
    handing it to a pool costs more CPU (thread switches, the GIL) than it
    saves. After the first failure the writes not yet begun are skipped;
    leaving the `with` block waits for those in flight, then raises the first
    failure. Every key passed to `write` is in `keys` before its first byte
    goes out, so a clean-up can remove what a failed write left halfway.
    """

    def __init__(self, *, storage: Storage = default_storage, threads: int | None = None):
        self.storage = storage
        threads = threads or settings.IMPORT_STORAGE_THREADS
        self.pool = (
            ThreadPoolExecutor(max_workers=threads, thread_name_prefix="gc-store")
            if threads > 1 and isinstance(storage, S3Storage)
            else None
        )
        self.keys: list[str] = []
        self.failure: BaseException | None = None

    def write(self, key: str, content: bytes | Path) -> None:
        self.keys.append(key)
        if self.pool is None:
            self._write(key, content)
        else:
            self.pool.submit(self._write, key, content)

    def _write(self, key: str, content: bytes | Path) -> None:
        if self.failure is not None:
            return
        try:
            file_write(key, content, storage=self.storage)
        except BaseException as error:
            self.failure = self.failure or error

    def __enter__(self) -> "ParallelWrites":
        return self

    def __exit__(self, *exc_info) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True)
        if self.failure is not None and exc_info[0] is None:
            raise self.failure


def range_read(key: str, start: int, length: int, *, storage: Storage = default_storage) -> bytes:
    """`length` bytes of the file under `key` from `start`: one ranged GET on S3, a seek locally."""
    if length <= 0:
        return b""
    if isinstance(storage, S3Storage):
        answer = storage.bucket.meta.client.get_object(
            Bucket=storage.bucket_name, Key=_s3_key(storage, key), Range=f"bytes={start}-{start + length - 1}"
        )
        return answer["Body"].read()
    with storage.open(key, "rb") as stored:
        stored.seek(start)
        return stored.read(length)


def files_delete_many(keys: Iterable[str], *, storage: Storage = default_storage) -> list[str]:
    """Remove files, 1,000 per request on S3; return the keys that could not be removed.

    A key that is not there counts as removed.
    """
    left: list[str] = []
    keys = list(dict.fromkeys(keys))
    if isinstance(storage, S3Storage):
        for start in range(0, len(keys), 1000):
            batch = keys[start : start + 1000]
            try:
                answer = storage.bucket.meta.client.delete_objects(
                    Bucket=storage.bucket_name,
                    Delete={"Objects": [{"Key": _s3_key(storage, key)} for key in batch], "Quiet": True},
                )
            except Exception:
                logger.exception("Could not remove %s stored files", len(batch))
                left += batch
                continue
            prefix = len(_s3_key(storage, ""))
            left += [error["Key"][prefix:] for error in answer.get("Errors", [])]
        return left
    for key in keys:
        try:
            storage.delete(key)
        except FileNotFoundError:
            pass
        except Exception:
            logger.exception("Could not remove stored file %s", key)
            left.append(key)
    return left
