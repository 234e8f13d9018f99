"""The image pipeline: check a photo, strip its metadata, orient it, make its thumbnail.

Pure Pillow and file work, no database: `services` wraps it. Every refusal is
an `ImageRefused` whose message a person can act on.
"""

import hashlib
import io
import mmap
import os
import shutil
import tempfile
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import BinaryIO

from django.conf import settings
from PIL import Image as PILImage
from PIL import JpegImagePlugin, UnidentifiedImageError

from . import metadata

ACCEPTED_FORMATS = {"JPEG": ".jpg", "PNG": ".png", "TIFF": ".tif", "WEBP": ".webp"}
# A multi-picture JPEG (a phone's photo with its depth map or preview) is stored as its first picture.
STORED_AS = {"MPO": "JPEG"}
CLEANERS = {"JPEG": metadata.jpeg_pieces, "PNG": metadata.png_pieces, "WEBP": metadata.webp_pieces}
# A TIFF with JPEG compression is re-encoded at this JPEG quality: its tables cannot be reused.
REENCODE_QUALITY = 90
EXIF_ORIENTATION = 0x0112
# Orientation tag -> the transposition that makes the picture upright.
ORIENTATION_FIX = {
    2: [PILImage.Transpose.FLIP_LEFT_RIGHT],
    3: [PILImage.Transpose.ROTATE_180],
    4: [PILImage.Transpose.FLIP_TOP_BOTTOM],
    5: [PILImage.Transpose.TRANSPOSE],
    6: [PILImage.Transpose.ROTATE_270],
    7: [PILImage.Transpose.TRANSVERSE],
    8: [PILImage.Transpose.ROTATE_90],
}
CHUNK = 1024 * 1024


class ImageRefused(Exception):
    """A file that cannot be stored, with the reason in words."""


@dataclass
class PreparedImage:
    """A checked photo, ready to store: its bytes wait in `stored_path`, or in `stored_data`."""

    original_name: str
    sha256: str
    width: int
    height: int
    extension: str
    stored_path: Path | None
    stored_bytes: int
    thumbnail: bytes
    stored_data: bytes | None = None  # a photo prepared from memory that needed no file on disk

    @property
    def stored(self) -> Path | bytes:
        """What to write: the bytes, or the file holding them."""
        return self.stored_data if self.stored_data is not None else self.stored_path


def megabytes(size: int) -> str:
    return f"{size / 1024 / 1024:.1f} MB"


def _hash_and_measure(source: BinaryIO) -> tuple[str, int]:
    digest = hashlib.sha256()
    size = 0
    source.seek(0)
    while chunk := source.read(CHUNK):
        size += len(chunk)
        if size > settings.IMAGE_MAX_BYTES:
            raise ImageRefused(f"larger than the limit of {megabytes(settings.IMAGE_MAX_BYTES)}")
        digest.update(chunk)
    return digest.hexdigest(), size


def _open(source: BinaryIO) -> PILImage.Image:
    source.seek(0)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", PILImage.DecompressionBombWarning)
            picture = PILImage.open(source)
    except (PILImage.DecompressionBombError, PILImage.DecompressionBombWarning):
        raise ImageRefused(
            "refused as a decompression bomb: it declares far more pixels than a photo has"
        ) from None
    except UnidentifiedImageError:
        raise ImageRefused("not an image, or an image format that cannot be read") from None
    except (OSError, SyntaxError, ValueError) as error:
        raise ImageRefused(f"damaged image header ({error})") from None
    if STORED_AS.get(picture.format, picture.format) not in ACCEPTED_FORMATS:
        raise ImageRefused(f"{picture.format} images are not accepted; use JPEG, PNG, TIFF or WebP")
    if picture.format in ("PNG", "WEBP") and getattr(picture, "is_animated", False):
        raise ImageRefused("animated images are not accepted; upload a still photo")
    pixels = picture.width * picture.height
    if pixels > settings.IMAGE_MAX_PIXELS:
        raise ImageRefused(
            f"{picture.width}x{picture.height} is {pixels / 1e6:.0f} megapixels; "
            f"the limit is {settings.IMAGE_MAX_PIXELS / 1e6:.0f}"
        )
    return picture


def _orientation(picture: PILImage.Image) -> int:
    try:
        value = picture.getexif().get(EXIF_ORIENTATION, 1)
    except Exception:  # a broken EXIF block must not stop the photo; it is stripped anyway
        return 1
    return value if value in ORIENTATION_FIX else 1


def _orient(picture: PILImage.Image, orientation: int) -> PILImage.Image:
    for method in ORIENTATION_FIX.get(orientation, []):
        picture = picture.transpose(method)
    return picture


