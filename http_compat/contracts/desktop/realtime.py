"""`/ws/generation`: the progress of every image run, whichever door made it; first one message
per run still queued or generating, then each change and step as it happens."""

from __future__ import annotations

import contextlib
from typing import Any

import anyio
from starlette.websockets import WebSocket, WebSocketDisconnect

from core.engine import Engine
from core.errors import RunNotFound
from core.events import Event, Subscription
from core.models import Run, RunKind, RunStatus
from http_compat.api import Api
from http_compat.contracts.desktop.views import STATUS

# What sending on a socket whose client has left raises.
CLIENT_GONE = (WebSocketDisconnect, RuntimeError, anyio.ClosedResourceError, anyio.BrokenResourceError)


def progress_message(run: Run, fraction: float | None = None) -> dict[str, Any]:
    if run.status is RunStatus.COMPLETED:
        fraction = 1.0
    message: dict[str, Any] = {
        "type": "progress",
        "taskId": str(run.seq),
        "progress": max(0, min(100, round((run.progress if fraction is None else fraction) * 100))),
        "status": STATUS[run.status],
    }
    if run.status in (RunStatus.FAILED, RunStatus.CANCELLED):
        message["error"] = run.error or run.status.value
    return message


def declare(api: Api, engine: Engine) -> None:
    """The progress socket, on `api`."""

    @api.websocket(
        "/ws/generation",
        summary="Progress of every generation",
        description="Sends {type: 'progress', taskId, progress: 0..100, status: queued|generating|"
        "completed|failed} for every image run; first one message per run still queued or generating.",
    )
    async def generation_socket(ws: WebSocket) -> None:
        await ws.accept()
        with engine.events.subscribe(None) as events:
            async with anyio.create_task_group() as tasks:
                tasks.start_soon(_stop_when_closed, ws, tasks.cancel_scope)
                with contextlib.suppress(*CLIENT_GONE):  # it may leave while we are sending
                    await _forward_progress(engine, ws, events)
                tasks.cancel_scope.cancel()


async def _stop_when_closed(ws: WebSocket, scope: anyio.CancelScope) -> None:
    """Read (and ignore) what the client sends; when it closes, stop the socket's work."""
    with contextlib.suppress(*CLIENT_GONE):
        while (await ws.receive())["type"] != "websocket.disconnect":
            pass
    scope.cancel()


async def _forward_progress(engine: Engine, ws: WebSocket, events: Subscription) -> None:
    """The runs in progress now, then every image run's changes and steps as they happen."""
    seqs: dict[str, int | None] = {}  # run id -> its id here, None for runs that are not images
    active = await engine.list_runs(status=["queued", "running"], kind="image", limit=200)
    for run in reversed(active.items):
        seqs[run.id] = run.seq
        await ws.send_json(progress_message(run))
    while True:
        message = await _message_of(engine, await events.get(), seqs)
        if message is not None:
            await ws.send_json(message)


async def _message_of(engine: Engine, event: Event, seqs: dict[str, int | None]) -> dict[str, Any] | None:
    if event.kind == "run":
        run = event.run
        if run is None or run.status.is_final:
            seqs.pop(event.run_id, None)
        else:
            seqs[run.id] = run.seq if run.kind is RunKind.IMAGE else None
        return progress_message(run) if run is not None and run.kind is RunKind.IMAGE else None
    if event.kind != "progress" or event.progress is None:
        return None
    if event.run_id not in seqs:
        try:
            run = await engine.get_run(event.run_id)
        except RunNotFound:
            return None
        if run.status.is_final:
            return None  # a late step of a run that has finished since
        seqs[run.id] = run.seq if run.kind is RunKind.IMAGE else None
    seq = seqs[event.run_id]
    if seq is None:
        return None
    return {
        "type": "progress",
        "taskId": str(seq),
        "progress": max(0, min(100, round(event.progress.fraction * 100))),
        "status": "generating",
    }
