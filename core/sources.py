"""Source images for image-to-image and upscaling: where a request may take them from, and the checks.

A source is named by one string, in one of four forms:
- a run's image: `atelier://runs/<run_id>/images/<file>`, `<run_id>/<file>`, or `<run_id>` (its first image);
- a file path inside an allowed folder (`ATELIER_HOME/inputs` plus `ATELIER_INPUT_DIRS`); a
  relative path starts at the first folder (`ATELIER_HOME/inputs`);
- an http(s) URL on loopback or on a host listed in `ATELIER_FETCH_HOSTS` (no redirects), read
  in full within `ATELIER_FETCH_TIMEOUT_S`;
- base64 image data, bare or as a `data:image/...;base64,` URL.
Whatever the form, the bytes must decode as a PNG, JPEG or WebP no larger than the caps.
Every refusal is an `InvalidInput` on `source` that says what is wrong, whatever the path or
URL holds (a NUL byte, an unknown `~user`, an unreadable file): never a crash.
"""

from __future__ import annotations

import base64
import binascii
import io
import ipaddress
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import anyio
import anyio.to_thread

from core.errors import InvalidInput
from core.ids import RUN_ID_RE, check_filename
from core.memory import release_free_heap
from core.models import MAX_SIDE

FIELD = "source"
ACCEPTED_FORMATS = {"PNG": "image/png", "JPEG": "image/jpeg", "WEBP": "image/webp"}
MIN_SOURCE_SIDE = 16
# Sources up to this many pixels are checked on the event loop; bigger ones decode in a worker
# thread, one at a time (a 4096x4096 source decodes to 64 MiB).
INLINE_MAX_PIXELS = 256 * 256

_RUN_REF = re.compile(r"^(?:atelier://runs/)?(?P<run>[0-9a-z]{26})(?:/(?:images/)?(?P<file>[^/]+))?$")
_BASE64 = re.compile(r"^[A-Za-z0-9+/=_\-\s]+$")

ReadRunImage = Callable[[str, str | None], Awaitable[bytes]]


@dataclass(slots=True, frozen=True)
class LoadedImage:
    """A source image's bytes, checked, with what the ledger records about it."""

    data: bytes
    media_type: str
    width: int
    height: int
    origin: str


@dataclass(slots=True, frozen=True)
class SourcePolicy:
    """What a request may read: folders (relative paths start at the first), URL hosts, and the caps."""

    input_dirs: tuple[Path, ...]
    fetch_hosts: frozenset[str]
    max_bytes: int
    fetch_timeout_s: float = 30.0
    # Big sources decode one at a time, so concurrent requests cannot add up their pixels.
    decoding: anyio.CapacityLimiter = field(default_factory=lambda: anyio.CapacityLimiter(1))


async def load_source(value: str, policy: SourcePolicy, read_run_image: ReadRunImage) -> LoadedImage:
    """Fetch and check the image `value` names; raise `InvalidInput` naming what is wrong."""
    data, origin = await fetch_source(value, policy, read_run_image)
    if _pixels(data) <= INLINE_MAX_PIXELS:
        return inspect_image(data, policy.max_bytes, origin)
    async with policy.decoding:
        return await anyio.to_thread.run_sync(_inspect_and_trim, data, policy.max_bytes, origin)


