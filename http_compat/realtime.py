"""Realtime channels over the engine's events: a run's successive states, and Server-Sent Events."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import anyio
from starlette.responses import Response, StreamingResponse

from core.engine import Engine
from core.errors import RunNotFound
from core.models import Run


async def run_updates(engine: Engine, run_id: str) -> AsyncIterator[Run]:
    """The run now, then again at each change or progress step, until it is final (or deleted)."""
    with engine.events.subscribe(run_id) as events:
        run = await engine.get_run(run_id)
        yield run
        while not run.status.is_final:
            event = await events.get()
            if event.kind == "run" and event.run is None:
                return  # deleted
            if event.kind in ("run", "progress"):
                try:
                    run = await engine.get_run(run_id)
                except RunNotFound:
                    return
                yield run


def sse_response(events: AsyncIterator[tuple[str, Any]], *, heartbeat_s: float = 15.0) -> Response:
    """Server-Sent Events from `(event name, JSON data)` pairs, with comment heartbeats while idle."""

    async def body() -> AsyncIterator[bytes]:
        iterator = aiter(events)
        while True:
            item = None
            with anyio.move_on_after(heartbeat_s):
                try:
                    item = await anext(iterator)
                except StopAsyncIteration:
                    return
            if item is None:
                yield b": keep-alive\n\n"
                continue
            name, data = item
            yield f"event: {name}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()

    return StreamingResponse(
        body(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
