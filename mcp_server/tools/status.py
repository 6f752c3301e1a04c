"""The tool that reports how Atelier is doing: backend health, the queue, throughput."""

from __future__ import annotations

from typing import Any

from mcp.server.mcpserver.tools import Tool

from core.engine import Engine
from mcp_server.tools.shared import READ_ONLY, ToolList


def tools(engine: Engine) -> list[Tool]:
    """get_status over `engine`."""
    found = ToolList()

    @found.tool(READ_ONLY)
    async def get_status() -> dict[str, Any]:
        """Health of each backend, how many runs are queued and running, and throughput/latency figures."""
        return await engine.status()

    return found.tools