def _decoded(picture: PILImage.Image) -> None:
    """Decode the whole picture: the real check, since Pillow's verify() misses a truncated JPEG."""
    try:
        picture.load()
    except (OSError, SyntaxError, ValueError, EOFError) as error:
        raise ImageRefused(f"damaged or truncated image data ({error})") from None


def _thumbnail_bytes(picture: PILImage.Image, *, consume: bool = False) -> bytes:
    """A small upright JPEG of an already decoded, upright picture (shrunk in place with `consume`)."""
    size = settings.IMAGE_THUMBNAIL_SIZE
    if picture.mode not in ("RGB", "L", "RGBA", "LA"):
        has_alpha = "A" in picture.getbands() or "transparency" in picture.info
        picture = picture.convert("RGBA" if has_alpha else "RGB")
    # reduce() makes a new, smaller image at once: no full-size copy of a 12 MP photo.
    factor = max(1, min(picture.width, picture.height) // (2 * size))
    small = picture.reduce(factor) if factor > 1 else picture if consume else picture.copy()
    small.thumbnail((size, size), reducing_gap=2.0)
    if small.mode not in ("RGB", "L"):
        if "A" in small.getbands():
            rgba = small.convert("RGBA")
            background = PILImage.new("RGB", small.size, "white")
            background.paste(rgba, mask=rgba.getchannel("A"))
            small = background
        else:
            small = small.convert("RGB")
    small.info = {}  # Pillow would copy the photo's comment into the thumbnail
    out = io.BytesIO()
    small.save(out, "JPEG", quality=85)
    thumbnail = out.getvalue()
    pieces = metadata.jpeg_pieces(thumbnail)  # stored too: it passes the same check as the photo
    return thumbnail if pieces.unchanged else pieces.tobytes(thumbnail)


def _new_file(workdir: Path, extension: str) -> Path:
    fd, name = tempfile.mkstemp(suffix=extension, dir=workdir)
    os.close(fd)
    return Path(name)


def _fileno(source: BinaryIO) -> int | None:
    try:
        return source.fileno()
    except (AttributeError, OSError, ValueError):  # an in-memory upload: io.UnsupportedOperation
        return None


@contextmanager
def _contents(source: BinaryIO) -> Iterator[bytes | mmap.mmap]:
    """The whole file without a copy in Python's memory: a read-only map, or the bytes of a small upload."""
    fileno = _fileno(source)
    if fileno is None:
        source.seek(0)
        yield source.read()
        return
    source.flush()
    with mmap.mmap(fileno, 0, access=mmap.ACCESS_READ) as mapped:
        yield mapped


def _clean_pieces(image_format: str, data) -> metadata.Pieces | None:
    """What a clean copy keeps; None for a TIFF that must be re-encoded to be clean."""
    try:
        if image_format == "TIFF":
            return metadata.Pieces(len(data), [(0, len(data))]) if metadata.tiff_is_clean(data) else None
        return CLEANERS[image_format](data)
    except metadata.DamagedFile as error:
        raise ImageRefused(f"damaged {image_format} file ({error})") from None


def _save_upright(
    picture: PILImage.Image, upright: PILImage.Image, image_format: str, path: Path, source: BinaryIO
) -> None:
    """Save a new (turned or copied) picture in its source's format, its quality and nothing else."""
    upright.info = {}  # Pillow would copy the source's comment, ICC profile and text into the save
    options: dict = {}
    if image_format == "JPEG":
        # The original's quantisation tables and subsampling: the same visual quality.
        options["qtables"] = picture.quantization
        if (sampling := JpegImagePlugin.get_sampling(picture)) != -1:
            options["subsampling"] = sampling
    elif image_format == "PNG" and "transparency" in picture.info:
        options["transparency"] = picture.info["transparency"]
    elif image_format == "TIFF":
        if picture.info.get("compression") in ("jpeg", "tiff_jpeg"):
            options = {"compression": "jpeg", "quality": REENCODE_QUALITY}
        else:
            options = {"compression": "tiff_lzw"}
    elif image_format == "WEBP":
        with _contents(source) as data:
            quality = metadata.webp_lossy_quality(data)  # lossy stays lossy, at about its own quality
        options = {"lossless": True} if quality is None else {"quality": quality}
    upright.save(path, image_format, **options)


def _stored_reencoded(
    picture: PILImage.Image, upright: PILImage.Image, image_format: str, workdir: Path, source: BinaryIO
) -> Path:
    """Re-encode a picture and check that what the encoder wrote is as clean as a stored original."""
    path = _new_file(workdir, ACCEPTED_FORMATS[image_format])
    try:
        _save_upright(picture, upright, image_format, path, source)
        with open(path, "rb") as written:
            clean = _stored_clean(written, image_format, workdir, reencode=None)
    except metadata.DamagedFile as error:
        path.unlink(missing_ok=True)
        raise ImageRefused(f"damaged {image_format} file ({error})") from None
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    if clean is None:
        path.unlink()
        raise ImageRefused("could not be stored without its metadata; save it as PNG or JPEG and upload that")
    if clean != path:
        path.unlink()
    return clean


def _stored_copy_reencoded(
    picture: PILImage.Image, image_format: str, workdir: Path, source: BinaryIO
) -> Path:
    # A new image, not the opened file: a TIFF save would copy the file's XMP and IPTC tags.
    return _stored_reencoded(picture, picture.copy(), image_format, workdir, source)


def _stored_clean(
    source: BinaryIO, image_format: str, workdir: Path, reencode: Callable[[], Path] | None
) -> Path | bytes | None:
    """What to store: `source` itself when it is clean, a copy without its metadata otherwise.

    A photo in memory (a BytesIO) gives bytes, one on disk a file. A TIFF
    that is not clean is re-encoded by `reencode`; without one, None.
    """
    in_memory = isinstance(source, io.BytesIO)
    with _contents(source) as data:
        pieces = _clean_pieces(image_format, data)
        if pieces is not None and not pieces.unchanged:
            if in_memory:
                return pieces.tobytes(data)
            path = _new_file(workdir, ACCEPTED_FORMATS[image_format])
            with open(path, "wb") as target:
                pieces.write(data, target)
            return path
    if pieces is None:
        return reencode() if reencode else None
    if in_memory:
        return source.getvalue()
    if (on_disk := _path_on_disk(source, workdir)) is not None:
        return on_disk
    path = _new_file(workdir, ACCEPTED_FORMATS[image_format])
    with open(path, "wb") as target:
        source.seek(0)
        shutil.copyfileobj(source, target, CHUNK)
    return path


def _path_on_disk(source: BinaryIO, workdir: Path) -> Path | None:
    """The file behind `source`, if it can be stored as is: an upload's temporary file, or one in workdir."""
    if hasattr(source, "temporary_file_path"):
        return Path(source.temporary_file_path())
    name = getattr(source, "name", None)
    if isinstance(name, str) and Path(name).parent == workdir and Path(name).is_file():
        return Path(name)
    return None


def image_prepare(source: BinaryIO, *, name: str, workdir: Path) -> PreparedImage:
    """Check one photo and prepare what to store; raise ImageRefused with the reason.

    What is stored carries no metadata of any kind (EXIF, XMP, IPTC, ICC
    profiles, comments, text chunks, bytes after the end of the picture): see
    `studies.metadata`. It is the original file when that is already clean; a
    JPEG, PNG or WebP is otherwise cleaned without re-encoding, so its pixels
    are bit for bit the uploaded ones. Only a photo that must be turned, or a
    TIFF with metadata, is re-encoded, in its own format and compression
    (lossy stays lossy). The file is decoded once: in draft mode (1/2 to 1/8
    scale) for a JPEG that needs no turning, which is both the check and the
    thumbnail. `sha256` is of the file as uploaded, for duplicate detection. A photo
    given as a BytesIO is prepared in memory: nothing is written to `workdir`
    unless it must be re-encoded.
    """
    sha256, size = _hash_and_measure(source)
    if size == 0:
        raise ImageRefused("empty file (0 bytes)")
    picture = _open(source)
    image_format = STORED_AS.get(picture.format, picture.format)
    orientation = _orientation(picture)

    if orientation != 1:
        _decoded(picture)
        upright = _orient(picture, orientation)
        stored = _stored_reencoded(picture, upright, image_format, workdir, source)
        width, height = upright.size
        thumbnail = _thumbnail_bytes(upright, consume=True)
    else:
        width, height = picture.size
        if image_format == "JPEG":
            thumbnail_side = settings.IMAGE_THUMBNAIL_SIZE
            picture.draft(None, (thumbnail_side, thumbnail_side))
        _decoded(picture)
        # A TIFF may still need the full picture, to be re-encoded without its metadata.
        thumbnail = _thumbnail_bytes(picture, consume=image_format != "TIFF")
        reencode = partial(_stored_copy_reencoded, picture, image_format, workdir, source)
        stored = _stored_clean(source, image_format, workdir, reencode)
    del picture, source  # not close(): that would close the caller's file too
    in_memory = isinstance(stored, bytes)
    return PreparedImage(
        original_name=os.path.basename(name)[:255] or "unnamed",
        sha256=sha256,
        width=width,
        height=height,
        extension=ACCEPTED_FORMATS[image_format],
        stored_path=None if in_memory else stored,
        stored_bytes=len(stored) if in_memory else stored.stat().st_size,
        thumbnail=thumbnail,
        stored_data=stored if in_memory else None,
    )
