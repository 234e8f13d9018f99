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
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from django.conf import settings
from django.contrib.auth.base_user import AbstractBaseUser
from django.core.exceptions import ValidationError
from django.core.files import File
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.db import IntegrityError, transaction
from django.utils import timezone

from .models import Eye, Image, ImageImport, Patient, Study
from .pipeline import ImageRefused, PreparedImage, image_prepare, megabytes
from .signals import patients_added

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


def _duplicate_refusals(*, study: Study, prepared: list[PreparedImage]) -> list[Refusal]:
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


def _files_delete(keys: Iterable[str]) -> None:
    for key in keys:
        try:
            default_storage.delete(key)
        except Exception:  # keep removing the others; the log names what is left behind
            logger.exception("Could not remove stored file %s after a failed batch", key)


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
            file_key = default_storage.save(file_key, File(stored))
        written.append(file_key)
        thumbnail_key = default_storage.save(thumbnail_key, ContentFile(prepared.thumbnail))
        written.append(thumbnail_key)
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


def _images_save_rows(images: list[Image], rows_before: Callable[[], None] | None = None) -> list[Image]:
    try:
        with transaction.atomic():
            if rows_before:
                rows_before()
            return Image.objects.bulk_create(images, batch_size=500)
    except IntegrityError:
        raise ValidationError(
            "Another upload added one of these files to the study at the same moment; "
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
        return _images_save_rows(images)
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
    upload, a ZIP import that is not one .zip file, and paths leaving the folder.
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
    if default_storage.exists(key):
        default_storage.delete(key)
    default_storage.save(key, File(data))


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


def _entries_of_zip(archive: zipfile.ZipFile, refusals: list[Refusal]) -> list[_Entry]:
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
        entries.append(_Entry(path, lambda info=info: archive.open(info)))
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
        joined = tempfile.TemporaryFile(dir=workdir)
        stack.append(joined)
        with _parts_joined(image_import, 0) as parts:
            shutil.copyfileobj(parts, joined, 1024 * 1024)
        joined.seek(0)
        try:
            archive = zipfile.ZipFile(joined)
        except zipfile.BadZipFile:
            refusals.append(Refusal(image_import.manifest[0]["path"], "not a readable ZIP file"))
            return []
        stack.append(archive)
        return _entries_of_zip(archive, refusals)

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

            _images_save_rows(images, rows_before=create_patients)
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
