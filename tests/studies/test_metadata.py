"""Stored photos carry no metadata of any kind, whatever the upload hid and wherever it hid it.

Every stored file, and every thumbnail, passes the same check, `assert_no_metadata`,
which reads the file's structure itself rather than trusting the pipeline's parser.
"""

import io

import pytest
from django.core.files.storage import default_storage
from PIL import Image as PILImage
from PIL import ImageChops, ImageOps, ImageStat

from studies.services import BatchRefused, images_upload
from tests import images

# Words the hostile files hide; none may reach storage.
HIDDEN = (b"Jane Doe", b"village X", b"Exif", b"FieldCam", b"xmpmeta", b"ICC_PROFILE", b"Photoshop", b"8BIM")
JPEG_DECODING = set(range(0xC0, 0xD0)) - {0xC8} | {0xDA, 0xDB, 0xDD}
PNG_PICTURE_CHUNKS = {b"IHDR", b"PLTE", b"IDAT", b"IEND", b"tRNS", b"gAMA", b"cHRM", b"sRGB", b"sBIT"}
WEBP_PICTURE_CHUNKS = {b"VP8X", b"VP8 ", b"VP8L", b"ALPH"}
# size, samples, compression, colour, strips, resolution, planes, predictor, extra samples, JPEG tables
TIFF_PICTURE_TAGS = {256, 257, 258, 259, 262, 273, 277, 278, 279, 282, 283, 284, 296, 317, 338, 339, 347}


def _jpeg_has_no_metadata(data: bytes) -> None:
    assert data[:2] == b"\xff\xd8"
    position = 2
    while True:
        assert data[position] == 0xFF, f"stray bytes at {position}"
        marker = data[position + 1]
        if marker == 0xD9:
            assert position + 2 == len(data), f"{len(data) - position - 2} bytes after the end of the image"
            return
        length = int.from_bytes(data[position + 2 : position + 4], "big")
        payload = data[position + 4 : position + 2 + length]
        if marker == 0xE0:  # JFIF: version and density, no thumbnail
            assert payload[:5] == b"JFIF\0" and len(payload) == 14 and payload[12:] == b"\0\0"
        elif marker == 0xEE:  # Adobe: the colour transform flag only
            assert payload[:5] == b"Adobe" and len(payload) == 12
        else:
            assert marker in JPEG_DECODING, f"segment FF{marker:02X} ({payload[:20]!r}) is stored"
        position += 2 + length
        if marker == 0xDA:  # skip the compressed picture up to the next marker
            while not (data[position] == 0xFF and data[position + 1] not in (0, *range(0xD0, 0xD8))):
                position += 1


def _png_has_no_metadata(data: bytes) -> None:
    position = 8
    while True:
        length = int.from_bytes(data[position : position + 4], "big")
        kind = data[position + 4 : position + 8]
        assert kind in PNG_PICTURE_CHUNKS, f"{kind!r} chunk is stored"
        position += 12 + length
        if kind == b"IEND":
            assert position == len(data), f"{len(data) - position} bytes after IEND"
            return


def _webp_has_no_metadata(data: bytes) -> None:
    assert int.from_bytes(data[4:8], "little") + 8 == len(data), "bytes outside the RIFF container"
    chunks = images.riff_chunks(data)
    assert set(chunks) <= WEBP_PICTURE_CHUNKS, f"{set(chunks) - WEBP_PICTURE_CHUNKS} chunks are stored"
    if b"VP8X" in chunks:
        assert chunks[b"VP8X"][0] & 0b0010_1110 == 0, "VP8X still announces ICC, EXIF, XMP or animation"


def _tiff_has_no_metadata(data: bytes) -> None:
    picture = PILImage.open(io.BytesIO(data))
    assert picture.n_frames == 1
    assert set(picture.tag_v2) <= TIFF_PICTURE_TAGS, f"tags {set(picture.tag_v2) - TIFF_PICTURE_TAGS}"


