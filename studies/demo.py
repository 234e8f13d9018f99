"""Eyelid-like demo photos: an everted upper lid with follicles, vessels and sometimes scars."""

import io
import random

from PIL import Image, ImageDraw, ImageFilter


def eyelid_photo(*, seed: int, size: tuple[int, int] = (1600, 1200), quality: int = 88) -> bytes:
    """A JPEG that looks, at thumbnail size, like a photo of an everted upper eyelid."""
    rng = random.Random(seed)
    width, height = size
    photo = Image.new("RGB", size, (92 + rng.randint(-10, 10), 62, 52))
    draw = ImageDraw.Draw(photo)
    # skin around the lid
    draw.ellipse([-width * 0.1, height * 0.05, width * 1.1, height * 1.1], fill=(168, 118, 98))
    # the everted tarsal conjunctiva
    box = [width * 0.15, height * 0.25, width * 0.85, height * 0.8]
    draw.ellipse(box, fill=(196 + rng.randint(-15, 15), 88 + rng.randint(-15, 15), 92))
    for _ in range(rng.randint(6, 14)):  # deep tarsal vessels
        x = rng.uniform(box[0] + 60, box[2] - 60)
        draw.line(
            [(x, box[1] + 40), (x + rng.uniform(-80, 80), box[3] - 40)],
            fill=(150, 40, 50),
            width=rng.randint(2, 5),
        )
    for _ in range(rng.choice([0, 2, 8, 20])):  # follicles
        x, y = rng.uniform(box[0] + 80, box[2] - 80), rng.uniform(box[1] + 50, box[3] - 50)
        radius = rng.uniform(8, 20)
        draw.ellipse([x - radius, y - radius, x + radius, y + radius], fill=(232, 190, 160))
    if rng.random() < 0.3:  # scarring: white lines
        y = rng.uniform(box[1] + 80, box[3] - 80)
        draw.line(
            [(box[0] + 100, y), (box[2] - 100, y + rng.uniform(-40, 40))], fill=(245, 235, 230), width=6
        )
    photo = photo.filter(ImageFilter.GaussianBlur(3))
    out = io.BytesIO()
    photo.save(out, "JPEG", quality=quality)
    return out.getvalue()
