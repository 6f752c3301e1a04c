"""Training images: the one check every uploaded file passes before a character keeps it.

`check_training_image(filename, data, limits)` returns a `CheckedImage` (the bytes to store,
their sha256, type and size) or raises `ImageRefused` with a sentence a person can act on. MCP's
`add_character_images` and Isengard's multipart upload both call it, in a worker thread: it is
synchronous and CPU-bound.

Decisions, in the order the checks run (cheapest first, so a bad file costs little):
- The name. A plain file name only: directories (`/`, `\\`), a drive or stream colon, a leading
  dot, control characters and names over 128 characters are refused, because each means the
  client sent something other than a file's own name. Harmless characters are replaced instead:
  accents are dropped (`Mära` -> `Mara`), anything outside `A-Za-z0-9_.-` becomes `_`, so
  `My photo (1).JPG` is stored as `My_photo_1_.jpg`. The stored extension is the real type's
  (`.png`, `.jpg`, `.webp`), whatever the name said. No name (or nothing left of it) gives
  `image-<first 12 hex of the sha256>`, the same for the same upload. Every stored name
  matches `core.ids.FILENAME_RE`.
- The bytes. Empty or over `max_bytes` is refused. The type is sniffed from the magic numbers,
  never from the name or a Content-Type: PNG, JPEG, WebP. Other types are named when
  recognisable (SVG, GIF, HEIC, AVIF, TIFF, BMP, PDF, text, ...).
- The pixels. The header's size is read with Pillow's lazy open (only the three accepted
  decoders may be tried) and checked against `max_pixels` and `min_side` before a pixel is
  decoded. Pillow's own bomb check (on at its default, `Image.MAX_IMAGE_PIXELS`) fires at open
  for images over twice its limit; that is refused with the same reason, so the effective cap
  is the smaller of the two. Animated PNG/WebP are refused (a training image is one picture;
  taking a frame silently could train on the wrong one); a camera's multi-picture JPEG (MPO)
  is a still with previews attached, and its primary picture is kept.
- The decode. Every pixel is decoded, so a truncated or corrupt file is refused. This relies
  on `ImageFile.LOAD_TRUNCATED_IMAGES` staying off; if anything in the process turned it on,
  the check raises `RuntimeError` rather than store half images.
- What is stored. Nothing of the file's metadata: EXIF (GPS, camera, dates, thumbnails), XMP,
  ICC profiles, PNG text chunks, comments, a camera's extra pictures and vendor trailers. When
  the pixels can stay as they are (upright, already sRGB or unprofiled, an 8-bit PNG or an
  L/RGB JPEG), the metadata is cut out of the container and the coded picture kept byte for
  byte (`core.characters.metadata`): no generation loss for JPEG, and a copy instead of a PNG
  encode that costs 10-20 decodes. Otherwise the pixels are made anew: EXIF orientation is
  applied; colours in another ICC profile (Display P3 from phones, Adobe RGB) are converted to
  sRGB, since trainers and ComfyUI ignore profiles and must see what the person saw; modes are
  reduced to L, LA, RGB, RGBA (alpha kept for PNG and WebP; CMYK JPEG through its profile;
  16-bit scaled, not clipped); and the image is encoded in its own type: PNG at zlib level 3,
  JPEG at quality 95 with the source's chroma subsampling, WebP lossless when the source was,
  else quality 95. Both ways are deterministic: the same upload gives the same bytes and
  sha256, which is how duplicates are found.

`sniff_media_type(data)` is the same sniffing, for serving stored files with the right type.
"""

from __future__ import annotations

import hashlib
import io
import re
import unicodedata
from dataclasses import dataclass
from typing import Any

from core.characters.metadata import stripped_jpeg, stripped_png, stripped_webp
from core.ids import FILENAME_RE

MAX_NAME_CHARS = 128
# zlib level of re-encoded PNGs: level 6 (Pillow's default) takes ~3.5x as long for ~7% less.
PNG_COMPRESS_LEVEL = 3
_ORIENTATION = 0x0112  # the EXIF tag

_EXTENSIONS = {"image/png": ".png", "image/jpeg": ".jpg", "image/webp": ".webp"}
_PILLOW_FORMATS = {"PNG": "image/png", "JPEG": "image/jpeg", "MPO": "image/jpeg", "WEBP": "image/webp"}
_REPLACED = re.compile(r"[^A-Za-z0-9_.-]+")
# The trailing part of a name taken as its extension (dropped: the real type's is used): up to
# four characters with a letter, so `.jpeg` goes and `v1.2` or `mara.final` keep their ends.
_GIVEN_EXTENSION = re.compile(r"\.(?=[A-Za-z0-9]{0,3}[A-Za-z])[A-Za-z0-9]{1,4}$")
# BMP's header sizes (BITMAPCOREHEADER to BITMAPV5HEADER): "BM" alone begins too many texts.
_BMP_HEADER_SIZES = frozenset({12, 40, 52, 56, 64, 108, 124})