def assert_no_metadata(stored: bytes) -> None:
    """The one check every stored photo and thumbnail passes: picture structure only, nothing after it."""
    for hidden in HIDDEN:
        assert hidden not in stored, f"{hidden!r} is in the stored file"
    if stored[:2] == b"\xff\xd8":
        _jpeg_has_no_metadata(stored)
    elif stored[:8] == b"\x89PNG\r\n\x1a\n":
        _png_has_no_metadata(stored)
    elif stored[:4] == b"RIFF":
        _webp_has_no_metadata(stored)
    elif stored[:4] in (b"II*\0", b"MM\0*"):
        _tiff_has_no_metadata(stored)
    else:
        pytest.fail(f"unknown stored format {stored[:8]!r}")


def upload(patient, data: bytes, name: str):
    image = images_upload(patient=patient, files=[(name, io.BytesIO(data))], eye="R", uploaded_by=None)[0]
    with default_storage.open(image.file.name, "rb") as handle:
        stored = handle.read()
    with default_storage.open(image.thumbnail.name, "rb") as handle:
        thumbnail = handle.read()
    assert_no_metadata(stored)
    assert_no_metadata(thumbnail)
    assert image.bytes == len(stored)
    return image, stored


def pixels(data: bytes) -> PILImage.Image:
    picture = PILImage.open(io.BytesIO(data))
    picture.load()
    return picture


def mean_difference(first: PILImage.Image, second: PILImage.Image) -> float:
    assert first.size == second.size
    return max(ImageStat.Stat(ImageChops.difference(first.convert("RGB"), second.convert("RGB"))).mean)


def test_turned_jpeg_keeps_no_comment(patient):
    data = images.jpeg_with_comment(orientation=6)
    image, stored = upload(patient, data, "turned.jpg")
    assert (image.width, image.height) == (48, 64)


def test_thumbnail_keeps_no_comment(patient):
    upload(patient, images.jpeg_with_comment(orientation=None), "upright.jpg")


def test_turned_jpeg_keeps_no_comment_exif_xmp_icc_or_iptc(patient):
    data = images.jpeg_with_every_metadata()
    assert images.PATIENT_COMMENT in data
    image, stored = upload(patient, data, "turned.jpg")
    assert (image.width, image.height) == (48, 64)
    # Turned as an EXIF-aware viewer shows it, with the source's own quality.
    assert mean_difference(pixels(stored), ImageOps.exif_transpose(pixels(data))) < 3


def test_jpeg_that_needs_no_turning_is_cleaned_without_reencoding(patient):
    data = images.jpeg_with_every_metadata(orientation=None)
    image, stored = upload(patient, data, "upright.jpg")
    assert pixels(stored).tobytes() == pixels(data).tobytes()
    assert len(stored) < len(data)


def test_second_jpeg_after_the_end_of_the_image_is_not_stored(patient):
    data = images.jpeg_with_second_jpeg_after_end()
    first = images.jpeg((64, 48), seed=1)
    image, stored = upload(patient, data, "trailer.jpg")
    assert stored == first
    assert pixels(stored).tobytes() == pixels(first).tobytes()


def test_trimmed_photo_is_recognised_as_a_duplicate_of_the_upload_only(patient):
    """The sha256 stays that of the file as uploaded: the same upload again is a duplicate."""
    data = images.jpeg_with_second_jpeg_after_end()
    upload(patient, data, "trailer.jpg")
    with pytest.raises(BatchRefused, match="duplicate"):
        upload(patient, data, "again.jpg")


def test_comment_between_the_scans_of_a_progressive_jpeg_is_not_stored(patient):
    data = images.progressive_jpeg_with_comment_between_scans()
    image, stored = upload(patient, data, "progressive.jpg")
    assert pixels(stored).tobytes() == pixels(data).tobytes()


def test_multi_picture_jpeg_is_stored_as_its_first_picture(patient):
    data = images.mpo_with_gps_preview()
    image, stored = upload(patient, data, "phone.jpg")
    assert image.file.name.endswith(".jpg") and (image.width, image.height) == (64, 48)
    assert b"MPF" not in stored
    assert pixels(stored).tobytes() == pixels(data).tobytes()


def test_png_text_exif_icc_time_and_trailing_bytes_are_not_stored(patient):
    data = images.png_with_metadata()
    image, stored = upload(patient, data, "scan.png")
    assert pixels(stored).tobytes() == pixels(data).tobytes()


def test_turned_png_is_turned_and_clean(patient):
    data = images.png_with_metadata((40, 30), orientation=6)
    image, stored = upload(patient, data, "scan.png")
    assert (image.width, image.height) == (30, 40)
    assert pixels(stored).tobytes() == ImageOps.exif_transpose(pixels(data)).tobytes()


