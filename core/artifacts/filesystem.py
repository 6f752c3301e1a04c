"""Artifacts as plain files under one root directory (the embedded default)."""

from __future__ import annotations

import contextlib
import os
import shutil
import time
from pathlib import Path

import anyio

# Below this size a write is cheaper inline than the worker-thread hop it would take.
_INLINE_BYTES = 256 * 1024
# Health writes a probe file at most this often; monitors may poll far more often.
_PROBE_EVERY_S = 5.0
# Below this much free space the store reports itself unhealthy before writes start failing.
LOW_SPACE_BYTES = 64 * 1024 * 1024


class FilesystemStore:
    """`ArtifactStore` rooted at `root`; refuses any key that would leave it."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        self._probed: tuple[float, dict[str, object]] | None = None

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
        if self._probed is not None and not self._probed[1]["ok"]:
            self._probed = None  # a write worked: probe again rather than report the old failure

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

    async def health(self) -> dict[str, object]:
        """Writes and removes a probe file (at most every few seconds) and reads the free space:
        permission bits, a read-only mount or a full disk all show here before a run trips on them."""
        now = time.monotonic()
        if self._probed is None or now - self._probed[0] > _PROBE_EVERY_S:
            self._probed = (now, _probe(self.root))
        return self._probed[1]


def _probe(root: Path) -> dict[str, object]:
    report: dict[str, object] = {"ok": True, "path": str(root), "error": None}
    try:
        report["free_bytes"] = shutil.disk_usage(root).free
        probe = root / f".probe-{os.getpid()}"
        probe.write_bytes(b"ok")
        probe.unlink()
    except OSError as exc:
        report.update(ok=False, error=f"cannot write to {root}: {exc.strerror or exc}")
        return report
    if report["free_bytes"] < LOW_SPACE_BYTES:  # type: ignore[operator]
        report.update(ok=False, error=f"only {report['free_bytes']:,} bytes free under {root}")
    return report


def _write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except OSError:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)  # a full disk must not also keep half a file
        raise
