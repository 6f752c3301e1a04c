"""Declaring a contract: routes that document themselves, and the errors around every handler.

A contract declares its routes on an `Api`: each declaration both routes requests and documents
them, so `/<prefix>/openapi.json` cannot drift from what is served. Around every handler the
`Api` reads JSON bodies within the size cap and validates them, and turns every failure into
the contract's own error envelope with the right status: bad (or too deeply nested) JSON 400,
invalid fields 400 or 422 (the contract's choice), unknown ids 404, a method the path does not
take 405 (its `Allow` naming every method the path does), too large 413, a body not labelled
JSON 415, and never a stack trace (an unexpected exception is logged with its trace and
answered with a plain 500).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.exceptions import ExceptionMiddleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import BaseRoute, Mount, Route, WebSocketRoute, compile_path
from starlette.types import ASGIApp, Receive, Scope, Send
from starlette.websockets import WebSocket

from core.errors import AtelierError
from http_compat.errors import ApiError, ErrorRenderer, from_engine
from http_compat.inputs import BodyLimit, StreamedBody, read_json, validate
from http_compat.responses import base_url
from http_compat.routing import PrefixRouter

log = logging.getLogger("atelier.http")

Handler = Callable[..., Awaitable[Response]]
Lifespan = Callable[[], AbstractAsyncContextManager[None]]


@dataclass(slots=True)
class Param:
    """A path or query parameter, for the OpenAPI document."""

    name: str
    where: str = "query"
    type: str = "string"
    description: str = ""
    required: bool = False
    enum: Sequence[str] | None = None


@dataclass(slots=True)
class Endpoint:
    method: str
    path: str
    summary: str
    body: type[BaseModel] | None
    responses: dict[int, tuple[type[BaseModel] | None, str]]
    params: list[Param]
    description: str = ""
    example: Any = None
    media_type: str = "application/json"
    # A multipart/form-data body (its parts as a model's fields), read by the handler itself.
    form: type[BaseModel] | None = None


ResponseSpec = Mapping[int, type[BaseModel] | str | tuple[type[BaseModel] | None, str] | None]


@dataclass
class Api:
    """One contract: its routes, its error envelope, its OpenAPI document and docs page."""

    name: str
    title: str
    version: str
    description: str
    render_error: ErrorRenderer
    invalid_status: int = 422
    # The error envelope's model, for the OpenAPI document's error responses.
    error_model: type[BaseModel] | None = None
    routes: list[BaseRoute] = field(default_factory=list)
    endpoints: list[Endpoint] = field(default_factory=list)
    lifespans: list[Lifespan] = field(default_factory=list)
    # Starlette middleware around the contract's routes (e.g. a correlation-id header).
    middleware: list[Middleware] = field(default_factory=list)
    # Each declared path's handlers by method, and where its one route is in `routes`.
    _methods: dict[str, dict[str, Callable[[Request], Awaitable[Response]]]] = field(default_factory=dict)
    _route_index: dict[str, int] = field(default_factory=dict)
    # Routes whose bodies are streamed to their handler under a cap of their own (uploads).
    _streamed: list[StreamedBody] = field(default_factory=list)

    def route(
        self,
        method: str,
        path: str,
        *,
        summary: str,
        body: type[BaseModel] | None = None,
        responses: ResponseSpec | None = None,
        params: Iterable[Param] = (),
        description: str = "",
        example: Any = None,
        produces: str = "application/json",
        form: type[BaseModel] | None = None,
        streamed_body: tuple[int, str] | None = None,
    ) -> Callable[[Handler], Handler]:
        """Route `method path` to the handler, which is called as `handler(request)` or, with a
        `body` model, `handler(request, body)` once the JSON body has validated.

        `produces` is the media type of a success body that is not JSON (a file, a stream).
        `form` documents a multipart/form-data body (the model's fields are its parts; `bytes`
        ones are files), which the handler reads itself. `streamed_body` = (limit, setting): the
        body is not read ahead under the contract's JSON cap but streamed to the handler, refused
        with a 413 past `limit` bytes (see `BodyLimit`).
        """

        def register(handler: Handler) -> Handler:
            async def endpoint(request: Request) -> Response:
                try:
                    if body is None:
                        return await handler(request)
                    data = await read_json(request)
                    return await handler(request, validate(body, data, self.invalid_status))
                except ApiError as exc:
                    return self.render_error(exc)
                except AtelierError as exc:
                    return self.render_error(from_engine(exc, self.invalid_status))
                except Exception:
                    log.exception("%s %s failed", request.method, request.url.path)
                    return self.render_error(ApiError(500, "internal error; the server log has the details"))

            self._route_method(method, path, endpoint)
            if streamed_body is not None:
                limit, setting = streamed_body
                self._streamed.append(StreamedBody(method, compile_path(path)[0], limit, setting))
            every_param = [*_path_params(path), *params]
            self.endpoints.append(
                Endpoint(
                    method.lower(),
                    path,
                    summary,
                    body,
                    self._with_error_responses(_normalise(responses), body, every_param),
                    every_param,
                    description or (handler.__doc__ or "").strip(),
                    example,
                    produces,
                    form,
                )
            )
            return handler

        return register

    def _route_method(
        self, method: str, path: str, endpoint: Callable[[Request], Awaitable[Response]]
    ) -> None:
        """One Starlette route per path that dispatches on the method: for a method no route takes,
        Starlette answers 405 with the `Allow` of the first route matching the path, so a route per
        method would leave the path's other methods out of `Allow`."""
        methods = self._methods.setdefault(path, {})
        methods[method] = endpoint
        route = Route(path, _Dispatch(methods), methods=list(methods))
        where = self._route_index.setdefault(path, len(self.routes))
        if where == len(self.routes):
            self.routes.append(route)
        else:
            self.routes[where] = route

    async def _websocket_only(self, request: Request) -> Response:
        return self.render_error(
            ApiError(404, f"{request.url.path} only speaks WebSocket: open a WebSocket connection to it")
        )

    def _with_error_responses(
        self,
        responses: dict[int, tuple[type[BaseModel] | None, str]],
        body: type[BaseModel] | None,
        params: list[Param],
    ) -> dict[int, tuple[type[BaseModel] | None, str]]:
        """The error answers every route of this shape can give, where the route names none."""
        implied: dict[int, str] = {}
        if body is not None:
            implied |= {
                400: "The body is not valid JSON (or nested too deeply)",
                413: "The body is too large",
                415: "The body is not sent as `Content-Type: application/json`",
            }
            implied[self.invalid_status] = "A field is missing, of the wrong type or out of range"
        if any(p.where == "query" for p in params):
            implied.setdefault(self.invalid_status, "A query parameter is out of range")
        if any(p.where == "path" for p in params):
            implied[404] = "No such resource (or a malformed id)"
        for status, text in implied.items():
            responses.setdefault(status, (self.error_model, text))
        return responses

    def websocket(self, path: str, *, summary: str, description: str = "") -> Callable[[Any], Any]:
        """A WebSocket route; documented in the OpenAPI document's description of the path."""

        def register(
            handler: Callable[[WebSocket], Awaitable[None]],
        ) -> Callable[[WebSocket], Awaitable[None]]:
            self.routes.append(WebSocketRoute(path, handler))
            # A plain HTTP request: GET is told to open a WebSocket, any other method is a 405.
            self._route_method("GET", path, self._websocket_only)
            self.endpoints.append(
                Endpoint(
                    "get",
                    path,
                    f"WebSocket: {summary}",
                    None,
                    {
                        101: (None, "Switching Protocols: the WebSocket opens"),
                        404: (self.error_model, "A plain HTTP request (this path only speaks WebSocket)"),
                    },
                    _path_params(path),
                    description or (handler.__doc__ or "").strip(),
                )
            )
            return handler

        return register

    def mount(self, path: str, app: ASGIApp) -> None:
        self.routes.append(Mount(path, app=app))

    def build(self, max_body_bytes: int) -> ASGIApp:
        """The contract as one ASGI app, to mount at its prefix (or at the root)."""

        async def openapi(request: Request) -> Response:
            return JSONResponse(self.openapi(base_url(request)))

        async def docs(request: Request) -> Response:
            return HTMLResponse(DOCS_PAGE.replace("{{title}}", _html_escape(self.title)))

        async def http_error(request: Request, exc: Exception) -> Response:
            assert isinstance(exc, HTTPException)
            message = {404: f"no such endpoint: {request.method} {request.url.path}"}.get(exc.status_code)
            if exc.status_code == 405:
                message = f"{request.method} is not allowed on {request.url.path}"
            return self.render_error(
                ApiError(exc.status_code, message or str(exc.detail), headers=exc.headers)
            )

        # A router under the contract's middleware, not a Starlette app of its own: the app it is
        # mounted in already answers an exception that escapes with a 500, and each layer costs
        # every request (the outer app's routing, then this one's, then the route's).
        app: ASGIApp = ExceptionMiddleware(
            PrefixRouter(
                [
                    Route("/openapi.json", openapi, methods=["GET"]),
                    Route("/docs", docs, methods=["GET"]),
                    *self.routes,
                ]
            ),
            handlers={HTTPException: http_error},
        )
        # The contract's own middleware wraps the size cap, so it sees (and may decorate) 413s too.
        app = BodyLimit(app, limit=max_body_bytes, render_error=self.render_error, streamed=self._streamed)
        for cls, args, kwargs in reversed(self.middleware):
            app = cls(app, *args, **kwargs)
        return app

    def openapi(self, server_url: str = "") -> dict[str, Any]:
        """The OpenAPI 3.1 document of every declared endpoint."""
        models = {
            (model, mode)
            for endpoint in self.endpoints
            for model, mode in [
                *([(endpoint.body, "validation")] if endpoint.body else []),
                *([(endpoint.form, "validation")] if endpoint.form else []),
                *((m, "serialization") for m, _ in endpoint.responses.values() if m is not None),
            ]
        }
        refs, schemas = models_json_schema(
            sorted(models, key=lambda pair: (pair[0].__name__, pair[1])),
            ref_template="#/components/schemas/{model}",
        )
        paths: dict[str, dict[str, Any]] = {}
        for endpoint in self.endpoints:
            operation: dict[str, Any] = {
                "summary": endpoint.summary,
                "operationId": f"{endpoint.method}_{endpoint.path}".replace("/", "_")
                .replace("{", "")
                .replace("}", ""),
                "responses": {
                    str(status): {"description": text, **_content(endpoint, status, model, refs)}
                    for status, (model, text) in sorted(endpoint.responses.items())
                },
            }
            if endpoint.description:
                operation["description"] = endpoint.description
            if endpoint.params:
                operation["parameters"] = [
                    {
                        "name": p.name,
                        "in": p.where,
                        "required": p.required or p.where == "path",
                        "description": p.description,
                        "schema": {"type": p.type, **({"enum": list(p.enum)} if p.enum else {})},
                    }
                    for p in endpoint.params
                ]
            if endpoint.body is not None:
                content: dict[str, Any] = {"schema": refs[(endpoint.body, "validation")]}
                if endpoint.example is not None:
                    content["example"] = endpoint.example
                # An empty body is read as `{}`: it is only missing if the model requires a field.
                required = bool(endpoint.body.model_json_schema().get("required"))
                operation["requestBody"] = {"required": required, "content": {"application/json": content}}
            if endpoint.form is not None:
                form_schema = {"schema": refs[(endpoint.form, "validation")]}
                operation["requestBody"] = {"required": True, "content": {"multipart/form-data": form_schema}}
            paths.setdefault(endpoint.path, {})[endpoint.method] = operation
        document: dict[str, Any] = {
            "openapi": "3.1.0",
            "info": {"title": self.title, "version": self.version, "description": self.description},
            "paths": paths,
            "components": {"schemas": schemas.get("$defs", {})},
        }
        if server_url:
            document["servers"] = [{"url": server_url}]
        return document


