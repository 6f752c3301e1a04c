"""`atelier mcp`'s server: it answers the handshake at once and opens the engine behind it.

A host spawns `atelier mcp` on every launch and waits for its answer to `initialize`. Saying who
we are needs none of the engine: importing it and the tools costs about 0.3 s on top of the SDK,
and opening it reads the ledger. So the server on stdio is built from the SDK and this module
alone (`DeferredServer`), and `open_behind` imports and opens the engine once the host has our
answer to its first request (its next message says so), or sooner when a request needs the
tools, or after `IDLE_START_S` without a request (a host that asks nothing is not waiting on
us). Opening the engine never waits on a backend: it only builds their clients, so the server
answers with every backend down.

Until the engine is open, a request for tools or resources waits for it; then it is answered by
the server `build_mcp` made over the engine, the same one `atelier serve` and the tests use
(this one only forwards to it, so what a client sees cannot differ). If the engine cannot open,
the command ends with the reason, as a failed start did before.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, Any

import anyio
from mcp.server.context import ServerRequestContext
from mcp.server.mcpserver import MCPServer
from mcp.shared.exceptions import MCPError
from mcp_types import INTERNAL_ERROR, CallToolResult, InputRequiredResult

from mcp_server import toolsets

if TYPE_CHECKING:
    from core.settings import Settings

IDLE_START_S = 0.5


class DeferredServer(MCPServer):
    """An MCP server that answers the handshake itself and everything else through `serve`'s server."""

    def __init__(self, *, chosen: tuple[str, ...], version: str, log_level: str) -> None:
        super().__init__(
            "atelier",
            instructions=toolsets.instructions(chosen),
            version=version,
            log_level=log_level.upper(),  # type: ignore[arg-type]
            middleware=[self._heard],
        )
        self.wanted = anyio.Event()  # set once the host has our first answer, or needs the engine
        self._messages = 0
        self._ready = anyio.Event()
        self._built: MCPServer | None = None
        self._failure = ""

    def serve(self, built: MCPServer) -> None:
        """From now on, answer through `built`."""
        self._built = built
        self._ready.set()

    def fail(self, reason: str) -> None:
        """The engine could not open: refuse what waits for it, saying why."""
        self._failure = reason
        self._ready.set()

    async def _heard(
        self, ctx: ServerRequestContext[Any, Any], call_next: Callable[[Any], Awaitable[Any]]
    ) -> Any:
        # A host sends its next message once it has our first answer (`initialize`): only then
        # may the engine's imports take the CPU, or they would slow that answer down.
        if self._messages:
            self.wanted.set()
        self._messages += 1
        return await call_next(ctx)

    async def _inner(self) -> MCPServer:
        self.wanted.set()
        await self._ready.wait()
        if self._built is None:
            raise MCPError(code=INTERNAL_ERROR, message=f"Atelier could not start: {self._failure}")
        return self._built

    async def list_tools(self) -> Any:
        return await (await self._inner()).list_tools()

    async def call_tool(
        self, name: str, arguments: dict[str, Any], context: Any = None
    ) -> CallToolResult | InputRequiredResult:
        return await (await self._inner()).call_tool(name, arguments, context)

    async def list_resources(self) -> Any:
        return await (await self._inner()).list_resources()

    async def list_resource_templates(self) -> Any:
        return await (await self._inner()).list_resource_templates()

    async def read_resource(self, uri: Any, context: Any = None) -> Iterable[Any] | InputRequiredResult:
        return await (await self._inner()).read_resource(uri, context)


async def open_behind(front: DeferredServer, settings: Settings, stop: anyio.Event) -> None:
    """Open the engine once `front` wants it, serve its tools through `front` until `stop`.

    A host sends `initialize` as soon as it has spawned us; when nothing has come for
    `IDLE_START_S`, nobody waits on an answer and the engine opens anyway: as the data
    directory's owner it runs what other processes queued (`atelier generate --no-wait`).
    Whoever sets `stop` sets `front.wanted` too, so this never waits for a request that will
    not come."""
    with anyio.move_on_after(IDLE_START_S):
        await front.wanted.wait()
    if stop.is_set():  # the session ended before anything needed the engine
        return
    # The imports are most of the cost: off the event loop, so the loop keeps answering.
    await anyio.to_thread.run_sync(_import_engine_and_tools)
    from core.engine import Engine
    from mcp_server.server import build_mcp

    try:
        async with Engine.open(settings, role="shared") as engine:
            front.serve(build_mcp(engine, expose_paths=True))
            await stop.wait()
    except Exception as exc:
        front.fail(str(exc))
        raise


def _import_engine_and_tools() -> None:
    import core.engine  # noqa: F401
    import mcp_server.server  # noqa: F401
