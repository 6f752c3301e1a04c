"""What every contract module shares.

A contract declares its routes on an `Api`: each declaration both routes requests and documents
them, so `/<prefix>/openapi.json` cannot drift from what is served. Around every handler the
`Api` reads JSON bodies within the size cap and validates them, and turns every failure into
the contract's own error envelope with the right status: bad JSON 400, invalid fields 400 or
422 (the contract's choice), unknown ids 404, too large 413, and never a stack trace (an
unexpected exception is logged with its trace and answered with a plain 500).
"""

from __future__ import annotations

import ipaddress
import json
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import anyio
from pydantic import BaseModel, ValidationError
from pydantic.json_schema import models_json_schema
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import HTTPConnection, Request
from starlette.responses import FileResponse, HTMLResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import BaseRoute, Mount, Route, WebSocketRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from starlette.websockets import WebSocket

from core.engine import Engine
from core.errors import ArtifactNotFound, AtelierError, Conflict, HomeLocked, InvalidInput, RunNotFound
from core.models import Artifact, Run

log = logging.getLogger("atelier.http")

Handler = Callable[..., Awaitable[Response]]
Lifespan = Callable[[], AbstractAsyncContextManager[None]]


class ApiError(Exception):
    """An answer other than success: `status`, a message a person can act on, and optionally the
    contract's machine-readable `code`, structured `details` and extra `headers`."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        code: str | None = None,
        details: Any = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.details = details
        self.headers = dict(headers or {})


ErrorRenderer = Callable[[ApiError], Response]


class Detail(BaseModel):
    """FastAPI's error body: a message, or for a body that did not validate, a list of errors."""

    detail: Any


def fastapi_error(error: ApiError) -> Response:
    """The error envelope of the FastAPI services: `{"detail": ...}`, a list of `{loc, msg, type}`
    for a 422 from validation."""
    detail: Any = error.details if error.status == 422 and isinstance(error.details, list) else error.message
    return json_response({"detail": detail}, error.status, error.headers)


def is_loopback(host: str) -> bool:
    """Whether a host name or address is this machine (`localhost`, 127.0.0.0/8, ::1)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


# The contract-neutral code of each status; contracts with their own codes map these.
CODES = {
    400: "INVALID_PARAMETERS",
    401: "UNAUTHORIZED",
    404: "NOT_FOUND",
    405: "METHOD_NOT_ALLOWED",
    409: "CONFLICT",
    413: "PAYLOAD_TOO_LARGE",
    422: "INVALID_PARAMETERS",
    429: "RATE_LIMITED",
    500: "INTERNAL_ERROR",
    501: "NOT_IMPLEMENTED",
    503: "SERVICE_UNAVAILABLE",
}


def from_engine(exc: AtelierError, invalid_status: int = 400) -> ApiError:
    """The HTTP answer to an engine error."""
    if isinstance(exc, InvalidInput):
        return ApiError(invalid_status, str(exc), code=CODES[invalid_status], details={"field": exc.field})
    if isinstance(exc, RunNotFound | ArtifactNotFound):
        return ApiError(404, str(exc), code="NOT_FOUND")
    if isinstance(exc, Conflict):
        return ApiError(409, str(exc), code="CONFLICT")
    if isinstance(exc, HomeLocked):
        return ApiError(503, str(exc), code="SERVICE_UNAVAILABLE")
    return ApiError(400, str(exc), code="INVALID_PARAMETERS")


def describe_validation(error: ValidationError) -> str:
    """Pydantic's errors as one line a person can act on: `width: must be >= 64; prompt: required`."""
    parts = []
    for item in error.errors(include_url=False):
        where = ".".join(str(part) for part in item["loc"]) or "body"
        message = item["msg"]
        if item["type"] == "missing":
            message = "is required"
        elif item["type"] == "extra_forbidden":
            message = "is not a field of this request"
        parts.append(f"{where}: {message}")
    return "; ".join(parts)


def validation_details(error: ValidationError) -> list[dict[str, Any]]:
    """The errors as `[{"loc": [...], "msg": ..., "type": ...}]` (the FastAPI shape, without inputs)."""
    return [
        {"loc": ["body", *item["loc"]], "msg": item["msg"], "type": item["type"]}
        for item in error.errors(include_url=False)
    ]


