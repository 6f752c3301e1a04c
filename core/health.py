"""The health report: is each part of the engine working, and how much work has it done.

Kept apart from the run lifecycle because it only reads: the engine counts what happens
(`Metrics`) and notes what failed (`Problems`); `report` turns those, the backends' own health
checks, the queue and the ledger's counts into the document `Engine.status()` returns.
"""

from __future__ import annotations

import statistics
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import anyio

from core.artifacts import ArtifactStore
from core.backends import GenerationBackend
from core.ledger import Ledger
from core.scheduler import Scheduler
from core.training import Trainer

# A storage or ledger failure keeps the health report degraded this long after it was seen.
PROBLEM_WINDOW_S = 60.0
# How long one backend's health check may take before it is reported down.
HEALTH_CHECK_S = 2.0


class Problems:
    """The last failure of each part (`storage`, `ledger`): when and what, until one succeeds."""

    def __init__(self) -> None:
        self._seen: dict[str, tuple[float, str]] = {}

    def note(self, part: str, message: str) -> None:
        self._seen[part] = (time.time(), message)

    def clear(self, part: str) -> None:
        self._seen.pop(part, None)

    def recent(self, part: str, now: float) -> tuple[float, str] | None:
        """The part's last failure if it was seen within `PROBLEM_WINDOW_S` of `now`."""
        seen = self._seen.get(part)
        return seen if seen is not None and now - seen[0] <= PROBLEM_WINDOW_S else None


class Metrics:
    """Counts of what runs did since the engine started, and their latencies."""

    def __init__(self) -> None:
        self.started_at = time.time()
        self.counters = {"submitted": 0, "completed": 0, "failed": 0, "cancelled": 0, "retried": 0}
        self.latencies: deque[float] = deque(maxlen=2048)
        self.completions: deque[float] = deque(maxlen=4096)

    def completed(self, now: float, latency: float) -> None:
        self.counters["completed"] += 1
        self.latencies.append(latency)
        self.completions.append(now)

    def summary(self, now: float) -> dict[str, Any]:
        latencies = sorted(self.latencies)
        return {
            **self.counters,
            "uptime_s": round(now - self.started_at, 3),
            "completed_last_minute": sum(1 for t in self.completions if now - t <= 60),
            "latency_p50_s": round(statistics.median(latencies), 4) if latencies else None,
            "latency_p99_s": round(latencies[int(0.99 * (len(latencies) - 1))], 4) if latencies else None,
        }


async def _asked(check: Callable[[], Awaitable[Mapping[str, Any]]], down: dict[str, Any]) -> dict[str, Any]:
    """A component's own health report, or `down` with why it could not give one in time."""
    with anyio.move_on_after(HEALTH_CHECK_S):
        try:
            return dict(await check())
        except Exception as exc:
            return {**down, "error": f"{type(exc).__name__}: {exc}"}
    return {**down, "error": "health check timed out"}


def _with_lane(health: dict[str, Any], scheduler: Scheduler, lane_name: str) -> dict[str, Any]:
    lane = scheduler.lanes.get(lane_name)
    if lane is not None:
        health.update(queued=len(lane), running=lane.busy, slots=lane.concurrency)
    return health


async def report(
    *,
    backends: Mapping[str, GenerationBackend],
    default_backend: str,
    scheduler: Scheduler,
    store: ArtifactStore,
    ledger: Ledger,
    problems: Problems,
    metrics: Metrics,
    trainer: Trainer | None = None,
    training_lane: str = "training",
    relay: Mapping[str, Any] | None = None,
    dispatch: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Health of each backend, the trainer, the storage and the ledger, the relay of events
    across nodes, the queue, and throughput/latency since start. A trainer that cannot start
    (ai-toolkit not installed) is reported, but image generation stays healthy without it; a
    relay that is down is not (the node's channels would miss other nodes' events), one still
    making its first connections is."""
    backend_health = {}
    for name, backend in backends.items():
        backend_health[name] = _with_lane(await _asked(backend.health, {"up": False}), scheduler, name)
    trainer_health = None
    if trainer is not None:
        trainer_health = _with_lane(await _asked(trainer.health, {"ok": False}), scheduler, training_lane)
    now = time.time()
    storage = dict(await store.health())
    ledger_health: dict[str, Any] = {"ok": True, "error": None}
    runs: dict[str, int] = {}
    # A database server that is down makes a read wait for a connection: the report does not.
    with anyio.move_on_after(HEALTH_CHECK_S) as waited:
        try:
            runs = await ledger.count_by_status()
        except Exception as exc:  # a read fails when the file or the server is in trouble
            ledger_health.update(ok=False, error=f"{type(exc).__name__}: {exc}")
    if waited.cancelled_caught:
        ledger_health.update(ok=False, error=f"the ledger did not answer within {HEALTH_CHECK_S:g} s")
    for part, part_report in (("storage", storage), ("ledger", ledger_health)):
        seen = problems.recent(part, now)
        if seen is not None:
            part_report.update(ok=False, last_error=seen[1], last_error_at=round(seen[0], 3))
    backend_up = (
        bool(backend_health.get(default_backend, {}).get("up"))
        if default_backend in backend_health
        else any(b.get("up") for b in backend_health.values())
    )
    if dispatch is not None and not dispatch.get("executes"):
        backend_up = True  # a front door's runs are executed by workers, which have the backends
    return {
        # Healthy when the backend new runs go to is up (the preview renderer always is), their
        # images can be saved and recorded, and (in a cluster) other nodes' events are heard.
        "healthy": backend_up
        and bool(storage.get("ok"))
        and ledger_health["ok"]
        and (relay is None or relay.get("state") != "down"),
        "backends": backend_health,
        **({"trainer": trainer_health} if trainer_health is not None else {}),
        "storage": storage,
        "ledger": ledger_health,
        "relay": dict(relay) if relay is not None else {"enabled": False},
        "runs": runs,
        "queue": {"queued": scheduler.queued(), "running": scheduler.running()},
        **({"dispatch": dict(dispatch)} if dispatch is not None else {}),
        "metrics": metrics.summary(now),
    }