class _Dispatch:
    """A path's ASGI app: the handler of the request's method answers. Each handler turns every
    failure into the contract's error answer (see `Api.route`), so the exception wrapper Starlette
    puts around a plain function's route would have nothing to catch, for a cost on every request."""

    def __init__(self, methods: Mapping[str, Callable[[Request], Awaitable[Response]]]) -> None:
        self.methods = methods

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        method = scope["method"]
        # Starlette lets HEAD into any route that takes GET.
        response = await self.methods["GET" if method == "HEAD" else method](Request(scope, receive, send))
        await response(scope, receive, send)


def _content(
    endpoint: Endpoint, status: int, model: type[BaseModel] | None, refs: Mapping[Any, Any]
) -> dict[str, Any]:
    media_type = endpoint.media_type if 200 <= status < 300 else "application/json"
    if model is not None and media_type == "text/event-stream":
        # An event stream's schema describes each event: its name, and `data` holding the model as JSON.
        event = {
            "type": "object",
            "required": ["data"],
            "properties": {
                "event": {"type": "string"},
                "data": {
                    "type": "string",
                    "contentMediaType": "application/json",
                    "contentSchema": refs[(model, "serialization")],
                },
            },
        }
        return {"content": {media_type: {"schema": event}}}
    if model is not None:
        return {"content": {media_type: {"schema": refs[(model, "serialization")]}}}
    if 200 <= status < 300 and status != 204 and media_type != "application/json":
        return {"content": {media_type: {"schema": {"type": "string"}}}}
    return {}


