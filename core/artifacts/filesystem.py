"""Artifacts as plain files under one root directory (the embedded default)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import anyio

# Below this size a write is cheaper inline than the worker-thread hop it would take.
_INLINE_BYTES = 256 * 1024


class FilesystemStore:
    """`ArtifactStore` rooted at `root`; refuses any key that would leave it."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        self.root.mkdir(parents=True, exist_ok=True)

    def _path(self, key: str) -> Path:
        # Checked by its parts rather than resolved: resolving costs a stat per component on
        # every write, and the engine only builds keys from checked ids and file names.
        parts = key.strip("/").split("/")
        if key.startswith("/") or "\\" in key or any(p in ("", ".", "..") for p in parts):
            raise ValueError(f"storage key {key!r} leaves the artifact root")
        return self.root.joinpath(*parts)

    async def put(self, key: str, data: bytes) -> None:
        path = self._path(key)
        if len(data) <= _INLINE_BYTES:
            _write_atomic(path, data)
        else:
            await anyio.to_thread.run_sync(_write_atomic, path, data)

    async def read(self, key: str) -> bytes:
        path = self._path(key)
        if path.stat().st_size <= _INLINE_BYTES:
            return path.read_bytes()
        return await anyio.to_thread.run_sync(path.read_bytes)

    def local_path(self, key: str) -> Path | None:
        return self._path(key)

    async def delete_prefix(self, prefix: str) -> None:
        path = self._path(prefix.rstrip("/"))
        if path.is_dir():
            await anyio.to_thread.run_sync(shutil.rmtree, path, True)
        elif path.exists():
            path.unlink()

    async def list_prefix(self, prefix: str) -> list[str]:
        path = self._path(prefix.rstrip("/"))
        if not path.is_dir():
            return []
        return sorted(f"{prefix.rstrip('/')}/{p.name}" for p in path.iterdir() if p.is_file())


def _write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as fh:
        fh.write(data)
    os.replace(tmp, path)
