"""Run ids and file names: how they are made, and the checks that keep them off the filesystem's edges."""

from __future__ import annotations

import os
import re
import secrets
import time

from core.errors import InvalidInput

# Crockford base32, lower case: 10 characters of milliseconds then 16 random ones.
# Sortable by creation time, URL-safe, and never anything a path could misread.
_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"
RUN_ID_RE = re.compile(r"^[0-9a-hjkmnp-tv-z]{26}$")
FILENAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
IDEMPOTENCY_KEY_RE = re.compile(r"^[\x21-\x7e]{1,255}$")


# Each byte to the letter of its low five bits: the random tail in one C call (`bytes.translate`).
_LETTER_OF_BYTE = bytes(ord(_ALPHABET[b & 31]) for b in range(256))


def new_run_id(now: float | None = None) -> str:
    millis = int((time.time() if now is None else now) * 1000)
    head = "".join([_ALPHABET[(millis >> shift) & 31] for shift in (45, 40, 35, 30, 25, 20, 15, 10, 5, 0)])
    return head + os.urandom(16).translate(_LETTER_OF_BYTE).decode()


def check_run_id(value: object, field: str = "run_id") -> str:
    """Return `value` if it is a well-formed run id, else raise `InvalidInput`."""
    if not isinstance(value, str) or not RUN_ID_RE.fullmatch(value):
        raise InvalidInput(field, f"is not a valid run id (26 characters of 0-9 a-z, got {_show(value)})")
    return value


def check_filename(value: object, field: str = "filename") -> str:
    """Return `value` if it is a plain file name (no directories, no leading dot), else raise."""
    if not isinstance(value, str) or not FILENAME_RE.fullmatch(value) or ".." in value:
        raise InvalidInput(field, f"is not a valid file name (got {_show(value)})")
    return value


def check_idempotency_key(value: str | None) -> str | None:
    if value is None or value == "":
        return None
    if not IDEMPOTENCY_KEY_RE.fullmatch(value):
        raise InvalidInput("idempotency_key", "must be 1..255 printable ASCII characters without spaces")
    return value


def random_seed() -> int:
    return secrets.randbelow(2**32)


def _show(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:40] + "..."
