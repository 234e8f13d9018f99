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


# Hostile files for the metadata checks: every place a photo can hide who and where it was taken.

PATIENT_COMMENT = b"patient Jane Doe, village X"
XMP_PACKET = b'<x:xmpmeta xmlns:x="adobe:ns:meta/">Jane Doe, GPS 13.5N 39.4E</x:xmpmeta>'


def icc_profile() -> bytes:
    from PIL import ImageCms

    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


def gps_exif(orientation: int | None = None) -> Image.Exif:
    exif = Image.Exif()
    if orientation:
        exif[ORIENTATION] = orientation
    exif[0x010F] = "FieldCam"
    exif.get_ifd(GPS_IFD).update({1: "N", 2: (13.0, 30.0, 0.0), 3: "E", 4: (39.0, 28.0, 0.0)})
    return exif


def jpeg_segment(marker: int, payload: bytes) -> bytes:
    return bytes([0xFF, marker]) + (len(payload) + 2).to_bytes(2, "big") + payload


def jpeg_with_every_metadata(size: tuple[int, int] = (64, 48), *, orientation: int | None = 6) -> bytes:
    """A JPEG with EXIF (GPS, orientation), a comment, XMP, an ICC profile, IPTC and a JFIF thumbnail."""
    iptc_name = b"\x1c\x02\x50" + len(b"Jane Doe").to_bytes(2, "big") + b"Jane Doe"  # IPTC 2:80 By-line
    photoshop = b"Photoshop 3.0\0" + b"8BIM\x04\x04\0\0" + len(iptc_name).to_bytes(4, "big") + iptc_name
    jfif_with_thumbnail = b"JFIF\0\x01\x01\0\0\x01\0\x01\x02\x01" + b"\xc8\x5a\x5a" * 2  # a 2x1 thumbnail
    segments = [
        jpeg_segment(0xE0, jfif_with_thumbnail),
        jpeg_segment(0xE1, b"http://ns.adobe.com/xap/1.0/\0" + XMP_PACKET),
        jpeg_segment(0xE2, b"ICC_PROFILE\0\x01\x01" + icc_profile()),
        jpeg_segment(0xED, photoshop),
        jpeg_segment(0xFE, PATIENT_COMMENT),
    ]
    data = jpeg(size, orientation=orientation, gps=True)
    app0_end = 4 + int.from_bytes(data[4:6], "big")  # Pillow's own JFIF segment is replaced
    return data[:2] + b"".join(segments) + data[app0_end:]


def jpeg_with_comment(*, orientation: int | None = 6) -> bytes:
    """A JPEG with a comment segment naming the patient, after its JFIF and EXIF segments."""
    data = jpeg((64, 48), orientation=orientation)
    scan = data.index(b"\xff\xdb")  # before the first quantisation table
    return data[:scan] + jpeg_segment(0xFE, PATIENT_COMMENT) + data[scan:]


def jpeg_with_second_jpeg_after_end() -> bytes:
    """A clean JPEG followed by another one carrying GPS EXIF, as some cameras append a preview."""
    return jpeg((64, 48), seed=1) + jpeg((32, 24), seed=2, gps=True)


def progressive_jpeg_with_comment_between_scans() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (64, 48), (30, 160, 90)).save(out, "JPEG", progressive=True, quality=90)
    data = out.getvalue()
    second_scan = data.index(b"\xff\xda", data.index(b"\xff\xda") + 2)
    return data[:second_scan] + jpeg_segment(0xFE, PATIENT_COMMENT) + data[second_scan:]


def png_chunk(kind: bytes, data: bytes) -> bytes:
    import zlib

    return len(data).to_bytes(4, "big") + kind + data + zlib.crc32(kind + data).to_bytes(4, "big")


