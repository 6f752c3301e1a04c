"""Mockups: a design shown on a product, drawn by Atelier itself with Pillow, one per colour.

Decisions, stated once:
- **Templates are drawn, not shipped**: a t-shirt, a hoodie (hood, kangaroo pocket, cuffs and
  drawstrings), a framed poster on a wall, and a mug with a handle. Each is a few polygons and
  ellipses in unit coordinates, drawn at twice the size and reduced (smooth edges), tinted with
  the product colour and shaded by fixed soft folds; nothing random, so the same design and
  colour give the same bytes. A product type is drawn by the template its key names (`hood`,
  `shirt`/`tee`, `mug`/`cup`, `poster`/`print`); any other key gets the framed print, a neutral
  way to show a design.
- **Where the design goes**: the template's print box, shaped like the product's first print
  area; the design is fitted inside it and centred exactly as in the print file
  (`core.publishing.print_files`), so the mockup shows what will be printed.
- **How it looks printed**: on a light garment (or paper, or a white mug) the ink is multiplied
  with the surface (white in the design takes the fabric's colour); on a coloured or dark
  garment it is laid over a white underbase as direct-to-garment printers do, so its colours
  stay true; either way the fabric's folds and the mug's curve shade it. A mug's design is
  wrapped on its body: the front half of the wrap is shown, foreshortened towards the sides.
- **JPEG** (quality 90, no chroma subsampling): a mockup is an opaque picture for shop pages
  and platform galleries, where it is several times smaller than the same PNG.
"""

from __future__ import annotations

import io
import math
import re
from collections.abc import Callable, Sequence

from PIL import Image, ImageChops, ImageDraw, ImageFilter

from core.errors import InvalidInput
from core.publishing.catalog import ProductType
from core.publishing.print_files import fit_inside

__all__ = ["make_mockup", "make_mockups", "print_box", "template_for"]

JPEG_QUALITY = 90
_HEX = re.compile(r"^#([0-9a-fA-F]{6})$")
# A garment at least this light (relative luminance) is printed without an underbase.
_LIGHT = 0.7
_SUPERSAMPLE = 2
_BACKDROP = (236, 235, 232)
_WALL = (226, 221, 212)
_FRAME = (43, 41, 39)
_SHADOW = (120, 118, 114)

_Point = tuple[float, float]
_Box = tuple[float, float, float, float]

_TEE: list[_Point] = [
    (0.415, 0.115), (0.455, 0.16), (0.5, 0.172), (0.545, 0.16), (0.585, 0.115),
    (0.70, 0.145), (0.885, 0.27), (0.815, 0.405), (0.735, 0.36),
    (0.745, 0.935), (0.255, 0.935), (0.265, 0.36),
    (0.185, 0.405), (0.115, 0.27), (0.30, 0.145),
]  # fmt: skip
_HOODIE: list[_Point] = [
    (0.40, 0.16), (0.5, 0.215), (0.60, 0.16),
    (0.71, 0.18), (0.84, 0.33), (0.93, 0.80), (0.85, 0.82), (0.765, 0.46),
    (0.765, 0.93), (0.235, 0.93), (0.235, 0.46),
    (0.15, 0.82), (0.07, 0.80), (0.16, 0.33), (0.29, 0.18),
]  # fmt: skip
_HOOD: _Box = (0.355, 0.045, 0.645, 0.25)
_POCKET: list[_Point] = [(0.36, 0.64), (0.64, 0.64), (0.70, 0.845), (0.30, 0.845)]

# The largest print box of each template (left, top, right, bottom, in unit coordinates); the
# print area's shape is fitted inside it, centred across and at its top (a garment is printed
# from just below the collar down).
_PRINT_BOXES: dict[str, _Box] = {
    "tshirt": (0.335, 0.215, 0.665, 0.83),
    "hoodie": (0.35, 0.30, 0.65, 0.615),
    "poster": (0.345, 0.215, 0.655, 0.735),
    "mug": (0.25, 0.36, 0.64, 0.76),
}


def template_for(product_type: ProductType) -> str:
    """The template that draws `product_type`: tshirt, hoodie, mug or poster (the fallback)."""
    key = product_type.key
    if "hood" in key:
        return "hoodie"
    if "shirt" in key or "tee" in key:
        return "tshirt"
    if "mug" in key or "cup" in key:
        return "mug"
    return "poster"