def _normalise(responses: ResponseSpec | None) -> dict[int, tuple[type[BaseModel] | None, str]]:
    result: dict[int, tuple[type[BaseModel] | None, str]] = {}
    for status, spec in (responses or {200: None}).items():
        if isinstance(spec, tuple):
            result[status] = spec
        elif isinstance(spec, str):
            result[status] = (None, spec)
        elif spec is None:
            result[status] = (None, _REASONS.get(status, "Response"))
        else:
            result[status] = (spec, _REASONS.get(status, "Response"))
    return result


def _path_params(path: str) -> list[Param]:
    names = [
        part[1:-1].split(":")[0] for part in path.split("/") if part.startswith("{") and part.endswith("}")
    ]
    return [Param(name, "path", required=True) for name in names]


def _html_escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


_REASONS = {
    200: "OK",
    201: "Created",
    202: "Accepted",
    204: "No Content",
    400: "Bad Request",
    404: "Not Found",
    409: "Conflict",
    413: "Payload Too Large",
    422: "Unprocessable Entity",
    429: "Too Many Requests",
    501: "Not Implemented",
    503: "Service Unavailable",
}

# The browsable docs page: no CDN (Atelier runs offline), so it renders openapi.json itself.
DOCS_PAGE = (Path(__file__).with_name("docs.html")).read_text(encoding="utf-8")
