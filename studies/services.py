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
import stat
import tempfile
import uuid
import zipfile
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import BinaryIO

from django.conf import settings
from django.contrib.auth.base_user import AbstractBaseUser
from django.core.exceptions import ValidationError
from django.core.files import File
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.db import IntegrityError, transaction
from django.template.defaultfilters import filesizeformat
from django.utils import timezone

from . import selectors
from .models import Eye, Image, ImageImport, Patient, Study
from .pipeline import ImageRefused, PreparedImage, image_prepare, megabytes
from .signals import patients_added
from .storage import stored_files

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
    """Check every file of a batch; return them ready to store or refuse the whole batch.

    Raises BatchRefused listing each refused file with its reason (not an
    image, empty, truncated, too large, a decompression bomb, a duplicate in
    the batch or in the study). Nothing is written outside `workdir`.
    """
    prepared: list[PreparedImage] = []
    refusals: list[Refusal] = []
    for name, source in files:
        try:
            prepared.append(image_prepare(source, name=name, workdir=workdir))
        except ImageRefused as refused:
            refusals.append(Refusal(name, str(refused)))
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
    left = []
    for key in keys:
        try:
            default_storage.delete(key)
        except Exception:  # keep removing the others; the log names what is left behind
            logger.exception("Could not remove stored file %s; `manage.py storage_sweep` will retry", key)
            left.append(key)
    return left


def _file_save(key: str, content: File, written: list[str]) -> str:
    """Store one file under `key`, noting it in `written` before the first byte goes out.

    A write that fails halfway (disk full, connection lost) can leave a partial
    file under that key: the caller's clean-up removes it with the others.
    """
    written.append(key)
    try:
        saved = default_storage.save(key, content)
    except Exception as error:
        logger.exception("Could not store %s", key)
        raise _storage_failed(error) from error
    written[-1] = saved
    return saved


def _images_write(
    *,
    study: Study,
    items: list[tuple[Patient, str, PreparedImage]],
    uploaded_by: AbstractBaseUser | None,
    written: list[str],
    on_progress: Callable[[int], None] | None = None,
) -> list[Image]:
    images = []
    for done, (patient, eye, prepared) in enumerate(items, start=1):
        file_key, thumbnail_key = _storage_keys(study, prepared.extension)
        with open(prepared.stored_path, "rb") as stored:
            file_key = _file_save(file_key, File(stored), written)
        thumbnail_key = _file_save(thumbnail_key, ContentFile(prepared.thumbnail), written)
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
        if on_progress:
            on_progress(done)
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

JUNK_NAMES = {".ds_store", "thumbs.db", "desktop.ini"}
EYE_WORDS = {
    "r": Eye.RIGHT, "right": Eye.RIGHT, "od": Eye.RIGHT,
    "l": Eye.LEFT, "left": Eye.LEFT, "os": Eye.LEFT,
    "u": Eye.UNKNOWN, "unknown": Eye.UNKNOWN,
}  # fmt: skip
MANIFEST_NAME = "manifest.csv"


def _part_key(image_import: ImageImport, file_index: int, part_index: int) -> str:
    return f"imports/{image_import.pk}/{file_index:06d}-{part_index:06d}"


def _parts_of(size: int) -> int:
    return max(1, math.ceil(size / settings.IMPORT_PART_BYTES))


def _clean_relative_path(path: str) -> str | None:
    """The path inside an upload, or None when it would leave the upload's folder."""
    path = path.replace("\\", "/")
    if path.startswith("/") or (len(path) > 1 and path[1] == ":"):
        return None
    parts = [part for part in path.split("/") if part not in ("", ".")]
    if not parts or ".." in parts:
        return None
    return "/".join(parts)


