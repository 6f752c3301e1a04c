"""Front doors of a node that executes nothing, following runs another node executes: an MCP
client's progress notifications and a ComfyGen WebSocket on node B, runs executed on node A,
events relayed through a real PostgreSQL (see `tests/relay_nodes.py`)."""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from mcp import Client
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from http_compat.app import build_app
from mcp_server.server import build_mcp
from tests.http_served import serve_app

pytestmark = pytest.mark.anyio

pytest.importorskip("psycopg")
from tests.relay_nodes import WAIT, new_channel, node_settings, reachable_database, two_nodes  # noqa: E402


@pytest.fixture(scope="module")
def database_url() -> str:
    return reachable_database()


async def test_an_mcp_client_on_node_b_gets_progress_of_a_run_on_node_a(
    database_url: str, tmp_path: Path
) -> None:
    async with two_nodes(node_settings(tmp_path, step_ms=25), database_url, new_channel()) as (a, b):
        run = await a.submit_image({"prompt": "a red fox", "width": 64, "height": 64, "steps": 30})
        seen: list[float] = []

        async def on_progress(progress: float, total: float | None, message: str | None) -> None:
            seen.append(progress)

        async with Client(build_mcp(b)) as client:
            with anyio.fail_after(WAIT):
                result = await client.call_tool(
                    "wait_for_run", {"run_id": run.id, "timeout_seconds": WAIT}, progress_callback=on_progress
                )
    assert result.structured_content is not None
    assert result.structured_content["status"] == "completed"
    assert len(seen) >= 3, seen
    assert all(later > earlier for earlier, later in itertools.pairwise(seen))


async def receive_all(url: str) -> tuple[list[dict[str, Any]], int | None]:
    """Every message until the server closes the socket, and the close code."""
    messages = []
    with anyio.fail_after(WAIT):
        async with connect(url) as ws:
            try:
                while True:
                    messages.append(json.loads(await ws.recv()))
            except ConnectionClosed:
                pass
            return messages, ws.close_code


async def test_a_websocket_on_node_b_streams_a_job_it_accepted_and_node_a_ran(
    database_url: str, tmp_path: Path
) -> None:
    settings = node_settings(tmp_path, step_ms=25)
    async with (
        two_nodes(settings, database_url, new_channel()) as (a, b),
        serve_app(build_app(b, settings)) as url,
    ):
        async with httpx.AsyncClient(base_url=url) as http:
            accepted = await http.post(
                "/comfygen/generate", json={"prompt": "a blue heron", "width": 64, "height": 64, "steps": 20}
            )
            assert accepted.status_code == 202, accepted.text
            job_id = accepted.json()["id"]
            messages, code = await receive_all(f"ws{url.removeprefix('http')}/comfygen/ws/progress/{job_id}")
            assert code == 1000
            steps = [m["step"] for m in messages if m["status"] == "running"]
            assert len(set(steps)) >= 3 and steps == sorted(steps), messages
            final = messages[-1]
            assert (final["status"], final["error"]) == ("completed", None)
            assert (await http.get(final["image_url"])).status_code == 200
        assert (await a.get_run(job_id)).attempts == 1  # node A ran it; B executes nothing
        assert b.relay.health()["sent"] >= 1  # B said it accepted the job; A heard
