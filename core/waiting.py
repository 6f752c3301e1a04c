"""Waiting for a run to finish: through the engine's events where this process runs it, or where
a relay brings the events of the node that does (reading the ledger now and then as well, in
case one was lost); by reading the ledger where another process runs it and nothing relays.

Either way the caller gets the run as it is when it finishes or when the time is up, and its
`on_progress` callback (sync or async) is called for the steps seen meanwhile.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import anyio

from core.backends import Progress
from core.errors import RunNotFound
from core.events import Event, EventBus, Subscription
from core.models import Run, RunStatus

ProgressListener = Callable[[Run, Progress], Any]
# How often a process that does not run the run reads it again from the ledger.
POLL_S = 0.25
# How often a waiter following relayed events reads the run again all the same.
RELAYED_RECHECK_S = 2.0


async def until_final(
    events: EventBus,
    get_run: Callable[[str], Awaitable[Run]],
    live: Callable[[Run], Run],
    run_id: str,
    timeout_s: float,
    on_progress: ProgressListener | None,
    *,
    recheck_s: float | None = None,
) -> Run:
    """Follow the run's events until it is final or `timeout_s` passes; `live` adds the latest
    progress to the run the callback sees. With `recheck_s`, the run is also read again after
    that long without an event (events from other nodes can be lost; the ledger is not)."""
    with events.subscribe(run_id, progress=on_progress is not None) as subscription:
        run = await get_run(run_id)
        if run.status.is_final:  # finished already: no deadline to set up
            return run
        with anyio.move_on_after(max(0.0, timeout_s)):
            while not run.status.is_final:
                event = await _next(subscription, recheck_s)
                if event is None:  # quiet for `recheck_s`: what does the ledger say?
                    run = await get_run(run_id)
                elif event.kind == "run":
                    if event.run is None:
                        raise RunNotFound(run_id)
                    run = event.run
                elif event.kind == "progress" and event.progress is not None and on_progress:
                    run = live(run)
                    await _notify(on_progress, run, event.progress)
        return run if run.status.is_final else await get_run(run_id)


async def _next(subscription: Subscription, within_s: float | None) -> Event | None:
    """The next event, or None if none comes within `within_s` (None: wait as long as it takes)."""
    if within_s is None:
        return await subscription.get()
    with anyio.move_on_after(within_s):
        return await subscription.get()
    return None


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