@dataclass(frozen=True, slots=True)
class UploadLimits:
    """The caps a training image is checked against."""

    max_bytes: int
    max_pixels: int
    min_side: int

    @classmethod
    def from_settings(cls, settings: Any) -> UploadLimits:
        return cls(
            max_bytes=settings.max_input_bytes,
            max_pixels=settings.training_max_pixels,
            min_side=settings.training_min_side,
        )


@dataclass(frozen=True, slots=True)
class CheckedImage:
    """A training image as it is stored: cleaned bytes, their hash, type and size."""

    filename: str
    data: bytes
    sha256: str
    media_type: str
    width: int
    height: int


class ImageRefused(Exception):
    """One uploaded file was not accepted; `reason` says why and what to do instead."""

    def __init__(self, filename: str, reason: str) -> None:
        self.filename = filename
        self.reason = reason
        super().__init__(f"{filename}: {reason}")


def sniff_media_type(data: bytes) -> str | None:
    """`image/png`, `image/jpeg` or `image/webp` by the bytes' magic numbers, else None."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if len(data) >= 16 and data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return None


def check_training_image(filename: str | None, data: bytes, limits: UploadLimits) -> CheckedImage:
    """The image as it should be stored, or `ImageRefused` saying what is wrong with it."""
    shown = _shown(filename)
    stem = _stem(filename, shown)
    if not data:
        raise ImageRefused(shown, "the file is empty")
    if len(data) > limits.max_bytes:
        raise ImageRefused(shown, f"the file is {len(data):,} bytes; the limit is {limits.max_bytes:,} bytes")
    media_type = sniff_media_type(data)
    if media_type is None:
        raise ImageRefused(shown, _not_accepted(data))
    (width, height), stored_bytes = _decode(data, shown, media_type, limits)
    name_stem = stem or "image-" + hashlib.sha256(stored_bytes).hexdigest()[:12]
    extension = _EXTENSIONS[media_type]
    stored_name = name_stem[: MAX_NAME_CHARS - len(extension)].rstrip(".") + extension
    assert FILENAME_RE.fullmatch(stored_name), stored_name
    return CheckedImage(
        filename=stored_name,
        data=stored_bytes,
        sha256=hashlib.sha256(stored_bytes).hexdigest(),
        media_type=media_type,
        width=width,
        height=height,
    )


# -- the name -----------------------------------------------------------------------------------


def _shown(filename: str | None) -> str:
    """The given name as a message can show it: printable, and not too long to read."""
    if not filename:
        return "(unnamed file)"
    text = filename if filename.isprintable() else repr(filename)
    return text if len(text) <= 80 else text[:77] + "..."


def _stem(filename: str | None, shown: str) -> str:
    """The safe stem of the given name ('' when none is left), or `ImageRefused`."""
    if not filename:
        return ""
    if "/" in filename or "\\" in filename:
        raise ImageRefused(shown, "file names may not contain directories: send the file's own name")
    if any(ord(c) < 32 or ord(c) == 127 for c in filename):
        raise ImageRefused(shown, "file names may not contain control characters")
    if ":" in filename:
        raise ImageRefused(shown, "file names may not contain ':' (a drive or stream name)")
    if filename.startswith("."):
        raise ImageRefused(shown, "file names may not start with a dot")
    if len(filename) > MAX_NAME_CHARS:
        raise ImageRefused(shown, f"the file name is over {MAX_NAME_CHARS} characters: shorten it")
    stem = _GIVEN_EXTENSION.sub("", filename)
    # Accented letters keep their base letter; the rest of what a path could misread becomes _.
    ascii_stem = unicodedata.normalize("NFKD", stem).encode("ascii", "ignore").decode()
    safe = _REPLACED.sub("_", ascii_stem)
    safe = re.sub(r"\.{2,}", ".", safe)
    return safe.lstrip("_.-").rstrip(".")


# -- the type -----------------------------------------------------------------------------------


def _not_accepted(data: bytes) -> str:
    """Why bytes that are not PNG, JPEG or WebP are refused, naming what they are if known."""
    head = data[:64]
    named = None
    if head.startswith((b"GIF87a", b"GIF89a")):
        named = "a GIF image"
    elif (
        head.startswith(b"BM")
        and len(head) >= 18
        and int.from_bytes(head[14:18], "little") in _BMP_HEADER_SIZES
    ):
        named = "a BMP image"
    elif head.startswith((b"II*\x00", b"MM\x00*")):
        named = "a TIFF image"
    elif len(head) >= 12 and head[4:8] == b"ftyp":
        brand = head[8:12]
        if brand in (b"heic", b"heix", b"hevc", b"heim", b"heis", b"mif1", b"msf1"):
            named = "a HEIC image (convert it to JPEG: most phones can share photos as JPEG)"
        elif brand in (b"avif", b"avis"):
            named = "an AVIF image"
        else:
            named = "a video or MP4-family file"
    elif head.startswith(b"\xff\x0a") or head.startswith(b"\x00\x00\x00\x0cJXL "):
        named = "a JPEG XL image"
    elif head.startswith(b"%PDF"):
        named = "a PDF document"
    elif head.startswith(b"8BPS"):
        named = "a Photoshop document"
    elif head.startswith(b"\x00\x00\x01\x00"):
        named = "an icon (ICO) file"
    elif head.startswith(b"PK\x03\x04"):
        named = "a ZIP archive: upload the images one by one"
    elif len(head) >= 12 and head[:4] == b"RIFF":
        named = "a RIFF file that is not WebP"
    if named is not None:
        return f"the file is {named}; upload PNG, JPEG or WebP"
    text = _as_text(data[:4096])
    if text is not None:
        lowered = text.lstrip("\ufeff \t\r\n").lower()
        if "<svg" in lowered[:1024]:
            return "SVG is not accepted: upload PNG, JPEG or WebP"
        if lowered.startswith(("<!doctype html", "<html")):
            return "the file is an HTML page, not an image; upload PNG, JPEG or WebP"
        return "the file is text, not an image; upload PNG, JPEG or WebP"
    return "the file is not a PNG, JPEG or WebP image (its type is not recognised)"


def _as_text(head: bytes) -> str | None:
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as error:
        if error.start < len(head) - 4:  # not merely a character cut by the 4 KiB window
            return None
        text = head[: error.start].decode("utf-8")
    printable = sum(c.isprintable() or c in "\t\r\n" for c in text)
    return text if text and printable >= 0.95 * len(text) else None


# -- the pixels ---------------------------------------------------------------------------------


def _decode(data: bytes, shown: str, media_type: str, limits: UploadLimits) -> tuple[tuple[int, int], bytes]:
    """Check and fully decode `data`; return the stored image's size and bytes."""
    from PIL import Image, ImageFile

    if ImageFile.LOAD_TRUNCATED_IMAGES:
        raise RuntimeError(
            "PIL.ImageFile.LOAD_TRUNCATED_IMAGES is on: training images could be stored half decoded"
        )
    corrupt = ImageRefused(shown, "the image is truncated or corrupt: export it again and retry")
    try:
        image = Image.open(io.BytesIO(data), formats=["PNG", "JPEG", "WEBP"])
    except Image.DecompressionBombError as bomb:
        # Pillow refuses at open what is over twice its own limit: the smaller cap is the real one.
        cap = min(limits.max_pixels, 2 * (Image.MAX_IMAGE_PIXELS or limits.max_pixels))
        found = re.search(r"\((\d+) pixels\)", str(bomb))
        has = f"{int(found.group(1)):,} pixels" if found else "too many pixels"
        raise ImageRefused(
            shown, f"the image has {has}; the limit is {cap:,} pixels: scale it down and retry"
        ) from None
    except (OSError, SyntaxError, ValueError):
        raise corrupt from None
    with image:
        width, height = image.size
        if width * height > limits.max_pixels:
            raise ImageRefused(
                shown,
                f"the image is {width}x{height} ({width * height:,} pixels); the limit is "
                f"{limits.max_pixels:,} pixels: scale it down and retry",
            )
        if min(width, height) < limits.min_side:
            raise ImageRefused(
                shown,
                f"the image is {width}x{height}; training images need at least "
                f"{limits.min_side} pixels on each side",
            )
        if _PILLOW_FORMATS.get(image.format or "") != media_type:
            raise corrupt  # the magic number said one type and the decoder found another
        if image.format != "MPO" and getattr(image, "n_frames", 1) > 1:
            raise ImageRefused(shown, "animated images are not accepted: upload a still image")
        try:
            image.load()
        except (OSError, SyntaxError, ValueError, EOFError):
            raise corrupt from None
        if not _pixels_must_change(image, data, media_type):
            stripped = _stripped(data, media_type, image.size)
            if stripped is not None:
                return image.size, stripped
        cleaned = _cleaned(image, keep_alpha=media_type != "image/jpeg")
        out = io.BytesIO()
        if media_type == "image/png":
            cleaned.save(out, "PNG", optimize=False, compress_level=PNG_COMPRESS_LEVEL)
        elif media_type == "image/jpeg":
            cleaned.save(out, "JPEG", quality=95, subsampling=_jpeg_subsampling(image), optimize=False)
        elif _webp_is_lossless(data):
            cleaned.save(out, "WEBP", lossless=True, exact=False)
        else:
            cleaned.save(out, "WEBP", quality=95)
    return cleaned.size, out.getvalue()


