"""Writes for studies: uploads, field-day imports, deletions.

Every function here validates, runs in one transaction, and raises
`ValidationError` with a message a person can act on. A refused batch stores
nothing: no rows and no files.
"""

import csv
import io
import logging
import math
import posixpath
import shutil
import tempfile
import uuid
import zipfile
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import BinaryIO

from django.conf import settings
from django.contrib.auth.base_user import AbstractBaseUser
from django.core.exceptions import ValidationError
from django.core.files import File
from django.db import IntegrityError, transaction
from django.db.models import F, Max
from django.utils import timezone

from . import chunks, selectors, workers
from .models import Eye, Image, ImageImport, ImportChunk, Patient, Study
from .pipeline import PreparedImage
from .signals import patients_added
from .storage import ParallelWrites, file_write, files_delete_many, stored_files

logger = logging.getLogger(__name__)


@dataclass
class Refusal:
    file: str
    reason: str

    def __str__(self) -> str:
        return f"{self.file}: {self.reason}"


class BatchRefused(ValidationError):
    """A batch with at least one refused file; `refusals` lists every one."""

    def __init__(self, refusals: list[Refusal]):
        self.refusals = refusals
        super().__init__([str(refusal) for refusal in refusals])


class StorageFailed(ValidationError):
    """The file store refused a write (disk full, S3 unreachable); the batch's files are removed."""


def _storage_failed(error: Exception) -> StorageFailed:
    return StorageFailed(
        f"The photo store could not save the files ({error}), so nothing from this batch was stored. "
        "Try again later; if it keeps failing, tell an administrator."
    )


def _duplicate_refusals(*, study: Study, prepared: Sequence[PreparedImage | Image]) -> list[Refusal]:
    refusals = []
    first_seen: dict[str, str] = {}
    existing = {
        image.sha256: image
        for image in Image.objects.filter(
            study=study, sha256__in={item.sha256 for item in prepared}
        ).select_related("patient")
    }
    for item in prepared:
        if item.sha256 in existing:
            image = existing[item.sha256]
            refusals.append(
                Refusal(
                    item.original_name,
                    f"duplicate: the same file is already in this study "
                    f"(patient {image.patient.code}, {image.get_eye_display().lower()} eye, "
                    f"image #{image.pk})",
                )
            )
        elif item.sha256 in first_seen:
            refusals.append(
                Refusal(
                    item.original_name,
                    f"duplicate: the same file as {first_seen[item.sha256]} in this upload",
                )
            )
        else:
            first_seen[item.sha256] = item.original_name
    return refusals


def images_prepare(
    *, study: Study, files: Iterable[tuple[str, BinaryIO]], workdir: Path
) -> list[PreparedImage]:
    """Check every file of a batch on every core; return them ready to store or refuse the whole batch.

    Raises BatchRefused listing each refused file with its reason (not an
    image, empty, truncated, too large, a decompression bomb, a duplicate in
    the batch or in the study). Nothing is written outside `workdir`.
    """
    on_disk = []
    for name, source in files:
        path = getattr(source, "temporary_file_path", None)
        if path is None:  # a small upload held in memory: the pool reads files
            fd, written = tempfile.mkstemp(dir=workdir)
            with open(fd, "wb") as target:
                source.seek(0)
                shutil.copyfileobj(source, target, 1024 * 1024)
            path = lambda written=written: written  # noqa: E731
        on_disk.append((name, Path(path())))
    prepared: list[PreparedImage] = []
    refusals: list[Refusal] = []
    for (name, _), outcome in zip(on_disk, workers.files_prepare(on_disk, workdir=workdir), strict=True):
        if isinstance(outcome, str):
            refusals.append(Refusal(name, outcome))
        else:
            prepared.append(outcome)
    refusals += _duplicate_refusals(study=study, prepared=prepared)
    if not prepared and not refusals:
        refusals.append(Refusal("(none)", "no files were chosen"))
    if refusals:
        raise BatchRefused(refusals)
    return prepared


def _storage_keys(study: Study, extension: str) -> tuple[str, str]:
    name = uuid.uuid4().hex
    return (
        f"images/study-{study.pk}/{name}{extension}",
        f"thumbnails/study-{study.pk}/{name}.jpg",
    )


def _files_delete(keys: Iterable[str]) -> list[str]:
    """Remove stored files; return those the storage refused to remove (the storage sweep retries them)."""
    left = files_delete_many(keys)
    for key in left:
        logger.error("Could not remove stored file %s; `manage.py storage_sweep` will retry", key)
    return left