def png_with_metadata(size: tuple[int, int] = (40, 30), *, orientation: int | None = None) -> bytes:
    """A PNG with text, compressed text, international text (XMP), EXIF, an ICC profile, a time and a tail."""
    from PIL.PngImagePlugin import PngInfo

    picture = Image.new("RGB", size, (10, 120, 200))
    picture.paste((240, 240, 240), (0, 0, size[0] // 2, size[1] // 3))
    info = PngInfo()
    info.add_text("Comment", PATIENT_COMMENT.decode())
    info.add_text("Location", "village X, GPS 13.5N", zip=True)
    info.add_itxt("XML:com.adobe.xmp", XMP_PACKET.decode())
    info.add(b"tIME", b"\x07\xe8\x03\x0e\x0a\x1e\x00")
    out = io.BytesIO()
    picture.save(out, "PNG", pnginfo=info, exif=gps_exif(orientation), icc_profile=icc_profile())
    return out.getvalue() + b"GPS 13.5N 39.4E Jane Doe"


def photo_like(size: tuple[int, int] = (192, 144), seed: int = 0) -> Image.Image:
    """Smooth colours with sensor noise: compresses like a photo, far better lossy than lossless."""
    noise = Image.effect_noise(size, 12).convert("RGB")
    base = Image.linear_gradient("L").resize(size).convert("RGB")
    tint = Image.new("RGB", size, (180, 90 + seed % 100, 80))
    return Image.blend(Image.blend(base, tint, 0.6), noise, 0.25)


def webp_with_metadata(*, lossless: bool, orientation: int | None = None, icc: bool = True) -> bytes:
    out = io.BytesIO()
    photo_like().save(
        out,
        "WEBP",
        lossless=lossless,
        quality=75,
        exif=gps_exif(orientation).tobytes(),
        xmp=XMP_PACKET,
        icc_profile=icc_profile() if icc else None,
    )
    return out.getvalue()


def riff_chunks(data: bytes) -> dict[bytes, bytes]:
    """A WebP file's chunks by their four-character code."""
    chunks, position = {}, 12
    while position + 8 <= len(data):
        size = int.from_bytes(data[position + 4 : position + 8], "little")
        chunks[data[position : position + 4]] = data[position + 8 : position + 8 + size]
        position += 8 + size + (size & 1)
    return chunks


def tiff_with_metadata(*, compression: str = "tiff_lzw") -> bytes:
    """A TIFF with a description, an artist, EXIF with GPS, XMP, an ICC profile and bytes after its end."""
    picture = photo_like((60, 40))
    exif = gps_exif()
    exif[0x010E] = PATIENT_COMMENT.decode()  # ImageDescription
    exif[0x013B] = "Jane Doe"  # Artist
    exif[700] = XMP_PACKET
    out = io.BytesIO()
    picture.save(out, "TIFF", compression=compression, exif=exif, icc_profile=icc_profile())
    return out.getvalue() + b"GPS 13.5N 39.4E Jane Doe"


def mpo_with_gps_preview() -> bytes:
    """A multi-picture JPEG as phones write it: the photo, then a second picture, both with GPS EXIF."""
    out = io.BytesIO()
    first = Image.new("RGB", (64, 48), (200, 90, 90))
    second = Image.new("RGB", (32, 24), (9, 9, 9))
    first.save(out, "MPO", save_all=True, append_images=[second], exif=gps_exif())
    return out.getvalue()


def animated(image_format: str) -> bytes:
    frames = [Image.new("RGB", (32, 24), color) for color in ((200, 0, 0), (0, 200, 0))]
    out = io.BytesIO()
    frames[0].save(out, image_format, save_all=True, append_images=frames[1:])
    return out.getvalue()


def jpeg_with_stray_bytes() -> bytes:
    """A JPEG with fill bytes before a marker and junk between segments, which decoders skip."""
    data = jpeg((64, 48))
    tables = data.index(b"\xff\xdb")
    return data[:2] + b"\xff\xff" + data[2:tables] + b"Jane Doe" + data[tables:]


def jpeg_variant(mode: str = "RGB", **options) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (64, 48), (200, 90, 90)).convert(mode).save(out, "JPEG", quality=90, **options)
    return out.getvalue()


def tiff_pages(count: int = 2) -> bytes:
    pages = [Image.new("RGB", (60, 40), (40 * n, 90, 90)) for n in range(count)]
    out = io.BytesIO()
    pages[0].save(out, "TIFF", save_all=True, append_images=pages[1:], compression="tiff_lzw")
    return out.getvalue()