def _pixels_must_change(image: Any, data: bytes, media_type: str) -> bool:
    """Whether storing `image` needs new pixels: turned, colour-converted or another mode."""
    if image.getexif().get(_ORIENTATION, 1) in range(2, 9):
        return True
    icc = image.info.get("icc_profile")
    if icc and not _is_srgb(icc):
        return True
    if media_type == "image/png":
        bit_depth, colour_type = data[24], data[25]  # IHDR: the first chunk, at a fixed place
        return not (bit_depth == 8 or colour_type == 3)
    if media_type == "image/jpeg":
        return image.mode not in ("L", "RGB")
    return False


def _stripped(data: bytes, media_type: str, size: tuple[int, int]) -> bytes | None:
    """`data` with its metadata cut out (no re-encoding), checked to decode to the same size."""
    from PIL import Image

    strip = {"image/png": stripped_png, "image/jpeg": stripped_jpeg, "image/webp": stripped_webp}
    stripped = strip[media_type](data)
    if stripped is None:
        return None
    # What is stored must decode on its own: a rewrite this module got wrong is re-encoded instead.
    try:
        with Image.open(io.BytesIO(stripped), formats=["PNG", "JPEG", "WEBP"]) as again:
            again.load()
            return stripped if again.size == size else None
    except (OSError, SyntaxError, ValueError, EOFError):
        return None


