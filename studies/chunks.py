"""A field-day import's upload, cut into chunks that any worker can prepare.

File and storage work only, no database: `services` plans and records, and
`chunk_prepare` runs wherever a worker is (a `db_worker` process on any
machine, or a process of the embedded run's pool), so everything it needs
travels in its `spec`.

The upload space is the bytes the browser sends, cut into parts of
`part_bytes`: a ZIP file as it is, or a folder's files one after the other.
An entry is one file in that space, `[start, end)`: a folder's file, or a ZIP
member from its local header to the next member. A chunk is a run of
consecutive entries, prepared together once every part under them has
arrived, so photos are checked while the rest of the upload is still on its
way. A prepared photo and its thumbnail are written straight to their final
keys, which are unique by construction (the import's token and the entry's
number): a retried chunk writes the same keys again, and a refused import
removes everything under its token.
"""

import bz2
import io
import posixpath
import stat
import struct
import tempfile
import zipfile
import zlib
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from django.conf import settings
from django.core.files.storage import Storage, default_storage
from django.core.files.storage.handler import StorageHandler

from .pipeline import ImageRefused, image_prepare, megabytes
from .storage import ParallelWrites, range_read

# A chunk holds at most this many photos: small enough that the last chunks keep every worker busy.
CHUNK_MAX_PHOTOS = 16
# What a worker process needs to know of the settings of whoever planned the chunk.
SPEC_SETTINGS = ("IMAGE_MAX_BYTES", "IMAGE_MAX_PIXELS", "IMAGE_THUMBNAIL_SIZE", "IMPORT_STORAGE_THREADS")
LOCAL_HEADER = struct.Struct("<4s5H3I2H")  # a ZIP member's local file header, 30 bytes
READ_BLOCK = 256 * 1024


def part_key(import_id: int, index: int) -> str:
    return f"imports/{import_id}/part-{index:06d}"


def staged_prefixes(*, study_id: int, token: str) -> tuple[str, str]:
    """The key prefixes of every file an import stages: its photos and their thumbnails."""
    return f"images/study-{study_id}/{token}-", f"thumbnails/study-{study_id}/{token}-"


