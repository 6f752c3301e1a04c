"""The HTTP front door: `/health`, and the MCP Streamable HTTP endpoint at `/mcp`.

The REST contracts of ../shared/contracts mount here too as they land, each at its prefix.
"""

from __future__ import annotations

import hmac
import ipaddress
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from mcp.server.mcpserver import MCPServer
from mcp.server.transport_security import TransportSecuritySettings
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.types import ASGIApp, Receive, Scope, Send

from core.engine import Engine
from core.errors import InvalidInput
from core.settings import Settings


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_bind(settings: Settings) -> None:
    """Refuse to listen beyond this machine without a token to guard it."""
    if not is_loopback(settings.host) and settings.api_token is None:
        raise InvalidInput(
            "host",
            f"{settings.host} is reachable from other machines; set ATELIER_API_TOKEN "
            "(clients then send 'Authorization: Bearer <token>') or bind to 127.0.0.1",
        )


class BearerAuth:
    """Every request needs `Authorization: Bearer <token>` once a token is configured."""

    def __init__(self, app: ASGIApp, token: str) -> None:
        self.app = app
        self._expected = f"Bearer {token}".encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            given = dict(scope["headers"]).get(b"authorization", b"")
            if not hmac.compare_digest(given, self._expected):
                response = JSONResponse(
                    {"error": "unauthorized", "message": "send 'Authorization: Bearer <ATELIER_API_TOKEN>'"},
                    status_code=401,
                    headers={"WWW-Authenticate": 'Bearer realm="atelier"'},
                )
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


def build_app(engine: Engine, settings: Settings, mcp: MCPServer | None = None) -> Starlette:
    """The Starlette app over `engine`; tests build their own with their own engine."""
    if mcp is None:
        from mcp_server.server import build_mcp

        mcp = build_mcp(engine, expose_paths=False)

    async def health(request: Request) -> Response:
        status = await engine.status()
        return JSONResponse(
            {
                "status": "ok" if status["healthy"] else "degraded",
                "backends": status["backends"],
                "queue": status["queue"],
                "runs": status["runs"],
            },
            status_code=200 if status["healthy"] else 503,
        )

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with mcp.session_manager.run():
            yield

    hosts = {settings.host, "127.0.0.1", "localhost", "[::1]"}
    security = TransportSecuritySettings(
        enable_dns_rebinding_protection=True,
        allowed_hosts=[f"{h}:*" for h in hosts] + list(hosts),
        allowed_origins=[f"http://{h}:*" for h in hosts],
    )
    mcp_app = mcp.streamable_http_app(
        streamable_http_path="/mcp", transport_security=security, host=settings.host
    )
    middleware = []
    if settings.api_token is not None:
        middleware.append(Middleware(BearerAuth, token=settings.api_token.get_secret_value()))
    return Starlette(
        routes=[Route("/health", health, methods=["GET"]), Mount("/", app=mcp_app)],
        middleware=middleware,
        lifespan=lifespan,
    )
