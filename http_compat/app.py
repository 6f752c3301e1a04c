"""The HTTP front door: `/health`, MCP over Streamable HTTP at `/mcp`, and the five REST
contracts of ../shared/contracts, each at its prefix (`/adgen`, `/comfygen`, `/pod`,
`/isengard`, `/desktop`) and optionally one of them at `/` as well (`root_contract`), and the
storefront's shop at `/shop` (`http_compat.shop`).

Around all of it, outermost first: the Host/Origin guard (`origins`), CORS answers for the
origins in ATELIER_ALLOWED_ORIGINS (none otherwise), and the bearer token when one is set.
Every refusal comes in the envelope of the contract the path belongs to (`error_renderer_for`).
"""

from __future__ import annotations

import importlib
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import AsyncExitStack, asynccontextmanager

from mcp.server.mcpserver import MCPServer
from mcp.server.transport_security import TransportSecuritySettings
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route

from core.engine import Engine
from core.errors import InvalidInput
from core.settings import Settings
from http_compat.api import Api
from http_compat.errors import ApiError, ErrorRenderer, atelier_error, jsonrpc_error
from http_compat.inputs import BodyLimit
from http_compat.origins import EXPOSED_HEADERS, HostOriginGuard, OriginPolicy
from http_compat.routing import PrefixRouter
from http_compat.security import BearerAuth
from http_compat.shop import build as build_shop
from http_compat.studio import build as build_studio
from http_compat.studio.pages import login_prompt, safe_next
from http_compat.studio.session import StudioGate

# Contract name -> module in http_compat.contracts; each has `build(engine, settings) -> Api`.
CONTRACTS = ("adgen", "comfygen", "pod", "isengard", "desktop")


def build_contract(name: str, engine: Engine, settings: Settings) -> Api:
    if name not in CONTRACTS:
        raise InvalidInput("root_contract", f"must be one of {', '.join(CONTRACTS)} (got {name!r})")
    module = importlib.import_module(f"http_compat.contracts.{name}")
    return module.build(engine, settings)


def error_renderer_for(prefixed: Mapping[str, Api], root: Api | None) -> Callable[[str], ErrorRenderer]:
    """For a path, the envelope its errors come in: JSON-RPC for `/mcp`, else the contract its
    prefix names, else the root contract, else Atelier's own."""

    def renderer(path: str) -> ErrorRenderer:
        if path == "/mcp" or path.startswith("/mcp/"):
            return jsonrpc_error
        for name, api in prefixed.items():
            if path == f"/{name}" or path.startswith(f"/{name}/"):
                return api.render_error
        return root.render_error if root is not None else atelier_error

    return renderer


async def to_slash(request: Request) -> Response:
    """The prefix's own page: `/shop` -> `/shop/`, query kept."""
    url = request.url
    return RedirectResponse(url.replace(path=url.path + "/"), status_code=307)


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
                "relay": status["relay"],
                "queue": status["queue"],
                "runs": status["runs"],
                **({"dispatch": status["dispatch"]} if "dispatch" in status else {}),
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

    # The SDK's own DNS-rebinding check is off: HostOriginGuard applies the same policy to /mcp as to
    # every other route, from the same settings. Kept on, the SDK's check would be a second list to
    # keep in step, and it cannot express ours (it lets any loopback port in as an origin, and knows
    # neither same-origin nor Sec-Fetch-Site): one of the two would always refuse what the other
    # allows. The SDK still insists on a JSON Content-Type for POST /mcp.
    security = TransportSecuritySettings(enable_dns_rebinding_protection=False)
    limit = settings.max_request_bytes
    mcp_app = mcp.streamable_http_app(
        streamable_http_path="/mcp",
        transport_security=security,
        host=settings.host,
        # The SDK caps bodies at 4 MiB by default; a source image may be ATELIER_MAX_INPUT_BYTES.
        max_request_body_size=limit,
    )
    # Our BodyLimit in front of the SDK's (same cap): a 413 that names the setting to change.
    routes: list[BaseRoute] = [
        Route(route.path, endpoint=BodyLimit(route.endpoint, limit=limit, render_error=jsonrpc_error))
        if isinstance(route, Route)
        else route
        for route in mcp_app.routes
    ]
    routes += [Mount(f"/{name}", app=api.build(limit)) for name, api in apis.items() if name in contracts]
    # The storefront's shop (not a contract: always there, the default publishing platform).
    shop = build_shop(engine, settings)
    routes.append(Mount("/shop", app=shop.build(limit)))
    # The studio, at /studio always and at the root when no contract takes it (one app, two mounts).
    studio = build_studio(engine, settings)
    studio_app = studio.build(limit)
    routes.append(Mount("/studio", app=studio_app))
    # `/shop` answers 307 to `/shop/` as before, rather than falling to the root mount's 404.
    mounted = [route.path for route in routes if isinstance(route, Mount)]
    routes += [Route(path, to_slash, methods=["GET", "HEAD"]) for path in mounted]
    if root_contract is not None:
        # The root contract answers everything else, its own /health included.
        routes.append(Mount("", app=apis[root_contract].build(limit)))
    else:
        routes.append(Route("/health", health, methods=["GET"]))
        routes.append(Mount("", app=studio_app))

    prefixed = {name: api for name, api in apis.items() if name in contracts} | {
        "shop": shop,
        "studio": studio,
    }
    taken = ("/mcp", "/health", *(f"/{name}" for name in prefixed))

    def studio_prefix(path: str) -> str | None:
        """The prefix the studio answers `path` under, or None when the path is not the studio's."""
        if path == "/studio" or path.startswith("/studio/"):
            return "/studio"
        if root_contract is None and not any(path == p or path.startswith(p + "/") for p in taken):
            return ""
        return None

    renderer_for = error_renderer_for(prefixed, apis[root_contract] if root_contract is not None else None)

    async def unrouted(request: Request, exc: Exception) -> Response:
        """A path no mount takes (some bytes, such as a newline, never match a prefix): answered in
        the envelope of the contract its prefix names, or of the root contract."""
        assert isinstance(exc, HTTPException)
        path = request.url.path
        message = f"no such endpoint: {request.method} {path[:200]!r}"
        return renderer_for(path)(ApiError(exc.status_code, message))

    policy = OriginPolicy.from_settings(settings)
    middleware = [Middleware(HostOriginGuard, policy=policy, renderer_for=renderer_for)]
    if policy.allowed_origins:
        # Outside the token check: browsers send preflights without Authorization.
        middleware.append(
            Middleware(
                CORSMiddleware,
                allow_origins=policy.cors_origins,
                allow_methods=["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"],
                allow_headers=["*"],
                expose_headers=EXPOSED_HEADERS,
                max_age=600,
            )
        )
    if settings.api_token is not None:
        middleware.append(
            Middleware(
                BearerAuth,
                token=settings.api_token.get_secret_value(),
                renderer_for=renderer_for,
                studio=StudioGate(
                    settings.api_token.get_secret_value(),
                    studio_prefix,
                    lambda prefix, path: login_prompt(prefix, next_path=safe_next(prefix, path)),
                ),
            )
        )
    app = Starlette(middleware=middleware, lifespan=lifespan, exception_handlers={HTTPException: unrouted})
    # Routed by prefix: a contract's request tries its own mount, not every mount before it.
    app.router = PrefixRouter(routes, lifespan=lifespan)
    return app