def parts_under(start: int, end: int, part_bytes: int) -> range:
    """The parts holding bytes [start, end) of the upload; none for an empty range."""
    if end <= start:
        return range(start // part_bytes, start // part_bytes)
    return range(start // part_bytes, (end - 1) // part_bytes + 1)


class StoreFailed(Exception):
    """The file store refused a staged photo or thumbnail (disk full, S3 unreachable)."""


class PartMissing(Exception):
    """A part the read needs has not arrived yet."""

    def __init__(self, index: int):
        super().__init__(f"part {index} has not arrived")
        self.index = index


class UploadSpace:
    """Reads any bytes of an upload from its stored parts; one ranged read per part touched."""

    def __init__(
        self,
        *,
        import_id: int,
        size: int,
        part_bytes: int,
        received: Collection[int] | None = None,
        storage: Storage = default_storage,
    ):
        self.import_id = import_id
        self.size = size
        self.part_bytes = part_bytes
        self.received = received
        self.storage = storage

    def read(self, start: int, length: int) -> bytes:
        end = min(self.size, start + length)
        pieces = []
        for index in parts_under(start, end, self.part_bytes):
            if self.received is not None and index not in self.received:
                raise PartMissing(index)
            base = index * self.part_bytes
            lo, hi = max(start, base), min(end, base + self.part_bytes)
            pieces.append(
                range_read(part_key(self.import_id, index), lo - base, hi - lo, storage=self.storage)
            )
        return b"".join(pieces)


class UploadFile(io.RawIOBase):
    """The upload space as a seekable file, read in blocks: what `zipfile` needs to read a directory."""

    def __init__(self, space: UploadSpace):
        self.space = space
        self.position = 0
        self.blocks: dict[int, bytes] = {}

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self.position, io.SEEK_END: self.space.size}[whence]
        self.position = max(0, base + offset)
        return self.position

    def _block(self, position: int) -> tuple[int, bytes]:
        """The block holding `position` and where it starts; blocks never cross a part's end."""
        part_bytes = self.space.part_bytes
        part, within = divmod(position, part_bytes)
        start = part * part_bytes + within // READ_BLOCK * READ_BLOCK
        if start not in self.blocks:
            end = min(start + READ_BLOCK, (part + 1) * part_bytes, self.space.size)
            self.blocks[start] = self.space.read(start, end - start)
        return start, self.blocks[start]

    def readinto(self, buffer) -> int:
        wanted = min(len(buffer), max(0, self.space.size - self.position))
        done = 0
        while done < wanted:
            start, block = self._block(self.position + done)
            offset = self.position + done - start
            piece = block[offset : offset + wanted - done]
            if not piece:
                break
            buffer[done : done + len(piece)] = piece
            done += len(piece)
        self.position += done
        return done


# Planning ------------------------------------------------------------------


@dataclass
class Planned:
    """What an upload holds: its entries (photos and the manifest), and what is refused outright."""

    entries: list[dict]
    refusals: list[tuple[str, str]]  # (file, reason)


def clean_relative_path(path: str) -> str | None:
    """The path inside an upload, or None when it would leave the upload's folder."""
    path = path.replace("\\", "/")
    if path.startswith("/") or (len(path) > 1 and path[1] == ":"):
        return None
    parts = [part for part in path.split("/") if part not in ("", ".")]
    if not parts or ".." in parts:
        return None
    return "/".join(parts)


def folder_entries(manifest: list[dict]) -> list[dict]:
    """A folder's files laid one after the other in the upload space."""
    entries, offset = [], 0
    for index, item in enumerate(manifest):
        entries.append({"i": index, "path": item["path"], "start": offset, "end": offset + item["size"]})
        offset += item["size"]
    return entries


def zip_entries(archive: zipfile.ZipFile, *, zip_name: str, zip_bytes: int) -> Planned:
    """A ZIP's members from its central directory, with the limits checked before anything is read."""
    members = archive.infolist()
    if len(members) > settings.IMPORT_MAX_FILES:
        return Planned([], [(zip_name, entries_reason(len(members)))])
    refusals = []
    declared = sum(info.file_size for info in members)
    if declared > expansion_limit(zip_bytes):
        refusals.append((zip_name, expansion_reason(size_words(declared), zip_bytes)))
    paths = [clean_relative_path(info.filename) for info in members if not info.is_dir()]
    refusals += [
        (path, "is in the ZIP more than once; each path may appear once")
        for path in repeated(path for path in paths if path is not None)
    ]
    ends = sorted({info.header_offset for info in members} | {archive.start_dir})
    next_start = {start: end for start, end in zip(ends, ends[1:], strict=False)}
    entries = []
    for index, info in enumerate(members):
        if info.is_dir():
            continue
        path = clean_relative_path(info.filename)
        if path is None:
            refusals.append((info.filename, "path leaves the archive's folder; refused"))
        elif stat.S_ISLNK(info.external_attr >> 16):
            refusals.append((path, "symbolic link; refused"))
        elif info.flag_bits & 0x1:
            refusals.append((path, "encrypted entry; cannot be read"))
        else:
            entries.append(
                {
                    "i": index,
                    "path": path,
                    "start": info.header_offset,
                    "end": next_start.get(info.header_offset, archive.start_dir),
                    "method": info.compress_type,
                    "packed": info.compress_size,
                    "size": info.file_size,
                    "crc": info.CRC,
                }
            )
    return Planned(entries, refusals)


def chunks_plan(entries: list[dict], *, part_bytes: int) -> list[list[dict]]:
    """Consecutive entries grouped by the part they start in, at most CHUNK_MAX_PHOTOS each."""
    chunks: list[list[dict]] = []
    current_part = None
    for entry in sorted(entries, key=lambda entry: entry["start"]):
        part = entry["start"] // part_bytes
        if part != current_part or len(chunks[-1]) >= CHUNK_MAX_PHOTOS:
            chunks.append([])
            current_part = part
        chunks[-1].append(entry)
    return chunks


def repeated(paths: Iterable[str]) -> list[str]:
    """The paths that appear more than once, in order."""
    seen: set[str] = set()
    found: dict[str, None] = {}
    for path in paths:
        if path in seen:
            found[path] = None
        seen.add(path)
    return list(found)


def size_words(size: int) -> str:
    from django.template.defaultfilters import filesizeformat

    return filesizeformat(size).replace("\xa0", " ")


def expansion_limit(zip_bytes: int) -> int:
    return min(settings.IMPORT_MAX_EXPANSION * zip_bytes, settings.IMPORT_MAX_BYTES)


def expansion_reason(expanded: str, zip_bytes: int) -> str:
    return (
        f"expands to {expanded}, over the limit of {size_words(expansion_limit(zip_bytes))} "
        f"on what a ZIP may expand to (IMPORT_MAX_EXPANSION: {settings.IMPORT_MAX_EXPANSION} times "
        f"the ZIP's own {size_words(zip_bytes)}, and never more than IMPORT_MAX_BYTES, "
        f"{size_words(settings.IMPORT_MAX_BYTES)}); photos barely compress, so nothing was extracted"
    )


def entries_reason(count: int) -> str:
    return (
        f"holds {count:,} entries, over the limit of {settings.IMPORT_MAX_FILES:,} (IMPORT_MAX_FILES); "
        "split the field day into several imports"
    )


# Reading an entry ----------------------------------------------------------


def zip_member(data: bytes | memoryview, entry: dict) -> bytes:
    """A ZIP member's contents from its bytes in the upload (local header first), checked against its CRC.

    Never more than the size the central directory declares (which the
    import's limits were checked against) is decompressed.
    """
    if entry["size"] > settings.IMAGE_MAX_BYTES:
        raise ImageRefused(f"larger than the limit of {megabytes(settings.IMAGE_MAX_BYTES)}")
    if len(data) < LOCAL_HEADER.size or bytes(data[:4]) != b"PK\x03\x04":
        raise ImageRefused("cannot be read from the upload (no ZIP entry header where the directory says)")
    fields = LOCAL_HEADER.unpack(bytes(data[: LOCAL_HEADER.size]))
    begin = LOCAL_HEADER.size + fields[9] + fields[10]  # name and extra field lengths
    packed = data[begin : begin + entry["packed"]]
    if len(packed) < entry["packed"]:
        raise ImageRefused("cannot be read from the upload (the ZIP ends inside this file)")
    try:
        if entry["method"] == zipfile.ZIP_STORED:
            contents = bytes(packed)
        elif entry["method"] == zipfile.ZIP_DEFLATED:
            contents = zlib.decompressobj(-15).decompress(packed, entry["size"] + 1)
        elif entry["method"] == zipfile.ZIP_BZIP2:
            contents = bz2.BZ2Decompressor().decompress(packed, entry["size"] + 1)
        else:
            raise ImageRefused(
                f"compressed with method {entry['method']}, which cannot be read; "
                "make the ZIP with the usual (deflate) compression"
            )
    except (zlib.error, OSError, EOFError) as error:
        raise ImageRefused(f"cannot be read from the upload ({error})") from None
    if len(contents) > entry["size"]:
        raise ImageRefused(
            f"expands to more than the {size_words(entry['size'])} its ZIP entry declares; "
            "refused as a ZIP bomb, and nothing more was read"
        )
    if len(contents) != entry["size"] or zlib.crc32(contents) != entry["crc"]:
        raise ImageRefused("cannot be read from the upload (damaged in the ZIP: its checksum does not match)")
    return contents


# Preparing a chunk ---------------------------------------------------------


@lru_cache(maxsize=4)
def _storage_from(config: str) -> Storage:
    import json

    return StorageHandler({"default": json.loads(config)})["default"]


def spec_settings() -> dict:
    return {name: getattr(settings, name) for name in SPEC_SETTINGS}


def chunk_prepare(spec: dict) -> dict:
    """Check, clean and stage every photo of one chunk; return what a row needs and what was refused.

    `spec` holds the import (`import_id`, `study_id`, `token`, `source`,
    `size`, `part_bytes`), the chunk's `entries`, and, when run in another
    process, `settings` and `storage` (the STORAGES entry as JSON). Returns
    {"prepared": [...], "refusals": [...]}. A chunk with a refused photo stages
    nothing. A storage failure raises: the chunk can be tried again.
    """
    for name, value in spec.get("settings", {}).items():
        setattr(settings, name, value)  # a pool process of ours: it takes the planner's limits
    storage = _storage_from(spec["storage"]) if spec.get("storage") else default_storage
    entries = spec["entries"]
    space = UploadSpace(
        import_id=spec["import_id"], size=spec["size"], part_bytes=spec["part_bytes"], storage=storage
    )
    start = min(entry["start"] for entry in entries)
    end = max(entry["end"] for entry in entries)
    data = memoryview(space.read(start, end - start))
    images_prefix, thumbnails_prefix = staged_prefixes(study_id=spec["study_id"], token=spec["token"])

    prepared, refusals = [], []
    try:
        with (
            tempfile.TemporaryDirectory(prefix="gc-chunk-") as workdir_name,
            ParallelWrites(storage=storage) as writes,
        ):
            workdir = Path(workdir_name)
            for entry in entries:
                piece = data[entry["start"] - start : entry["end"] - start]
                try:
                    item = _entry_prepare(piece, entry, spec["source"], workdir)
                except ImageRefused as refused:
                    refusals.append({"file": entry["path"], "reason": str(refused)})
                    continue
                if refusals:
                    continue  # the import is refused: nothing more is staged
                number = f"{entry['i']:05d}"
                file_key = f"{images_prefix}{number}{item.extension}"
                thumbnail_key = f"{thumbnails_prefix}{number}.jpg"
                writes.write(file_key, item.stored)
                writes.write(thumbnail_key, item.thumbnail)
                prepared.append(
                    {
                        "i": entry["i"],
                        "path": entry["path"],
                        "sha256": item.sha256,
                        "width": item.width,
                        "height": item.height,
                        "bytes": item.stored_bytes,
                        "file": file_key,
                        "thumbnail": thumbnail_key,
                    }
                )
    except Exception as error:
        if isinstance(error, OSError) or type(error).__module__.startswith("botocore"):
            raise StoreFailed(str(error)) from error
        raise
    if refusals:
        return {"prepared": [], "refusals": refusals}
    return {"prepared": prepared, "refusals": []}


def _entry_prepare(piece: memoryview, entry: dict, source: str, workdir: Path):
    if source == "zip":
        contents = zip_member(piece, entry)
    else:
        contents = bytes(piece)
    if len(contents) > settings.IMAGE_MAX_BYTES:
        raise ImageRefused(f"larger than the limit of {megabytes(settings.IMAGE_MAX_BYTES)}")
    # Prepared in memory: a photo that needs no change is stored from these very bytes.
    item = image_prepare(io.BytesIO(contents), name=posixpath.basename(entry["path"]), workdir=workdir)
    item.original_name = entry["path"][:255]
    return item
