"""The event bus: run changes, progress and log lines fanned out to any number of subscribers.

Publishing never blocks. A subscriber that falls behind loses its oldest events, not the
newest: whoever needs certainty (a waiter) re-reads the ledger when it wakes.
"""

from __future__ import annotations

from collections import defaultdict, deque
from dataclasses import dataclass
from types import TracebackType
from typing import Literal

import anyio

from core.backends import Progress
from core.models import Run

EventKind = Literal["run", "progress", "log"]


@dataclass(frozen=True, slots=True)
class Event:
    """`run`: the run's state changed (`run` is the new snapshot); `progress`: a step was
    reached (`progress`); `log`: a log line was written (`message`, `level`)."""

    kind: EventKind
    run_id: str
    run: Run | None = None
    progress: Progress | None = None
    message: str = ""
    level: str = "info"


class Subscription:
    """Events for one run (or all runs), oldest first. Use as a context manager."""

    def __init__(self, bus: EventBus, run_id: str | None, maxlen: int, progress: bool = True) -> None:
        self._bus = bus
        self.run_id = run_id
        self.progress = progress  # whether it takes `progress` events
        self._items: deque[Event] = deque(maxlen=maxlen)
        # Made when `get` first has to wait: a waiter that finds its run finished never does.
        self._wakeup: anyio.Event | None = None

    def push(self, event: Event) -> None:
        if event.kind == "progress" and not self.progress:
            return
        self._items.append(event)
        if self._wakeup is not None:
            self._wakeup.set()

    async def get(self) -> Event:
        """The next event, waiting for one if none is pending."""
        while not self._items:
            if self._wakeup is None or self._wakeup.is_set():
                self._wakeup = anyio.Event()
            await self._wakeup.wait()
        return self._items.popleft()

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> Event:
        return await self.get()

    def close(self) -> None:
        self._bus._unsubscribe(self)

    def __enter__(self) -> Subscription:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class EventBus:
    def __init__(self) -> None:
        self._subscribers: dict[str | None, set[Subscription]] = defaultdict(set)
        # Subscriptions that take progress events: none (the usual case with no client
        # following) lets every step a backend reports skip the lookups.
        self._progress_takers = 0

    def subscribe(
        self, run_id: str | None = None, *, maxlen: int = 1024, progress: bool = True
    ) -> Subscription:
        """Events of `run_id`, or of every run when None; without `progress` events if not `progress`
        (a waiter that only needs the end)."""
        subscription = Subscription(self, run_id, maxlen, progress)
        self._subscribers[run_id].add(subscription)
        if progress:
            self._progress_takers += 1
        return subscription

    def _unsubscribe(self, subscription: Subscription) -> None:
        subscribers = self._subscribers.get(subscription.run_id)
        if subscribers is not None and subscription in subscribers:
            subscribers.discard(subscription)
            if subscription.progress:
                self._progress_takers -= 1
            if not subscribers:
                del self._subscribers[subscription.run_id]

    def listeners(self, run_id: str | None) -> int:
        """How many subscriptions follow `run_id` alone (or every run, for None)."""
        return len(self._subscribers.get(run_id, ()))

    def followed(self) -> list[str]:
        """The runs somebody follows by id (not those seen only by subscribers of every run)."""
        return [run_id for run_id in self._subscribers if run_id is not None]

    def wants(self, run_id: str) -> bool:
        """Whether anybody listens to `run_id`: lets hot paths skip building events nobody reads."""
        return bool(self._subscribers.get(run_id) or self._subscribers.get(None))

    def wants_progress(self, run_id: str) -> bool:
        """Whether anybody takes `run_id`'s progress events (a run reports many steps a second)."""
        if not self._progress_takers:
            return False
        for key in (run_id, None):
            subscribers = self._subscribers.get(key)
            if subscribers and any(s.progress for s in subscribers):
                return True
        return False

    def publish(self, event: Event) -> None:
        for subscription in self._subscribers.get(event.run_id, ()):
            subscription.push(event)
        for subscription in self._subscribers.get(None, ()):
            subscription.push(event)