def _images_write(
    *,
    study: Study,
    items: list[tuple[Patient, str, PreparedImage]],
    uploaded_by: AbstractBaseUser | None,
    written: list[str],
) -> list[Image]:
    """Write every photo and thumbnail, IMPORT_STORAGE_THREADS at a time; the keys go to `written` first.

    A write that fails halfway (disk full, connection lost) can leave a
    partial file under its key: the caller's clean-up removes it with the others.
    """
    images = []
    writes = ParallelWrites()
    try:
        with writes:
            for patient, eye, prepared in items:
                file_key, thumbnail_key = _storage_keys(study, prepared.extension)
                writes.write(file_key, prepared.stored)
                writes.write(thumbnail_key, prepared.thumbnail)
                images.append(
                    Image(
                        patient=patient,
                        study=study,
                        eye=eye,
                        file=file_key,
                        thumbnail=thumbnail_key,
                        sha256=prepared.sha256,
                        width=prepared.width,
                        height=prepared.height,
                        bytes=prepared.stored_bytes,
                        original_name=prepared.original_name,
                        uploaded_by=uploaded_by,
                    )
                )
    except Exception as error:
        logger.error("Could not store photos: %r", error)
        raise _storage_failed(error) from error
    finally:
        written += writes.keys
    return images


def _images_save_rows(
    *, study: Study, images: list[Image], rows_before: Callable[[], None] | None = None
) -> list[Image]:
    """Insert the rows; a file or patient another upload added since the check refuses the batch."""
    try:
        with transaction.atomic():
            if rows_before:
                rows_before()
            return Image.objects.bulk_create(images, batch_size=500)
    except IntegrityError:
        # The other upload has committed (the insert waited for it): name its photos as a check would.
        refusals = _duplicate_refusals(study=study, prepared=images)
        if refusals:
            raise BatchRefused(refusals) from None
        raise ValidationError(
            "Another upload added one of these files or patients to the study at the same moment; "
            "nothing from this batch was stored. Try again to see which."
        ) from None


def images_store(
    *,
    patient: Patient,
    prepared: list[PreparedImage],
    eye: str,
    uploaded_by: AbstractBaseUser | None,
) -> list[Image]:
    """Store checked photos of one eye of a patient, all or nothing.

    If storage or the database fails midway, the rows roll back and the
    files already written are removed.
    """
    if eye not in Eye.values:
        raise ValidationError(f"Unknown eye {eye!r}; choose right, left or unknown.")
    written: list[str] = []
    try:
        images = _images_write(
            study=patient.study,
            items=[(patient, eye, item) for item in prepared],
            uploaded_by=uploaded_by,
            written=written,
        )
        return _images_save_rows(study=patient.study, images=images)
    except BaseException:
        _files_delete(written)
        raise


def images_upload(
    *,
    patient: Patient,
    files: Iterable[tuple[str, BinaryIO]],
    eye: str,
    uploaded_by: AbstractBaseUser | None,
) -> list[Image]:
    """Check and store a batch of photos of one eye; refuse it whole if any file is bad."""
    with tempfile.TemporaryDirectory(prefix="gc-upload-") as workdir:
        prepared = images_prepare(study=patient.study, files=files, workdir=Path(workdir))
        return images_store(patient=patient, prepared=prepared, eye=eye, uploaded_by=uploaded_by)


def images_delete(*, images: Iterable[Image]) -> int:
    """Delete photos and, once the deletion is committed, their stored files."""
    images = list(images)
    keys = [key for image in images for key in (image.file.name, image.thumbnail.name) if key]
    with transaction.atomic():
        count, _ = Image.objects.filter(pk__in=[image.pk for image in images]).delete()
        transaction.on_commit(lambda: _files_delete(keys))
    return count


# Field-day imports -------------------------------------------------------
#
# The browser opens an import (image_import_start), sends its parts, several
# at once (image_import_part_save), then says it has sent them all
# (image_import_finish). Photos are prepared by chunks (studies.chunks) as
# soon as the parts under a chunk have arrived, by whatever worker takes the
# chunk: the embedded run's process pool (studies.workers) or any number of
# `db_worker` processes. When the upload is complete and the last chunk is
# done, `_import_store` writes every row in one transaction, or refuses the
# import and removes everything it staged.

JUNK_NAMES = {".ds_store", "thumbs.db", "desktop.ini"}
EYE_WORDS = {
    "r": Eye.RIGHT, "right": Eye.RIGHT, "od": Eye.RIGHT,
    "l": Eye.LEFT, "left": Eye.LEFT, "os": Eye.LEFT,
    "u": Eye.UNKNOWN, "unknown": Eye.UNKNOWN,
}  # fmt: skip
MANIFEST_NAME = "manifest.csv"
CHUNK_ATTEMPTS = 3  # a chunk whose worker vanished is handed out again this many times in all