async def fetch_source(value: str, policy: SourcePolicy, read_run_image: ReadRunImage) -> tuple[bytes, str]:
    """The bytes `value` names and where they came from, read under `policy`; what they hold is not
    checked (a caller with its own checks, such as training images, judges them itself)."""
    if not isinstance(value, str) or not value.strip():
        raise InvalidInput(FIELD, "is required: a run's image, a file path, an http(s) URL or base64 data")
    value = value.strip()
    match = _RUN_REF.fullmatch(value)
    if match and RUN_ID_RE.fullmatch(match["run"]):
        filename = check_filename(match["file"], FIELD) if match["file"] else None
        data = await read_run_image(match["run"], filename)
        origin = f"atelier://runs/{match['run']}" + (f"/images/{filename}" if filename else "")
    elif value.startswith(("http://", "https://")):
        data, origin = await _fetch(value, policy), value
    elif value.startswith("data:"):
        header, _, payload = value.partition(",")
        if ";base64" not in header:
            raise InvalidInput(FIELD, "a data: URL must be base64-encoded (data:image/png;base64,...)")
        data, origin = _decode_base64(payload, policy), "base64"
    elif len(value) >= 256 and _BASE64.fullmatch(value[:4096]):
        # Before paths: JPEG data starts "/9j/", which would read as one.
        data, origin = _decode_base64(value, policy), "base64"
    elif value.startswith(("/", "~", "./")) or Path(value).suffix:
        data, origin = await _read_file(value, policy), value
    elif _BASE64.fullmatch(value):
        data, origin = _decode_base64(value, policy), "base64"
    else:
        raise InvalidInput(
            FIELD,
            "is not a run image, a file path, an http(s) URL or base64 image data (see the tool's help)",
        )
    return data, origin