def image_import_start(
    *, study: Study, source: str, files: list[dict], created_by: AbstractBaseUser
) -> ImageImport:
    """Open a field-day import: a ZIP file or a folder's files, to be uploaded in parts.

    `files` is [{"path": ..., "size": ...}]. Refuses an empty or oversized
    upload, more files than IMPORT_MAX_FILES, a ZIP import that is not one .zip
    file, paths leaving the folder and a path listed twice.
    """
    if source not in ImageImport.Source.values:
        raise ValidationError("Choose a ZIP file or a folder to import.")
    if not isinstance(files, list) or not files:
        raise ValidationError("No files were chosen.")
    manifest = []
    for entry in files:
        if not isinstance(entry, dict):
            raise ValidationError("Each file needs a path and a size.")
        path = _clean_relative_path(str(entry.get("path", "")))
        size = entry.get("size")
        if path is None:
            raise ValidationError(f"{entry.get('path')!r} is not a path inside the upload.")
        if not isinstance(size, int) or size < 0:
            raise ValidationError(f"{path}: the size must be a whole number of bytes.")
        manifest.append({"path": path, "size": size, "parts": _parts_of(size)})
    if len(manifest) > settings.IMPORT_MAX_FILES:
        raise ValidationError(
            f"The upload holds {len(manifest):,} files; the limit is {settings.IMPORT_MAX_FILES:,} "
            "(IMPORT_MAX_FILES). Split the field day."
        )
    repeated = _repeated_paths(entry["path"] for entry in manifest)
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
    return ImageImport.objects.create(
        study=study,
        source=source,
        manifest=manifest,
        bytes_expected=total,
        files_total=len(manifest),
        created_by=created_by,
    )


def image_import_part_save(
    *, image_import: ImageImport, file_index: int, part_index: int, data: BinaryIO, size: int
) -> None:
    """Store one part of one file of an import; sending the same part again replaces it."""
    if image_import.status != ImageImport.Status.UPLOADING:
        raise ValidationError("This import is no longer taking uploads.")
    if not 0 <= file_index < len(image_import.manifest):
        raise ValidationError(f"No file number {file_index} in this import.")
    entry = image_import.manifest[file_index]
    if not 0 <= part_index < entry["parts"]:
        raise ValidationError(f"{entry['path']} has no part number {part_index}.")
    expected = min(settings.IMPORT_PART_BYTES, entry["size"] - part_index * settings.IMPORT_PART_BYTES)
    if size != expected:
        raise ValidationError(
            f"Part {part_index} of {entry['path']} is {size} bytes; {expected} were expected."
        )
    key = _part_key(image_import, file_index, part_index)
    written: list[str] = []
    try:
        if default_storage.exists(key):
            default_storage.delete(key)
        _file_save(key, File(data), written)
    except Exception as error:
        _files_delete(written)  # a part written halfway would otherwise pass for a received one
        cause = error.__cause__ if isinstance(error, StorageFailed) else error
        logger.warning("Part %s of import %s not stored: %r", part_index, image_import.pk, cause)
        raise StorageFailed(
            f"Part {part_index} of {entry['path']} could not be stored ({cause}). "
            "Try again later; if it keeps failing, tell an administrator."
        ) from cause


def _repeated_paths(paths: Iterable[str]) -> list[str]:
    """The paths that appear more than once, in order."""
    seen: set[str] = set()
    repeated: dict[str, None] = {}
    for path in paths:
        if path in seen:
            repeated[path] = None
        seen.add(path)
    return list(repeated)


def image_import_finish(*, image_import: ImageImport) -> ImageImport:
    """Check that every part arrived, then queue the import for processing."""
    from .tasks import image_import_process_task

    with transaction.atomic():
        image_import = ImageImport.objects.select_for_update().get(pk=image_import.pk)
        if image_import.status != ImageImport.Status.UPLOADING:
            return image_import  # finishing twice queues it once
        try:
            _, names = default_storage.listdir(f"imports/{image_import.pk}/")
        except FileNotFoundError:  # local storage: no part arrived, so no folder
            names = []
        received = set(names)
        missing = [
            f"{entry['path']} part {part}"
            for index, entry in enumerate(image_import.manifest)
            for part in range(entry["parts"])
            if _part_key(image_import, index, part).rsplit("/", 1)[1] not in received
        ]
        if missing:
            shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
            raise ValidationError(f"Upload incomplete; missing: {shown}.")
        image_import.status = ImageImport.Status.QUEUED
        image_import.save(update_fields=["status"])
        transaction.on_commit(lambda: image_import_process_task.enqueue(image_import.pk))
    return image_import


