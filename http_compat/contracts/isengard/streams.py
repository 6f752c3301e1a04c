"""What generation and training jobs share: the SSE stream of a job and cancelling one."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import aclosing
from typing import Any

from starlette.responses import Response

from core.backends import Progress
from core.engine import Engine
from core.models import Run
from http_compat.errors import ApiError
from http_compat.realtime import run_progress, sse_response

EventOf = Callable[[Run, Progress | None], Awaitable[tuple[str, dict[str, Any]]]]


def job_stream(engine: Engine, run_id: str, event_of: EventOf, keepalive_s: float) -> Response:
    """`event: progress` whenever what it carries changes, then one `event: complete` for the
    final state (whichever it is), as the original backend sends them. 100% is said by the
    `complete` event alone: a running job at its last step (saving its files) is not reported
    again until it completes."""

    async def events() -> AsyncIterator[tuple[str, dict[str, Any]]]:
        last: dict[str, Any] | None = None
        # aclosing: the event subscription ends with the stream, not when the generator is collected.
        async with aclosing(run_progress(engine, run_id)) as updates:
            async for now, progress in updates:
                name, data = await event_of(now, progress)
                if name == "complete":
                    yield name, data
                    return
                if data != last and data.get("progress", 0) < 100:
                    last = data
                    yield name, data

    return sse_response(events(), keepalive_s=keepalive_s)


async def cancel_job(engine: Engine, run: Run) -> Run:
    """Cancel a queued or running job; a final one is the document's 400."""
    if run.status.is_final:
        raise ApiError(400, f"Cannot cancel job in {run.status.value} state")
    return await engine.cancel(run.id)
