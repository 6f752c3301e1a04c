"""How accepted runs reach the processes that execute them: the dispatch port, and its default.

The engine records every run in the ledger and executes runs in its lanes (`core.scheduler`: a
priority queue per backend with its slots and its admission). The dispatch says who puts a run
into a lane, and where:

- `InProcessDispatch` (the default, one box): the process that owns the data directory is the
  only one that executes; it queues what it accepts in its own lanes, adopts what other processes
  queued in the ledger, and recovers unfinished runs when it starts. All of that is the engine's
  own code (its `shared` is False), as it was before this port existed.
- `core.dispatch_procrastinate.ProcrastinateDispatch` (`ATELIER_DISPATCH=procrastinate`, several
  machines): a run's job is deferred in PostgreSQL in the transaction that records the run;
  `atelier worker` nodes take jobs from their queues and execute each through the engine
  (`RunHolder.execute_held`); a cancel aborts the job wherever it is held; a worker that stops
  sending heartbeats has its runs queued again for another worker (`RunHolder.requeue_stalled`).
  Nodes that only accept and answer (front doors) execute nothing and recover nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from anyio.abc import TaskGroup

from core.models import Run, RunStatus


class RunHolder(Protocol):
    """What an executing node (the engine) offers its dispatch."""

    async def execute_held(self, run_id: str) -> RunStatus | None:
        """Run one attempt of a queued run handed to this node; returns when it has ended here
        (completed, failed, retried later, cancelled) or at once if the run is no longer queued,
        with the run's status then (None: deleted)."""

    def stop_held(self, run_id: str) -> None:
        """Stop a run held here whose cancel another node recorded (its backend work stops)."""

    def capacity(self, queues: Sequence[str]) -> int:
        """How many runs of `queues` this node executes at once (its lanes' slots)."""

    async def queued_runs(self) -> list[Run]:
        """Every run the ledger has queued (batch parents aside: they run nowhere)."""

    async def requeue_stalled(self, run_id: str) -> bool:
        """Queue again a run whose node died while it was running (as recovery after a restart
        does: its attempt counted, or failed on its last; a recorded backend handle kept, so its
        work is collected, not started again). False if it is no longer running."""


class Dispatch(Protocol):
    """Where runs go once they are recorded as queued."""

    #: True when the queue is shared by several nodes (in the database), not this process's.
    shared: bool
    #: True when this process executes runs.
    executes: bool

    async def start(self, node: RunHolder, task_group: TaskGroup) -> None:
        """Begin taking runs for `node` (a node that executes), in `task_group`."""

    async def queue(self, runs: Sequence[Run], delay_s: float = 0.0) -> None:
        """Runs queued again outside their acceptance (a retry, a failed attempt's next one, a run
        handed back), to start no sooner than `delay_s` from now."""

    async def abort(self, run_id: str) -> None:
        """Withdraw a cancelled run: dropped if still waiting, stopped where it is held."""

    async def status(self) -> dict[str, Any]:
        """What health reports of the dispatch (its queues, its workers)."""

    async def aclose(self) -> None:
        """Release connections (after the node has stopped executing)."""


class InProcessDispatch:
    """One box: the engine's own lanes are the queue (see the module's docstring)."""

    shared = False
    executes = True

    async def start(self, node: RunHolder, task_group: TaskGroup) -> None:
        return None

    async def queue(self, runs: Sequence[Run], delay_s: float = 0.0) -> None:
        return None

    async def abort(self, run_id: str) -> None:
        return None

    async def status(self) -> dict[str, Any]:
        return {"mode": "in-process"}

    async def aclose(self) -> None:
        return None


def queue_of(backend: str) -> str:
    """The dispatch queue (a lane of work) of a run on `backend`: `training` and `publishing` are
    their own, and every image backend (local, comfyui) is `image`."""
    return backend if backend in ("training", "publishing") else "image"


__all__ = ["Dispatch", "InProcessDispatch", "RunHolder", "queue_of"]
