"""The built-in preview renderer: the default backend, needing no GPU and no network.

It is a preview renderer and never pretends to be a diffusion model. It walks through the
requested steps (optionally sleeping per step, so queueing, progress and cancellation behave
like a real backend) and then draws a deterministic procedural picture from the prompt's
words: same prompt, negative prompt, seed and size give byte-identical PNGs in any process.

A job's preview styles (a character's colours, learnt by the preview trainer) are applied to
what it draws, strip by strip as the PNG is written (`core.backends.preview_style`); without
styles not one byte changes.
"""

from __future__ import annotations

import colorsys
import functools
import hashlib
import io
import itertools
import math
import random
import re
import struct
import zlib
from typing import TYPE_CHECKING, Any

import anyio
import anyio.lowlevel
import anyio.to_thread

from core.backends import (
    NO_WORKFLOWS,
    GenerationBackend,
    ImageOutput,
    Job,
    Progress,
    ProgressCallback,
    WorkflowCatalog,
)
from core.backends.samplers import check_sampler_and_scheduler
from core.errors import BackendError
from core.memory import MemoryBudget, map_big_allocations, release_free_heap
from core.models import ImageSpec

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Sequence

    from PIL import Image, ImageDraw

__all__ = ["LocalPreviewBackend", "render_png", "render_styled_png"]

# Above this many pixels a render (mostly PNG encoding) takes milliseconds, so it goes to a
# worker thread; below it the ~100 us thread hop would cost more than the render itself.
INLINE_MAX_PIXELS = 128 * 128

# Images are filtered and compressed a strip of rows at a time (about this many bytes of pixels:
# Pillow keeps RGB as 4 bytes a pixel), so the raw output never exists whole: an 8192x8192
# upscale holds 128-row strips of 4 MiB, never its 256 MiB of pixels.
STRIP_BYTES = 4 * 1024 * 1024
# What encoding holds at once besides the picture: the strip, the row above each row, their
# difference, its bytes, and the scanlines; about six strips.
_STRIP_WORK = 6 * STRIP_BYTES
_PNG_BYTES_PER_PIXEL = 2
# Up to this many pixels a PNG is stored, not compressed: deflating 64x64 costs ~60 us, ten
# times storing it, to save ~7 KB; bigger images are deflated (zlib level 1).
STORED_MAX_PIXELS = 64 * 64
# A style adds, per strip: the toned strip, its palette indices, their colours and the blend.
_STYLE_WORK = 4 * STRIP_BYTES
# After a run estimated above this, freed heap goes back to the OS (see core.memory).
TRIM_ABOVE_BYTES = 32 * 1024 * 1024
DEFAULT_MEMORY_BUDGET = 256 * 1024 * 1024

# Bound the drawing work whatever the prompt length (prompts may be 4,000 characters).
_MAX_WORDS = 12
_MAX_SHAPES = 24

_WORD = re.compile(r"[^\W_]+")

# Filler words carry no picture; dropping them lets the nouns and adjectives pick the colours.
_STOPWORDS = frozenset(
    (  # noqa: SIM905 -- a word list reads better as one string
        "a an the and or of in on at to by for from with under over into onto near its it is "
        "are was be this that these those very some"
    ).split()
)

# A small mood palette, (hue, saturation, value): these words pick a fitting colour instead
# of a hashed one, and are preferred for the background.
_PALETTE: dict[str, tuple[float, float, float]] = {
    "red": (0.0, 0.85, 0.88),
    "fire": (0.03, 0.95, 1.0),
    "sunset": (0.05, 0.8, 0.97),
    "orange": (0.08, 0.9, 0.95),
    "autumn": (0.07, 0.75, 0.7),
    "desert": (0.1, 0.45, 0.88),
    "gold": (0.13, 0.8, 0.95),
    "yellow": (0.15, 0.85, 0.97),
    "green": (0.33, 0.7, 0.7),
    "forest": (0.3, 0.65, 0.4),
    "ocean": (0.55, 0.8, 0.6),
    "sky": (0.57, 0.45, 0.95),
    "blue": (0.61, 0.8, 0.9),
    "night": (0.66, 0.6, 0.16),
    "purple": (0.78, 0.6, 0.7),
    "pink": (0.92, 0.45, 0.97),
    "snow": (0.58, 0.06, 0.97),
    "snowy": (0.58, 0.06, 0.97),
    "white": (0.0, 0.0, 0.98),
    "black": (0.0, 0.0, 0.08),
}

