"""Artifacts as plain files under one root directory (the embedded default)."""

from __future__ import annotations

import contextlib
import os
import shutil
import time
from collections.abc import AsyncIterable, AsyncIterator
from pathlib import Path

import anyio

from core.artifacts import CHUNK_BYTES, ArtifactStream

# Below this size a write is cheaper inline than the worker-thread hop it would take...
_INLINE_BYTES = 256 * 1024
# ...unless the filesystem is slow: once small writes take this long on average, they go to a
# worker thread too, where they overlap the event loop's other work (a thread hop costs ~0.2 ms
# here; a run's first file, with its folder, 20 us on tmpfs and 0.05-1.6 ms on this machine's
# disk, depending on what else writes to it). Measured on every small write, wherever it ran,
# so they come back inline once the disk is quick again.
SLOW_WRITE_S = 0.0005
_SMOOTHING = 0.1  # weight of the newest write in the running average
# Health writes a probe file at most this often; monitors may poll far more often.
_PROBE_EVERY_S = 5.0
# Below this much free space the store reports itself unhealthy before writes start failing.
LOW_SPACE_BYTES = 64 * 1024 * 1024


class FilesystemStore:
    """`ArtifactStore` rooted at `root`; refuses any key that would leave it."""

    def __init__(self, root: Path, *, slow_write_s: float = SLOW_WRITE_S) -> None:
        self.root = root.resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        self._root = str(self.root)
        self._probed: tuple[float, dict[str, object]] | None = None
        self._slow_write_s = slow_write_s
        self._write_s = 0.0  # the running average of a small write's time

    def _path(self, key: str) -> Path:
        return Path(self._os_path(key))

    def _os_path(self, key: str) -> str:
        # Checked by its parts rather than resolved: resolving costs a stat per component on
        # every write, and the engine only builds keys from checked ids and file names. A plain
        # string: every run's files pass here, and pathlib would cost more than the checks.
        relative = key.strip("/")
        if key.startswith("/") or "\\" in key or any(p in ("", ".", "..") for p in relative.split("/")):
            raise ValueError(f"storage key {key!r} leaves the artifact root")
        return f"{self._root}/{relative}"

    async def put(self, key: str, data: bytes) -> None:
        path = self._os_path(key)
        if len(data) > _INLINE_BYTES:
            await anyio.to_thread.run_sync(_write_atomic, path, data)
        elif self._write_s < self._slow_write_s:
            self._timed_write(path, data)
        else:
            await anyio.to_thread.run_sync(self._timed_write, path, data)
        if self._probed is not None and not self._probed[1]["ok"]:
            self._probed = None  # a write worked: probe again rather than report the old failure

    def _timed_write(self, path: str, data: bytes) -> None:
        started = time.perf_counter()
        try:
            _write_atomic(path, data)
        finally:
            took = time.perf_counter() - started
            self._write_s += _SMOOTHING * (took - self._write_s)

    async def put_stream(self, key: str, chunks: AsyncIterable[bytes]) -> int:
        """Chunks into a temporary file beside the key's, renamed over it once all are written."""
        path = self._os_path(key)
        folder, name = os.path.split(path)
        await anyio.to_thread.run_sync(lambda: os.makedirs(folder, exist_ok=True))
        tmp = f"{folder}/.{name}.{os.getpid()}.{id(chunks)}.tmp"
        size = 0
        try:
            async with await anyio.open_file(tmp, "wb") as file:
                async for chunk in chunks:
                    await file.write(chunk)
                    size += len(chunk)
            await anyio.to_thread.run_sync(os.replace, tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)  # a failed or cancelled upload leaves no half file behind
            raise
        return size

    async def stream(self, key: str) -> ArtifactStream:
        path = self._os_path(key)
        file = await anyio.open_file(path, "rb")  # FileNotFoundError here, before any byte
        try:
            size = os.fstat(file.wrapped.fileno()).st_size
        except BaseException:
            await file.aclose()
            raise
        return ArtifactStream(size, _chunks_of(file))

    async def read(self, key: str) -> bytes:
        path = self._path(key)
        if path.stat().st_size <= _INLINE_BYTES:
            return path.read_bytes()
        return await anyio.to_thread.run_sync(path.read_bytes)

    def local_path(self, key: str) -> Path | None:
        return self._path(key)

    def location(self, key: str) -> str:
        return str(self._path(key))

    async def signed_url(self, key: str) -> str | None:
        return None

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


async def _chunks_of(file: anyio.AsyncFile[bytes]) -> AsyncIterator[bytes]:
    async with file:
        while chunk := await file.read(CHUNK_BYTES):
            yield chunk


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


def _write_atomic(path: str, data: bytes) -> None:
    """`data` at `path`, which a reader sees whole or not at all. Plain `os` calls: a run's small
    image costs a few system calls and little else.

    In a folder made just now (a run's first file) nobody knows the file yet (a run's files are
    listed only once it is recorded completed), so it is created there directly. Otherwise it is
    written to a temporary file beside `path` and renamed over it: a reader sees the old file or
    the new one. A write that fails leaves no file behind."""
    folder, name = os.path.split(path)
    try:
        os.mkdir(folder)
    except FileExistsError:
        pass
    except FileNotFoundError:
        os.makedirs(folder, exist_ok=True)
    else:
        try:
            _write_file(path, data, os.O_EXCL)
            return
        except FileExistsError:  # another process put it there meanwhile
            pass
    tmp = f"{folder}/.{name}.{os.getpid()}.tmp"
    _write_file(tmp, data, os.O_TRUNC)
    try:
        os.replace(tmp, path)
    except OSError:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _write_file(path: str, data: bytes, mode: int) -> None:
    """`data` in the file at `path`, opened with `mode` (`O_EXCL`: created, FileExistsError if
    there is one; `O_TRUNC`: written over), and removed again if the write fails (a full disk
    must not also keep half a file)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | mode | os.O_CLOEXEC, 0o666)
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
        finally:
            os.close(fd)
    except OSError:
        with contextlib.suppress(OSError):
            os.unlink(path)
        raise