def image_import_start(
    *, study: Study, source: str, files: list[dict], created_by: AbstractBaseUser
) -> ImageImport:
    """Open a field-day import: a ZIP file or a folder's files, to be uploaded in parts.

    `files` is [{"path": ..., "size": ...}]. Refuses an empty or oversized
    upload, more files than IMPORT_MAX_FILES, a ZIP import that is not one .zip
    file, paths leaving the folder and a path listed twice. A folder's chunks
    are planned at once, so each can be prepared as soon as its parts arrive.
    """
    if source not in ImageImport.Source.values:
        raise ValidationError("Choose a ZIP file or a folder to import.")
    if not isinstance(files, list) or not files:
        raise ValidationError("No files were chosen.")
    manifest = []
    for entry in files:
        if not isinstance(entry, dict):
            raise ValidationError("Each file needs a path and a size.")
        path = chunks.clean_relative_path(str(entry.get("path", "")))
        size = entry.get("size")
        if path is None:
            raise ValidationError(f"{entry.get('path')!r} is not a path inside the upload.")
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise ValidationError(f"{path}: the size must be a whole number of bytes.")
        manifest.append({"path": path, "size": size})
    if len(manifest) > settings.IMPORT_MAX_FILES:
        raise ValidationError(
            f"The upload holds {len(manifest):,} files; the limit is {settings.IMPORT_MAX_FILES:,} "
            "(IMPORT_MAX_FILES). Split the field day."
        )
    repeated = chunks.repeated(entry["path"] for entry in manifest)
    if repeated:
        raise ValidationError(f"{repeated[0]} is in the upload twice; each path may appear once.")
    if source == ImageImport.Source.ZIP and (
        len(manifest) != 1 or not manifest[0]["path"].lower().endswith(".zip")
    ):
        raise ValidationError("A ZIP import takes exactly one .zip file.")
    total = sum(entry["size"] for entry in manifest)
    if total > settings.IMPORT_MAX_BYTES:
        raise ValidationError(
            f"The upload is {total / 1024**3:.1f} GB; the limit is "
            f"{settings.IMPORT_MAX_BYTES / 1024**3:.1f} GB. Split the field day."
        )
    part_bytes = settings.IMPORT_PART_BYTES
    with transaction.atomic():
        image_import = ImageImport.objects.create(
            study=study,
            source=source,
            manifest=manifest,
            bytes_expected=total,
            files_total=len(manifest) if source == ImageImport.Source.FOLDER else 0,
            created_by=created_by,
            part_bytes=part_bytes,
            parts_total=math.ceil(total / part_bytes),
        )
        if source == ImageImport.Source.FOLDER:
            _chunks_plan(image_import, chunks.folder_entries(manifest))
    return image_import


def _strip_common_folder(entries: list[dict]) -> list[dict]:
    """Drop one folder that wraps everything (a zipped or picked folder)."""
    paths = [entry["path"] for entry in entries]
    while paths:
        firsts = {path.split("/", 1)[0] for path in paths}
        if len(firsts) != 1 or any("/" not in path for path in paths):
            break
        if any(posixpath.basename(path).lower() == MANIFEST_NAME and path.count("/") == 0 for path in paths):
            break
        # stop when the paths already have the <code>/<eye>/<file> shape
        if all(path.count("/") == 2 for path in paths) and not any(
            posixpath.basename(path).lower() == MANIFEST_NAME for path in paths
        ):
            break
        paths = [path.split("/", 1)[1] for path in paths]
    return [{**entry, "path": path} for entry, path in zip(entries, paths, strict=True)]


def _is_junk(path: str) -> bool:
    name = posixpath.basename(path)
    return (
        name.lower() in JUNK_NAMES
        or name.startswith(".")
        or path.startswith("__MACOSX/")
        or "/__MACOSX/" in path
    )


def _chunks_plan(image_import: ImageImport, entries: list[dict]) -> None:
    """Cut the upload's photos (and its manifest.csv) into chunks; note how many photos there are."""
    entries = _strip_common_folder([entry for entry in entries if not _is_junk(entry["path"])])
    for entry in entries:
        if entry["path"].lower() == MANIFEST_NAME:
            entry["manifest"] = True
    planned = chunks.chunks_plan(entries, part_bytes=image_import.part_bytes)
    rows = []
    for index, members in enumerate(planned):
        parts = chunks.parts_under(
            min(entry["start"] for entry in members),
            max(entry["end"] for entry in members),
            image_import.part_bytes,
        )
        rows.append(
            ImportChunk(
                image_import=image_import,
                index=index,
                entries=members,
                first_part=parts.start,
                last_part=parts.stop - 1,
            )
        )
    ImportChunk.objects.bulk_create(rows, batch_size=500)
    image_import.files_total = sum(1 for entry in entries if not entry.get("manifest"))
    image_import.planned = True
    image_import.save(update_fields=["files_total", "planned"])


