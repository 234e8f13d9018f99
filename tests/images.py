"""Real image bytes for tests, made with Pillow: good photos and a corpus of bad files."""

import io

from PIL import Image

GPS_IFD = 0x8825
ORIENTATION = 0x0112


def jpeg(
    size: tuple[int, int] = (64, 48),
    color: tuple[int, int, int] = (200, 90, 90),
    *,
    orientation: int | None = None,
    gps: bool = False,
    seed: int = 0,
    quality: int = 90,
) -> bytes:
    """A JPEG whose left half is `color` and right half dark, so orientation is visible."""
    picture = Image.new("RGB", size, color)
    picture.paste((20, 20, 20 + seed % 200), (size[0] // 2, 0, size[0], size[1]))
    # a block whose colour depends on the seed, so every seed gives a different file
    block = (size[0] // 4, size[1] - 8, size[0] // 4 + 8, size[1])
    picture.paste(((seed * 37) % 256, (seed * 91) % 256, (seed * 13) % 256), block)
    exif = Image.Exif()
    if orientation:
        exif[ORIENTATION] = orientation
    if gps:
        exif[0x010F] = "FieldCam"
        exif.get_ifd(GPS_IFD).update({1: "N", 2: (13.0, 30.0, 0.0), 3: "E", 4: (39.0, 28.0, 0.0)})
    out = io.BytesIO()
    picture.save(out, "JPEG", quality=quality, exif=exif.tobytes() if len(exif) or gps else b"")
    return out.getvalue()


def png(size: tuple[int, int] = (40, 30), color=(10, 120, 200)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, color).save(out, "PNG")
    return out.getvalue()


def truncated_jpeg() -> bytes:
    data = jpeg((640, 480), seed=99, quality=95)
    return data[: len(data) // 2]


def decompression_bomb() -> bytes:
    """A small PNG that declares 30,000 x 30,000 pixels."""
    out = io.BytesIO()
    Image.new("1", (30_000, 30_000)).save(out, "PNG")
    return out.getvalue()


def text_as_jpeg() -> bytes:
    return b"Patient list\nAM-0001, 4, F\n" * 20
