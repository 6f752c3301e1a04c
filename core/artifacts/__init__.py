"""The artifact storage port: where produced files live, addressed by storage key."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol


class ArtifactStore(Protocol):
    """Keys look like `runs/<run_id>/<filename>`; the engine builds them from checked ids."""

    async def put(self, key: str, data: bytes) -> None:
        """Store `data` under `key` atomically: a reader sees the old file or the new one."""
        ...

    async def read(self, key: str) -> bytes: ...

    def local_path(self, key: str) -> Path | None:
        """A filesystem path to the file, if the store has one (for streaming and the CLI)."""
        ...

    async def delete_prefix(self, prefix: str) -> None:
        """Remove every file under `prefix` (e.g. `runs/<run_id>/`)."""
        ...

    async def list_prefix(self, prefix: str) -> list[str]: ...

    async def health(self) -> dict[str, object]:
        """Whether files can be written now: `{"ok": bool, "error": str | None, ...}` (cheap to call)."""
        ...


def run_key(run_id: str, filename: str) -> str:
    return f"runs/{run_id}/{filename}"


def run_prefix(run_id: str) -> str:
    return f"runs/{run_id}/"


_INPUT_EXTENSIONS = {"image/png": "png", "image/jpeg": "jpg", "image/webp": "webp"}


def input_key(sha256: str, media_type: str) -> str:
    """Source images are stored once by content, whichever runs use them."""
    return f"inputs/{sha256}.{_INPUT_EXTENSIONS.get(media_type, 'bin')}"
