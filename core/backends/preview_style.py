"""Preview styles applied to the preview renderer's pictures: a character's colours, as learnt.

A preview style is the `.safetensors` file the preview trainer writes (`core.training.preview`):
a palette, its weights, and each RGB channel's tone curve (its quantile function at 256 levels).
Applying one at strength s (0..1) to a picture:
  1. tone: each channel goes through a lookup table that sends a value at rank p in the picture
     (from the picture's histogram) to the style's value at rank p, moved only s of the way:
     the picture takes on the character's brightness and colour balance, its shapes kept;
  2. palette: each pixel is pulled toward its nearest palette colour (Pillow's quantize, no
     dither), blended at `PALETTE_PULL` x s.
Several styles apply one after another, each with its strength. The histogram is taken once,
from the whole picture, and carried through each style's tables, so the filter can then work a
strip of rows at a time: memory stays bounded for any size, and the result does not depend on
where the strips fall. Pure functions of their inputs: the same picture and styles give the same
bytes.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from core.errors import BackendError
from core.training import safetensors

if TYPE_CHECKING:
    from PIL import Image

# How far strength 1 pulls a pixel onto its palette colour (all the way would posterise it).
PALETTE_PULL = 0.35
# Palette colours chosen by fewer pixels than this are left out (noise, not the character).
_MIN_WEIGHT = 0.01


@dataclass(slots=True, frozen=True)
class PreviewStyle:
    """A loaded preview style: palette colours (RGB 0..255) and tone curves (3 x 256, 0..1)."""

    palette: tuple[tuple[int, int, int], ...]
    tone_curve: tuple[tuple[float, ...], tuple[float, ...], tuple[float, ...]]


def load_style(data: bytes) -> PreviewStyle:
    """The style in a preview trainer's `.safetensors` bytes; `BackendError` if it is not one."""
    try:
        tensors = safetensors.decode(data)
        palette = _floats(tensors, "palette", 3)
        weights = _floats(tensors, "palette_weight", None)
        curve = _floats(tensors, "tone_curve", 256)
    except ValueError as error:
        raise BackendError(
            f"the character's preview style cannot be read: {error}", retryable=False
        ) from None
    if len(curve) != 3 * 256 or len(palette) != 3 * len(weights):
        raise BackendError("the character's preview style has tensors of the wrong size", retryable=False)
    colours = tuple(
        tuple(round(min(1.0, max(0.0, v)) * 255) for v in palette[3 * i : 3 * i + 3])
        for i, weight in enumerate(weights)
        if weight >= _MIN_WEIGHT
    )
    return PreviewStyle(
        palette=colours or ((128, 128, 128),),  # type: ignore[arg-type]
        tone_curve=(tuple(curve[0:256]), tuple(curve[256:512]), tuple(curve[512:768])),
    )


class StyleFilter:
    """Styles prepared for one picture, from its histogram; call it on the picture or its strips."""

    def __init__(self, styles: Sequence[tuple[PreviewStyle, float]], histogram: Sequence[int]) -> None:
        from PIL import Image

        self._stages: list[tuple[list[int], Image.Image | None, float]] = []
        counts = list(histogram)
        for style, strength in styles:
            strength = min(1.0, max(0.0, strength))
            table = _tone_table(style, counts, strength)
            palette = None
            if strength > 0:
                palette = Image.new("P", (1, 1))
                flat = [v for colour in style.palette for v in colour]
                palette.putpalette(flat + flat[:3] * (256 - len(style.palette)))
            self._stages.append((table, palette, strength * PALETTE_PULL))
            # What the next style sees: this one's tables applied to the counts (the palette
            # pull, a partial move, is left out: the tone carries most of the change).
            moved = [0] * 768
            for index, count in enumerate(counts):
                channel = index // 256
                moved[channel * 256 + table[index]] += count
            counts = moved

    def __call__(self, picture: Image.Image) -> Image.Image:
        """`picture` (RGB) with every style applied."""
        from PIL import Image

        for table, palette, pull in self._stages:
            picture = picture.point(table)
            if palette is not None and pull > 0:
                nearest = picture.quantize(palette=palette, dither=Image.Dither.NONE).convert("RGB")
                picture = Image.blend(picture, nearest, pull)
        return picture


def style_filter(styles: Sequence[tuple[bytes, float]], picture: Image.Image) -> StyleFilter:
    """A filter applying `styles` (style file bytes, strength) as fits `picture`'s histogram."""
    return StyleFilter([(load_style(data), strength) for data, strength in styles], picture.histogram())


def _tone_table(style: PreviewStyle, histogram: Sequence[int], strength: float) -> list[int]:
    """The 768-entry lookup table (R, G, B) matching the histogram to the style, `strength` of the way."""
    table = []
    for channel in range(3):
        counts = histogram[channel * 256 : channel * 256 + 256]
        total = sum(counts) or 1
        curve, below = style.tone_curve[channel], 0
        for value, count in enumerate(counts):
            # The value's mid-rank, so a picture of one flat colour lands mid-curve, not at an end.
            rank = (below + count / 2) / total
            below += count
            target = curve[min(255, round(rank * 255))] * 255
            table.append(min(255, max(0, round(value + (target - value) * strength))))
    return table


def _floats(tensors: dict[str, safetensors.Tensor], name: str, columns: int | None) -> list[float]:
    if name not in tensors:
        raise ValueError(f"it has no {name!r} tensor (is it a preview style?)")
    dtype, shape, data = tensors[name]
    if dtype != "F32" or (columns is not None and (len(shape) != 2 or shape[1] != columns)):
        raise ValueError(f"{name!r} is {dtype}{list(shape)}, not a preview style's")
    return list(struct.unpack(f"<{len(data) // 4}f", data))
