"""Print-ready files: a design fitted to a print area and saved as a PNG with the area's DPI.

How a design meets a print area, decided once here:
- **Fitted inside, never cropped** ("contain"): the whole design is scaled, keeping its aspect,
  until its limiting side meets the area's, and centred on a transparent canvas of exactly the
  area's pixel size. A garment's print area is the largest the printer can print, not a shape
  to fill: cropping a square design to a 5:6 tee area would cut off what the seller made.
- **Enlargement is the engine's** (an upscale run, limited to `scale <= 8` and
  `MAX_UPSCALED_SIDE` pixels a side); this module only plans it (`plan_upscale`) and then
  resamples the enlarged design once, with Lanczos, to its fitted size (not at all when it
  already has that size).
- **Quality in DPI**: the fitted design covers the area's physical size (area pixels / area
  DPI, in inches); its *effective DPI* is the design's own pixels across that size, capped at
  the area's DPI. At the area's DPI the file is "full"; down to `MIN_EFFECTIVE_DPI` (150, the
  common floor for direct-to-garment printing, i.e. half the pixels of a 300-DPI area on the
  limiting side; or the area's own DPI if that is lower) it is accepted with its effective DPI
  recorded; below that it is refused, naming the sizes and DPI involved.
- **Bounded memory**: the print file never exists whole as pixels. It is written as a PNG a
  strip of rows at a time (each strip resampled from the design rows under it), so a
  4500x5400 RGBA area (97 MB raw) costs the decoded design, a few 4 MiB strips and the PNG.
"""

from __future__ import annotations

import io
import math
import struct
import zlib
from dataclasses import dataclass

from PIL import Image, ImageChops

from core.errors import InvalidInput
from core.images import MAX_UPSCALED_SIDE
from core.publishing.catalog import PrintArea

__all__ = [
    "MAX_UPSCALE",
    "MIN_EFFECTIVE_DPI",
    "PrintFile",
    "UpscalePlan",
    "check_reachable",
    "fit_inside",
    "fitted_size",
    "make_print_file",
    "minimum_dpi",
    "upscale_needed",
]

# The engine's largest upscale factor (ImageSpec.scale's bound).
MAX_UPSCALE = 8.0
MIN_EFFECTIVE_DPI = 150
# Rows are resampled, filtered and compressed about this many bytes of RGBA pixels at a time.
STRIP_BYTES = 4 * 1024 * 1024
# zlib level 3: on a detailed 4500x5400 design it made a 32 MB file in 3.8 s where level 6
# (Pillow's default) took 10.6 s for 28 MB and level 1 3.7 s for 35 MB.
COMPRESS_LEVEL = 3
_INCH_M = 0.0254


@dataclass(slots=True, frozen=True)
class PrintFile:
    """A print-ready PNG: exactly the area's pixel size, its DPI in the pHYs chunk.

    `effective_dpi` is the design's own resolution on the print (== `dpi` when full);
    `design_box` is where the design lies on the canvas (left, top, width, height).
    """

    data: bytes
    width: int
    height: int
    dpi: int
    effective_dpi: int
    design_box: tuple[int, int, int, int]

    @property
    def full(self) -> bool:
        return self.effective_dpi >= self.dpi


@dataclass(slots=True, frozen=True)
class UpscalePlan:
    """What to ask the engine for: `scale` (1.0: no upscale run), and the DPI the result will give."""

    scale: float
    width: int
    height: int
    effective_dpi: int

    @property
    def needed(self) -> bool:
        return self.scale > 1.0


def upscale_needed(design_width: int, design_height: int, area: PrintArea) -> float:
    """The factor by which the design must be enlarged to fill `area` when fitted inside it.

    Below 1 the design is already larger than the area (it will be reduced, never upscaled).
    """
    _check_size(design_width, design_height)
    return min(area.width / design_width, area.height / design_height)