def _cleaned(image: Any, *, keep_alpha: bool) -> Any:
    """A copy of `image` upright, in sRGB, in a mode trainers read, with no metadata at all."""
    from PIL import ImageOps

    upright = ImageOps.exif_transpose(image)
    icc = image.info.get("icc_profile")
    has_alpha = keep_alpha and (
        upright.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in upright.info
    )
    converted = _to_srgb(upright, icc, has_alpha) if icc else None
    if converted is None:
        converted = _plain_mode(upright, has_alpha)
    # Nothing of the source's info (EXIF, XMP, ICC, text chunks, dpi, comments) reaches the file.
    converted.info = {}
    return converted


def _plain_mode(image: Any, has_alpha: bool) -> Any:
    """`image` in L, LA, RGB or RGBA: the modes every trainer reads the same way."""
    if image.mode.startswith("I") or image.mode == "F":
        # 16-bit and float greys: scale to 8 bits (a plain convert would clip at 255).
        top = 65535 if image.mode.startswith("I;16") or image.getextrema()[1] > 255 else 255
        image = image.convert("I").point(lambda v: v * 255 / top).convert("L")
    grey = image.mode in ("1", "L", "LA", "La")
    target = ("LA" if has_alpha else "L") if grey else ("RGBA" if has_alpha else "RGB")
    return image if image.mode == target else image.convert(target)


def _to_srgb(image: Any, icc: bytes, has_alpha: bool) -> Any | None:
    """`image` converted from its ICC profile to sRGB, or None when none is needed or possible."""
    from PIL import ImageCms

    if image.mode not in ("RGB", "RGBA", "CMYK") or _is_srgb(icc):
        return None  # greys and palettes: their profile is dropped, the pixels kept
    try:
        return ImageCms.profileToProfile(
            image,
            ImageCms.ImageCmsProfile(io.BytesIO(icc)),
            ImageCms.createProfile("sRGB"),
            outputMode="RGBA" if has_alpha and image.mode == "RGBA" else "RGB",
        )
    except (ImageCms.PyCMSError, OSError, ValueError, TypeError):
        return None  # a profile lcms cannot apply: keep the pixels as they are


def _is_srgb(icc: bytes) -> bool:
    """Whether an ICC profile describes sRGB (an unreadable one counts: it cannot be applied)."""
    from PIL import ImageCms

    try:
        description = ImageCms.getProfileDescription(ImageCms.ImageCmsProfile(io.BytesIO(icc)))
    except (ImageCms.PyCMSError, OSError, ValueError, TypeError):
        return True
    return "srgb" in description.lower()


def _jpeg_subsampling(image: Any) -> int:
    """The source's chroma subsampling as Pillow's save takes it (4:4:4 = 0, 4:2:2 = 1, 4:2:0 = 2)."""
    from PIL import JpegImagePlugin

    sampling = JpegImagePlugin.get_sampling(image)
    return sampling if sampling in (0, 1, 2) else 2


def _webp_is_lossless(data: bytes) -> bool:
    """Whether a WebP file's image is a VP8L (lossless) bitstream."""
    at = 12
    while at + 8 <= len(data):
        kind = data[at : at + 4]
        if kind == b"VP8L":
            return True
        if kind == b"VP8 ":
            return False
        size = int.from_bytes(data[at + 4 : at + 8], "little")
        at += 8 + size + (size & 1)
    return False
