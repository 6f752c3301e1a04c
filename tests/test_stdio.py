"""The MCP server as a host runs it: `atelier mcp` as a real subprocess over stdio."""

from __future__ import annotations

import io
from pathlib import Path

import anyio
import pytest
from mcp import Client, StdioServerParameters
from PIL import Image

from tests.procs import atelier_command, atelier_env
from tests.test_mcp_tools import TOOLS

pytestmark = pytest.mark.anyio


def _params(home: Path) -> StdioServerParameters:
    command, *args = atelier_command()
    return StdioServerParameters(
        command=command, args=[*args, "mcp"], env=atelier_env(home, ATELIER_LOCAL_STEP_MS="5")
    )


@pytest.mark.parametrize("mode", ["legacy", "auto"])
async def test_stdio_generate_wait_and_read_identical_png(tmp_path: Path, mode: str) -> None:
    with anyio.fail_after(60):
        async with Client(_params(tmp_path / "home"), mode=mode) as client:
            assert {tool.name for tool in (await client.list_tools()).tools} == TOOLS

            images = []
            for _ in range(2):
                started = await client.call_tool(
                    "generate_image",
                    {
                        "prompt": "a lighthouse at dusk",
                        "width": 512,
                        "height": 512,
                        "seed": 1,
                        "wait_seconds": 0,
                    },
                )
                assert not started.is_error, started.content
                run_id = started.structured_content["run_id"]
                done = started
                while done.structured_content["status"] not in ("completed", "failed", "cancelled"):
                    done = await client.call_tool("wait_for_run", {"run_id": run_id, "timeout_seconds": 10})
                assert done.structured_content["status"] == "completed"
                uri = done.structured_content["images"][0]["uri"]
                contents = (await client.read_resource(uri)).contents[0]
                assert contents.mime_type == "image/png"
                data = _blob(contents)
                with Image.open(io.BytesIO(data)) as image:
                    assert image.format == "PNG" and image.size == (512, 512)
                images.append((run_id, data))

    (first_id, first), (second_id, second) = images
    assert first_id != second_id
    assert first == second


def _blob(contents: object) -> bytes:
    import base64

    return base64.b64decode(contents.blob)  # type: ignore[attr-defined]


async def test_stdio_server_answers_while_data_directory_is_owned_by_another_server(tmp_path: Path) -> None:
    """A second host process on the same home starts at once and its runs are still done."""
    home = tmp_path / "home"
    with anyio.fail_after(60):
        async with Client(_params(home)) as first, Client(_params(home)) as second:
            run = await second.call_tool(
                "generate_image",
                {"prompt": "two doors", "width": 64, "height": 64, "seed": 2, "wait_seconds": 20},
            )
            assert run.structured_content["status"] == "completed"
            seen = await first.call_tool("get_run", {"run_id": run.structured_content["run_id"]})
            assert seen.structured_content["status"] == "completed"
