"""Atelier's HTTP app served by uvicorn on a loopback port inside the test's event loop.

Contract tests use real HTTP, WebSocket, SSE and socket.io clients against it, over the real
engine (SQLite ledger and files on a temp home, preview renderer by default).
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import httpx
import uvicorn

from core.backends import GenerationBackend
from core.engine import Engine
from core.models import Run
from core.settings import Settings
from http_compat.app import build_app


class _EmbeddedServer(uvicorn.Server):
    """uvicorn without its signal handlers: it runs inside the test's event loop."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


# A raw MCP `initialize` request, for tests that speak to /mcp without a client library.
MCP_INIT = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {
        "protocolVersion": "2025-06-18",
        "capabilities": {},
        "clientInfo": {"name": "atelier-tests", "version": "1"},
    },
}


@dataclass
class Served:
    url: str  # http://127.0.0.1:PORT, no trailing slash
    engine: Engine
    settings: Settings
    http: httpx.AsyncClient  # base_url = url

    @property
    def ws_url(self) -> str:
        return "ws" + self.url.removeprefix("http")

    async def finished(self, run_id: str, within: float = 20) -> Run:
        with anyio.fail_after(within + 5):
            run = await self.engine.wait(run_id, within)
        assert run.status.is_final, f"run {run_id} still {run.status.value}"
        return run


@contextlib.asynccontextmanager
async def serve_app(app: Any) -> AsyncIterator[str]:
    """Serve an ASGI app on a free loopback port for the duration of the block; yields its URL."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen(128)
    port = listener.getsockname()[1]
    config = uvicorn.Config(
        app,
        lifespan="on",
        log_config=None,
        log_level="warning",
        access_log=False,
        timeout_graceful_shutdown=1,
    )
    server = _EmbeddedServer(config)
    async with anyio.create_task_group() as tg:

        async def run() -> None:
            try:
                await server.serve(sockets=[listener])
            finally:
                listener.close()

        tg.start_soon(run)
        with anyio.fail_after(10):
            while not server.started:
                await anyio.sleep(0.005)
        try:
            yield f"http://127.0.0.1:{port}"
        finally:
            server.should_exit = True


@contextlib.asynccontextmanager
async def atelier_http(
    tmp_path: Path, *, backends: Mapping[str, GenerationBackend] | None = None, **overrides: Any
) -> AsyncIterator[Served]:
    """Atelier's whole HTTP app (MCP and every contract) over a fresh engine on `tmp_path/home`
    (with the given backends instead of the settings' ones, e.g. a scripted backend)."""
    options: dict[str, Any] = {"home": tmp_path / "home", "local_step_ms": 0, "retry_backoff_s": 0.01}
    options.update(overrides)
    settings = Settings.from_env({}, **options)
    try:
        async with (
            Engine.open(settings, backends=backends) as engine,
            serve_app(build_app(engine, settings)) as url,
            httpx.AsyncClient(base_url=url, timeout=30) as http,
        ):
            yield Served(url, engine, settings, http)
    except BaseExceptionGroup as group:
        # The task groups only wrap the test's own failure: show it as is.
        inner: BaseException = group
        while isinstance(inner, BaseExceptionGroup) and len(inner.exceptions) == 1:
            inner = inner.exceptions[0]
        raise inner from None