_Rgb = tuple[int, int, int]


@functools.lru_cache(maxsize=64)
def _steps(steps: int) -> tuple[Progress, ...]:
    """The progress a run of `steps` steps reports, one per step: the same (immutable) objects
    for every run of that length, not 20 new ones a run."""
    return tuple(Progress(step=step, max_steps=steps, message="rendering") for step in range(1, steps + 1))


class LocalPreviewBackend(GenerationBackend):
    """Renders procedural previews in-process; `step_ms` paces the simulated sampling steps."""

    name = "local"

    def __init__(
        self,
        *,
        step_ms: float = 25.0,
        concurrency: int = 2,
        memory_bytes: int = DEFAULT_MEMORY_BUDGET,
        workflows: WorkflowCatalog = NO_WORKFLOWS,
    ) -> None:
        if step_ms < 0:
            raise ValueError(f"step_ms must be >= 0 (got {step_ms})")
        if concurrency < 1:
            raise ValueError(f"concurrency must be >= 1 (got {concurrency})")
        self.step_ms = step_ms
        self.concurrency = concurrency
        # Named workflows are accepted (their defaults filled in, their checks applied) so a
        # request meant for ComfyUI previews here as it would run there; the render ignores them.
        self.workflows = workflows
        # Renders wait for each other rather than add up past this (see `working_set`).
        self.memory = MemoryBudget(memory_bytes)
        map_big_allocations()

    def check(self, spec: ImageSpec) -> None:
        """Refuse sampler and scheduler names that ComfyUI's KSampler would refuse."""
        if spec.operation != "upscale":
            check_sampler_and_scheduler(spec.sampler, spec.scheduler)

    async def run(self, job: Job, on_progress: ProgressCallback) -> list[ImageOutput]:
        """Report the steps, then render `count` PNGs (image i uses seed + i).

        Image-to-image blends the preview into the source as far as `denoise` says; upscaling
        resizes the source (Lanczos). Both keep the source's aspect.
        """
        spec = job.spec
        # One checkpoint up front so a run cancelled before it starts never renders, while the
        # step_ms == 0 path stays free of per-step awaits.
        await anyio.lowlevel.checkpoint()
        steps = 1 if spec.operation == "upscale" else spec.steps
        delay = self.step_ms / 1000
        for progress in _steps(steps):
            if delay > 0:
                await anyio.sleep(delay)
            on_progress(progress)

        if spec.operation != "txt2img":
            if job.source is None:
                raise BackendError(f"the source image of run {job.run_id} is missing", retryable=False)
            source, need = job.source, working_set(spec, styled=bool(job.styles))
            outputs = []
            for index in range(spec.count):
                async with self.memory.reserve(need):
                    outputs.append(
                        await anyio.to_thread.run_sync(
                            _in_worker, need > TRIM_ABOVE_BYTES, _from_source, spec, source, index, job.styles
                        )
                    )
            return outputs
        in_thread = spec.width * spec.height > INLINE_MAX_PIXELS
        outputs = []
        for index in range(spec.count):
            seed = (spec.seed + index) % 2**32
            args: tuple[Any, ...] = (spec.prompt, spec.negative_prompt, seed, spec.width, spec.height)
            render: Callable[..., bytes] = render_png
            if job.styles:
                render, args = render_styled_png, (*args, job.styles)
            if in_thread:
                need = working_set(spec, styled=bool(job.styles))
                async with self.memory.reserve(need):
                    data = await anyio.to_thread.run_sync(_in_worker, need > TRIM_ABOVE_BYTES, render, *args)
            else:
                data = render(*args)
            outputs.append(
                ImageOutput(
                    data=data, media_type="image/png", width=spec.width, height=spec.height, extension="png"
                )
            )
        return outputs

    async def health(self) -> dict[str, Any]:
        """Always up: nothing external to reach."""
        return {"up": True, "kind": "preview", "step_ms": self.step_ms, "concurrency": self.concurrency}