@contextmanager
def _parts_joined(image_import: ImageImport, file_index: int) -> Iterator[BinaryIO]:
    """A readable stream of one uploaded file, joined from its parts on local disk."""
    with tempfile.TemporaryFile() as joined:
        for part in range(image_import.manifest[file_index]["parts"]):
            key = _part_key(image_import, file_index, part)
            if default_storage.exists(key):
                with default_storage.open(key, "rb") as chunk:
                    shutil.copyfileobj(chunk, joined, 1024 * 1024)
        joined.seek(0)
        yield joined


def _copy_bounded(source: BinaryIO, target: BinaryIO, limit: int) -> bool:
    """Copy at most `limit` bytes; False if the source holds more (a ZIP can lie about sizes)."""
    copied = 0
    while chunk := source.read(1024 * 1024):
        copied += len(chunk)
        if copied > limit:
            return False
        target.write(chunk)
    return True


@dataclass
class _Entry:
    path: str
    open: Callable[[], BinaryIO]


def _expansion_limit(zip_bytes: int) -> int:
    return min(settings.IMPORT_MAX_EXPANSION * zip_bytes, settings.IMPORT_MAX_BYTES)


def _size(size: int) -> str:
    return filesizeformat(size).replace("\xa0", " ")


def _expansion_reason(expanded: str, zip_bytes: int) -> str:
    return (
        f"expands to {expanded}, over the limit of {_size(_expansion_limit(zip_bytes))} "
        f"on what a ZIP may expand to (IMPORT_MAX_EXPANSION: {settings.IMPORT_MAX_EXPANSION} times "
        f"the ZIP's own {_size(zip_bytes)}, and never more than IMPORT_MAX_BYTES, "
        f"{_size(settings.IMPORT_MAX_BYTES)}); photos barely compress, so nothing was extracted"
    )


def _entries_reason(count: int) -> str:
    return (
        f"holds {count:,} entries, over the limit of {settings.IMPORT_MAX_FILES:,} (IMPORT_MAX_FILES); "
        "split the field day into several imports"
    )


class _ExpansionBudget:
    """What an import's ZIP may still expand to, charged as its members are read, whatever they declare."""

    def __init__(self, *, zip_name: str, zip_bytes: int):
        self.zip_name = zip_name
        self.zip_bytes = zip_bytes
        self.left = _expansion_limit(zip_bytes)

    def spend(self, size: int) -> None:
        self.left -= size
        if self.left < 0:
            limit = _size(_expansion_limit(self.zip_bytes))
            raise BatchRefused(
                [Refusal(self.zip_name, _expansion_reason(f"more than {limit} when read", self.zip_bytes))]
            )


class _MeteredMember(io.RawIOBase):
    """A ZIP member read through the import's expansion budget."""

    def __init__(self, member: BinaryIO, budget: _ExpansionBudget):
        self.member = member
        self.budget = budget

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        data = self.member.read(len(buffer))
        self.budget.spend(len(data))
        buffer[: len(data)] = data
        return len(data)

    def close(self) -> None:
        self.member.close()
        super().close()


def _zip_entries_declared(joined: BinaryIO) -> int | None:
    """The entry count the ZIP's end record declares, read before its directory is loaded into memory."""
    record = zipfile._EndRecData(joined)  # the standard library's own reader of that record
    return None if record is None else record[zipfile._ECD_ENTRIES_TOTAL]