def print_box(product_type: ProductType, size: int = 1024) -> tuple[int, int, int, int]:
    """Where the print area lies on a `size` mockup of `product_type`: (left, top, right, bottom) pixels.

    For a mug it is the visible front of the wrap, before the curve foreshortens it.
    """
    area = next(iter(product_type.print_areas.values()))
    template = template_for(product_type)
    left, top, right, bottom = (v * size for v in _PRINT_BOXES[template])
    if template == "mug":
        return round(left), round(top), round(right), round(bottom)
    width, height = fit_inside(area.width, area.height, round(right - left), round(bottom - top))
    left += (right - left - width) / 2
    return round(left), round(top), round(left + width), round(top + height)


def make_mockup(
    design_bytes: bytes, product_type: ProductType, colour_name: str, colour_hex: str, size: int = 1024
) -> bytes:
    """A `size`x`size` JPEG of the design on `product_type` in `colour_name` (`colour_hex`, "#rrggbb").

    Pass the design as generated: a mockup shows it at most a few hundred pixels wide, so an
    enlarged one only costs decoding.
    """
    return _render(_open_design(design_bytes), product_type, colour_name, colour_hex, size)


def make_mockups(design_bytes: bytes, product_type: ProductType, size: int = 1024) -> list[tuple[str, bytes]]:
    """One mockup per colour of `product_type`, in the catalog's order: (colour name, JPEG bytes)."""
    design = _open_design(design_bytes)
    return [
        (name, _render(design, product_type, name, hex_, size)) for name, hex_ in product_type.colours.items()
    ]


def _render(
    design: Image.Image, product_type: ProductType, colour_name: str, colour_hex: str, size: int
) -> bytes:
    colour = _parse_colour(colour_name, colour_hex)
    if not 64 <= size <= 4096:
        raise InvalidInput("size", f"must be 64..4096 pixels (got {size})")
    template = template_for(product_type)
    area = next(iter(product_type.print_areas.values()))
    if template == "mug":
        picture = _mug(design, area.width / area.height, colour, size)
    elif template == "poster":
        picture = _poster(design, product_type, colour, size)
    else:
        picture = _garment(design, product_type, template, colour, size)
    buffer = io.BytesIO()
    picture.save(buffer, "JPEG", quality=JPEG_QUALITY, subsampling=0, optimize=False)
    return buffer.getvalue()


# --- the templates ----------------------------------------------------------------------------


