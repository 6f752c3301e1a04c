"""`atelier mcp` starting as a host starts it: answering with every backend down, and ending cleanly
when the host goes away before asking anything (the engine opens behind the handshake)."""

from __future__ import annotations

import socket
import subprocess
from pathlib import Path

import anyio
import pytest
from mcp import Client, StdioServerParameters

from tests.procs import atelier_command, atelier_env
from tests.test_mcp_tools import TOOLS

pytestmark = pytest.mark.anyio


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.parametrize("mode", ["legacy", "auto"])
async def test_stdio_server_answers_with_every_backend_down(tmp_path: Path, mode: str) -> None:
    dead = f"http://127.0.0.1:{closed_port()}"
    command, *args = atelier_command()
    env = atelier_env(
        tmp_path / "home",
        ATELIER_BACKEND="comfyui",
        ATELIER_COMFYUI_URLS=dead,
        ATELIER_ENABLED_PLATFORMS="printify",
        ATELIER_PRINTIFY_TOKEN="token",
        ATELIER_PRINTIFY_SHOP_ID="1",
        ATELIER_PRINTIFY_URL=dead,
    )
    with anyio.fail_after(60):
        async with Client(
            StdioServerParameters(command=command, args=[*args, "mcp"], env=env), mode=mode
        ) as client:
            assert {tool.name for tool in (await client.list_tools()).tools} == TOOLS
            status = await client.call_tool("get_status", {})
            assert not status.is_error, status.content
            report = status.structured_content
            assert report is not None and report["healthy"] is False
            assert report["backends"]["comfyui"]["up"] is False
            queued = await client.call_tool("generate_image", {"prompt": "a fox", "wait_seconds": 0})
            assert not queued.is_error, queued.content
            assert queued.structured_content["status"] == "queued"


def test_stdio_server_ends_cleanly_when_the_host_leaves_before_asking(tmp_path: Path) -> None:
    finished = subprocess.run(
        [*atelier_command(), "mcp"],
        env=atelier_env(tmp_path / "home"),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=30,
    )
    assert finished.returncode == 0, finished.stderr.decode()
    assert finished.stdout == b""
