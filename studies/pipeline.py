"""The image pipeline: check a photo, strip its metadata, orient it, make its thumbnail.

Pure Pillow and file work, no database: `services` wraps it. Every refusal is
an `ImageRefused` whose message a person can act on.
"""

import hashlib
import io
import os
import shutil
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from django.conf import settings
from PIL import Image as PILImage
from PIL import JpegImagePlugin, UnidentifiedImageError

ACCEPTED_FORMATS = {"JPEG": ".jpg", "PNG": ".png", "TIFF": ".tif", "WEBP": ".webp"}
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
    """A checked photo, ready to store: its bytes wait in `stored_path`."""

    original_name: str
    sha256: str
    width: int
    height: int
    extension: str
    stored_path: Path
    stored_bytes: int
    thumbnail: bytes


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
    if picture.format not in ACCEPTED_FORMATS:
        raise ImageRefused(f"{picture.format} images are not accepted; use JPEG, PNG, TIFF or WebP")
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


def _thumbnail_bytes(picture: PILImage.Image) -> bytes:
    """A small upright JPEG of an already decoded, upright picture."""
    size = settings.IMAGE_THUMBNAIL_SIZE
    if picture.mode not in ("RGB", "L", "RGBA", "LA"):
        has_alpha = "A" in picture.getbands() or "transparency" in picture.info
        picture = picture.convert("RGBA" if has_alpha else "RGB")
    # reduce() makes a new, smaller image at once: no full-size copy of a 12 MP photo.
    factor = max(1, min(picture.width, picture.height) // (2 * size))
    small = picture.reduce(factor) if factor > 1 else picture.copy()
    small.thumbnail((size, size), reducing_gap=2.0)
    if small.mode not in ("RGB", "L"):
        if "A" in small.getbands():
            rgba = small.convert("RGBA")
            background = PILImage.new("RGB", small.size, "white")
            background.paste(rgba, mask=rgba.getchannel("A"))
            small = background
        else:
            small = small.convert("RGB")
    out = io.BytesIO()
    small.save(out, "JPEG", quality=85)
    return out.getvalue()


# JPEG markers that carry metadata (APP1 EXIF/XMP, APP3..APP15, comments); APP0
# (JFIF), APP14 (Adobe colour transform) and an ICC profile in APP2 are kept.
def _jpeg_marker_is_metadata(marker: int, payload: bytes) -> bool:
    if marker == 0xFE:
        return True
    if marker == 0xE2:
        return not payload.startswith(b"ICC_PROFILE\0")
    return 0xE1 <= marker <= 0xEF and marker != 0xEE


def _jpeg_has_metadata(picture: JpegImagePlugin.JpegImageFile) -> bool:
    codes = {f"APP{n}": 0xE0 + n for n in range(16)} | {"COM": 0xFE}
    return any(_jpeg_marker_is_metadata(codes.get(name, 0), payload) for name, payload in picture.applist)


def _jpeg_strip_metadata(source: BinaryIO, target: BinaryIO) -> None:
    """Copy a JPEG without its metadata segments, leaving the compressed picture untouched."""
    source.seek(0)
    if source.read(2) != b"\xff\xd8":
        raise ImageRefused("damaged JPEG: no start-of-image marker")
    target.write(b"\xff\xd8")
    while True:
        head = source.read(2)
        if len(head) < 2 or head[0] != 0xFF:
            raise ImageRefused("damaged JPEG: bad segment marker")
        marker = head[1]
        while marker == 0xFF:  # fill bytes
            byte = source.read(1)
            if not byte:
                raise ImageRefused("damaged JPEG: the file ends inside its header")
            marker = byte[0]
        if marker == 0x01 or 0xD0 <= marker <= 0xD7:
            target.write(bytes([0xFF, marker]))
            continue
        length_bytes = source.read(2)
        length = int.from_bytes(length_bytes, "big")
        payload = source.read(length - 2)
        if len(payload) != length - 2:
            raise ImageRefused("damaged or truncated JPEG header")
        if marker == 0xDA:  # start of scan: the rest is the picture, up to end-of-image
            target.write(b"\xff\xda" + length_bytes + payload)
            _copy_until_end_of_image(source, target)
            return
        if not _jpeg_marker_is_metadata(marker, payload):
            target.write(bytes([0xFF, marker]) + length_bytes + payload)


def _copy_until_end_of_image(source: BinaryIO, target: BinaryIO) -> None:
    # Cameras append previews (with their own EXIF) after EOI; they are dropped.
    carry = b""
    while chunk := source.read(CHUNK):
        data = carry + chunk
        end = data.find(b"\xff\xd9")
        if end >= 0:
            target.write(data[: end + 2])
            return
        target.write(data[:-1])
        carry = data[-1:]
    target.write(carry)


def _save_upright(picture: PILImage.Image, upright: PILImage.Image, target: BinaryIO) -> None:
    """Save the turned picture in its own format, a JPEG with the original's tables and subsampling."""
    options: dict = {}
    if picture.info.get("icc_profile"):
        options["icc_profile"] = picture.info["icc_profile"]
    if picture.format == "JPEG":
        # The original's quantisation tables and subsampling: the same visual quality.
        options["qtables"] = picture.quantization
        sampling = JpegImagePlugin.get_sampling(picture)
        if sampling != -1:
            options["subsampling"] = sampling
        upright.save(target, "JPEG", **options)
    elif picture.format == "PNG":
        upright.save(target, "PNG", **options)
    elif picture.format == "TIFF":
        upright.save(target, "TIFF", compression="tiff_lzw", **options)
    else:
        upright.save(target, "WEBP", lossless=True, **options)


def _other_has_metadata(picture: PILImage.Image) -> bool:
    return bool(
        picture.getexif()
        or picture.info.get("xmp")
        or picture.info.get("XML:com.adobe.xmp")
        or getattr(picture, "text", None)
    )


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

    The stored bytes are the original bytes when the file has no metadata and
    needs no turning; metadata is removed without re-encoding a JPEG; only a
    photo that must be turned is re-encoded, with the original's JPEG tables.
    The file is decoded once: in draft mode (1/4 or 1/8 scale) for a JPEG
    that needs no turning, which is both the check and the thumbnail.
    """
    sha256, size = _hash_and_measure(source)
    if size == 0:
        raise ImageRefused("empty file (0 bytes)")
    picture = _open(source)
    image_format = picture.format
    extension = ACCEPTED_FORMATS[image_format]
    orientation = _orientation(picture)
    has_metadata = _jpeg_has_metadata(picture) if image_format == "JPEG" else _other_has_metadata(picture)
    stored_path = _path_on_disk(source, workdir)

    if orientation != 1 or (has_metadata and image_format != "JPEG"):
        _decoded(picture)
        # A new image, not the opened file: a TIFF save would copy the file's XMP and IPTC tags.
        upright = _orient(picture, orientation) if orientation != 1 else picture.copy()
        fd, stored_name = tempfile.mkstemp(suffix=extension, dir=workdir)
        with os.fdopen(fd, "wb") as target:
            _save_upright(picture, upright, target)
        stored_path = Path(stored_name)
        thumbnail = _thumbnail_bytes(upright)
        width, height = upright.size
    else:
        width, height = picture.size
        if image_format == "JPEG":
            thumbnail_side = settings.IMAGE_THUMBNAIL_SIZE
            picture.draft(None, (thumbnail_side, thumbnail_side))
        _decoded(picture)
        thumbnail = _thumbnail_bytes(picture)
        if has_metadata or stored_path is None:
            fd, stored_name = tempfile.mkstemp(suffix=extension, dir=workdir)
            with os.fdopen(fd, "wb") as target:
                if has_metadata:
                    _jpeg_strip_metadata(source, target)
                else:
                    source.seek(0)
                    shutil.copyfileobj(source, target, CHUNK)
            stored_path = Path(stored_name)
    del picture, source  # not close(): that would close the caller's file too
    return PreparedImage(
        original_name=os.path.basename(name)[:255] or "unnamed",
        sha256=sha256,
        width=width,
        height=height,
        extension=extension,
        stored_path=stored_path,
        stored_bytes=stored_path.stat().st_size,
        thumbnail=thumbnail,
    )