def _zip_plan(image_import: ImageImport, received: set[int]) -> list[Refusal]:
    """Plan a ZIP's chunks from its central directory, or return why it is refused.

    Raises PartMissing while a part holding the directory has not arrived.
    """
    zip_name, zip_bytes = image_import.manifest[0]["path"], image_import.bytes_expected
    space = chunks.UploadSpace(
        import_id=image_import.pk, size=zip_bytes, part_bytes=image_import.part_bytes, received=received
    )
    reader = io.BufferedReader(chunks.UploadFile(space), buffer_size=chunks.READ_BLOCK)
    try:
        declared = _zip_entries_declared(reader)
        if declared is not None and declared > settings.IMPORT_MAX_FILES:
            return [Refusal(zip_name, chunks.entries_reason(declared))]
        reader.seek(0)
        archive = zipfile.ZipFile(reader)
    except (zipfile.BadZipFile, EOFError, ValueError, OSError):
        return [Refusal(zip_name, "not a readable ZIP file")]
    planned = chunks.zip_entries(archive, zip_name=zip_name, zip_bytes=zip_bytes)
    if planned.refusals:
        return [Refusal(file, reason) for file, reason in planned.refusals]
    _chunks_plan(image_import, planned.entries)
    return []


def _zip_entries_declared(joined: BinaryIO) -> int | None:
    """The entry count the ZIP's end record declares, read before its directory is loaded into memory."""
    record = zipfile._EndRecData(joined)  # the standard library's own reader of that record
    return None if record is None else record[zipfile._ECD_ENTRIES_TOTAL]


def image_import_part_save(
    *, image_import: ImageImport, part_index: int, data: bytes | BinaryIO, size: int
) -> list[int]:
    """Store one part of an import; sending the same part again replaces it.

    The chunks whose parts have now all arrived are handed to the workers.
    Returns the parts wanted next: those holding a ZIP's directory that the
    last part did not (so the browser sends them before the others).
    """
    if image_import.status != ImageImport.Status.UPLOADING:
        raise ValidationError("This import is no longer taking uploads.")
    if not 0 <= part_index < image_import.parts_total:
        raise ValidationError(f"This import has no part number {part_index}.")
    start = part_index * image_import.part_bytes
    expected = min(image_import.part_bytes, image_import.bytes_expected - start)
    if size != expected:
        raise ValidationError(f"Part {part_index} is {size} bytes; {expected} were expected.")
    key = chunks.part_key(image_import.pk, part_index)
    try:
        if isinstance(data, bytes):  # a raw body, read whole
            file_write(key, data)
        else:
            data.seek(0)
            # an upload in a temporary file is moved into place locally; one in memory is written in pieces
            file_write(key, data if hasattr(data, "temporary_file_path") else File(data, name=key))
    except Exception as error:
        files_delete_many([key])  # a part written halfway would otherwise pass for a received one
        logger.warning("Part %s of import %s not stored: %r", part_index, image_import.pk, error)
        raise StorageFailed(
            f"Part {part_index} could not be stored ({error}). "
            "Try again later; if it keeps failing, tell an administrator."
        ) from error
    with transaction.atomic():
        image_import = ImageImport.objects.select_for_update().defer("manifest").get(pk=image_import.pk)
        if image_import.status != ImageImport.Status.UPLOADING:
            raise ValidationError("This import is no longer taking uploads.")
        if part_index not in image_import.parts_received:
            image_import.parts_received = sorted([*image_import.parts_received, part_index])
            image_import.save(update_fields=["parts_received"])
        received = set(image_import.parts_received)
        wanted: list[int] = []
        if not image_import.planned and image_import.parts_total - 1 in received:
            try:
                refusals = _zip_plan(image_import, received)
            except chunks.PartMissing as missing:
                refusals, wanted = [], [missing.index]
            if refusals:
                _import_refuse(image_import, refusals)
                return []
        ready = _chunks_release(image_import, received, around=part_index)
    _chunks_dispatch(ready)
    return wanted


def _chunks_release(image_import: ImageImport, received: set[int], *, around: int | None = None) -> list[int]:
    """Mark ready the waiting chunks whose parts have all arrived (those on part `around`, or all)."""
    waiting = image_import.chunks.filter(status=ImportChunk.Status.WAITING)
    if around is not None and image_import.chunks.exclude(status=ImportChunk.Status.WAITING).exists():
        waiting = waiting.filter(first_part__lte=around, last_part__gte=around)
    ready = [
        pk
        for pk, first, last in waiting.values_list("pk", "first_part", "last_part")
        if all(part in received for part in range(first, last + 1))
    ]
    # claimed_at: when it was handed out; a ready chunk that no worker took for long is handed out again
    ImportChunk.objects.filter(pk__in=ready).update(
        status=ImportChunk.Status.READY, claimed_at=timezone.now()
    )
    return ready


