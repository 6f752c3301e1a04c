"""The preview renderer's PNGs: small ones stored, larger ones deflated, both lossless."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from core.backends.local import STORED_MAX_PIXELS, _paint, render_png


@pytest.mark.parametrize(("width", "height"), [(64, 64), (32, 48), (96, 64), (512, 256)])
def test_a_preview_png_decodes_to_exactly_the_picture_drawn(width: int, height: int) -> None:
    prompt = "a red fox in a snowy forest"
    data = render_png(prompt, "", 5, width, height)
    decoded = Image.open(io.BytesIO(data))
    assert decoded.format == "PNG" and decoded.mode == "RGB" and decoded.size == (width, height)
    assert decoded.tobytes() == _paint(prompt, "", 5, width, height).tobytes()


def test_small_previews_are_stored_and_larger_ones_compressed() -> None:
    small = render_png("a lighthouse at dusk", "", 1, 64, 64)
    large = render_png("a lighthouse at dusk", "", 1, 128, 128)
    assert 64 * 64 <= STORED_MAX_PIXELS < 128 * 128
    assert len(small) > 64 * 64 * 3  # every pixel's bytes, as they are
    assert len(large) < 128 * 128 * 3 / 2
