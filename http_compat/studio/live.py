"""The studio's one realtime channel: every run's changes and progress, as Server-Sent Events.

`GET <prefix>/api/events` streams, from the engine's event bus:
- `run`: a run was created or changed; data is its card (`views.card`);
- `progress`: a step was reached; data is `views.progress` (id, step, max_steps, progress,
  message, loss, eta_s);
- `deleted`: a run is gone; data is `{"id": ...}`.

Progress is sent at most every `PROGRESS_EVERY_S` per run (the last step always follows in its
`run` event), so a page watching a busy GPU pool is not flooded. A client that falls behind
loses its oldest events (the bus's rule); the page re-reads what it shows when it reconnects.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import anyio
from starlette.requests import Request
from starlette.responses import Response

from core.engine import Engine
from core.settings import Settings
from http_compat.api import Api
from http_compat.realtime import sse_response
from http_compat.studio.pages import prefix_of
from http_compat.studio.views import card, progress

PROGRESS_EVERY_S = 0.25


async def studio_events(engine: Engine, prefix: str) -> AsyncIterator[tuple[str, Any]]:
    """`(event name, data)` pairs for every run, for as long as the client stays."""
    last_progress: dict[str, float] = {}
    with engine.events.subscribe(None, maxlen=4096) as events:
        yield "hello", {"ok": True}
        async for event in events:
            if event.kind == "run":
                last_progress.pop(event.run_id, None)
                if event.run is None:
                    yield "deleted", {"id": event.run_id}
                else:
                    yield "run", card(event.run, prefix)
            elif event.kind == "progress" and event.progress is not None:
                now = anyio.current_time()
                if now - last_progress.get(event.run_id, -PROGRESS_EVERY_S) >= PROGRESS_EVERY_S:
                    last_progress[event.run_id] = now
                    yield "progress", progress(event.run_id, event.progress)


def add_live(api: Api, engine: Engine, settings: Settings) -> None:
    """Declare `GET /api/events` on the studio's `api`."""

    @api.route(
        "GET",
        "/api/events",
        summary="Live run changes and progress (Server-Sent Events)",
        produces="text/event-stream",
    )
    async def events(request: Request) -> Response:
        return sse_response(studio_events(engine, prefix_of(request)), keepalive_s=settings.sse_keepalive_s)