def _chunks_dispatch(chunk_ids: list[int]) -> None:
    """Hand ready chunks to the workers once the transaction that readied them is committed."""
    if not chunk_ids:
        return

    def dispatch() -> None:
        from . import workers

        workers.chunks_dispatch(chunk_ids)

    transaction.on_commit(dispatch)


def image_import_finish(*, image_import: ImageImport) -> ImageImport:
    """Check that every part arrived; the import is stored as soon as its last chunk is prepared."""
    with transaction.atomic():
        image_import = ImageImport.objects.select_for_update().defer("manifest").get(pk=image_import.pk)
        if image_import.status != ImageImport.Status.UPLOADING:
            return image_import  # finishing twice stores it once
        received = set(image_import.parts_received)
        missing = [part for part in range(image_import.parts_total) if part not in received]
        if missing:
            shown = ", ".join(str(part) for part in missing[:5])
            more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
            raise ValidationError(
                f"Upload incomplete: part {shown}{more} of {image_import.parts_total} did not arrive."
            )
        if not image_import.planned:
            try:
                refusals = _zip_plan(image_import, received)
            except chunks.PartMissing:  # every part arrived: the ZIP's end record points outside it
                refusals = [Refusal(image_import.manifest[0]["path"], "not a readable ZIP file")]
            if refusals:
                return _import_refuse(image_import, refusals)
        image_import.status = ImageImport.Status.CHECKING
        image_import.save(update_fields=["status"])
        ready = _chunks_release(image_import, received)
    _chunks_dispatch(ready)
    transaction.on_commit(lambda: _import_store_when_prepared(image_import.pk))
    return image_import


def _chunk_spec(chunk: ImportChunk, image_import: ImageImport) -> dict:
    return {
        "import_id": image_import.pk,
        "study_id": image_import.study_id,
        "token": image_import.token,
        "source": image_import.source,
        "size": image_import.bytes_expected,
        "part_bytes": image_import.part_bytes,
        "entries": [entry for entry in chunk.entries if not entry.get("manifest")],
    }


def image_import_chunk_process(*, chunk_id: int, prepare: Callable[[dict], dict] | None = None) -> bool:
    """Prepare one ready chunk, if no other worker has taken it; return whether this call did.

    `prepare` runs `studies.chunks.chunk_prepare` (in this process, or in a
    pool's). Once a chunk of the import has a refusal the others are not
    prepared: the import will be refused. A chunk that raises is recorded as
    refused with the error; the import is refused when the rest are done.
    """
    claimed = ImportChunk.objects.filter(pk=chunk_id, status=ImportChunk.Status.READY).update(
        status=ImportChunk.Status.RUNNING, claimed_at=timezone.now(), attempts=F("attempts") + 1
    )
    if not claimed:
        return False
    chunk = (
        ImportChunk.objects.select_related("image_import").defer("image_import__manifest").get(pk=chunk_id)
    )
    image_import = chunk.image_import
    spec = _chunk_spec(chunk, image_import)
    refused_already = (
        image_import.status == ImageImport.Status.FAILED
        or image_import.chunks.filter(status=ImportChunk.Status.DONE).exclude(refusals=[]).exists()
    )
    if refused_already or not spec["entries"]:
        outcome = {"prepared": [], "refusals": []}
    else:
        try:
            outcome = (prepare or chunks.chunk_prepare)(spec)
        except chunks.StoreFailed as error:
            logger.error("Chunk %s of import %s: the store failed: %s", chunk.index, image_import.pk, error)
            reason = _storage_failed(error).message
            outcome = {"prepared": [], "refusals": [{"file": "(import)", "reason": reason}]}
        except Exception as error:
            logger.exception("Chunk %s of import %s failed", chunk.index, image_import.pk)
            reason = f"photos could not be prepared ({error!r}); nothing was stored"
            outcome = {"prepared": [], "refusals": [{"file": "(import)", "reason": reason}]}
    with transaction.atomic():
        recorded = ImportChunk.objects.filter(
            pk=chunk.pk, status=ImportChunk.Status.RUNNING, attempts=chunk.attempts
        ).update(status=ImportChunk.Status.DONE, prepared=outcome["prepared"], refusals=outcome["refusals"])
        if recorded:
            ImageImport.objects.filter(pk=image_import.pk).update(
                files_done=F("files_done") + len(spec["entries"])
            )
    if recorded:
        _import_store_when_prepared(image_import.pk)
    return bool(recorded)


