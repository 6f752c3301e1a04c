"""Atelier's MCP server: its tools and resources over one engine, assembled from explicit lists.

Tools never hold state of their own and never block past the caller's wait budget: a run keeps
going when a call stops waiting for it.

Errors, decided once here for every tool module (`tools/shared.py`) and resource:
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

import json
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import quote

import anyio
from mcp.server.mcpserver import Context, MCPServer
from mcp.shared.exceptions import MCPError
from mcp_types import INVALID_PARAMS

from core.engine import Engine
from core.errors import ArtifactNotFound, AtelierError, Conflict, RunNotFound
from core.ids import check_filename, check_run_id
from mcp_server import views
from mcp_server.tools import images, runs, status

INSTRUCTIONS = """\
Atelier makes images and keeps a durable record of every run.
generate_image (text-to-image), transform_image (image-to-image) and upscale_image queue a
run and wait up to `wait_seconds` for it; if it is not done by then you get the run id: call
wait_for_run with it (as often as needed). list_workflows and list_models tell which
workflows, checkpoints and LoRAs can be named. Finished runs come back as
small thumbnails plus links (atelier://runs/{run_id}/images/{filename}) to the full-size files.
list_runs, get_run, cancel_run, retry_run, delete_run and bundle_run manage runs; get_status
reports backend health and the queue.
"""

# The resource-not-found code of the 2025 protocols; 2026-07-28 answers INVALID_PARAMS instead (SEP-2164).
RESOURCE_NOT_FOUND_2025 = -32002
FIRST_PROTOCOL_WITH_INVALID_PARAMS_FOR_NOT_FOUND = "2026-07-28"


@contextmanager
def _resource_errors(uri: str, ctx: Context | None) -> Iterator[None]:
    """Engine errors become JSON-RPC errors: "resource not found" for what does not exist (or has no
    file yet), invalid params for a malformed id or name. The message is the engine's sentence;
    `uri` (rebuilt from the template's values, percent-encoded again) goes in `data`."""
    try:
        yield
    except (RunNotFound, ArtifactNotFound, Conflict) as exc:
        version = ctx.protocol_version if ctx is not None else None
        modern = version is not None and version >= FIRST_PROTOCOL_WITH_INVALID_PARAMS_FOR_NOT_FOUND
        code = INVALID_PARAMS if modern else RESOURCE_NOT_FOUND_2025
        raise MCPError(code, f"Resource not found: {exc}", {"uri": uri}) from None
    except AtelierError as exc:
        raise MCPError(INVALID_PARAMS, str(exc), {"uri": uri}) from None


def build_mcp(engine: Engine, *, expose_paths: bool = True) -> MCPServer:
    """An MCP server over `engine`. `expose_paths` adds server-side file paths to results (stdio)."""
    mcp = MCPServer(
        "atelier",
        instructions=INSTRUCTIONS,
        version=_version(),
        log_level=engine.settings.log_level.upper(),
        tools=[
            *images.tools(engine, expose_paths=expose_paths),
            *runs.tools(engine, expose_paths=expose_paths),
            *status.tools(engine),
        ],
    )

    @mcp.resource("atelier://runs/{run_id}", mime_type="application/json", description="A run, as JSON.")
    async def run_resource(run_id: str, ctx: Context) -> str:
        with _resource_errors(views.run_uri(quote(run_id, safe="")), ctx):
            run = await engine.get_run(check_run_id(run_id))
            return json.dumps(run.to_dict())

    @mcp.resource(
        "atelier://runs/{run_id}/images/{filename}",
        mime_type="image/png",
        description="A full-size image of a run.",
    )
    async def image_resource(run_id: str, filename: str, ctx: Context) -> bytes:
        with _resource_errors(views.image_uri(quote(run_id, safe=""), quote(filename, safe="")), ctx):
            _, data = await engine.read_artifact(check_run_id(run_id), check_filename(filename))
            return data

    @mcp.resource(
        "atelier://runs/{run_id}/bundle.zip",
        mime_type="application/zip",
        description="A run's images as a ZIP.",
    )
    async def bundle_resource(run_id: str, ctx: Context) -> bytes:
        with _resource_errors(f"{views.run_uri(quote(run_id, safe=''))}/bundle.zip", ctx):
            bundle = await engine.bundle(check_run_id(run_id))
            return await anyio.Path(bundle.path).read_bytes()

    return mcp


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("atelier-mcp")
    except PackageNotFoundError:
        return "0.0.0"
