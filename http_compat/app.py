"""The HTTP front door: `/health`, MCP over Streamable HTTP at `/mcp`, and the five REST
contracts of ../shared/contracts, each at its prefix (`/adgen`, `/comfygen`, `/pod`,
`/isengard`, `/desktop`) and optionally one of them at `/` as well (`root_contract`).
"""

from __future__ import annotations

import importlib
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

from mcp.server.mcpserver import MCPServer
from mcp.server.transport_security import TransportSecuritySettings
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Mount, Route

from core.engine import Engine
from core.errors import InvalidInput
from core.settings import Settings
from http_compat.api import Api
from http_compat.errors import ApiError
from http_compat.security import BearerAuth

# Contract name -> module in http_compat.contracts; each has `build(engine, settings) -> Api`.
CONTRACTS = ("adgen", "comfygen", "pod", "isengard", "desktop")


def build_contract(name: str, engine: Engine, settings: Settings) -> Api:
    if name not in CONTRACTS:
        raise InvalidInput("root_contract", f"must be one of {', '.join(CONTRACTS)} (got {name!r})")
    module = importlib.import_module(f"http_compat.contracts.{name}")
    return module.build(engine, settings)


def build_app(
    engine: Engine,
    settings: Settings,
    mcp: MCPServer | None = None,
    *,
    contracts: tuple[str, ...] = CONTRACTS,
) -> Starlette:
    """The Starlette app over `engine`; tests build their own with their own engine."""
    root_contract = settings.root_contract
    if mcp is None:
        from mcp_server.server import build_mcp

        mcp = build_mcp(engine, expose_paths=False)
    apis = {name: build_contract(name, engine, settings) for name in contracts}
    if root_contract is not None and root_contract not in apis:
        apis[root_contract] = build_contract(root_contract, engine, settings)

    async def health(request: Request) -> Response:
        status = await engine.status()
        return JSONResponse(
            {
                "status": "ok" if status["healthy"] else "degraded",
                "backends": status["backends"],
                "storage": status["storage"],
                "ledger": status["ledger"],
                "queue": status["queue"],
                "runs": status["runs"],
            },
            status_code=200 if status["healthy"] else 503,
        )

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            await stack.enter_async_context(mcp.session_manager.run())
            for api in apis.values():
                for contract_lifespan in api.lifespans:
                    await stack.enter_async_context(contract_lifespan())
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
    limit = settings.max_request_bytes
    routes: list[BaseRoute] = [*mcp_app.routes]
    routes += [Mount(f"/{name}", app=api.build(limit)) for name, api in apis.items() if name in contracts]
    if root_contract is not None:
        # The root contract answers everything else, its own /health included.
        routes.append(Mount("", app=apis[root_contract].build(limit)))
    else:
        routes.append(Route("/health", health, methods=["GET"]))

    async def unrouted(request: Request, exc: Exception) -> Response:
        """A path no mount takes (some bytes, such as a newline, never match a prefix): answered in
        the envelope of the contract its prefix names, or of the root contract."""
        assert isinstance(exc, HTTPException)
        path = request.url.path
        owner = next((api for name, api in apis.items() if path.startswith(f"/{name}/")), None)
        owner = owner or (apis[root_contract] if root_contract is not None else None)
        message = f"no such endpoint: {request.method} {path[:200]!r}"
        if owner is not None:
            return owner.render_error(ApiError(exc.status_code, message))
        return JSONResponse({"error": "not_found", "message": message}, status_code=exc.status_code)

    middleware = []
    if settings.api_token is not None:
        middleware.append(Middleware(BearerAuth, token=settings.api_token.get_secret_value()))
    return Starlette(
        routes=routes,
        middleware=middleware,
        lifespan=lifespan,
        exception_handlers={HTTPException: unrouted},
    )