def _garment(
    design: Image.Image, product_type: ProductType, template: str, colour: tuple[int, int, int], size: int
) -> Image.Image:
    outline = _TEE if template == "tshirt" else _HOODIE
    mask = _mask(size, lambda draw, s: draw.polygon(_scaled(outline, s), fill=255))
    shadow, highlight = _folds(size, template)
    if template == "hoodie":
        hood = _mask(size, lambda draw, s: draw.ellipse(_scaled_box(_HOOD, s), fill=255))
        mask = ImageChops.lighter(mask, hood)
        # The hood's opening and the pocket's seam, in the fabric's shadow.
        seams = _mask(
            size,
            lambda draw, s: (
                draw.ellipse(_scaled_box((0.405, 0.085, 0.595, 0.215), s), fill=255),
                draw.line(_scaled(_POCKET + _POCKET[:1], s), fill=150, width=max(2, s // 200)),
                draw.line(_scaled([(0.46, 0.2), (0.457, 0.285)], s), fill=110, width=max(2, s // 250)),
                draw.line(_scaled([(0.54, 0.2), (0.543, 0.285)], s), fill=110, width=max(2, s // 250)),
                draw.line(_scaled([(0.235, 0.895), (0.765, 0.895)], s), fill=90, width=max(2, s // 300)),
            ),
        )
        shadow = ImageChops.subtract(shadow, seams.point(lambda v: v * 0.45))
    else:
        neck = _mask(
            size, lambda draw, s: draw.chord(_scaled_box((0.415, 0.075, 0.585, 0.155), s), 0, 180, fill=255)
        )
        shadow = ImageChops.subtract(shadow, neck.point(lambda v: v * 0.35))
    fabric = _shaded(Image.new("RGB", (size, size), colour), shadow, highlight)
    picture = Image.new("RGB", (size, size), _BACKDROP)
    picture.paste(_SHADOW, (0, 0), _drop_shadow_mask(mask, size))
    picture.paste(fabric, (0, 0), mask)
    left, top, right, bottom = print_box(product_type, size)
    placed, where = _fitted(design, product_type, (left, top, right, bottom))
    region = (where[0], where[1], where[0] + placed.width, where[1] + placed.height)
    ink = _printed(placed.convert("RGB"), colour, light=_luminance(colour) >= _LIGHT)
    ink = _shaded(ink, shadow.crop(region), highlight.crop(region).point(lambda v: v // 2))
    alpha = ImageChops.multiply(_alpha(placed), mask.crop(region))
    picture.paste(ink, region[:2], alpha)
    return picture


def _poster(
    design: Image.Image, product_type: ProductType, paper: tuple[int, int, int], size: int
) -> Image.Image:
    picture = _wall(size)
    left, top, right, bottom = print_box(product_type, size)
    mat = round(size * 0.045)
    frame = round(size * 0.028)
    outer = (left - mat - frame, top - mat - frame, right + mat + frame, bottom + mat + frame)
    shadow = Image.new("L", (size, size))
    offset = round(size * 0.012)
    ImageDraw.Draw(shadow).rectangle(
        (outer[0] + offset, outer[1] + 2 * offset, outer[2] + offset, outer[3] + 2 * offset), fill=120
    )
    shadow = shadow.filter(ImageFilter.GaussianBlur(size / 60))
    picture.paste((0, 0, 0), (0, 0), shadow)
    draw = ImageDraw.Draw(picture)
    draw.rectangle(outer, fill=_FRAME)
    inner = (left - mat, top - mat, right + mat - 1, bottom + mat - 1)
    draw.rectangle(inner, fill=paper)
    # The frame's bevel: a lighter top-left edge, a darker bottom-right one.
    draw.line(
        [(outer[0], outer[3]), (outer[0], outer[1]), (outer[2], outer[1])],
        fill=(78, 75, 71),
        width=max(1, size // 300),
    )
    draw.line(
        [(inner[0], inner[3]), (inner[0], inner[1]), (inner[2], inner[1])],
        fill=(200, 198, 194),
        width=max(1, size // 500),
    )
    placed, where = _fitted(design, product_type, (left, top, right, bottom))
    ink = _printed(placed.convert("RGB"), paper, light=_luminance(paper) >= _LIGHT)
    picture.paste(ink, where, _alpha(placed))
    return picture


def _mug(design: Image.Image, wrap_aspect: float, colour: tuple[int, int, int], size: int) -> Image.Image:
    picture = Image.new("RGB", (size, size), _BACKDROP)
    body = (0.25, 0.30, 0.69, 0.80)
    left, top, right, bottom = (round(v * size) for v in body)
    rim = round(size * 0.035)
    handle = _mask(
        size,
        lambda draw, s: draw.ellipse(
            _scaled_box((0.60, 0.40, 0.83, 0.68), s), outline=255, width=round(s * 0.045)
        ),
    )
    shape = _mask(
        size,
        lambda draw, s: (
            draw.rectangle(_scaled_box((body[0], body[1], body[2], body[3] - 0.02), s), fill=255),
            draw.ellipse(_scaled_box((body[0], body[3] - 0.04, body[2], body[3]), s), fill=255),
            draw.ellipse(_scaled_box((body[0], body[1] - 0.035, body[2], body[1] + 0.035), s), fill=255),
        ),
    )
    everything = ImageChops.lighter(shape, handle)
    picture.paste(_SHADOW, (0, 0), _drop_shadow_mask(everything, size))
    # The cylinder's light: dark at both sides, a highlight left of centre.
    across = [_mug_light((x + 0.5) / (right - left)) for x in range(right - left)]
    light = Image.new("L", (right - left, 1))
    light.putdata(across)
    light = light.resize((right - left, size), Image.Resampling.NEAREST)
    lighting = Image.new("L", (size, size), 215)
    lighting.paste(light, (left, 0))
    ceramic = ImageChops.multiply(Image.new("RGB", (size, size), colour), lighting.convert("RGB"))
    picture.paste(ceramic, (0, 0), everything)
    # The opening: the inside in shade, behind the rim.
    opening = _mask(
        size,
        lambda draw, s: draw.ellipse(
            _scaled_box((body[0] + 0.012, body[1] - 0.027, body[2] - 0.012, body[1] + 0.027), s), fill=255
        ),
    )
    picture.paste(_scaled_colour(colour, 0.62), (0, 0), opening)
    # The front half of the wrap, seen on the cylinder: output column x shows the wrap at angle
    # asin(x), so the design is foreshortened towards the sides.
    width = right - left
    band_top, band_bottom = top + rim, bottom - round(size * 0.05)
    wrap_width = max(1, round(math.pi * width))
    wrap_height = band_bottom - band_top
    wrap = Image.new("RGBA", (wrap_width, wrap_height), (0, 0, 0, 0))
    inner_w, inner_h = fit_inside(round(wrap_aspect * 1000), 1000, wrap_width, wrap_height)
    fitted_w, fitted_h = fit_inside(design.width, design.height, round(inner_w * 0.96), round(inner_h * 0.96))
    wrap.paste(
        design.convert("RGBA").resize((fitted_w, fitted_h), Image.Resampling.LANCZOS),
        ((wrap_width - fitted_w) // 2, (wrap_height - fitted_h) // 2),
    )
    slices = 64
    mesh = []
    for index in range(slices):
        x0, x1 = index * width // slices, (index + 1) * width // slices
        u0 = _wrap_at(x0 / width) * wrap_width
        u1 = _wrap_at(x1 / width) * wrap_width
        mesh.append(((x0, 0, x1, wrap_height), (u0, 0, u0, wrap_height, u1, wrap_height, u1, 0)))
    front = wrap.transform((width, wrap_height), Image.Transform.MESH, mesh, Image.Resampling.BICUBIC)
    ink = _printed(front.convert("RGB"), colour, light=_luminance(colour) >= _LIGHT)
    ink = ImageChops.multiply(
        ink,
        lighting.crop((left, band_top, right, band_bottom)).point(lambda v: min(255, v + 25)).convert("RGB"),
    )
    picture.paste(ink, (left, band_top), _alpha(front))
    return picture


# --- shading and compositing ------------------------------------------------------------------


def _folds(size: int, template: str) -> tuple[Image.Image, Image.Image]:
    """The fabric's shadow (255: none) and highlight (0: none) maps: darker sides and soft folds."""
    across = [round(255 - 46 * abs(2 * (x + 0.5) / size - 1) ** 3) for x in range(size)]
    sides = Image.new("L", (size, 1))
    sides.putdata(across)
    shadow = sides.resize((size, size), Image.Resampling.NEAREST)
    creases = Image.new("L", (size, size))
    gleams = Image.new("L", (size, size))
    draw_crease, draw_gleam = ImageDraw.Draw(creases), ImageDraw.Draw(gleams)
    width = max(2, size // 45)
    folds = [
        [(0.30, 0.42), (0.36, 0.60), (0.33, 0.90)],
        [(0.71, 0.40), (0.66, 0.62), (0.69, 0.90)],
        [(0.26, 0.18), (0.19, 0.33)] if template == "tshirt" else [(0.22, 0.30), (0.14, 0.70)],
        [(0.74, 0.18), (0.81, 0.33)] if template == "tshirt" else [(0.78, 0.30), (0.86, 0.70)],
    ]
    for fold in folds:
        draw_crease.line([(x * size, y * size) for x, y in fold], fill=70, width=width)
        draw_gleam.line([(x * size + width, y * size) for x, y in fold], fill=60, width=width // 2 + 1)
    blur = ImageFilter.GaussianBlur(size / 70)
    shadow = ImageChops.subtract(shadow, creases.filter(blur))
    return shadow, gleams.filter(blur)


def _shaded(layer: Image.Image, shadow: Image.Image, highlight: Image.Image) -> Image.Image:
    return ImageChops.screen(ImageChops.multiply(layer, shadow.convert("RGB")), highlight.convert("RGB"))


def _printed(ink: Image.Image, surface: tuple[int, int, int], *, light: bool) -> Image.Image:
    """The design as printed on `surface`: multiplied into a light one, over an underbase on a dark one."""
    if light:
        return ImageChops.multiply(ink, Image.new("RGB", ink.size, surface))
    # The underbase is not perfectly opaque: a trace of the garment shows through.
    return Image.blend(ink, Image.new("RGB", ink.size, surface), 0.06)


def _fitted(
    design: Image.Image, product_type: ProductType, box: tuple[int, int, int, int]
) -> tuple[Image.Image, tuple[int, int]]:
    """The design resized to fit inside `box` (as in the print file), and where its top-left goes."""
    left, top, right, bottom = box
    width, height = fit_inside(design.width, design.height, right - left, bottom - top)
    placed = design.resize((width, height), Image.Resampling.LANCZOS)
    return placed, (left + (right - left - width) // 2, top + (bottom - top - height) // 2)


def _drop_shadow_mask(mask: Image.Image, size: int) -> Image.Image:
    offset = max(1, size // 100)
    moved = ImageChops.offset(mask, offset, offset * 2)
    return moved.filter(ImageFilter.GaussianBlur(size / 80)).point(lambda v: v * 0.45)


def _wall(size: int) -> Image.Image:
    down = Image.linear_gradient("L").resize((size, size)).point(lambda v: 255 - v // 10)
    return ImageChops.multiply(Image.new("RGB", (size, size), _WALL), down.convert("RGB"))


def _mug_light(x: float) -> int:
    """The cylinder's brightness at `x` (0..1 across it): Lambert-like falloff, a highlight at 0.3."""
    facing = math.cos((x - 0.5) * math.pi)
    gleam = math.exp(-(((x - 0.3) / 0.05) ** 2))
    return max(0, min(255, round(150 + 90 * facing + 60 * gleam)))


def _wrap_at(x: float) -> float:
    """Where across the wrap (0..1) column `x` (0..1 across the mug's front) shows."""
    return 0.5 + math.asin(max(-1.0, min(1.0, 2 * x - 1))) / (2 * math.pi)


def _mask(size: int, draw_shape: Callable[[ImageDraw.ImageDraw, int], object]) -> Image.Image:
    """An L mask of what `draw_shape(draw, side)` draws, drawn at twice the size and reduced (smooth edges)."""
    big = Image.new("L", (size * _SUPERSAMPLE, size * _SUPERSAMPLE))
    draw_shape(ImageDraw.Draw(big), size * _SUPERSAMPLE)
    return big.reduce(_SUPERSAMPLE)


def _scaled(points: Sequence[_Point], side: float) -> list[tuple[float, float]]:
    return [(x * side, y * side) for x, y in points]


def _scaled_box(box: _Box, side: float) -> tuple[float, float, float, float]:
    return box[0] * side, box[1] * side, box[2] * side, box[3] * side


def _scaled_colour(colour: tuple[int, int, int], factor: float) -> tuple[int, int, int]:
    return tuple(round(c * factor) for c in colour)  # type: ignore[return-value]


def _alpha(image: Image.Image) -> Image.Image:
    return image.getchannel("A") if image.mode == "RGBA" else Image.new("L", image.size, 255)


def _luminance(colour: tuple[int, int, int]) -> float:
    r, g, b = (c / 255 for c in colour)
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def _parse_colour(name: str, value: str) -> tuple[int, int, int]:
    found = _HEX.match(value) if isinstance(value, str) else None
    if found is None:
        raise InvalidInput("colours", f"{name!r}: {value!r:.20} is not a colour like '#1c1c1e'")
    digits = found.group(1)
    return int(digits[0:2], 16), int(digits[2:4], 16), int(digits[4:6], 16)


def _open_design(data: bytes) -> Image.Image:
    try:
        design = Image.open(io.BytesIO(data))
        # A big design (an enlarged one) is only needed at mockup size: JPEGs decode reduced.
        design.draft("RGB", (2048, 2048))
        design.load()
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise InvalidInput("design", f"is not an image Pillow can read ({exc})") from None
    return design.convert("RGBA") if design.mode in ("RGBA", "LA", "PA", "P") else design.convert("RGB")
