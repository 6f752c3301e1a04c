"""Runs a shared dispatch hands this node: the engine's side of `core.dispatch.RunHolder`.

With a task queue shared by several nodes (`core.dispatch_procrastinate`), a worker takes a run's
job and hands the run to the engine here: it is queued in its backend's lane and executed by the
same attempt path as on one box (`Engine._execute`), and the job ends when the attempt does. A
node whose heartbeats stopped is presumed dead and its runs go to another; when it comes back,
`_still_ours` / `_taken_over` make it drop its stale attempt rather than record it over the
other node's. A mixin of `core.engine.Engine`, kept apart because only a cluster uses it.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence

import anyio

from core.dispatch import Dispatch, queue_of
from core.errors import LedgerUnavailable
from core.ledger import Ledger
from core.models import Run, RunKind, RunStatus
from core.scheduler import Scheduler

log = logging.getLogger("atelier.engine")


class HeldRuns:
    """What a shared dispatch asks of an executing node (the engine's state it works on is
    declared here; `Engine.__init__` sets it)."""

    ledger: Ledger
    _dispatch: Dispatch
    _scheduler: Scheduler
    # Runs handed here by the dispatch, each with the event its job waits for.
    _held: dict[str, anyio.Event]
    # Held runs the ledger refused to start: their jobs fail, so the queue tries them again.
    _unstarted: set[str]
    _resume: dict[str, str]
    _active: dict[str, anyio.CancelScope]
    _delayed: dict[str, anyio.CancelScope]
    _publish_run: Callable[[Run], None]
    _requeue_interrupted: Callable[[Run, str, str], Awaitable[Run | None]]
    _fail_now: Callable[[str, RunStatus, str, str], Awaitable[None]]

    async def execute_held(self, run_id: str) -> RunStatus | None:
        """Run one attempt of a queued run in its backend's lane here; return once it has ended,
        with the run's status then (its job ends as aborted if it was cancelled, whichever way
        this node heard of the cancel first)."""
        run = await self.ledger.get_run(run_id)
        if run is None or run.status is not RunStatus.QUEUED:
            return None if run is None else run.status  # cancelled, deleted or already run
        if run.backend not in self._scheduler.lanes:
            await self._fail_now(
                run_id,
                RunStatus.QUEUED,
                f"backend {run.backend!r} is not configured on the worker that took it",
                f"the worker that took it has no {run.backend} backend",
            )
            return RunStatus.FAILED
        if run.backend_handle:
            # Interrupted or handed back while its backend had the work: collect it, not start it.
            self._resume[run_id] = run.backend_handle
        done = self._held[run_id] = anyio.Event()
        self._scheduler.enqueue(run.backend, run_id, run.priority.rank, run.seq)
        try:
            await done.wait()
        finally:
            if self._held.get(run_id) is done:
                del self._held[run_id]
        if run_id in self._unstarted:
            self._unstarted.discard(run_id)
            self._resume.pop(run_id, None)
            raise LedgerUnavailable(f"run {run_id} could not start: the ledger refused it")
        ended = await self.ledger.get_run(run_id)
        return None if ended is None else ended.status

    def capacity(self, queues: Sequence[str]) -> int:
        """How many runs of `queues` this node executes at once (its lanes' slots)."""
        return sum(
            lane.concurrency for name, lane in self._scheduler.lanes.items() if queue_of(name) in queues
        )

    def stop_held(self, run_id: str) -> None:
        """Stop a run held here whose cancel another node recorded."""
        if self._scheduler.dequeue(run_id):
            self._resume.pop(run_id, None)
            self._release_held(run_id)
        for scopes in (self._active, self._delayed):
            scope = scopes.get(run_id)
            if scope is not None:
                scope.cancel()

    async def queued_runs(self) -> list[Run]:
        """Every run the ledger has queued (batch parents aside: they run nowhere)."""
        return [run for run in await self.ledger.runs_in({RunStatus.QUEUED}) if run.kind is not RunKind.BATCH]

    async def requeue_stalled(self, run_id: str) -> bool:
        """Queue again a run whose node died while running it (recovery's rules)."""
        run = await self.ledger.get_run(run_id)
        if run is None or run.status is not RunStatus.RUNNING:
            return False
        queued = await self._requeue_interrupted(run, "its worker's death", "its worker died")
        if queued is not None:
            self._publish_run(queued)
        return queued is not None

    async def _still_ours(self, run: Run) -> bool:
        """Whether this attempt still holds the run. Only a shared dispatch can take a run from a
        node behind its back: a node whose heartbeats stopped (paused, cut off) is presumed dead
        and its runs go to another. When it comes back, the attempt it was running is dropped
        here, before its outputs or its failure are recorded over the other node's attempt."""
        if not self._dispatch.shared:
            return True
        current = await self.ledger.get_run(run.id)
        return (
            current is not None
            and current.status is RunStatus.RUNNING
            and not self._is_taken_over(run, current)
        )

    async def _taken_over(self, run: Run) -> bool:
        """Whether another node's attempt now holds the run (see `_still_ours`): then this node
        leaves its files alone, which may be that attempt's."""
        if not self._dispatch.shared:
            return False
        current = await self.ledger.get_run(run.id)
        return current is not None and self._is_taken_over(run, current)

    def _is_taken_over(self, run: Run, current: Run) -> bool:
        if (current.attempts, current.started_at) == (run.attempts, run.started_at):
            return False
        log.warning("run %s: another worker has taken it over; this attempt's outcome is dropped", run.id)
        return True

    def _release_held(self, run_id: str) -> None:
        held = self._held.get(run_id)
        if held is not None:
            held.set()