def minimum_dpi(area: PrintArea) -> int:
    """The lowest effective DPI accepted on `area`: 150, or the area's own DPI if lower."""
    return min(MIN_EFFECTIVE_DPI, area.dpi)


def fitted_size(design_width: int, design_height: int, area: PrintArea) -> tuple[int, int]:
    """The design's size fitted inside `area` (aspect kept; the limiting side equal to the area's)."""
    return fit_inside(design_width, design_height, area.width, area.height)


def fit_inside(width: int, height: int, box_width: int, box_height: int) -> tuple[int, int]:
    """`width`x`height` scaled, keeping its aspect, until its limiting side meets the box's."""
    _check_size(width, height)
    factor = min(box_width / width, box_height / height)
    return min(box_width, max(1, round(width * factor))), min(box_height, max(1, round(height * factor)))


def check_reachable(
    design_width: int,
    design_height: int,
    area: PrintArea,
    max_scale: float = MAX_UPSCALE,
    max_side: int = MAX_UPSCALED_SIDE,
    *,
    area_name: str = "the print area",
) -> UpscalePlan:
    """The upscale to ask the engine for; `InvalidInput` if even the largest cannot reach the minimum.

    The largest reachable factor is `max_scale`, or less where the design's longer side would
    pass `max_side`. The plan asks for no more than the area needs (a design already big
    enough gets `scale` 1.0). `area_name` names the area in the error (e.g. "tshirt front").
    """
    needed = upscale_needed(design_width, design_height, area)
    largest = max(1.0, min(max_scale, max_side / max(design_width, design_height)))
    scale = min(largest, needed) if needed > 1.0 else 1.0
    width, height = round(design_width * scale), round(design_height * scale)
    effective = _effective_dpi(width, height, area)
    if effective < minimum_dpi(area):
        best_w, best_h = round(design_width * largest), round(design_height * largest)
        fit_w, fit_h = fitted_size(design_width, design_height, area)
        raise InvalidInput(
            "design",
            f"{design_width}x{design_height} px is too small for {area_name} "
            f"({area.width}x{area.height} px at {area.dpi} DPI): the largest upscale "
            f"(x{largest:.2f}, at most {max_side} px a side) gives {best_w}x{best_h} px, "
            f"{effective} DPI on the print; at least {minimum_dpi(area)} DPI is needed (an enlarged "
            f"design of at least {math.ceil(fit_w * minimum_dpi(area) / area.dpi)}x"
            f"{math.ceil(fit_h * minimum_dpi(area) / area.dpi)} px)",
        )
    return UpscalePlan(scale=scale, width=width, height=height, effective_dpi=effective)


