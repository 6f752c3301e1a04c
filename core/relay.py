"""Events across nodes: the port through which a node sends its run changes and progress to the
other nodes of a cluster, and hears theirs.

On one box there is nothing to relay (`NoRelay`, the default): the engine's `EventBus` already
reaches every subscriber. With several nodes sharing one ledger, the node executing a run sends
each state change and progress step as a `RelayMessage`, and every other node publishes what it
hears on its own bus (`publish_here`), so a waiter, an MCP progress notification or a WebSocket
on any node sees the run as if it ran there. What goes out is small and never the run's inputs:
node, run id, what happened, status, step and max_steps, a shortened message, a trainer's loss
and time left. A "run" message only says that the run changed: the receiver reads the run from
the ledger they share, so its subscribers get the whole `Run`, as they do for a local run.

Sending never blocks or fails the engine: messages wait in an `Outbox` that the adapter drains
in the background; progress is held back per run (the latest replaces the one waiting, the last
step always goes), so a run of many fast steps makes few messages. Messages a node has heard are
never sent again, so nothing loops.
"""

from __future__ import annotations

import json
import math
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import anyio

from core.backends import Progress
from core.events import Event, EventBus
from core.models import Run, RunStatus
from core.progress import LiveProgress

MessageKind = Literal["run", "progress", "deleted"]
# PostgreSQL refuses a NOTIFY payload of 8000 bytes or more; others have similar limits.
MAX_PAYLOAD_BYTES = 7900
MAX_MESSAGE_CHARS = 200
MAX_NODE_CHARS = 64
# At most this many progress messages a second per run leave a node (the last step always does).
PROGRESS_PER_S = 10.0
OUTBOX_SIZE = 4096