def test_lossy_webp_stays_lossy_without_its_metadata(patient):
    data = images.webp_with_metadata(lossless=False)
    source_picture = images.riff_chunks(data)[b"VP8 "]
    image, stored = upload(patient, data, "photo.webp")
    chunks = images.riff_chunks(stored)
    assert b"VP8 " in chunks and b"VP8L" not in chunks
    assert chunks[b"VP8 "] == source_picture  # the compressed picture itself, untouched
    assert len(stored) <= 1.5 * len(source_picture)
    assert pixels(stored).tobytes() == pixels(data).tobytes()


def test_lossy_webp_with_exif_and_xmp_is_not_stored_lossless(patient):
    data = images.webp_with_metadata(lossless=False, icc=False)
    image, stored = upload(patient, data, "photo.webp")
    assert b"VP8 " in images.riff_chunks(stored)
    assert len(stored) <= 1.5 * len(images.riff_chunks(data)[b"VP8 "])


def test_turned_lossy_webp_stays_lossy(patient):
    data = images.webp_with_metadata(lossless=False, orientation=6)
    image, stored = upload(patient, data, "photo.webp")
    assert b"VP8 " in images.riff_chunks(stored)
    assert len(stored) <= 1.5 * len(images.riff_chunks(data)[b"VP8 "])
    assert (image.width, image.height) == (144, 192)
    assert mean_difference(pixels(stored), ImageOps.exif_transpose(pixels(data))) < 4


def test_lossless_webp_stays_lossless_without_its_metadata(patient):
    data = images.webp_with_metadata(lossless=True)
    image, stored = upload(patient, data, "scan.webp")
    assert b"VP8L" in images.riff_chunks(stored)
    assert pixels(stored).tobytes() == pixels(data).tobytes()


def test_tiff_description_artist_exif_xmp_icc_and_trailing_bytes_are_not_stored(patient):
    data = images.tiff_with_metadata()
    image, stored = upload(patient, data, "scan.tif")
    assert pixels(stored).tobytes() == pixels(data).tobytes()


def test_jpeg_compressed_tiff_stays_lossy(patient):
    data = images.tiff_with_metadata(compression="jpeg")
    image, stored = upload(patient, data, "scan.tif")
    assert pixels(stored).info["compression"] == "jpeg"
    assert mean_difference(pixels(stored), pixels(data)) < 4


@pytest.mark.parametrize(
    ("name", "make"),
    [
        ("photo.jpg", lambda: images.jpeg((64, 48))),
        ("scan.png", images.png),
        ("photo.webp", lambda: images.webp_with_metadata(lossless=False)),
    ],
)
def test_a_clean_photo_is_stored_as_uploaded(patient, name, make):
    data = make()
    if name.endswith(".webp"):  # a WebP without metadata, as Pillow writes one
        out = io.BytesIO()
        pixels(data).save(out, "WEBP", quality=75)
        data = out.getvalue()
    image, stored = upload(patient, data, name)
    assert stored == data


@pytest.mark.parametrize("image_format", ["PNG", "WEBP"])
def test_animated_images_are_refused(patient, image_format):
    with pytest.raises(BatchRefused, match="animated images are not accepted"):
        upload(patient, images.animated(image_format), f"moving.{image_format.lower()}")


@pytest.mark.parametrize(
    "make",
    [
        images.jpeg_with_stray_bytes,
        lambda: images.jpeg_variant(restart_marker_blocks=2),
        lambda: images.jpeg_variant("CMYK"),  # keeps its Adobe colour transform segment
        lambda: images.jpeg_variant("L", progressive=True, optimize=True),
    ],
    ids=["stray-bytes", "restart-markers", "cmyk", "grey-progressive"],
)
def test_unusual_jpegs_keep_their_pixels(patient, make):
    data = make()
    image, stored = upload(patient, data, "unusual.jpg")
    assert pixels(stored).tobytes() == pixels(data).tobytes()


def test_multi_page_tiff_is_stored_as_its_first_page(patient):
    data = images.tiff_pages(2)
    image, stored = upload(patient, data, "pages.tif")
    assert pixels(stored).tobytes() == pixels(data).tobytes()