def make_print_file(image_bytes: bytes, area: PrintArea, *, area_name: str = "the print area") -> PrintFile:
    """The design (already enlarged) fitted and centred on a transparent canvas of `area`'s size.

    The design is resampled once, with Lanczos, to its fitted size (not at all if it has it);
    a design whose effective DPI falls below the minimum is refused (`InvalidInput`).
    """
    try:
        design = Image.open(io.BytesIO(image_bytes))
        design.load()
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise InvalidInput("design", f"is not an image Pillow can read ({exc})") from None
    design = _as_rgb_or_rgba(design)
    dw, dh = design.size
    effective = _effective_dpi(dw, dh, area)
    if effective < minimum_dpi(area):
        raise InvalidInput(
            "design",
            f"{dw}x{dh} px gives {effective} DPI on {area_name} ({area.width}x{area.height} px "
            f"at {area.dpi} DPI); at least {minimum_dpi(area)} DPI is needed (upscale it first)",
        )
    fw, fh = fitted_size(dw, dh, area)
    left, top = (area.width - fw) // 2, (area.height - fh) // 2
    writer = _RgbaPngWriter(area.width, area.height, area.dpi)
    rows = max(1, STRIP_BYTES // (4 * area.width))
    ratio = dh / fh
    for strip_top in range(0, area.height, rows):
        strip_bottom = min(area.height, strip_top + rows)
        strip = Image.new("RGBA", (area.width, strip_bottom - strip_top))
        first, last = max(strip_top, top), min(strip_bottom, top + fh)
        if first < last:
            if (fw, fh) == (dw, dh):
                piece = design.crop((0, first - top, dw, last - top))
            else:
                # Resampled from the design rows under the strip (Pillow reads the filter's
                # margin beyond the box), so the fitted design never exists whole.
                box = (0, (first - top) * ratio, dw, (last - top) * ratio)
                piece = design.resize((fw, last - first), Image.Resampling.LANCZOS, box=box)
            strip.paste(piece.convert("RGBA"), (left, first - strip_top))
        writer.add(strip)
    return PrintFile(
        data=writer.finish(),
        width=area.width,
        height=area.height,
        dpi=area.dpi,
        effective_dpi=effective,
        design_box=(left, top, fw, fh),
    )


def _check_size(width: int, height: int) -> None:
    if width < 1 or height < 1:
        raise InvalidInput("design", f"must have a positive size (got {width}x{height})")


def _effective_dpi(width: int, height: int, area: PrintArea) -> int:
    """The DPI a `width`x`height` design gives on `area` when fitted: its pixels over the area's inches."""
    factor = upscale_needed(width, height, area)
    return min(area.dpi, math.floor(area.dpi / factor + 1e-9)) if factor > 1.0 else area.dpi


def _as_rgb_or_rgba(image: Image.Image) -> Image.Image:
    """RGB or RGBA as it is; other modes converted (palette and grey with transparency keep it)."""
    if image.mode in ("RGB", "RGBA"):
        return image
    if image.mode in ("LA", "La", "PA", "RGBa") or "transparency" in image.info:
        return image.convert("RGBA")
    return image.convert("RGB")


class _RgbaPngWriter:
    """An 8-bit RGBA PNG (IHDR, pHYs, IDATs, IEND) fed strips of rows top down.

    Each row uses the Up filter (its difference from the row above, one C-level subtraction a
    strip), compressed as it comes; only one strip's pixels exist at a time.
    """

    def __init__(self, width: int, height: int, dpi: int) -> None:
        self._width, self._height = width, height
        self._rows_written = 0
        self._out = io.BytesIO()
        self._out.write(b"\x89PNG\r\n\x1a\n")
        self._chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 6, 0, 0, 0))
        per_metre = round(dpi / _INCH_M)
        self._chunk(b"pHYs", struct.pack(">IIB", per_metre, per_metre, 1))
        self._zip = zlib.compressobj(COMPRESS_LEVEL)
        self._last_row = Image.new("RGBA", (width, 1))

    def add(self, strip: Image.Image) -> None:
        width, rows = strip.size
        above = ImageChops.offset(strip, 0, 1)  # each row sees the one above it
        above.paste(self._last_row, (0, 0))
        filtered = ImageChops.subtract_modulo(strip, above).tobytes()
        self._last_row = strip.crop((0, rows - 1, width, rows))
        stride = width * 4
        lines = bytearray(rows * (stride + 1))
        for row in range(rows):
            at = row * (stride + 1)
            lines[at] = 2  # filter type Up
            lines[at + 1 : at + 1 + stride] = filtered[row * stride : (row + 1) * stride]
        self._write(self._zip.compress(lines))
        self._rows_written += rows

    def finish(self) -> bytes:
        if self._rows_written != self._height:
            raise ValueError(f"wrote {self._rows_written} of {self._height} rows")
        self._write(self._zip.flush())
        self._chunk(b"IEND", b"")
        return self._out.getvalue()

    def _write(self, data: bytes) -> None:
        if data:
            self._chunk(b"IDAT", data)

    def _chunk(self, kind: bytes, data: bytes) -> None:
        self._out.write(struct.pack(">I", len(data)) + kind)
        self._out.write(data)
        self._out.write(struct.pack(">I", zlib.crc32(kind + data)))
