"""One scheduler per data directory: two would both recover the same runs and render them twice."""

from __future__ import annotations

import os
from pathlib import Path

from core.errors import HomeLocked

try:
    import fcntl
except ImportError:  # Windows: no advisory locks; one process per home is then the user's job.
    fcntl = None  # type: ignore[assignment]


class HomeLock:
    """An exclusive advisory lock on `<home>/engine.lock`, released when the process ends (even by kill -9)."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self._fd = fd

    @classmethod
    def acquire(cls, home: Path) -> HomeLock:
        home.mkdir(parents=True, exist_ok=True)
        path = home / "engine.lock"
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.read(fd, 32).decode(errors="replace").strip() or "unknown"
                os.close(fd)
                raise HomeLocked(
                    f"another Atelier process (pid {holder}) is running on {home}; "
                    "stop it, or give this one its own ATELIER_HOME"
                ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        return cls(path, fd)

    def release(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def owner_pid(home: Path) -> int | None:
    """The pid of the live process that owns `home`'s runs, if any; reading it takes no lock."""
    try:
        pid = int((home / "engine.lock").read_text().strip() or 0)
    except (OSError, ValueError):
        return None
    if pid <= 0 or pid == os.getpid():
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        return pid  # alive, run by another user
    return pid