def working_set(spec: ImageSpec, *, styled: bool = False) -> int:
    """Bytes one image of `spec` holds at its peak, as reserved from the memory budget.

    The decoded source (4 bytes a pixel), the preview layer for image-to-image or the canvas
    for text-to-image (4 bytes a pixel), the encoding strips (and a style's, if `styled`),
    and the PNG being written, counted at 2 bytes an output pixel (an upscaled photo of pure
    noise measured 1.5).
    """
    if styled:
        return working_set(spec) + _STYLE_WORK
    if spec.operation == "txt2img":
        return spec.width * spec.height * (4 + _PNG_BYTES_PER_PIXEL) + _STRIP_WORK
    assert spec.source is not None
    pixels = spec.source.width * spec.source.height
    if spec.operation == "upscale":
        scale = spec.effective_scale
        out = round(spec.source.width * scale) * round(spec.source.height * scale)
        return pixels * 4 + _STRIP_WORK + out * _PNG_BYTES_PER_PIXEL
    return pixels * (4 + 4 + _PNG_BYTES_PER_PIXEL) + _STRIP_WORK


def _in_worker(trim: bool, work: Callable[..., Any], *args: Any) -> Any:
    """Run `work` (in a worker thread); then, if `trim`, give the heap it freed back to the OS."""
    result = work(*args)
    if trim:
        release_free_heap()
    return result


def _from_source(
    spec: ImageSpec, source: bytes, index: int, styles: Sequence[tuple[bytes, float]] = ()
) -> ImageOutput:
    """Image-to-image or upscale of `source` by the preview renderer, as a PNG written strip by strip.

    Styles colour what the renderer draws: the preview layer that image-to-image blends in (so
    `denoise` also decides how much of the style shows) and the whole of an upscale.
    """
    from PIL import Image

    image = _decode_rgb(source)
    width, height = image.size
    if spec.operation == "upscale":
        style = _style_for(styles, image)
        size = (round(width * spec.effective_scale), round(height * spec.effective_scale))
        writer = _PngWriter(*size)
        # Each strip is resized from the source rows under it (Pillow reads the filter's
        # margin beyond the box), so the full-size result never exists.
        rows, ratio = _strip_rows(size[0]), height / size[1]
        for top in range(0, size[1], rows):
            bottom = min(size[1], top + rows)
            box = (0, top * ratio, width, bottom * ratio)
            writer.add(style(image.resize((size[0], bottom - top), Image.Resampling.LANCZOS, box=box)))
        return ImageOutput(data=writer.finish(), media_type="image/png", width=size[0], height=size[1])
    seed = (spec.seed + index) % 2**32
    layer = _paint(spec.prompt, spec.negative_prompt, seed, width, height)
    style = _style_for(styles, layer)
    writer = _PngWriter(width, height)
    rows = _strip_rows(width)
    for top in range(0, height, rows):
        box = (0, top, width, min(height, top + rows))
        writer.add(Image.blend(image.crop(box), style(layer.crop(box)), spec.effective_denoise))
    return ImageOutput(data=writer.finish(), media_type="image/png", width=width, height=height)


def _decode_rgb(source: bytes) -> Image.Image:
    """The source as 8-bit RGB, converted once, whatever its mode (16-bit, palette, alpha, CMYK)."""
    from PIL import Image

    image = Image.open(io.BytesIO(source))
    image.load()
    if image.mode.startswith("I"):
        # 16-bit grey: scale to 8 bits; convert() would clip every value above 255 to white.
        wide = image if image.mode == "I" else image.convert("I")
        image = wide.point(lambda value: value / 256, "L")
        del wide
    if image.mode != "RGB":
        image = image.convert("RGB")  # the old image is freed as soon as the name moves on
    return image


