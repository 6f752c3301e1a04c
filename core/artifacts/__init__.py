"""The artifact storage port: where produced files live, addressed by storage key.

Two adapters: `filesystem.FilesystemStore` (files under ATELIER_HOME, the default) and
`s3.S3Store` (an S3-compatible bucket, for several machines sharing one set of files).
Both raise `FileNotFoundError` for a key that holds no file, and another `OSError` when the
storage itself fails: the engine retries a run on the latter and reports "storage error".
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

# What a streamed read hands over at a time: big enough to keep system calls and S3 reads few,
# small enough that many responses in flight hold little memory.
CHUNK_BYTES = 256 * 1024


@dataclass
class ArtifactStream:
    """An artifact being read: its size, then its bytes chunk by chunk.

    Opening it already found the file (a missing one raised `FileNotFoundError` then), so an
    HTTP response can send its status and length before the first chunk. Iterate it to the end,
    or `aclose()` it."""

    size: int
    chunks: AsyncIterator[bytes]

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self.chunks

    async def aclose(self) -> None:
        aclose = getattr(self.chunks, "aclose", None)
        if aclose is not None:
            await aclose()


class ArtifactStore(Protocol):
    """Keys look like `runs/<run_id>/<filename>`; the engine builds them from checked ids."""

    async def put(self, key: str, data: bytes) -> None:
        """Store `data` under `key` atomically: a reader sees the old file or the new one."""
        ...

    async def put_stream(self, key: str, chunks: AsyncIterable[bytes]) -> int:
        """Store what `chunks` yields under `key`, never holding the whole file; returns its size.
        As atomic as `put`: a reader never sees half a file, and a failure leaves none."""
        ...

    async def read(self, key: str) -> bytes:
        """The whole file. Raises `FileNotFoundError` when `key` holds none."""
        ...

    async def stream(self, key: str) -> ArtifactStream:
        """The file, opened for reading chunk by chunk. Raises `FileNotFoundError` when `key`
        holds none."""
        ...

    def local_path(self, key: str) -> Path | None:
        """A filesystem path to the file, if the store has one (for streaming and the CLI)."""
        ...

    def location(self, key: str) -> str:
        """Where the file is, for a person: a path, or an `s3://bucket/key` URL."""
        ...

    async def signed_url(self, key: str) -> str | None:
        """A URL that serves the file without Atelier in between, for a limited time, if the store
        gives out such URLs (an S3 presigned GET); else None."""
        ...

    async def delete_prefix(self, prefix: str) -> None:
        """Remove every file under `prefix` (e.g. `runs/<run_id>/`)."""
        ...

    async def list_prefix(self, prefix: str) -> list[str]: ...

    async def health(self) -> dict[str, object]:
        """Whether files can be written now: `{"ok": bool, "error": str | None, ...}` (cheap to call)."""
        ...


def check_key(key: str) -> str:
    """`key` without a trailing slash, if it is a plain relative key (no empty, `.` or `..`
    part, no backslash); raises `ValueError` otherwise. The engine builds keys from checked ids,
    so this only stops a bug from writing outside the store's root."""
    relative = key.rstrip("/")
    if key.startswith("/") or "\\" in key or any(p in ("", ".", "..") for p in relative.split("/")):
        raise ValueError(f"storage key {key!r} leaves the artifact root")
    return relative


def run_key(run_id: str, filename: str) -> str:
    return f"runs/{run_id}/{filename}"


def run_prefix(run_id: str) -> str:
    return f"runs/{run_id}/"


_INPUT_EXTENSIONS = {"image/png": "png", "image/jpeg": "jpg", "image/webp": "webp"}


def input_key(sha256: str, media_type: str) -> str:
    """Source images are stored once by content, whichever runs use them."""
    return f"inputs/{sha256}.{_INPUT_EXTENSIONS.get(media_type, 'bin')}"