def _zip_refusals(archive: zipfile.ZipFile, *, zip_name: str, zip_bytes: int) -> list[Refusal]:
    """The limits a ZIP must keep, checked from its central directory before anything is extracted."""
    members = archive.infolist()
    if len(members) > settings.IMPORT_MAX_FILES:
        return [Refusal(zip_name, _entries_reason(len(members)))]
    refusals = []
    declared = sum(info.file_size for info in members)
    if declared > _expansion_limit(zip_bytes):
        refusals.append(Refusal(zip_name, _expansion_reason(_size(declared), zip_bytes)))
    paths = [_clean_relative_path(info.filename) for info in members if not info.is_dir()]
    refusals += [
        Refusal(path, "is in the ZIP more than once; each path may appear once")
        for path in _repeated_paths(path for path in paths if path is not None)
    ]
    return refusals


def _entries_of_zip(
    archive: zipfile.ZipFile, refusals: list[Refusal], budget: _ExpansionBudget
) -> list[_Entry]:
    entries = []
    for info in archive.infolist():
        if info.is_dir():
            continue
        path = _clean_relative_path(info.filename)
        if path is None:
            refusals.append(Refusal(info.filename, "path leaves the archive's folder; refused"))
            continue
        if stat.S_ISLNK(info.external_attr >> 16):
            refusals.append(Refusal(path, "symbolic link; refused"))
            continue
        if info.flag_bits & 0x1:
            refusals.append(Refusal(path, "encrypted entry; cannot be read"))
            continue
        entries.append(
            _Entry(path, lambda info=info: io.BufferedReader(_MeteredMember(archive.open(info), budget)))
        )
    return entries


def _is_junk(path: str) -> bool:
    name = posixpath.basename(path)
    return (
        name.lower() in JUNK_NAMES
        or name.startswith(".")
        or path.startswith("__MACOSX/")
        or "/__MACOSX/" in path
    )


def _strip_common_folder(entries: list[_Entry]) -> list[_Entry]:
    """Drop one folder that wraps everything (a zipped or picked folder)."""
    while entries:
        firsts = {entry.path.split("/", 1)[0] for entry in entries}
        if len(firsts) != 1 or any("/" not in entry.path for entry in entries):
            return entries
        if any(
            posixpath.basename(entry.path).lower() == MANIFEST_NAME and entry.path.count("/") == 0
            for entry in entries
        ):
            return entries
        # stop when the paths already have the <code>/<eye>/<file> shape
        if all(entry.path.count("/") == 2 for entry in entries) and not any(
            posixpath.basename(e.path).lower() == MANIFEST_NAME for e in entries
        ):
            return entries
        entries = [_Entry(entry.path.split("/", 1)[1], entry.open) for entry in entries]
    return entries


def _layout(entries: list[_Entry], refusals: list[Refusal]) -> list[tuple[_Entry, str, str]]:
    """(entry, patient code, eye) for each photo, from manifest.csv or the folder layout."""
    manifests = [e for e in entries if e.path.lower() == MANIFEST_NAME]
    photos = [e for e in entries if e.path.lower() != MANIFEST_NAME]
    placed = []
    if manifests:
        by_path = {e.path: e for e in photos}
        listed: set[str] = set()
        with manifests[0].open() as raw:
            text = io.TextIOWrapper(raw, encoding="utf-8-sig", newline="")
            reader = csv.DictReader(text)
            columns = {name.strip().lower() for name in reader.fieldnames or []}
            if not {"file", "patient_code", "eye"} <= columns:
                refusals.append(Refusal(MANIFEST_NAME, "needs the columns file, patient_code and eye"))
                return []
            for line, row in enumerate(reader, start=2):
                row = {(k or "").strip().lower(): (v or "").strip() for k, v in row.items()}
                path = _clean_relative_path(row["file"])
                where = f"{MANIFEST_NAME} line {line}"
                if path is None:
                    refusals.append(Refusal(where, f"{row['file']!r} is not a path in the upload"))
                elif path not in by_path:
                    refusals.append(Refusal(where, f"{path} is listed but not in the upload"))
                elif path in listed:
                    refusals.append(Refusal(where, f"{path} is listed twice"))
                elif row["eye"].lower() not in EYE_WORDS:
                    refusals.append(Refusal(where, f"eye {row['eye']!r} is not R, L or U"))
                elif not row["patient_code"]:
                    refusals.append(Refusal(where, "no patient code"))
                else:
                    listed.add(path)
                    placed.append((by_path[path], row["patient_code"], EYE_WORDS[row["eye"].lower()]))
        for entry in photos:
            if entry.path not in listed:
                refusals.append(Refusal(entry.path, f"not listed in {MANIFEST_NAME}"))
        return placed
    for entry in photos:
        parts = entry.path.split("/")
        if len(parts) != 3 or parts[1].lower() not in EYE_WORDS:
            refusals.append(
                Refusal(entry.path, "not in the <patient code>/<R|L|U>/<file> layout, and no manifest.csv")
            )
            continue
        placed.append((entry, parts[0], EYE_WORDS[parts[1].lower()]))
    return placed