@dataclass(frozen=True, slots=True)
class RelayMessage:
    """One event as it travels between nodes: `run` (the run changed: read it from the ledger),
    `progress` (a step), or `deleted`. `seq` counts the sender's messages (ordering, gaps)."""

    node: str
    seq: int
    run_id: str
    kind: MessageKind
    status: str | None = None
    step: int | None = None
    max_steps: int | None = None
    message: str = ""
    loss: float | None = None
    eta_s: float | None = None

    @classmethod
    def of_run(cls, node: str, seq: int, run: Run) -> RelayMessage:
        return cls(node, seq, run.id, "run", run.status.value, run.step, run.max_steps, run.message)

    @classmethod
    def of_progress(cls, node: str, seq: int, run_id: str, progress: Progress) -> RelayMessage:
        return cls(
            node,
            seq,
            run_id,
            "progress",
            RunStatus.RUNNING.value,
            progress.step,
            progress.max_steps,
            progress.message,
            progress.loss,
            progress.eta_s,
        )

    @property
    def is_last_step(self) -> bool:
        # A run that does not know its number of steps (max_steps 0) has no last step.
        return self.kind == "progress" and bool(self.max_steps) and (self.step or 0) >= (self.max_steps or 0)

    @property
    def is_final(self) -> bool:
        return self.kind == "deleted" or (self.status is not None and RunStatus(self.status).is_final)

    def encode(self) -> str:
        """Compact JSON under `MAX_PAYLOAD_BYTES`, the message shortened to fit."""
        fields: dict[str, Any] = {
            "v": 1,
            "node": self.node,
            "seq": self.seq,
            "run": self.run_id,
            "kind": self.kind,
        }
        for name in ("status", "step", "max_steps", "loss", "eta_s"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, float) or math.isfinite(value)):
                fields[name] = value
        text = self.message[:MAX_MESSAGE_CHARS]
        while True:
            if text:
                fields["message"] = text
            payload = json.dumps(fields, separators=(",", ":"), ensure_ascii=False)
            if len(payload.encode()) <= MAX_PAYLOAD_BYTES or not text:
                return payload
            text = text[: len(text) // 2]

    @classmethod
    def decode(cls, payload: str) -> RelayMessage | None:
        """The message in `payload`, or None if it is not one (another program on the channel)."""
        try:
            data = json.loads(payload)
            if not isinstance(data, dict) or data.get("v") != 1 or data.get("kind") not in _KINDS:
                return None
            node, seq, run_id = data["node"], data["seq"], data["run"]
            if not (_text(node, MAX_NODE_CHARS) and _text(run_id, 64) and _int(seq)):
                return None
            status = data.get("status")
            if status is not None and status not in _STATUSES:
                return None
            step, max_steps = data.get("step"), data.get("max_steps")
            loss, eta_s = data.get("loss"), data.get("eta_s")
            message = data.get("message", "")
            if not (
                (step is None or _int(step))
                and (max_steps is None or _int(max_steps))
                and (loss is None or _number(loss))
                and (eta_s is None or _number(eta_s))
                and _text(message, MAX_MESSAGE_CHARS, empty=True)
            ):
                return None
        except (ValueError, KeyError, TypeError):
            return None
        return cls(node, seq, run_id, data["kind"], status, step, max_steps, message, loss, eta_s)


_KINDS = frozenset({"run", "progress", "deleted"})
_STATUSES = frozenset(status.value for status in RunStatus)


def _text(value: Any, most: int, empty: bool = False) -> bool:
    return isinstance(value, str) and (empty or bool(value)) and len(value) <= most


def _int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2**63


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


class EventRelay(Protocol):
    """What the engine knows of the relay: it tells it what happened here, runs it in the
    background, and reports its health. None of its calls block or raise."""

    node: str

    @property
    def enabled(self) -> bool:
        """Whether other nodes exist to hear from (waiters then follow events, not the ledger)."""
        ...

    def run_changed(self, run: Run) -> None: ...

    def progressed(self, run_id: str, progress: Progress) -> None: ...

    def deleted(self, run_id: str) -> None: ...

    async def serve(
        self,
        deliver: Callable[[RelayMessage], Awaitable[None]],
        heard_again: Callable[[], Awaitable[None]],
    ) -> None:
        """Send this node's messages and pass the other nodes' to `deliver`, until cancelled;
        call `heard_again` when it listens again after a break (messages may have been lost)."""
        ...

    def health(self) -> dict[str, Any]: ...


class NoRelay:
    """A single box: nothing to send, nobody to hear."""

    node = "local"
    enabled = False

    def run_changed(self, run: Run) -> None:
        pass

    def progressed(self, run_id: str, progress: Progress) -> None:
        pass

    def deleted(self, run_id: str) -> None:
        pass

    async def serve(
        self,
        deliver: Callable[[RelayMessage], Awaitable[None]],
        heard_again: Callable[[], Awaitable[None]],
    ) -> None:
        return None

    def health(self) -> dict[str, Any]:
        return {"enabled": False}


class Outbox:
    """The messages a node has yet to send, oldest first, at most `size` (the oldest then go).

    A run's progress leaves at most `per_s` times a second: a step reported sooner waits, and a
    newer step replaces it. Its last step leaves at once; a change of the run's state makes the
    step waiting for it pointless (the receiver reads the run), so it is dropped. While `accepting`
    is off (the connection is down) messages are dropped and counted, never kept.
    """

    def __init__(self, per_s: float = PROGRESS_PER_S, size: int = OUTBOX_SIZE) -> None:
        self._interval = 1.0 / per_s if per_s > 0 else 0.0
        self._ready: deque[RelayMessage] = deque()
        self._size = size
        self._held: dict[str, RelayMessage] = {}
        self._last_sent: dict[str, float] = {}
        self._wakeup: anyio.Event | None = None
        self.accepting = True
        self.dropped = 0

    def __len__(self) -> int:
        return len(self._ready) + len(self._held)

    def put(self, message: RelayMessage) -> None:
        if not self.accepting:
            self.dropped += 1
            return
        run_id = message.run_id
        if message.kind == "progress":
            now = time.monotonic()
            if message.is_last_step or now - self._last_sent.get(run_id, -math.inf) >= self._interval:
                self._held.pop(run_id, None)
                self._last_sent[run_id] = now
                self._append(message)
            else:
                self._held[run_id] = message
                self._wake()
            return
        self._held.pop(run_id, None)
        if message.is_final:
            self._last_sent.pop(run_id, None)
        self._append(message)

    def drop_all(self) -> None:
        """Drop (and count) everything waiting: the connection that was to carry it has gone."""
        self.dropped += len(self)
        self._ready.clear()
        self._held.clear()

    async def get(self, timeout_s: float = math.inf) -> RelayMessage | None:
        """The next message due, waiting up to `timeout_s` for one (None when none came)."""
        deadline = time.monotonic() + timeout_s
        while True:
            self._release_due()
            if self._ready:
                return self._ready.popleft()
            now = time.monotonic()
            due = min((self._last_sent[r] + self._interval for r in self._held), default=math.inf)
            wait = min(due, deadline) - now
            if deadline <= now:
                return None
            if self._wakeup is None or self._wakeup.is_set():
                self._wakeup = anyio.Event()
            with anyio.move_on_after(max(0.0, wait)):
                await self._wakeup.wait()

    def _release_due(self) -> None:
        if not self._held:
            if len(self._last_sent) > 1024:  # a step older than the interval no longer holds anything back
                now = time.monotonic()
                self._last_sent = {r: t for r, t in self._last_sent.items() if now - t < self._interval}
            return
        now = time.monotonic()
        for run_id, message in list(self._held.items()):
            if now - self._last_sent.get(run_id, -math.inf) >= self._interval:
                del self._held[run_id]
                self._last_sent[run_id] = now
                self._append(message)

    def _append(self, message: RelayMessage) -> None:
        if len(self._ready) >= self._size:
            self._ready.popleft()
            self.dropped += 1
        self._ready.append(message)
        self._wake()

    def _wake(self) -> None:
        if self._wakeup is not None:
            self._wakeup.set()


async def publish_here(
    message: RelayMessage,
    events: EventBus,
    read_run: Callable[[str], Awaitable[Run | None]],
    progress: LiveProgress,
) -> None:
    """Publish what another node said on this node's bus, as the events it would have published
    itself: a `run` event with the run as the ledger has it now (None and "deleted" when it is
    gone), or a `progress` event. Nothing published here is sent on again."""
    run_id = message.run_id
    if message.kind == "progress":
        step = Progress(
            message.step or 0, message.max_steps or 0, message.message, message.loss, message.eta_s
        )
        progress.note_elsewhere(run_id, step)
        if events.wants_progress(run_id):
            events.publish(Event("progress", run_id, progress=step))
        return
    progress.forget_elsewhere(run_id)
    if not events.wants(run_id):
        return  # nobody here follows it: no ledger read
    run = None if message.kind == "deleted" else await read_run(run_id)
    if run is None:
        events.publish(Event("run", run_id, run=None, message="deleted"))
    else:
        events.publish(Event("run", run_id, run=run))


__all__ = ["EventRelay", "NoRelay", "Outbox", "RelayMessage", "publish_here"]
