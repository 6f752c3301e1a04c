"""Waiting for a run to finish: through the engine's events where this process runs it, by
reading the ledger where another process does.

Either way the caller gets the run as it is when it finishes or when the time is up, and its
`on_progress` callback (sync or async) is called for the steps seen meanwhile.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import anyio

from core.backends import Progress
from core.errors import RunNotFound
from core.events import EventBus
from core.models import Run, RunStatus

ProgressListener = Callable[[Run, Progress], Any]
# How often a process that does not run the run reads it again from the ledger.
POLL_S = 0.25


async def until_final(
    events: EventBus,
    get_run: Callable[[str], Awaitable[Run]],
    live: Callable[[Run], Run],
    run_id: str,
    timeout_s: float,
    on_progress: ProgressListener | None,
) -> Run:
    """Follow the run's events until it is final or `timeout_s` passes; `live` adds the latest
    progress to the run the callback sees."""
    with events.subscribe(run_id, progress=on_progress is not None) as subscription:
        run = await get_run(run_id)
        if run.status.is_final:  # finished already: no deadline to set up
            return run
        with anyio.move_on_after(max(0.0, timeout_s)):
            while not run.status.is_final:
                event = await subscription.get()
                if event.kind == "run":
                    if event.run is None:
                        raise RunNotFound(run_id)
                    run = event.run
                elif event.kind == "progress" and event.progress is not None and on_progress:
                    run = live(run)
                    await _notify(on_progress, run, event.progress)
        return run if run.status.is_final else await get_run(run_id)


async def poll_until_final(
    get_run: Callable[[str], Awaitable[Run]],
    run_id: str,
    timeout_s: float,
    on_progress: ProgressListener | None,
) -> Run:
    """`until_final` for a client of another process: the ledger is all it can see."""
    run = await get_run(run_id)
    last_step = -1
    with anyio.move_on_after(max(0.0, timeout_s)):
        while not run.status.is_final:
            if on_progress and run.status is RunStatus.RUNNING and run.step != last_step:
                last_step = run.step
                await _notify(on_progress, run, Progress(run.step, run.max_steps, run.message))
            await anyio.sleep(POLL_S)
            run = await get_run(run_id)
    return run


async def _notify(callback: ProgressListener, run: Run, progress: Progress) -> None:
    """Call a progress callback that may be sync or async."""
    outcome = callback(run, progress)
    if hasattr(outcome, "__await__"):
        await outcome