def image_import_resume(*, image_import: ImageImport | None = None) -> list[int]:
    """Hand out again the chunks whose worker vanished (claimed over IMPORT_CHUNK_TIMEOUT_MINUTES ago).

    After CHUNK_ATTEMPTS tries a chunk counts as refused, and so its import.
    Ready chunks that no worker took (a lost task) are handed out again too,
    and an import whose worker died while storing its rows is stored again.
    Returns the chunks handed out again or given up, and the imports stored again.
    """
    stale = timezone.now() - timedelta(minutes=settings.IMPORT_CHUNK_TIMEOUT_MINUTES)
    chunks_of = ImportChunk.objects.filter(
        image_import__status__in=[ImageImport.Status.UPLOADING, ImageImport.Status.CHECKING],
        status__in=[ImportChunk.Status.RUNNING, ImportChunk.Status.READY],
        claimed_at__lt=stale,
    )
    if image_import is not None:
        chunks_of = chunks_of.filter(image_import=image_import)
    found = list(chunks_of.values_list("pk", "status", "attempts", "image_import_id"))
    stuck = _imports_stuck_storing(stale=stale, image_import=image_import)
    if not found and not stuck:  # the usual answer, read without taking a write lock
        return []
    for import_id in stuck:  # its rows and "done" commit together, so storing again is safe
        if ImageImport.objects.filter(pk=import_id, status=ImageImport.Status.STORING).update(
            status=ImageImport.Status.CHECKING
        ):
            _import_store_when_prepared(import_id)
    again, given_up = [], []
    for pk, status, attempts, import_id in found:
        if status == ImportChunk.Status.READY:  # a lost task: no worker took it
            again.append(pk)
        elif attempts >= CHUNK_ATTEMPTS:
            reason = f"photos could not be prepared: the worker stopped {CHUNK_ATTEMPTS} times"
            ImportChunk.objects.filter(pk=pk, status=ImportChunk.Status.RUNNING).update(
                status=ImportChunk.Status.DONE, prepared=[], refusals=[{"file": "(import)", "reason": reason}]
            )
            given_up.append(pk)
            _import_store_when_prepared(import_id)
        elif ImportChunk.objects.filter(pk=pk, status=ImportChunk.Status.RUNNING, attempts=attempts).update(
            status=ImportChunk.Status.READY, claimed_at=timezone.now()
        ):
            again.append(pk)
    with transaction.atomic():
        _chunks_dispatch(again)
    return again + given_up + stuck


def _imports_stuck_storing(*, stale: datetime, image_import: ImageImport | None) -> list[int]:
    """Imports storing since before `stale` (their last chunk was taken then): their worker died."""
    storing = ImageImport.objects.filter(status=ImageImport.Status.STORING)
    if image_import is not None:
        storing = storing.filter(pk=image_import.pk)
    return list(
        storing.values("pk")  # grouped by the key alone, not by every column (the file list among them)
        .annotate(last_taken=Max("chunks__claimed_at"))
        .filter(last_taken__lt=stale)
        .values_list("pk", flat=True)
    )


def _import_store_when_prepared(import_id: int) -> None:
    """Store the import if its upload is complete and every chunk is done; only one caller gets to."""
    with transaction.atomic():
        image_import = (
            ImageImport.objects.select_for_update()
            .select_related("study")
            .defer("manifest")
            .get(pk=import_id)
        )
        if image_import.status != ImageImport.Status.CHECKING:
            return
        if image_import.chunks.exclude(status=ImportChunk.Status.DONE).exists():
            return
        image_import.status = ImageImport.Status.STORING
        image_import.save(update_fields=["status"])
    _import_store(image_import)


@dataclass
class _Staged:
    """A prepared photo waiting for its row, as a duplicate check sees it."""

    original_name: str
    sha256: str
    result: dict


