"""Which queued run starts next: a priority queue per backend with a fixed number of slots.

Higher priority first, first-in first-out within a priority (by ledger `seq`). The scheduler
knows run ids only; the engine does the work and records it.
"""

from __future__ import annotations

import heapq
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager, nullcontext
from typing import Any

import anyio
from anyio.abc import TaskGroup

Admit = Callable[[], AbstractAsyncContextManager[Any]]


class Lane:
    """The queue and the worker slots of one backend.

    `admit` lets the backend hold workers back (e.g. while its GPU servers are down or full),
    so runs wait in the queue, in priority order, rather than inside the backend.
    """

    def __init__(self, name: str, concurrency: int, admit: Admit = nullcontext) -> None:
        self.name = name
        self.concurrency = max(1, concurrency)
        self.admit = admit
        self._heap: list[tuple[int, int, str]] = []
        self._queued: set[str] = set()
        self._nonempty = anyio.Event()
        self.busy = 0

    def __len__(self) -> int:
        return len(self._queued)

    def push(self, run_id: str, rank: int, seq: int) -> None:
        if run_id in self._queued:
            return
        heapq.heappush(self._heap, (-rank, seq, run_id))
        self._queued.add(run_id)
        self._nonempty.set()

    def remove(self, run_id: str) -> bool:
        """Take a run out of the queue; False if it was not queued here."""
        if run_id not in self._queued:
            return False
        # The heap entry stays and is skipped when popped: removal is O(1).
        self._queued.discard(run_id)
        return True

    async def pop(self) -> str:
        while True:
            while self._heap:
                _, _, run_id = heapq.heappop(self._heap)
                if run_id in self._queued:
                    self._queued.discard(run_id)
                    return run_id
            # Waiters share one event; a new one is made only once the old one has fired.
            if self._nonempty.is_set():
                self._nonempty = anyio.Event()
            await self._nonempty.wait()


class Scheduler:
    """Runs `execute(run_id, ticket)` for queued runs, at most `concurrency` at a time per lane."""

    def __init__(self, execute: Callable[[str, Any], Awaitable[None]]) -> None:
        self._execute = execute
        self.lanes: dict[str, Lane] = {}

    def add_lane(self, name: str, concurrency: int, admit: Admit = nullcontext) -> Lane:
        lane = Lane(name, concurrency, admit)
        self.lanes[name] = lane
        return lane

    def start(self, task_group: TaskGroup) -> None:
        for lane in self.lanes.values():
            for _ in range(lane.concurrency):
                task_group.start_soon(self._work, lane, name=f"atelier-{lane.name}-worker")

    async def _work(self, lane: Lane) -> None:
        while True:
            async with lane.admit() as ticket:
                run_id = await lane.pop()
                lane.busy += 1
                try:
                    await self._execute(run_id, ticket)
                finally:
                    lane.busy -= 1

    def enqueue(self, lane: str, run_id: str, rank: int, seq: int) -> None:
        self.lanes[lane].push(run_id, rank, seq)

    def dequeue(self, run_id: str) -> bool:
        return any(lane.remove(run_id) for lane in self.lanes.values())

    def queued(self) -> int:
        return sum(len(lane) for lane in self.lanes.values())

    def running(self) -> int:
        return sum(lane.busy for lane in self.lanes.values())
