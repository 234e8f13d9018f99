"""The image pipeline: what is stored is upright, carries no EXIF, and matches its record."""

import hashlib
import io

import pytest
from django.core.files.storage import default_storage
from PIL import Image as PILImage

from studies.services import BatchRefused, images_upload
from tests import images


def stored_picture(image) -> PILImage.Image:
    with default_storage.open(image.file.name, "rb") as handle:
        return PILImage.open(io.BytesIO(handle.read()))


def upload_one(patient, user, data: bytes, name="photo.jpg"):
    return images_upload(patient=patient, files=[(name, io.BytesIO(data))], eye="R", uploaded_by=user)[0]


def test_clean_jpeg_is_stored_byte_for_byte(patient, collector):
    data = images.jpeg((320, 240))
    image = upload_one(patient, collector, data)
    with default_storage.open(image.file.name, "rb") as handle:
        assert handle.read() == data
    assert image.sha256 == hashlib.sha256(data).hexdigest()
    assert (image.width, image.height, image.bytes) == (320, 240, len(data))
    assert image.original_name == "photo.jpg"


def test_gps_and_all_exif_are_stripped_without_reencoding(patient, collector):
    data = images.jpeg((320, 240), gps=True)
    assert PILImage.open(io.BytesIO(data)).getexif().get_ifd(images.GPS_IFD)
    image = upload_one(patient, collector, data)
    picture = stored_picture(image)
    assert len(picture.getexif()) == 0
    assert "exif" not in picture.info
    with default_storage.open(image.file.name, "rb") as handle:
        stored = handle.read()
    assert b"FieldCam" not in stored and b"Exif" not in stored
    # The compressed picture itself is untouched: same pixels as the original.
    assert picture.tobytes() == PILImage.open(io.BytesIO(data)).tobytes()


@pytest.mark.parametrize(("orientation", "size"), [(6, (48, 64)), (8, (48, 64)), (3, (64, 48))])
def test_exif_orientation_is_applied(patient, collector, orientation, size):
    data = images.jpeg((64, 48), color=(250, 250, 250), orientation=orientation, gps=True)
    image = upload_one(patient, collector, data)
    picture = stored_picture(image)
    assert picture.size == size == (image.width, image.height)
    assert picture.getexif().get(images.ORIENTATION) is None
    assert b"FieldCam" not in default_storage.open(image.file.name, "rb").read()
    # The light half of the photo ends where an EXIF-aware viewer would show it.
    expected = PILImage.open(io.BytesIO(data))
    from PIL import ImageOps

    upright = ImageOps.exif_transpose(expected)
    corner = (2, 2)
    assert abs(picture.getpixel(corner)[0] - upright.getpixel(corner)[0]) < 40


def test_thumbnail_is_small_upright_jpeg(patient, collector, settings):
    settings.IMAGE_THUMBNAIL_SIZE = 100
    image = upload_one(patient, collector, images.jpeg((640, 480), orientation=6))
    with default_storage.open(image.thumbnail.name, "rb") as handle:
        thumbnail = PILImage.open(handle)
        thumbnail.load()
    assert thumbnail.format == "JPEG"
    assert thumbnail.size == (75, 100)


def test_png_is_accepted(patient, collector):
    image = upload_one(patient, collector, images.png(), name="scan.png")
    assert image.file.name.endswith(".png")
    assert (image.width, image.height) == (40, 30)


@pytest.mark.parametrize(
    ("name", "make", "reason"),
    [
        ("empty.jpg", lambda: b"", "empty file"),
        ("half.jpg", images.truncated_jpeg, "truncated"),
        ("notes.jpg", images.text_as_jpeg, "not an image"),
        ("bomb.png", images.decompression_bomb, "decompression bomb"),
    ],
)
def test_bad_files_are_refused_with_their_reason(patient, collector, name, make, reason):
    with pytest.raises(BatchRefused) as refused:
        upload_one(patient, collector, make(), name=name)
    assert len(refused.value.refusals) == 1
    assert refused.value.refusals[0].file == name
    assert reason in refused.value.refusals[0].reason
    assert patient.images.count() == 0


def test_pixel_bomb_beyond_pillows_own_limit_is_refused(patient, collector, settings):
    settings.IMAGE_MAX_PIXELS = 10**12  # only Pillow's own decompression-bomb guard is left
    with pytest.raises(BatchRefused, match="decompression bomb"):
        upload_one(patient, collector, images.decompression_bomb(), name="bomb.png")


def test_file_over_the_byte_limit_is_refused(patient, collector, settings):
    data = images.jpeg((320, 240))
    settings.IMAGE_MAX_BYTES = len(data) - 1
    with pytest.raises(BatchRefused, match="larger than the limit"):
        upload_one(patient, collector, data)


def test_image_over_the_pixel_limit_is_refused(patient, collector, settings):
    settings.IMAGE_MAX_PIXELS = 1000
    with pytest.raises(BatchRefused, match="megapixels; the limit"):
        upload_one(patient, collector, images.jpeg((64, 48)))


@pytest.mark.parametrize("mode", ["P", "RGBA", "CMYK", "L", "1"])
def test_other_colour_modes_get_a_jpeg_thumbnail(patient, collector, mode):
    picture = PILImage.new("RGB", (900, 700), (200, 80, 80)).convert(mode)
    out = io.BytesIO()
    picture.save(out, "TIFF" if mode == "CMYK" else "PNG")
    image = upload_one(patient, collector, out.getvalue(), name=f"scan-{mode}.png")
    with default_storage.open(image.thumbnail.name, "rb") as handle:
        thumbnail = PILImage.open(handle)
        thumbnail.load()
    assert thumbnail.format == "JPEG" and max(thumbnail.size) == 400


def test_tiff_metadata_is_not_carried_into_the_stored_file(patient, collector):
    picture = PILImage.new("RGB", (60, 40), (120, 40, 40))
    out = io.BytesIO()
    picture.save(
        out, "TIFF", tiffinfo={700: b"<x:xmpmeta>GPS 13.5N 39.4E, Ann Doe</x:xmpmeta>", 270: "Ann Doe"}
    )
    image = upload_one(patient, collector, out.getvalue(), name="scan.tif")
    with default_storage.open(image.file.name, "rb") as handle:
        stored = handle.read()
    assert b"Ann Doe" not in stored and b"xmpmeta" not in stored
    assert PILImage.open(io.BytesIO(stored)).size == (60, 40)
