"""MCP over Streamable HTTP takes source images up to ATELIER_MAX_INPUT_BYTES (the SDK's own
4 MiB request cap would refuse anything above ~3 MB of image), and refuses larger ones with a
413 that names the setting.
"""

from __future__ import annotations

import base64
import io
import os
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import httpx
import pytest
from mcp import Client, MCPError
from PIL import Image

from tests.http_served import atelier_http

pytestmark = pytest.mark.anyio


def noisy_png(width: int, height: int) -> bytes:
    """A PNG of random pixels: it does not compress, so it stays as large as its pixels."""
    image = Image.frombytes("RGB", (width, height), os.urandom(width * height * 3))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


async def test_transform_image_over_http_takes_a_six_megabyte_source(tmp_path: Path) -> None:
    source = base64.b64encode(noisy_png(1200, 1250)).decode()
    assert len(source) > 6_000_000  # well past the SDK's 4 MiB default
    async with atelier_http(tmp_path) as served:
        with anyio.fail_after(120):
            async with Client(f"{served.url}/mcp") as client:
                result = await client.call_tool(
                    "transform_image",
                    {"source": source, "prompt": "storm clouds", "steps": 1, "wait_seconds": 100},
                )
        assert not result.is_error, result.content
        run = result.structured_content
        assert run["status"] == "completed", run
        assert (run["images"][0]["width"], run["images"][0]["height"]) == (1200, 1250)


async def test_a_source_over_the_cap_is_refused_with_413_naming_the_setting(tmp_path: Path) -> None:
    source = base64.b64encode(noisy_png(1200, 1250)).decode()
    async with atelier_http(tmp_path, max_input_bytes=2_000_000) as served:
        call = {
            "jsonrpc": "2.0",
            "id": 2,
            "method": "tools/call",
            "params": {"name": "transform_image", "arguments": {"source": source, "prompt": "storm"}},
        }
        refused = await served.http.post(
            "/mcp", json=call, headers={"Accept": "application/json, text/event-stream"}
        )
        assert refused.status_code == 413
        assert "ATELIER_MAX_INPUT_BYTES" in refused.json()["error"]["message"]

        # A client streaming the body without declaring its length gets the same answer.
        async def chunks() -> AsyncIterator[bytes]:
            data = httpx.Request("POST", "http://x", json=call).content
            for start in range(0, len(data), 65536):
                yield data[start : start + 65536]

        streamed = await served.http.post(
            "/mcp",
            content=chunks(),
            headers={"Accept": "application/json, text/event-stream", "Content-Type": "application/json"},
        )
        assert streamed.status_code == 413
        assert "ATELIER_MAX_INPUT_BYTES" in streamed.json()["error"]["message"]

        # An MCP client shows its user the reason, not just a status.
        with anyio.fail_after(60):
            async with Client(f"{served.url}/mcp") as client:
                with pytest.raises(MCPError) as refusal:
                    await client.call_tool("transform_image", {"source": source, "prompt": "storm"})
                assert "ATELIER_MAX_INPUT_BYTES" in str(refusal.value)
                # The session is still good for calls within the cap.
                assert (await client.call_tool("get_status", {})).is_error is False
