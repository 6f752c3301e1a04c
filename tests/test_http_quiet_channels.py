"""Realtime channels stay open through quiet spells until the run is final (http_compat/realtime.py).

A job queued behind a long run hears nothing for as long as that run takes. Every channel must
still be there when it finishes: Isengard's SSE (with keep-alive comments while quiet, and
`complete` at the end), ComfyGen's progress WebSocket, the desktop WebSocket and POD's socket.io.
The scripted backend holds the first run for exactly the quiet spell the test wants.

`test_every_channel_outlives_40_seconds_of_quiet_with_the_real_keepalive` is SLOW ON PURPOSE
(about 45 s): it uses the real 15 s SSE keep-alive and uvicorn's and Engine.IO's real pings,
which a shortened interval would not exercise.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path
from typing import Any

import anyio
import pytest
import socketio
from websockets.asyncio.client import connect

from tests.http_served import Served, atelier_http
from tests.scripted_backend import ScriptedBackend, wait_until

pytestmark = pytest.mark.anyio

LONG = "a long render that holds the only slot"
QUEUED = "a job queued behind it"


@dataclass
class Heard:
    """What one channel received, with the time it ended (None while open)."""

    messages: list[Any] = field(default_factory=list)
    keepalives: list[float] = field(default_factory=list)
    ended_at: float | None = None
    close_code: int | None = None


async def read_sse(served: Served, job_id: str, heard: Heard) -> None:
    name = None
    async with served.http.stream("GET", f"/isengard/api/generation/{job_id}/stream") as response:
        assert response.status_code == 200
        async for line in response.aiter_lines():
            if line.startswith(":"):
                heard.keepalives.append(time.monotonic())
            elif line.startswith("event: "):
                name = line.removeprefix("event: ")
            elif line.startswith("data: "):
                heard.messages.append((name, json.loads(line.removeprefix("data: "))))
    heard.ended_at = time.monotonic()


async def read_ws(url: str, heard: Heard) -> None:
    async with connect(url) as ws:
        async for message in ws:
            heard.messages.append(json.loads(message))
        heard.close_code = ws.close_code
    heard.ended_at = time.monotonic()


async def quiet_spell(served: Served, backend: ScriptedBackend, quiet_s: float) -> dict[str, Heard]:
    """Queue a job behind a held run, listen on every channel, keep quiet for `quiet_s`, then let
    both finish; returns what each channel heard."""
    await served.engine.submit_image({"prompt": LONG, "width": 64, "height": 64, "steps": 2})
    await backend.wait_started(LONG)
    submitted = await served.http.post(
        "/isengard/api/generation", json={"config": {"prompt": QUEUED, "width": 64, "height": 64, "steps": 2}}
    )
    assert submitted.status_code == 201, submitted.text
    job_id = submitted.json()["id"]
    run_id = job_id.removeprefix("gen-")
    seq = (await served.engine.get_run(run_id)).seq
    heard = {name: Heard() for name in ("sse", "comfygen", "desktop", "socket.io")}

    pod = socketio.AsyncClient(reconnection=False)

    @pod.on("job:update")
    async def job_update(data: Any) -> None:
        heard["socket.io"].messages.append(data)

    async with anyio.create_task_group() as channels:
        channels.start_soon(read_sse, served, job_id, heard["sse"])
        channels.start_soon(read_ws, f"{served.ws_url}/comfygen/ws/progress/{run_id}", heard["comfygen"])
        channels.start_soon(read_ws, f"{served.ws_url}/desktop/ws/generation", heard["desktop"])
        await pod.connect(served.url, socketio_path="/pod/socket.io")
        await wait_until(lambda: heard["sse"].messages and heard["comfygen"].messages, what="first states")

        started = time.monotonic()
        await anyio.sleep(quiet_s)
        for name, channel in heard.items():
            assert channel.ended_at is None, (
                f"{name} closed after {channel.ended_at - started:.1f} s of quiet"
            )
        assert pod.connected
        assert (await served.engine.get_run(run_id)).status.value == "queued"  # it really was quiet

        backend.release(LONG)
        with anyio.fail_after(30):
            while heard["sse"].ended_at is None or heard["comfygen"].ended_at is None:
                await anyio.sleep(0.02)
        await wait_until(
            lambda: any(
                m.get("taskId") == str(seq) and m["status"] == "completed" for m in heard["desktop"].messages
            ),
            timeout=10,
            what="the desktop socket to report the job completed",
        )
        await wait_until(
            lambda: any(
                m["id"] == f"job_{run_id}" and m["status"] == "completed" for m in heard["socket.io"].messages
            ),
            timeout=10,
            what="socket.io to report the job completed",
        )
        await pod.disconnect()
        channels.cancel_scope.cancel()  # the desktop socket stays open for other runs

    sse = heard["sse"]
    assert sse.messages[-1][0] == "complete" and sse.messages[-1][1]["status"] == "completed", sse.messages
    comfygen = heard["comfygen"]
    assert comfygen.messages[-1]["status"] == "completed" and comfygen.close_code == 1000
    return heard


async def test_sse_sends_keepalives_through_quiet_and_still_ends_with_complete(tmp_path: Path) -> None:
    backend = ScriptedBackend(concurrency=1, hold=[LONG])
    async with atelier_http(tmp_path, backends={"local": backend}, sse_keepalive_s=0.2) as served:
        heard = await quiet_spell(served, backend, quiet_s=2.0)
    # A comment every 0.2 s of quiet (the old stream ended at the first one, without `complete`).
    assert len(heard["sse"].keepalives) >= 6


async def test_every_channel_outlives_40_seconds_of_quiet_with_the_real_keepalive(tmp_path: Path) -> None:
    """SLOW (~45 s) on purpose: real 15 s keep-alive, real WebSocket and Engine.IO pings."""
    backend = ScriptedBackend(concurrency=1, hold=[LONG])
    async with atelier_http(tmp_path, backends={"local": backend}) as served:
        assert served.settings.sse_keepalive_s == 15.0
        heard = await quiet_spell(served, backend, quiet_s=40.0)
    keepalives = heard["sse"].keepalives
    assert len(keepalives) >= 2, keepalives  # at ~15 s and ~30 s of quiet
    assert all(b - a >= 14 for a, b in pairwise(keepalives))
