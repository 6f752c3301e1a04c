"""Training images for tests and benches: real files with a clear colour cast, made with Pillow."""

from __future__ import annotations

import io
import random

from PIL import Image, ImageDraw, ImageFilter


def photo(seed: int, size: int = 320, tint: tuple[int, int, int] = (200, 70, 40), fmt: str = "PNG") -> bytes:
    """A photo-like picture: a tinted gradient with noise and a few shapes, unique per `seed`."""
    rng = random.Random(seed)
    image = Image.new("RGB", (size, size))
    draw = ImageDraw.Draw(image)
    for y in range(size):
        t = y / size
        draw.line(
            [(0, y), (size, y)],
            fill=tuple(int(c * (0.6 + 0.4 * t)) for c in tint),
        )
    for _ in range(6):
        x, y, r = rng.randrange(size), rng.randrange(size), rng.randrange(size // 10, size // 4)
        shade = tuple(max(0, min(255, c + rng.randrange(-50, 50))) for c in tint)
        draw.ellipse([x - r, y - r, x + r, y + r], fill=shade)
    image = image.filter(ImageFilter.GaussianBlur(2))
    noise = Image.effect_noise((size, size), 20).convert("RGB")
    image = Image.blend(image, noise, 0.08)
    out = io.BytesIO()
    image.save(out, fmt, **({"quality": 92} if fmt == "JPEG" else {}))
    return out.getvalue()


def mean_colour(data: bytes) -> tuple[float, float, float]:
    with Image.open(io.BytesIO(data)) as image:
        small = image.convert("RGB").resize((64, 64))
    pixels = list(small.getdata())
    return tuple(sum(p[i] for p in pixels) / len(pixels) for i in range(3))  # type: ignore[return-value]


def distance(a: tuple[float, float, float], b: tuple[float, float, float]) -> float:
    return sum((x - y) ** 2 for x, y in zip(a, b, strict=True)) ** 0.5