def _import_progress(image_import: ImageImport, done: int) -> None:
    ImageImport.objects.filter(pk=image_import.pk).update(files_done=done)


def _import_entries(
    image_import: ImageImport, stack: list, refusals: list[Refusal], workdir: Path
) -> list[_Entry]:
    if image_import.source == ImageImport.Source.ZIP:
        zip_name, zip_bytes = image_import.manifest[0]["path"], image_import.manifest[0]["size"]
        joined = tempfile.TemporaryFile(dir=workdir)
        stack.append(joined)
        with _parts_joined(image_import, 0) as parts:
            shutil.copyfileobj(parts, joined, 1024 * 1024)
        declared = _zip_entries_declared(joined)
        if declared is not None and declared > settings.IMPORT_MAX_FILES:
            refusals.append(Refusal(zip_name, _entries_reason(declared)))
            return []
        joined.seek(0)
        try:
            archive = zipfile.ZipFile(joined)
        except zipfile.BadZipFile:
            refusals.append(Refusal(zip_name, "not a readable ZIP file"))
            return []
        stack.append(archive)
        limits = _zip_refusals(archive, zip_name=zip_name, zip_bytes=zip_bytes)
        if limits:
            refusals += limits
            return []
        return _entries_of_zip(archive, refusals, _ExpansionBudget(zip_name=zip_name, zip_bytes=zip_bytes))

    def opener(index: int) -> Callable[[], BinaryIO]:
        def open_file() -> BinaryIO:
            context = _parts_joined(image_import, index)
            stream = context.__enter__()
            stack.append(context)
            return stream

        return open_file

    return [_Entry(entry["path"], opener(index)) for index, entry in enumerate(image_import.manifest)]


