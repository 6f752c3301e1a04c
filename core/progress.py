"""Live progress: each running run's latest step, kept in memory and written to the ledger in flushes.

Progress goes out as events at once (the engine publishes them); the ledger, which other
processes read, gets each run's latest step at the next `flush` (the engine's housekeeping,
once a second), so a backend reporting many steps a second never makes a write per step, and
the runs' flushes share one transaction. Progress of runs executing on other nodes, heard through
the relay (`core.relay`), is shown the same way but never written: their own node writes it.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import replace

import anyio

from core.backends import Progress
from core.errors import LedgerUnavailable
from core.ledger import Ledger
from core.models import Run, RunStatus

MAX_ELSEWHERE = 4096


class LiveProgress:
    """The latest progress of the runs executing in this process (and of batch parents)."""

    def __init__(self, ledger: Ledger) -> None:
        self._ledger = ledger
        self._latest: dict[str, Progress] = {}
        # Runs whose latest progress the ledger has not recorded yet.
        self._unwritten: set[str] = set()
        # The latest progress of runs executing on other nodes, oldest first (bounded: a node
        # that stops may never say that its runs ended).
        self._elsewhere: OrderedDict[str, Progress] = OrderedDict()

    def note(self, run_id: str, progress: Progress) -> None:
        self._latest[run_id] = progress
        self._unwritten.add(run_id)

    def forget(self, run_id: str) -> None:
        """Drop a run's progress: what the ledger is about to record (or has) replaces it."""
        self._latest.pop(run_id, None)
        self._unwritten.discard(run_id)

    def note_elsewhere(self, run_id: str, progress: Progress) -> None:
        """The latest step of a run another node executes: shown by `apply`, never flushed."""
        self._elsewhere[run_id] = progress
        self._elsewhere.move_to_end(run_id)
        if len(self._elsewhere) > MAX_ELSEWHERE:
            self._elsewhere.popitem(last=False)

    def forget_elsewhere(self, run_id: str) -> None:
        self._elsewhere.pop(run_id, None)

    def of(self, run_id: str) -> Progress | None:
        """What `apply` shows of `run_id` over the ledger's progress, if anything: the same object
        until a newer step replaces it."""
        return self._latest.get(run_id) or self._elsewhere.get(run_id)

    def apply(self, run: Run) -> Run:
        """`run` as read from the ledger, with its latest progress if it is running."""
        progress = self.of(run.id)
        if progress is None or run.status is not RunStatus.RUNNING:
            return run
        return replace(
            run,
            progress=progress.fraction,
            step=progress.step,
            max_steps=progress.max_steps,
            message=progress.message,
        )

    async def flush(self) -> None:
        """Write each run's progress noted since the last flush (of a run still running), the
        writes issued together so that the ledger commits them as one group."""
        unwritten, self._unwritten = self._unwritten, set()
        refused: list[LedgerUnavailable] = []

        async def write(run_id: str, progress: Progress) -> None:
            try:
                await self._ledger.update_run(
                    run_id,
                    expect={RunStatus.RUNNING},
                    progress=progress.fraction,
                    step=progress.step,
                    max_steps=progress.max_steps,
                    message=progress.message,
                )
            except LedgerUnavailable as exc:
                self._unwritten.add(run_id)  # written at a later flush
                refused.append(exc)

        async with anyio.create_task_group() as group:
            for run_id in unwritten:
                progress = self._latest.get(run_id)
                if progress is not None:
                    group.start_soon(write, run_id, progress)
        if refused:
            raise refused[0]