def _import_store(image_import: ImageImport) -> ImageImport:
    """Write the rows of every prepared photo in one transaction, or refuse the import."""
    study = image_import.study
    all_chunks = list(image_import.chunks.all())
    refusals = [Refusal(r["file"], r["reason"]) for chunk in all_chunks for r in chunk.refusals]
    if refusals:
        return _import_refuse(image_import, refusals)
    prepared = {item["path"]: item for chunk in all_chunks for item in chunk.prepared}
    entries = [entry for chunk in all_chunks for entry in chunk.entries]
    manifest = next((entry for entry in entries if entry.get("manifest")), None)
    try:
        manifest_text = _manifest_text(image_import, manifest) if manifest else None
    except Exception as error:
        logger.exception("Import %s: manifest unreadable", image_import.pk)
        return _import_refuse(image_import, [Refusal(MANIFEST_NAME, f"cannot be read ({error})")])
    placed = _layout(
        [entry["path"] for entry in entries if not entry.get("manifest")], manifest_text, refusals
    )
    code_length = Patient._meta.get_field("code").max_length
    staged = []
    for path, code, eye in placed:
        if len(code) > code_length:
            refusals.append(Refusal(path, f"patient code {code[:20]!r}... is too long"))
        else:
            staged.append((code, eye, _Staged(path[:255], prepared[path]["sha256"], prepared[path])))
    refusals += _duplicate_refusals(study=study, prepared=[item for _, _, item in staged])
    if not placed and not refusals:
        refusals.append(Refusal("(upload)", "no photos found"))
    if refusals:
        return _import_refuse(image_import, refusals)

    patients = {p.code: p for p in Patient.objects.filter(study=study, code__in={c for c, _, _ in staged})}
    new_codes = sorted({code for code, _, _ in staged} - set(patients))
    placeholder = {code: Patient(study=study, code=code) for code in new_codes}
    images = [
        Image(
            patient=patients.get(code) or placeholder[code],
            study=study,
            eye=eye,
            file=item.result["file"],
            thumbnail=item.result["thumbnail"],
            sha256=item.sha256,
            width=item.result["width"],
            height=item.result["height"],
            bytes=item.result["bytes"],
            original_name=item.original_name,
            uploaded_by_id=image_import.created_by_id,
        )
        for code, eye, item in staged
    ]

    image_import.status = ImageImport.Status.DONE
    image_import.files_done = len(images)
    image_import.patients_created = len(new_codes)
    image_import.images_created = len(images)
    image_import.finished_at = timezone.now()

    def create_patients() -> None:
        created = Patient.objects.bulk_create(placeholder.values())
        if created:
            patients_added.send(sender=Study, study=study, patient_ids=[p.pk for p in created])
        for image in images:  # the new patients had no id when their images were made
            image.patient_id = image.patient.pk
        image_import.save()  # "done" commits with the rows, or not at all: never half-stored

    try:
        _images_save_rows(study=study, images=images, rows_before=create_patients)
    except BatchRefused as refused:
        return _import_refuse(image_import, refused.refusals)
    except ValidationError as error:
        return _import_refuse(image_import, [Refusal("(import)", message) for message in error.messages])
    except Exception as error:
        logger.exception("Import %s failed", image_import.pk)
        return _import_refuse(image_import, [Refusal("(import)", f"stopped by an error: {error}")])
    _import_parts_delete(image_import)
    return image_import


def _manifest_text(image_import: ImageImport, entry: dict) -> str:
    space = chunks.UploadSpace(
        import_id=image_import.pk, size=image_import.bytes_expected, part_bytes=image_import.part_bytes
    )
    data = space.read(entry["start"], entry["end"] - entry["start"])
    if image_import.source == ImageImport.Source.ZIP:
        data = chunks.zip_member(data, entry)
    return data.decode("utf-8-sig")


def _layout(
    paths: list[str], manifest_text: str | None, refusals: list[Refusal]
) -> list[tuple[str, str, str]]:
    """(path, patient code, eye) for each photo, from manifest.csv or the folder layout."""
    placed = []
    if manifest_text is not None:
        known = set(paths)
        listed: set[str] = set()
        reader = csv.DictReader(io.StringIO(manifest_text, newline=""))
        columns = {name.strip().lower() for name in reader.fieldnames or []}
        if not {"file", "patient_code", "eye"} <= columns:
            refusals.append(Refusal(MANIFEST_NAME, "needs the columns file, patient_code and eye"))
            return []
        for line, row in enumerate(reader, start=2):
            row = {(k or "").strip().lower(): (v or "").strip() for k, v in row.items()}
            path = chunks.clean_relative_path(row["file"])
            where = f"{MANIFEST_NAME} line {line}"
            if path is None:
                refusals.append(Refusal(where, f"{row['file']!r} is not a path in the upload"))
            elif path not in known:
                refusals.append(Refusal(where, f"{path} is listed but not in the upload"))
            elif path in listed:
                refusals.append(Refusal(where, f"{path} is listed twice"))
            elif row["eye"].lower() not in EYE_WORDS:
                refusals.append(Refusal(where, f"eye {row['eye']!r} is not R, L or U"))
            elif not row["patient_code"]:
                refusals.append(Refusal(where, "no patient code"))
            else:
                listed.add(path)
                placed.append((path, row["patient_code"], EYE_WORDS[row["eye"].lower()]))
        for path in paths:
            if path not in listed:
                refusals.append(Refusal(path, f"not listed in {MANIFEST_NAME}"))
        return placed
    for path in paths:
        parts = path.split("/")
        if len(parts) != 3 or parts[1].lower() not in EYE_WORDS:
            refusals.append(
                Refusal(path, "not in the <patient code>/<R|L|U>/<file> layout, and no manifest.csv")
            )
            continue
        placed.append((path, parts[0], EYE_WORDS[parts[1].lower()]))
    return placed


