"""The socket.io channel (Engine.IO 4): engine events in, the document's events out.

`job:update` and `log` on each status change of a job, `job:progress` when its whole percent
changes, `metrics` on connect and every few seconds. Batch items and the designs and upscales a
products job makes are parts of their job: their own events are not relayed.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import socketio

from core.engine import Engine
from core.errors import RunNotFound
from core.events import Event, Subscription
from core.models import Run, RunKind, RunStatus
from http_compat.contracts.pod.health import Clock, compute_metrics
from http_compat.contracts.pod.shapes import LogType
from http_compat.contracts.pod.views import STATUS, is_part, job_id, ms, percent

log = logging.getLogger("atelier.http.pod")
METRICS_EVERY_S = 3.0


class Realtime:
    """The socket.io channel: engine events in, the document's events out."""

    def __init__(self, engine: Engine, clock: Clock) -> None:
        self.engine = engine
        self.clock = clock
        self.sio = socketio.AsyncServer(
            async_mode="asgi",
            cors_allowed_origins=[],  # checked in front of the app (http_compat.origins)
            logger=False,
            engineio_logger=False,
        )
        self.clients = 0
        self._status: dict[str, RunStatus] = {}
        self._percent: dict[str, int] = {}
        self._part: dict[str, bool] = {}
        self.sio.on("connect", self._connected)
        self.sio.on("disconnect", self._disconnected)

    def app(self) -> socketio.ASGIApp:
        # Routing is Starlette's: every request reaching this mount is Engine.IO traffic.
        return socketio.ASGIApp(self.sio, socketio_path=None)

    async def _connected(self, sid: str, environ: dict[str, Any], auth: Any = None) -> None:
        self.clients += 1
        self.sio.start_background_task(self._send_metrics, sid)

    async def _disconnected(self, sid: str, *args: Any) -> None:
        self.clients = max(0, self.clients - 1)

    async def _send_metrics(self, sid: str | None = None) -> None:
        try:
            await self.sio.emit("metrics", await compute_metrics(self.engine, self.clock), to=sid)
        except Exception:
            log.exception("could not send metrics over socket.io")

    @asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """Pump engine events to socket.io clients for the app's lifetime."""
        with self.engine.events.subscribe(None, maxlen=4096) as events:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._pump, events)
                tg.start_soon(self._tick)
                try:
                    yield
                finally:
                    tg.cancel_scope.cancel()
        with anyio.move_on_after(2, shield=True):
            await self.sio.shutdown()

    async def _tick(self) -> None:
        while True:
            await anyio.sleep(METRICS_EVERY_S)
            if self.clients:
                await self._send_metrics()

    async def _pump(self, events: Subscription) -> None:
        while True:
            event = await events.get()
            try:
                await self._handle(event)
            except Exception:  # one bad event must not end the channel
                log.exception("socket.io: could not relay %s event of run %s", event.kind, event.run_id)

    async def _handle(self, event: Event) -> None:
        if event.kind == "run":
            self.clock.last_change = time.time()
            if event.run is None:  # deleted
                for known in (self._status, self._percent, self._part):
                    known.pop(event.run_id, None)
                return
            await self._on_run(event.run)
        elif event.kind == "progress" and event.progress is not None:
            if await self._is_part(event.run_id):
                return  # its job reports the combined progress
            value = percent(event.progress.fraction)
            if self._percent.get(event.run_id) != value:
                self._remember(self._percent, event.run_id, value)
                await self.sio.emit("job:progress", {"id": job_id(event.run_id), "progress": value})

    async def _is_part(self, run_id: str) -> bool:
        """A batch item, or a design or upscale of a products job: its job reports for it."""
        if run_id not in self._part:
            try:
                self._remember(self._part, run_id, part_of_a_job(await self.engine.get_run(run_id)))
            except RunNotFound:
                return True
        return self._part[run_id]

    async def _on_run(self, run: Run) -> None:
        self._remember(self._part, run.id, part_of_a_job(run))
        previous = self._status.get(run.id)
        if self._part[run.id] or previous is run.status:
            return
        self._remember(self._status, run.id, run.status)
        progress = 100 if run.status is RunStatus.COMPLETED else percent(run.progress)
        self._remember(self._percent, run.id, progress)
        await self.sio.emit(
            "job:update", {"id": job_id(run.id), "status": STATUS[run.status], "progress": progress}
        )
        message, kind = lifecycle_line(run, previous)
        await self.sio.emit("log", {"message": message, "type": kind, "timestamp": ms(time.time())})

    @staticmethod
    def _remember(known: dict[str, Any], key: str, value: Any, limit: int = 10_000) -> None:
        known.pop(key, None)
        known[key] = value
        while len(known) > limit:
            known.pop(next(iter(known)))


def lifecycle_line(run: Run, previous: RunStatus | None) -> tuple[str, LogType]:
    """The `log` event for a job's status change: (message, type)."""
    name = f"{'Batch job' if run.kind is RunKind.BATCH else 'Job'} {job_id(run.id)}"
    if run.status is RunStatus.QUEUED:
        if previous is RunStatus.RUNNING:
            return f"{name} attempt {run.attempts} failed, retrying: {run.error}", "WARNING"
        if previous in (RunStatus.FAILED, RunStatus.CANCELLED):
            return f"{name} queued again (retry)", "INFO"
        return f"{name} submitted ({run.priority.value} priority)", "INFO"
    if run.status is RunStatus.RUNNING:
        return f"{name} started", "INFO"
    if run.status is RunStatus.COMPLETED:
        return f"{name} completed successfully", "SUCCESS"
    if run.status is RunStatus.FAILED:
        return f"{name} failed: {run.error}", "ERROR"
    return f"{name} cancelled", "WARNING"


def part_of_a_job(run: Run) -> bool:
    return run.parent_id is not None or is_part(run)
