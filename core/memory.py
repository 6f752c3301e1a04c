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

__all__ = ["MemoryBudget", "map_big_allocations", "release_free_heap"]


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


def _glibc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.malloc_trim.argtypes = [ctypes.c_size_t]
        libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    except (OSError, AttributeError):  # not glibc (musl has no malloc_trim)
        return None
    return libc


_GLIBC = _glibc()
_M_MMAP_THRESHOLD = -3


def map_big_allocations(threshold: int = 8 * 1024 * 1024) -> None:
    """Have glibc serve allocations from `threshold` bytes up by their own mappings; a no-op elsewhere.

    Freed, such a block goes straight back to the OS. By default glibc raises the threshold
    to the size of the largest block freed (up to 32 MiB), after which big image buffers and
    PNGs come from the heap and stay with the process when freed.
    """
    if _GLIBC is not None:
        _GLIBC.mallopt(_M_MMAP_THRESHOLD, threshold)


def release_free_heap() -> None:
    """Return the C heap's free pages to the OS (glibc `malloc_trim(0)`); a no-op elsewhere.

    Big images are freed into glibc's arenas, which keep the pages: without this, one large
    upscale leaves the process hundreds of MB bigger for good.
    """
    if _GLIBC is not None:
        _GLIBC.malloc_trim(0)