def render_png(prompt: str, negative_prompt: str, seed: int, width: int, height: int) -> bytes:
    """Draw the deterministic preview for these inputs and return it PNG-encoded."""
    return _encode_png(_paint(prompt, negative_prompt, seed, width, height))


def render_styled_png(
    prompt: str,
    negative_prompt: str,
    seed: int,
    width: int,
    height: int,
    styles: Sequence[tuple[bytes, float]],
) -> bytes:
    """`render_png`'s picture with preview `styles` (style file bytes, strength 0..1) applied."""
    picture = _paint(prompt, negative_prompt, seed, width, height)
    return _encode_png(picture, _style_for(styles, picture))


def _style_for(
    styles: Sequence[tuple[bytes, float]], picture: Image.Image
) -> Callable[[Image.Image], Image.Image]:
    """The filter applying `styles` to `picture`'s strips (fitted to its histogram), or no-op."""
    if not styles:
        return _unchanged
    from core.backends.preview_style import style_filter

    return style_filter(styles, picture)


def _unchanged(picture: Image.Image) -> Image.Image:
    return picture


def _paint(prompt: str, negative_prompt: str, seed: int, width: int, height: int) -> Image.Image:
    """Draw the deterministic preview for these inputs, as an RGB image.

    Each prompt word is hashed (blake2b, stable across processes, unlike `hash()`) into a
    colour, a shape kind and a size; the seed drives placement. Words also in the negative
    prompt are left out, and the negative prompt perturbs the layout.
    """
    # Imported here so importing the backend (MCP cold start) does not pay for Pillow.
    from PIL import Image, ImageDraw

    negative = set(_words(negative_prompt))
    wanted = (w for w in _iter_words(prompt) if w not in _STOPWORDS and w not in negative)
    words = list(itertools.islice(wanted, _MAX_WORDS))
    if not words:
        # Only filler or negated words: draw them anyway rather than an empty picture.
        words = list(itertools.islice(_iter_words(prompt), _MAX_WORDS)) or [prompt.strip() or "?"]
    digests = [_digest(w) for w in words]
    colours = [_word_colour(w, d) for w, d in zip(words, digests, strict=True)]

    # The layout stream: the seed, salted with the negative prompt so changing it changes the
    # picture as it would with a real model.
    salt = int.from_bytes(_digest("\0negative\0" + negative_prompt)[:8], "big")
    rng = random.Random((seed % 2**32) ^ (salt << 32))

    # Background: a 2x2 image of mood colours stretched over the canvas, so the gradient costs
    # one C-level resize instead of per-pixel Python.
    mood = [c for w, c in zip(words, colours, strict=True) if w in _PALETTE]
    mood += [c for w, c in zip(words, colours, strict=True) if w not in _PALETTE]
    top_left, top_right, bottom = (mood * 3)[:3]
    corners = [
        top_left,
        top_right,
        _shade(bottom, 0.55),
        _shade(_mix(top_left, bottom, 0.5), 0.4),
    ]
    tiny = Image.new("RGB", (2, 2))
    tiny.putdata(corners)
    # box spans pixel centre to pixel centre, so the gradient runs edge to edge.
    image = tiny.resize((width, height), Image.Resampling.BILINEAR, box=(0.5, 0.5, 1.5, 1.5))
    draw = ImageDraw.Draw(image, "RGBA")  # RGBA fills blend onto the RGB canvas

    _draw_horizon(draw, rng, width, height, _shade(bottom, 0.35))
    budget = _MAX_SHAPES
    for digest, colour in zip(digests, colours, strict=True):
        budget -= _draw_word(draw, rng, digest, colour, width, height, budget)
    return image