# --- reading requests -----------------------------------------------------------------------


async def read_json(request: Request) -> Any:
    """The request's JSON body (None when empty). Malformed JSON is a 400."""
    body = await request.body()
    if not body.strip():
        return None
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ApiError(400, f"the request body is not valid JSON ({exc})", code="INVALID_JSON") from None


M = TypeVar("M", bound=BaseModel)


def validate(model: type[M], data: Any, invalid_status: int = 422) -> M:
    """`data` as `model`, or the contract's validation error naming each bad field."""
    try:
        return model.model_validate({} if data is None else data)
    except ValidationError as exc:
        raise ApiError(
            invalid_status,
            describe_validation(exc),
            code=CODES[invalid_status],
            details=validation_details(exc),
        ) from None


def query_int(
    request: Request, name: str, default: int, *, low: int = 0, high: int = 2**31, invalid_status: int = 422
) -> int:
    """An integer query parameter in [low, high], or the contract's validation error."""
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ApiError(invalid_status, f"{name}: must be an integer (got {raw[:40]!r})") from None
    if not low <= value <= high:
        raise ApiError(invalid_status, f"{name}: must be between {low} and {high} (got {value})")
    return value


class BodyLimit:
    """Refuse request bodies over `limit` bytes with a 413 in the contract's shape, whether the
    client declares the length or streams the body."""

    def __init__(self, app: ASGIApp, limit: int, render_error: ErrorRenderer) -> None:
        self.app = app
        self.limit = limit
        self.render_error = render_error

    def _too_large(self) -> ApiError:
        return ApiError(
            413, f"the request body is larger than {self.limit:,} bytes", code="PAYLOAD_TOO_LARGE"
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            await self.render_error(self._too_large())(scope, receive, send)
            return
        seen = 0

        async def limited() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise self._too_large()
            return message

        await self.app(scope, limited, send)


# --- answering ------------------------------------------------------------------------------


def json_response(data: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> Response:
    return JSONResponse(data, status_code=status, headers=dict(headers or {}))


def iso(ts: float | None, *, millis: bool = False, zulu: bool = True) -> str | None:
    """Epoch seconds as ISO 8601 UTC: `2025-01-15T10:30:00Z` (`.000Z` with millis)."""
    if ts is None:
        return None
    moment = datetime.fromtimestamp(ts, UTC)
    text = moment.isoformat(timespec="milliseconds" if millis else "seconds")
    return text.replace("+00:00", "Z") if zulu else text


def base_url(request: HTTPConnection) -> str:
    """This contract's absolute http(s) base URL as the client reached it, its prefix included
    (Starlette's `request.base_url` stops at the outer app's root)."""
    url = request.url
    scheme = {"ws": "http", "wss": "https"}.get(url.scheme, url.scheme)
    return f"{scheme}://{url.netloc}{request.scope.get('root_path', '')}".rstrip("/")


async def artifact_response(engine: Engine, run: Run, filename: str) -> Response:
    """One of a run's files, streamed from disk where the store keeps it there."""
    artifact = find_artifact(run, filename)
    path = engine.artifact_path(artifact)
    headers = {"Cache-Control": "private, max-age=31536000, immutable", "ETag": f'"{artifact.sha256}"'}
    if path is not None and path.is_file():
        return FileResponse(path, media_type=artifact.media_type, headers=headers)
    _, data = await engine.read_artifact(run.id, artifact.filename)
    return Response(data, media_type=artifact.media_type, headers=headers)


def find_artifact(run: Run, filename: str) -> Artifact:
    for artifact in run.artifacts:
        if artifact.filename == filename:
            return artifact
    raise ArtifactNotFound(run.id, filename)


def file_response(path: Path, media_type: str, filename: str) -> Response:
    """A file on disk, streamed, as a download named `filename`."""
    return FileResponse(path, media_type=media_type, filename=filename)


# --- realtime -------------------------------------------------------------------------------


async def run_updates(engine: Engine, run_id: str) -> AsyncIterator[Run]:
    """The run now, then again at each change or progress step, until it is final (or deleted)."""
    with engine.events.subscribe(run_id) as events:
        run = await engine.get_run(run_id)
        yield run
        while not run.status.is_final:
            event = await events.get()
            if event.kind == "run" and event.run is None:
                return  # deleted
            if event.kind in ("run", "progress"):
                try:
                    run = await engine.get_run(run_id)
                except RunNotFound:
                    return
                yield run


def sse_response(events: AsyncIterator[tuple[str, Any]], *, heartbeat_s: float = 15.0) -> Response:
    """Server-Sent Events from `(event name, JSON data)` pairs, with comment heartbeats while idle."""

    async def body() -> AsyncIterator[bytes]:
        iterator = aiter(events)
        while True:
            item = None
            with anyio.move_on_after(heartbeat_s):
                try:
                    item = await anext(iterator)
                except StopAsyncIteration:
                    return
            if item is None:
                yield b": keep-alive\n\n"
                continue
            name, data = item
            yield f"event: {name}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()

    return StreamingResponse(
        body(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


class RateLimiter:
    """At most `limit` requests per `window_s` per key (a sliding window)."""

    def __init__(self, limit: int, window_s: float = 60.0) -> None:
        self.limit = limit
        self.window_s = window_s
        self._hits: dict[str, deque[float]] = {}

    def check(self, key: str) -> float:
        """Record a request; returns 0, or the seconds to wait when over the limit (not recorded)."""
        now = time.monotonic()
        hits = self._hits.setdefault(key, deque())
        while hits and hits[0] <= now - self.window_s:
            hits.popleft()
        if len(hits) >= self.limit:
            return max(0.0, hits[0] + self.window_s - now)
        hits.append(now)
        return 0.0


# --- declaring a contract -------------------------------------------------------------------


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
    ) -> Callable[[Handler], Handler]:
        """Route `method path` to the handler, which is called as `handler(request)` or, with a
        `body` model, `handler(request, body)` once the JSON body has validated.

        `produces` is the media type of a success body that is not JSON (a file, a stream).
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

            self.routes.append(Route(path, endpoint, methods=[method], name=handler.__name__))
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
                )
            )
            return handler

        return register

    def _with_error_responses(
        self,
        responses: dict[int, tuple[type[BaseModel] | None, str]],
        body: type[BaseModel] | None,
        params: list[Param],
    ) -> dict[int, tuple[type[BaseModel] | None, str]]:
        """The error answers every route of this shape can give, where the route names none."""
        implied: dict[int, str] = {}
        if body is not None:
            implied |= {400: "The body is not valid JSON", 413: "The body is too large"}
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
            self.endpoints.append(
                Endpoint(
                    "get",
                    path,
                    f"WebSocket: {summary}",
                    None,
                    {
                        101: (None, "Switching Protocols: the WebSocket opens"),
                        404: (None, "A plain HTTP request (this path only speaks WebSocket)"),
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

        app = Starlette(
            routes=[
                Route("/openapi.json", openapi, methods=["GET"]),
                Route("/docs", docs, methods=["GET"]),
                *self.routes,
            ],
            exception_handlers={HTTPException: http_error},
            # The contract's own middleware wraps the size cap, so it sees (and may decorate) 413s too.
            middleware=[
                *self.middleware,
                Middleware(BodyLimit, limit=max_body_bytes, render_error=self.render_error),
            ],
        )
        return app

    def openapi(self, server_url: str = "") -> dict[str, Any]:
        """The OpenAPI 3.1 document of every declared endpoint."""
        models = {
            (model, mode)
            for endpoint in self.endpoints
            for model, mode in [
                *([(endpoint.body, "validation")] if endpoint.body else []),
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
                operation["requestBody"] = {"required": True, "content": {"application/json": content}}
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


def _content(
    endpoint: Endpoint, status: int, model: type[BaseModel] | None, refs: Mapping[Any, Any]
) -> dict[str, Any]:
    media_type = endpoint.media_type if 200 <= status < 300 else "application/json"
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