def _pixels(data: bytes) -> int:
    """The pixel count an image's header declares (0 if it has none readable): read, not decoded."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as image:
            return image.width * image.height
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError):
        return 0  # inspect_image says what is wrong with it


def _inspect_and_trim(data: bytes, max_bytes: int, origin: str) -> LoadedImage:
    try:
        return inspect_image(data, max_bytes, origin)
    finally:
        release_free_heap()  # the decoded pixels are gone: give their pages back


def inspect_image(data: bytes, max_bytes: int, origin: str = "") -> LoadedImage:
    """Check that `data` is a PNG, JPEG or WebP within the caps; return its type and size."""
    from PIL import Image, UnidentifiedImageError

    if len(data) > max_bytes:
        raise InvalidInput(
            FIELD, f"is {len(data):,} bytes; the limit is {max_bytes:,} (ATELIER_MAX_INPUT_BYTES)"
        )
    try:
        with Image.open(io.BytesIO(data)) as image:
            kind, (width, height) = image.format, image.size
            if kind in ACCEPTED_FORMATS and max(width, height) <= MAX_SIDE:
                image.load()  # decodes every pixel: catches truncated and corrupt data
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError):
        raise InvalidInput(FIELD, "is not a readable image (PNG, JPEG or WebP expected)") from None
    if kind not in ACCEPTED_FORMATS:
        raise InvalidInput(FIELD, f"is a {kind} image; PNG, JPEG or WebP expected")
    if max(width, height) > MAX_SIDE or min(width, height) < MIN_SOURCE_SIDE:
        raise InvalidInput(
            FIELD, f"is {width}x{height}; each side must be in {MIN_SOURCE_SIDE}..{MAX_SIDE} pixels"
        )
    return LoadedImage(data, ACCEPTED_FORMATS[kind], width, height, origin[:300])


def _decode_base64(payload: str, policy: SourcePolicy) -> bytes:
    # 4 characters carry 3 bytes: refuse oversized data before decoding it.
    if len(payload) > policy.max_bytes * 4 // 3 + 8:
        raise InvalidInput(FIELD, f"base64 data is over the {policy.max_bytes:,}-byte limit")
    compact = "".join(payload.split())
    try:
        altchars = b"-_" if ("-" in compact or "_" in compact) else None
        return base64.b64decode(compact + "=" * (-len(compact) % 4), altchars=altchars, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidInput(FIELD, "is not valid base64 image data") from None


async def _read_file(value: str, policy: SourcePolicy) -> bytes:
    try:
        return await _read_allowed_file(value, policy)
    except (OSError, ValueError, RuntimeError) as exc:
        # Whatever else the path or the file system throws is still about the caller's path;
        # only an OSError's own words are shown (other messages may quote paths it led to).
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else "not a usable path"
        raise InvalidInput(FIELD, f"file {value[:300]!r} cannot be read ({reason})") from None


async def _read_allowed_file(value: str, policy: SourcePolicy) -> bytes:
    allowed = [d.expanduser().resolve() for d in policy.input_dirs]
    if "\0" in value:
        raise InvalidInput(FIELD, "a file path cannot contain a NUL byte")
    path = Path(value)
    if value.startswith("~"):
        try:
            path = path.expanduser()
        except RuntimeError:  # ~nosuchuser, or no home folder at all
            user = value[1:].partition("/")[0]
            raise InvalidInput(
                FIELD,
                f"file {value[:300]!r} names the home folder of {user or 'this user'!r}, which is unknown",
            ) from None
    if not path.is_absolute() and allowed:
        path = allowed[0] / path

    def refuse_outside() -> InvalidInput:
        folders = ", ".join(str(d) for d in allowed)
        start = f"; a relative path starts at {allowed[0]}" if allowed else ""
        return InvalidInput(
            FIELD,
            f"file {value[:300]!r} is outside the folders tools may read: {folders}{start}; "
            "more folders can be added with ATELIER_INPUT_DIRS",
        )

    # The folder check comes before any existence check, so a refusal never tells
    # whether a file exists outside the allowed folders; the second check catches
    # symlinks that lead out of them.
    if not any(path.resolve().is_relative_to(folder) for folder in allowed):
        raise refuse_outside()
    try:
        resolved = path.resolve(strict=True)
    except (OSError, RuntimeError):
        raise InvalidInput(FIELD, f"file {value[:300]!r} does not exist") from None
    if not any(resolved.is_relative_to(folder) for folder in allowed):
        raise refuse_outside()
    if not resolved.is_file():
        raise InvalidInput(FIELD, f"{value[:300]!r} is not a file")
    size = resolved.stat().st_size
    if size > policy.max_bytes:
        raise InvalidInput(FIELD, f"file is {size:,} bytes; the limit is {policy.max_bytes:,}")
    return await anyio.Path(resolved).read_bytes()


def host_is_allowed(host: str, fetch_hosts: frozenset[str]) -> bool:
    """Loopback always; any other host only if it is listed."""
    host = host.lower().strip("[]")
    if host == "localhost" or host in fetch_hosts:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


async def _fetch(url: str, policy: SourcePolicy) -> bytes:
    import httpx  # only when a source is a URL: importing it costs start-up ~0.1 s

    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, ValueError):
        raise InvalidInput(FIELD, f"{url[:200]!r} is not a valid URL") from None
    host = parsed.host
    if not host or not 0 < (parsed.port or 80) < 65536:
        raise InvalidInput(FIELD, f"{url[:200]!r} is not a valid URL (host and port 1..65535 needed)")
    if not host_is_allowed(host, policy.fetch_hosts):
        raise InvalidInput(
            FIELD, f"URL host {host!r} is not allowed: only loopback, or hosts listed in ATELIER_FETCH_HOSTS"
        )
    # One deadline for the whole fetch, body included: httpx's timeouts are per read, so a
    # server trickling a byte at a time would otherwise hold the request for ever.
    limit = policy.fetch_timeout_s
    try:
        with anyio.fail_after(limit):
            async with (
                httpx.AsyncClient(timeout=min(15, limit), follow_redirects=False, trust_env=False) as client,
                client.stream("GET", url) as response,
            ):
                if response.status_code != 200:
                    raise InvalidInput(FIELD, f"GET {url} answered {response.status_code}, not an image")
                chunks, size = [], 0
                async for chunk in response.aiter_bytes():
                    size += len(chunk)
                    if size > policy.max_bytes:
                        raise InvalidInput(FIELD, f"{url} is larger than the {policy.max_bytes:,}-byte limit")
                    chunks.append(chunk)
                return b"".join(chunks)
    except TimeoutError:
        raise InvalidInput(
            FIELD, f"the URL {url} did not answer in full within {limit:g} s (ATELIER_FETCH_TIMEOUT_S)"
        ) from None
    except httpx.HTTPError as exc:
        raise InvalidInput(FIELD, f"could not fetch {url}: {type(exc).__name__}: {exc}") from None
    except (httpx.InvalidURL, ValueError, RuntimeError, OSError):
        raise InvalidInput(
            FIELD, f"could not fetch {url[:200]!r}: it is not a URL httpx can request"
        ) from None