def _encode_png(image: Image.Image, style: Callable[[Image.Image], Image.Image] = _unchanged) -> bytes:
    """Encode an RGB image as a minimal PNG (see `_PngWriter`), a strip of rows at a time, styled."""
    width, height = image.size
    writer = _PngWriter(width, height, level=0 if width * height <= STORED_MAX_PIXELS else 1)
    rows = _strip_rows(width)
    if rows >= height:
        writer.add(style(image))
    else:
        for top in range(0, height, rows):
            writer.add(style(image.crop((0, top, width, min(height, top + rows)))))
    return writer.finish()


def _strip_rows(width: int) -> int:
    return max(1, STRIP_BYTES // (4 * width))


class _PngWriter:
    """A minimal 8-bit RGB PNG (IHDR, one IDAT, IEND; no metadata), fed strips of rows top down.

    Pillow's own PNG writer tries every filter on every row: ~1 ms at 64x64 by default and
    still ~0.45 ms at its fastest level, too much for 1,000 runs/s. Here the "Up" filter is
    applied to a strip by one C-level subtraction and zlib compresses it as it comes (level 1:
    ~0.2 ms at 64x64, 2-3x faster at 512x512, files within ~1.4x of Pillow's default size).
    The smallest images are stored instead, unfiltered (~0.05 ms at 64x64, 12 KB). Pixels alone
    decide the bytes. Only one strip's raw pixels exist at a time.
    """

    def __init__(self, width: int, height: int, level: int = 1) -> None:
        self.width, self.height = width, height
        self._out = io.BytesIO()
        header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB, no interlace
        self._out.write(b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header))
        self._idat_at = self._out.tell()
        self._out.write(b"\0\0\0\0IDAT")  # the length is filled in by finish()
        self._idat_size = 0
        self._crc = zlib.crc32(b"IDAT")
        self._level = level
        self._deflate = zlib.compressobj(level)
        self._last_row: Image.Image | None = None
        self._rows = 0

    def add(self, strip: Image.Image) -> None:
        """Append the next rows (an RGB image as wide as the PNG)."""
        from PIL import ImageChops

        width, rows = strip.size
        stride = width * 3
        if self._level == 0:
            # Stored, not compressed: a filter would buy nothing, so rows go as they are (None).
            raw = strip.tobytes()
            self._write(
                self._deflate.compress(
                    b"".join(b"\0" + raw[i : i + stride] for i in range(0, len(raw), stride))
                )
            )
            self._rows += rows
            return
        above = ImageChops.offset(strip, 0, 1)  # each row sees the one above it
        if self._last_row is None:
            above.paste((0, 0, 0), (0, 0, width, 1))  # the first row has nothing above: Up == None
        else:
            above.paste(self._last_row, (0, 0))
        filtered = ImageChops.subtract_modulo(strip, above).tobytes()
        del above
        self._last_row = strip.crop((0, rows - 1, width, rows))
        scanlines = b"".join(b"\x02" + filtered[i : i + stride] for i in range(0, len(filtered), stride))
        del filtered
        self._write(self._deflate.compress(scanlines))
        self._rows += rows

    def finish(self) -> bytes:
        """The PNG's bytes; every row must have been added."""
        if self._rows != self.height:
            raise ValueError(f"{self._rows} rows were added to a PNG of {self.height}")
        self._write(self._deflate.flush())
        self._out.write(struct.pack(">I", self._crc) + _chunk(b"IEND", b""))
        self._out.seek(self._idat_at)
        self._out.write(struct.pack(">I", self._idat_size))
        return self._out.getvalue()

    def _write(self, data: bytes) -> None:
        if data:
            self._out.write(data)
            self._idat_size += len(data)
            self._crc = zlib.crc32(data, self._crc)


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def _iter_words(text: str) -> Iterator[str]:
    # Lazy, so a 4,000-character prompt is only scanned as far as the words actually drawn.
    return (match.group().lower() for match in _WORD.finditer(text))


def _digest(text: str) -> bytes:
    return hashlib.blake2b(text.encode("utf-8"), digest_size=16, person=b"atelier-preview").digest()


