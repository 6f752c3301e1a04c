"""Realtime channels over the engine's events: a run's successive states, and Server-Sent Events.

Every channel stays open until its run is final or the client leaves, however long the quiet:
nothing here waits on the engine with a timeout (a timeout that cancels the wait closes the
source). Keep-alives: SSE sends a comment after `keepalive_s` of quiet (ATELIER_SSE_KEEPALIVE_S);
WebSocket pings are uvicorn's, socket.io's are Engine.IO's.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncGenerator, AsyncIterable, AsyncIterator
from contextlib import aclosing
from typing import Any

import anyio
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from core.backends import Progress
from core.engine import Engine
from core.errors import RunNotFound
from core.models import Run

log = logging.getLogger("atelier.http")


async def run_updates(engine: Engine, run_id: str) -> AsyncIterator[Run]:
    """The run now, then again at each change or progress step, until it is final (or deleted)."""
    async with aclosing(run_progress(engine, run_id)) as updates:
        async for run, _ in updates:
            yield run


async def run_progress(engine: Engine, run_id: str) -> AsyncIterator[tuple[Run, Progress | None]]:
    """As `run_updates`, each with the latest progress report seen (None before the first): what
    a run does not keep, such as a trainer's loss."""
    latest: Progress | None = None
    with engine.events.subscribe(run_id) as events:
        run = await engine.get_run(run_id)
        yield run, latest
        while not run.status.is_final:
            event = await events.get()
            if event.kind == "run" and event.run is None:
                return  # deleted
            if event.kind == "progress" and event.progress is not None:
                latest = event.progress
            if event.kind in ("run", "progress"):
                try:
                    run = await engine.get_run(run_id)
                except RunNotFound:
                    return
                yield run, latest


KEEP_ALIVE = b": keep-alive\n\n"


class EventStreamResponse(Response):
    """Server-Sent Events from `(event name, JSON data)` pairs, with a comment keep-alive after
    `keepalive_s` without an event, until the events end or the client leaves.

    The events are read in a task of their own that a keep-alive never interrupts: cancelling a
    wait on the source (`move_on_after` around `anext`) would close it, and the stream with it, at
    the first quiet spell. The source is closed in that task when the client leaves.
    """

    media_type = "text/event-stream"

    def __init__(self, events: AsyncIterable[tuple[str, Any]], *, keepalive_s: float = 15.0) -> None:
        self.events = events
        self.keepalive_s = keepalive_s
        self.status_code = 200
        self.background = None
        self.init_headers({"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        chunks_in, chunks = anyio.create_memory_object_stream[bytes | None](16)
        last_chunk = anyio.current_time()
        gone = False

        async def read_events() -> None:
            iterator = aiter(self.events)
            try:
                async for name, data in iterator:
                    await chunks_in.send(
                        f"event: {name}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()
                    )
            except Exception:
                log.exception("an event stream failed; closing it")
            finally:
                if isinstance(iterator, AsyncGenerator):
                    with anyio.CancelScope(shield=True):
                        await iterator.aclose()
            await chunks_in.send(None)  # the end

        async def keep_alive() -> None:
            nonlocal last_chunk
            while True:
                await anyio.sleep(max(0.0, last_chunk + self.keepalive_s - anyio.current_time()))
                if anyio.current_time() - last_chunk >= self.keepalive_s:
                    last_chunk = anyio.current_time()
                    await chunks_in.send(KEEP_ALIVE)

        async def watch_client(tasks: anyio.CancelScope) -> None:
            nonlocal gone
            while (await receive())["type"] != "http.disconnect":
                pass
            gone = True
            tasks.cancel()

        await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
        with chunks_in, chunks:
            async with anyio.create_task_group() as tasks:
                tasks.start_soon(read_events)
                tasks.start_soon(keep_alive)
                tasks.start_soon(watch_client, tasks.cancel_scope)
                try:
                    async for chunk in chunks:
                        if chunk is None:
                            break
                        await send({"type": "http.response.body", "body": chunk, "more_body": True})
                        last_chunk = anyio.current_time()
                except OSError:  # the client left (ASGI 2.4 servers say so on send)
                    gone = True
                tasks.cancel_scope.cancel()
        if not gone:
            await send({"type": "http.response.body", "body": b"", "more_body": False})


def sse_response(events: AsyncIterable[tuple[str, Any]], *, keepalive_s: float = 15.0) -> Response:
    """Server-Sent Events from `(event name, JSON data)` pairs, with comment keep-alives while quiet."""
    return EventStreamResponse(events, keepalive_s=keepalive_s)
