"""Bounding the memory of image work: a budget in bytes that runs reserve, and giving freed heap back.

A budget lets big jobs wait for each other instead of adding up: with `MemoryBudget(512 MiB)`
the jobs holding reservations together never estimate more than 512 MiB, except that one job
larger than the whole budget may run alone. Reservations are granted first come, first served,
so a big job is not starved by a stream of small ones.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio

__all__ = ["MemoryBudget", "release_free_heap"]


class MemoryBudget:
    """A weighted semaphore in bytes, for the event loop's tasks (not thread-safe)."""

    def __init__(self, total_bytes: int) -> None:
        if total_bytes < 1:
            raise ValueError(f"total_bytes must be >= 1 (got {total_bytes})")
        self.total = total_bytes
        self.used = 0
        self._waiting: deque[tuple[int, anyio.Event]] = deque()

    @asynccontextmanager
    async def reserve(self, nbytes: int) -> AsyncIterator[None]:
        """Hold `nbytes` of the budget for the block, waiting until they are free."""
        nbytes = max(0, min(nbytes, self.total))  # a job bigger than the budget runs alone
        if self._waiting or self.used + nbytes > self.total:
            entry = (nbytes, anyio.Event())
            self._waiting.append(entry)
            try:
                await entry[1].wait()
            except BaseException:
                if entry in self._waiting:
                    self._waiting.remove(entry)
                else:  # granted just as it was cancelled: hand it on
                    self._release(nbytes)
                raise
        else:
            self.used += nbytes
        try:
            yield
        finally:
            self._release(nbytes)

    def _release(self, nbytes: int) -> None:
        self.used -= nbytes
        while self._waiting and self.used + self._waiting[0][0] <= self.total:
            granted, event = self._waiting.popleft()
            self.used += granted
            event.set()


def _load_malloc_trim() -> ctypes._CFuncPtr | None:  # type: ignore[name-defined]
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        trim = libc.malloc_trim
    except (OSError, AttributeError):  # not glibc (musl has no malloc_trim)
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return trim


_MALLOC_TRIM = _load_malloc_trim()


def release_free_heap() -> None:
    """Return the C heap's free pages to the OS (glibc `malloc_trim(0)`); a no-op elsewhere.

    Big images are freed into glibc's arenas, which keep the pages: without this, one large
    upscale leaves the process hundreds of MB bigger for good.
    """
    if _MALLOC_TRIM is not None:
        _MALLOC_TRIM(0)