def _word_colour(word: str, digest: bytes) -> _Rgb:
    if word in _PALETTE:
        hue, sat, val = _PALETTE[word]
    else:
        hue = int.from_bytes(digest[0:2], "big") / 65536
        sat = 0.45 + digest[2] / 255 * 0.45
        val = 0.55 + digest[3] / 255 * 0.4
    r, g, b = colorsys.hsv_to_rgb(hue, sat, val)
    return round(r * 255), round(g * 255), round(b * 255)


def _mix(a: _Rgb, b: _Rgb, t: float) -> _Rgb:
    return (
        round(a[0] + (b[0] - a[0]) * t),
        round(a[1] + (b[1] - a[1]) * t),
        round(a[2] + (b[2] - a[2]) * t),
    )


def _shade(colour: _Rgb, factor: float) -> _Rgb:
    return _mix((0, 0, 0), colour, factor)


def _draw_horizon(draw: ImageDraw.ImageDraw, rng: random.Random, width: int, height: int, fill: _Rgb) -> None:
    """A wavy ground band across the lower part, so every preview reads as a scene."""
    base = height * rng.uniform(0.62, 0.8)
    amplitude = height * rng.uniform(0.02, 0.08)
    phase = rng.uniform(0, math.tau)
    points = [
        (width * i / 8, base + amplitude * math.sin(phase + i * 0.9) + rng.uniform(-1, 1) * amplitude * 0.5)
        for i in range(9)
    ]
    points += [(width, height), (0, height)]
    draw.polygon(points, fill=(*fill, 190))


def _draw_word(
    draw: ImageDraw.ImageDraw,
    rng: random.Random,
    digest: bytes,
    colour: _Rgb,
    width: int,
    height: int,
    budget: int,
) -> int:
    """Draw one word's shapes (at most `budget`) and return how many were drawn.

    Kind, size, count and opacity come from the word's hash; placement from `rng`.
    """
    kind = digest[4] % 4
    repeats = min(budget, 1 + digest[5] % 3)
    size = min(width, height) * (0.08 + digest[6] / 255 * 0.2)
    alpha = 120 + digest[7] % 100
    fill = (*colour, alpha)
    outline = (*_shade(colour, 0.5), min(255, alpha + 40))
    for _ in range(repeats):
        # The word's hash anchors where its shapes cluster; the seed moves them around it.
        cx = width * (0.08 + 0.84 * ((digest[8] / 255 + rng.random() * 0.6) % 1.0))
        cy = height * (0.08 + 0.84 * ((digest[9] / 255 + rng.random() * 0.6) % 1.0))
        r = size * rng.uniform(0.6, 1.2)
        theta = rng.uniform(0, math.tau)
        cos, sin = math.cos(theta), math.sin(theta)
        if kind == 0:
            ry = r * rng.uniform(0.6, 1.4)
            draw.ellipse((cx - r, cy - ry, cx + r, cy + ry), fill=fill, outline=outline)
        elif kind == 1:
            half_h = r * rng.uniform(0.4, 1.0)
            corners = ((-r, -half_h), (r, -half_h), (r, half_h), (-r, half_h))
            draw.polygon(
                [(cx + x * cos - y * sin, cy + x * sin + y * cos) for x, y in corners],
                fill=fill,
                outline=outline,
            )
        elif kind == 2:
            # Computed here rather than with draw.regular_polygon, which is several times slower.
            sides = 3 + digest[10] % 4
            step = math.tau / sides
            points = [
                (cx + r * math.cos(theta + k * step), cy + r * math.sin(theta + k * step))
                for k in range(sides)
            ]
            draw.polygon(points, fill=fill, outline=outline)
        else:
            # A few parallel streaks through the anchor, like light, rain or water.
            dx, dy = cos * r * 1.6, sin * r * 1.6
            thickness = max(1, round(r * 0.18))
            gap = thickness * 2.5
            for band in (-gap, 0.0, gap):
                ox, oy = cx - sin * band, cy + cos * band
                draw.line([(ox - dx, oy - dy), (ox + dx, oy + dy)], fill=fill, width=thickness)
        size *= 0.8
    return repeats