def image_import_process(*, image_import_id: int) -> ImageImport:
    """Check every photo of an import, then store them all, or refuse the import whole.

    Creates the patients the study lacks. Progress is saved as it goes, so
    the import page can show it. Refused: any non-image, damaged, oversized
    or duplicate file, a path leaving the upload, a photo outside the layout.
    """
    image_import = ImageImport.objects.select_related("study").get(pk=image_import_id)
    if image_import.status not in (ImageImport.Status.QUEUED, ImageImport.Status.CHECKING):
        return image_import
    study = image_import.study
    image_import.status = ImageImport.Status.CHECKING
    image_import.files_done = 0
    image_import.save(update_fields=["status", "files_done"])

    refusals: list[Refusal] = []
    written: list[str] = []
    stack: list = []
    with tempfile.TemporaryDirectory(prefix="gc-import-") as workdir_name:
        workdir = Path(workdir_name)
        try:
            entries = _import_entries(image_import, stack, refusals, workdir)
            entries = _strip_common_folder([e for e in entries if not _is_junk(e.path)])
            placed = _layout(entries, refusals)
            image_import.files_total = len(placed)
            image_import.save(update_fields=["files_total"])

            prepared: list[tuple[str, str, PreparedImage]] = []
            for done, (entry, code, eye) in enumerate(placed, start=1):
                if len(code) > Patient._meta.get_field("code").max_length:
                    refusals.append(Refusal(entry.path, f"patient code {code[:20]!r}... is too long"))
                    continue
                try:
                    # A named file in workdir: a photo that needs no change is stored from it as is.
                    with tempfile.NamedTemporaryFile(dir=workdir, delete=False) as extracted:
                        with entry.open() as source:
                            if not _copy_bounded(source, extracted, settings.IMAGE_MAX_BYTES):
                                raise ImageRefused(
                                    f"larger than the limit of {megabytes(settings.IMAGE_MAX_BYTES)}"
                                )
                        extracted.flush()
                        item = image_prepare(extracted, name=entry.path, workdir=workdir)
                    if item.stored_path != Path(extracted.name):
                        Path(extracted.name).unlink()
                    item.original_name = entry.path[:255]
                    prepared.append((code, eye, item))
                except ImageRefused as refused:
                    refusals.append(Refusal(entry.path, str(refused)))
                    Path(extracted.name).unlink(missing_ok=True)
                except (zipfile.BadZipFile, OSError, EOFError) as error:
                    refusals.append(Refusal(entry.path, f"cannot be read from the upload ({error})"))
                if done % 10 == 0:
                    _import_progress(image_import, done)
            refusals += _duplicate_refusals(study=study, prepared=[item for _, _, item in prepared])
            if not placed and not refusals:
                refusals.append(Refusal("(upload)", "no photos found"))
            if refusals:
                return _import_refuse(image_import, refusals)

            image_import.status = ImageImport.Status.STORING
            image_import.files_done = 0
            image_import.save(update_fields=["status", "files_done"])
            patients = {
                p.code: p for p in Patient.objects.filter(study=study, code__in={c for c, _, _ in prepared})
            }
            new_codes = sorted({code for code, _, _ in prepared} - set(patients))
            placeholder = {code: Patient(study=study, code=code) for code in new_codes}
            items = [(patients.get(code) or placeholder[code], eye, item) for code, eye, item in prepared]
            images = _images_write(
                study=study,
                items=items,
                uploaded_by=image_import.created_by,
                written=written,
                on_progress=lambda done: done % 10 == 0 and _import_progress(image_import, done),
            )

            def create_patients() -> None:
                created = Patient.objects.bulk_create(placeholder.values())
                if created:
                    patients_added.send(sender=Study, study=study, patient_ids=[p.pk for p in created])
                for image in images:  # the new patients had no id when their images were made
                    image.patient_id = image.patient.pk

            _images_save_rows(study=study, images=images, rows_before=create_patients)
        except BatchRefused as refused:
            _files_delete(written)
            return _import_refuse(image_import, refused.refusals)
        except ValidationError as error:
            _files_delete(written)
            return _import_refuse(image_import, [Refusal("(import)", message) for message in error.messages])
        except Exception as error:
            _files_delete(written)
            logger.exception("Import %s failed", image_import.pk)
            return _import_refuse(image_import, [Refusal("(import)", f"stopped by an error: {error}")])
        finally:
            for item in reversed(stack):
                try:
                    item.__exit__(None, None, None) if hasattr(item, "__exit__") else item.close()
                except Exception:
                    pass
    image_import.status = ImageImport.Status.DONE
    image_import.files_done = len(images)
    image_import.patients_created = len(new_codes)
    image_import.images_created = len(images)
    image_import.finished_at = timezone.now()
    image_import.save()
    _import_parts_delete(image_import)
    return image_import


def _import_refuse(image_import: ImageImport, refusals: list[Refusal]) -> ImageImport:
    image_import.status = ImageImport.Status.FAILED
    image_import.errors = [{"file": r.file, "reason": r.reason} for r in refusals]
    image_import.finished_at = timezone.now()
    image_import.save()
    _import_parts_delete(image_import)
    return image_import


def _import_parts_delete(image_import: ImageImport) -> None:
    _files_delete(
        _part_key(image_import, index, part)
        for index, entry in enumerate(image_import.manifest)
        for part in range(entry["parts"])
    )


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
        studies_busy=selectors.study_ids_importing(),
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