def _import_refuse(image_import: ImageImport, refusals: list[Refusal]) -> ImageImport:
    """Mark the import refused and remove its parts and every photo and thumbnail it staged."""
    image_import.status = ImageImport.Status.FAILED
    image_import.patients_created = image_import.images_created = 0
    image_import.errors = [{"file": r.file, "reason": r.reason} for r in refusals]
    image_import.finished_at = timezone.now()
    image_import.save()
    transaction.on_commit(lambda: _import_files_delete(image_import))
    return image_import


def _import_files_delete(image_import: ImageImport) -> None:
    if image_import.status == ImageImport.Status.FAILED:
        staged = [
            stored.name
            for prefix in chunks.staged_prefixes(study_id=image_import.study_id, token=image_import.token)
            for stored in stored_files(prefix=prefix)
        ]
        files_delete_many(staged)
    _import_parts_delete(image_import)


def _import_parts_delete(image_import: ImageImport) -> None:
    files_delete_many(chunks.part_key(image_import.pk, part) for part in range(image_import.parts_total))


# Storage sweep -------------------------------------------------------------

SWEPT_FOLDERS = ("imports/", "images/", "thumbnails/")


@dataclass
class StorageSweep:
    """What a sweep did, or with a dry run would do."""

    abandoned_imports: list[int] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)  # storage keys
    not_removed: list[str] = field(default_factory=list)  # keys the storage refused to remove


def storage_sweep(*, older_than: timedelta, dry_run: bool = False) -> StorageSweep:
    """Remove abandoned field-day uploads and stored files that no row refers to.

    An import still uploading, opened more than `older_than` ago and with no
    part written since, is abandoned: it is marked refused and its parts go.
    A file under images/, thumbnails/ or imports/ goes when it was written
    more than `older_than` ago and no photo (file or thumbnail) and no import
    in progress refers to it: what a failed batch could not remove (storage
    down), the parts of finished imports, files of deleted rows. Files of a
    study with an import queued, checking or storing are left alone (its rows
    come last). Nothing outside those folders is touched. With `dry_run`
    nothing changes and the report lists what would go.
    """
    cutoff = timezone.now() - older_than
    abandoned = _imports_abandon(cutoff=cutoff, older_than=older_than, dry_run=dry_run)
    sweep = StorageSweep(abandoned_imports=abandoned)
    candidates = _sweep_candidates(
        cutoff=cutoff,
        imports_in_progress=selectors.import_ids_in_progress() - set(sweep.abandoned_imports),
        studies_busy=selectors.study_ids_importing(excluding=sweep.abandoned_imports),
    )
    for batch in _batches(candidates, 1000):
        in_use = selectors.image_keys_in_use(keys=batch)
        unreferenced = [key for key in batch if key not in in_use]
        sweep.removed += unreferenced
        if not dry_run:
            sweep.not_removed += _files_delete(unreferenced)
    left = set(sweep.not_removed)
    sweep.removed = [key for key in sweep.removed if key not in left]
    return sweep


def _imports_abandon(*, cutoff: datetime, older_than: timedelta, dry_run: bool) -> list[int]:
    """Mark refused the imports that stopped receiving parts before `cutoff`; return their ids."""
    abandoned = []
    for image_import in selectors.imports_uploading_before(before=cutoff):
        parts = stored_files(prefix=f"imports/{image_import.pk}/")
        if any(part.modified >= cutoff for part in parts):
            continue  # a slow upload, still going
        if not dry_run:
            reason = (
                f"abandoned: no part arrived for {older_than.total_seconds() / 3600:g} hours; "
                "the parts uploaded were removed. Start the import again."
            )
            marked = ImageImport.objects.filter(
                pk=image_import.pk, status=ImageImport.Status.UPLOADING
            ).update(
                status=ImageImport.Status.FAILED,
                errors=[{"file": "(upload)", "reason": reason}],
                finished_at=timezone.now(),
            )
            if not marked:  # finished meanwhile
                continue
        abandoned.append(image_import.pk)
    return abandoned


def _sweep_candidates(
    *, cutoff: datetime, imports_in_progress: Collection[int], studies_busy: Collection[int]
) -> Iterator[str]:
    """Keys written before `cutoff`, but not the parts of an import in progress nor a busy study's files."""
    for folder in SWEPT_FOLDERS:
        for stored in stored_files(prefix=folder):
            if stored.modified >= cutoff:
                continue
            owner = stored.name.split("/")[1] if stored.name.count("/") >= 2 else ""
            if folder == "imports/":
                if owner.isdigit() and int(owner) in imports_in_progress:
                    continue
            elif owner.removeprefix("study-").isdigit() and int(owner.removeprefix("study-")) in studies_busy:
                continue
            yield stored.name


def _batches(items: Iterable[str], size: int) -> Iterator[list[str]]:
    batch: list[str] = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch
