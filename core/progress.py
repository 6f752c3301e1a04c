"""Live progress: each running run's latest step, kept in memory and written to the ledger in flushes.

Progress goes out as events at once (the engine publishes them); the ledger, which other
processes read, gets each run's latest step at the next `flush` (the engine's housekeeping,
once a second), so a backend reporting many steps a second never makes a write per step, and
the runs' flushes share one transaction.
"""

from __future__ import annotations

from dataclasses import replace

import anyio

from core.backends import Progress
from core.errors import LedgerUnavailable
from core.ledger import Ledger
from core.models import Run, RunStatus


class LiveProgress:
    """The latest progress of the runs executing in this process (and of batch parents)."""

    def __init__(self, ledger: Ledger) -> None:
        self._ledger = ledger
        self._latest: dict[str, Progress] = {}
        # Runs whose latest progress the ledger has not recorded yet.
        self._unwritten: set[str] = set()

    def note(self, run_id: str, progress: Progress) -> None:
        self._latest[run_id] = progress
        self._unwritten.add(run_id)

    def forget(self, run_id: str) -> None:
        """Drop a run's progress: what the ledger is about to record (or has) replaces it."""
        self._latest.pop(run_id, None)
        self._unwritten.discard(run_id)

    def apply(self, run: Run) -> Run:
        """`run` as read from the ledger, with its latest progress if it is running."""
        progress = self._latest.get(run.id)
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
