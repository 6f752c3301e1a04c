"""Atelier's MCP server: its tools and resources over one engine, assembled from explicit lists.

Tools never hold state of their own and never block past the caller's wait budget: a run keeps
going when a call stops waiting for it. Which tools are listed is the user's choice
(`ATELIER_TOOLSETS`, see `toolsets.py`); what each costs a model's context is kept small
(`tool_schema.py`). `atelier mcp` serves this server behind `deferred.py`'s, which answers the
handshake before the engine is open.

Errors, decided once here for every tool module (`tools/shared.py`) and for `resources.py`:
- A tool's arguments are checked against its advertised schema (types, ranges, allowed words)
  before it runs, and every bad or unknown one is named on its own line, `field: problem (got
  value)`, in the engine's words for the same field (see `arguments.py`). What only the engine
  can judge (a blank prompt, an unknown workflow, a source image) comes back the same way.
- A tool's failure is an `isError` result; a resource's is a JSON-RPC error: a run, image or
  bundle that does not exist is "resource not found" (-32002 for clients of the 2025 protocols,
  -32602 from 2026-07-28 on, where the spec moved it), a malformed run id or file name is
  -32602 invalid params. Both carry the URI in `data`.
- Tools that change a run say in words what they did: `cancel_run` tells a run it stopped from
  one that had already finished (`cancelled: false`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from mcp.server.lowlevel.helper_types import ReadResourceContents
from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.tools import Tool
from mcp_types import InputRequiredResult

from core.characters.uploads import sniff_media_type
from core.engine import Engine
from mcp_server import resources, toolsets
from mcp_server.tools import characters, images, products, publishing, runs, status


class AtelierServer(MCPServer):
    """The SDK's server, except that an image resource is reported with the type its bytes have.

    A resource template declares one MIME type; a character's images may be PNG, JPEG or WebP."""

    async def read_resource(self, uri: Any, context: Any = None) -> Any:
        results = await super().read_resource(uri, context)
        if isinstance(results, InputRequiredResult):
            return results
        return [_with_sniffed_type(item) for item in results]


def _with_sniffed_type(item: ReadResourceContents) -> ReadResourceContents:
    if isinstance(item.content, bytes) and (item.mime_type or "").startswith("image/"):
        sniffed = sniff_media_type(item.content)
        if sniffed and sniffed != item.mime_type:
            return ReadResourceContents(content=item.content, mime_type=sniffed, meta=item.meta)
    return item


def build_mcp(engine: Engine, *, expose_paths: bool = True) -> MCPServer:
    """An MCP server over `engine` with the toolsets its settings choose (`ATELIER_TOOLSETS`).

    `expose_paths` adds server-side file paths to results (stdio)."""
    chosen = toolsets.chosen(engine.settings.toolsets)
    mcp = AtelierServer(
        "atelier",
        instructions=toolsets.instructions(chosen),
        version=_version(),
        log_level=engine.settings.log_level.upper(),
        tools=tools(engine, chosen, expose_paths=expose_paths),
    )
    for template in resources.templates(engine):
        mcp.resource(template.uri, mime_type=template.mime_type, description=template.description)(
            template.read
        )
    return mcp


def tools(engine: Engine, chosen: tuple[str, ...], *, expose_paths: bool) -> list[Tool]:
    """The tools of the `chosen` toolsets over `engine`, in listing order."""
    built: dict[str, Callable[[], list[Tool]]] = {
        "generate": lambda: images.tools(engine, expose_paths=expose_paths),
        "runs": lambda: [*runs.tools(engine, expose_paths=expose_paths), *status.tools(engine)],
        "characters": lambda: characters.tools(engine, expose_paths=expose_paths),
        "products": lambda: products.tools(engine),
        "publishing": lambda: publishing.tools(engine),
    }
    return [tool for name in chosen for tool in built[name]()]


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("atelier-mcp")
    except PackageNotFoundError:
        return "0.0.0"
