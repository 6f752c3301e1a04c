"""Reading requests: JSON bodies within a size cap, validated into pydantic models, and query
parameters in range; every failure an `ApiError` the contract renders in its envelope.

A body is read as JSON only when its Content-Type says JSON: a web page can send `text/plain`
(or form) bodies to any address without a CORS preflight, so accepting them would let any page
drive the API whatever the origin check.
"""

from __future__ import annotations

import json
import re
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from http_compat.errors import CODES, ApiError, ErrorRenderer, describe_validation, validation_details

# No contract's body is more than a few levels deep; deeper JSON would only exhaust the stack of
# the parser, the validators or the encoders after them (a RecursionError, answered as a 500).
MAX_JSON_DEPTH = 64


def is_json(content_type: str | None) -> bool:
    """Whether a Content-Type names JSON: `application/json` or `application/*+json`, any parameters."""
    media = (content_type or "").split(";", 1)[0].strip().lower()
    return media == "application/json" or (media.startswith("application/") and media.endswith("+json"))


async def read_json(request: Request) -> Any:
    """The request's JSON body (None when empty). A body not labelled JSON is a 415; malformed or
    too deeply nested JSON a 400."""
    body = await request.body()
    if not body.strip():
        return None
    content_type = request.headers.get("content-type")
    if not is_json(content_type):
        raise ApiError(
            415,
            f"send the body as JSON with 'Content-Type: application/json' "
            f"(got {repr(content_type[:100]) if content_type else 'no Content-Type'})",
            code="UNSUPPORTED_MEDIA_TYPE",
        )
    try:
        data = json.loads(body)
    except RecursionError:  # nested past the parser's own stack
        raise _too_deep() from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise ApiError(400, f"the request body is not valid JSON ({exc})", code="INVALID_JSON") from None
    if json_depth(data) > MAX_JSON_DEPTH:
        raise _too_deep()
    return data


def _too_deep() -> ApiError:
    return ApiError(
        400, f"the JSON is nested too deeply (at most {MAX_JSON_DEPTH} levels)", code="INVALID_JSON"
    )


def json_depth(value: Any) -> int:
    """How many arrays and objects deep `value` nests (0 for a scalar), without recursing."""
    deepest = 0
    pending = [(value, 1)]
    while pending:
        item, depth = pending.pop()
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else None
        if children is None:
            continue
        deepest = max(deepest, depth)
        pending.extend((child, depth + 1) for child in children)
    return deepest


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


@dataclass(frozen=True, slots=True)
class StreamedBody:
    """A route whose body is streamed to its handler under a cap of its own (a multipart upload
    of several images), instead of being read ahead under the JSON cap."""

    method: str
    # The route's path inside the contract, as a regular expression (Starlette's `compile_path`).
    path: re.Pattern[str]
    limit: int
    # The setting that sets `limit`, named in the 413.
    setting: str


def route_path(scope: Scope) -> str:
    """The path inside the app the request reached (without the prefix it is mounted at)."""
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    if root and path.startswith(root):
        return path[len(root) :] or "/"
    return path


class BodyTooLarge(ApiError):
    """A 413: raised by a streamed body's `receive` once the body passes its cap, and so out of
    whatever the handler was reading it with (the route answers it in the contract's envelope)."""

    def __init__(self, limit: int, setting: str) -> None:
        super().__init__(
            413,
            f"the request body is larger than {limit:,} bytes (the cap follows {setting})",
            code="PAYLOAD_TOO_LARGE",
        )


class BodyLimit:
    """Refuse request bodies over `limit` bytes with a 413 in the contract's shape, whether the
    client declares the length or streams the body.

    The body is read (up to the cap) before the app runs, then handed on: handlers read whole
    bodies anyway, and so a streamed body over the cap is answered here, in the right envelope,
    rather than failing half-way through a handler (or an SDK's transport).

    `streamed` routes are the exception: their bodies may be far larger (uploads), so they are not
    read ahead into memory but counted as the handler reads them (a multipart parser spools files
    to disk); past their own cap, `receive` raises `BodyTooLarge`. A declared length over it is
    refused before anything is read.
    """

    def __init__(
        self, app: ASGIApp, limit: int, render_error: ErrorRenderer, streamed: Sequence[StreamedBody] = ()
    ) -> None:
        self.app = app
        self.limit = limit
        self.render_error = render_error
        self.streamed = tuple(streamed)

    def _too_large(self) -> ApiError:
        return ApiError(
            413,
            f"the request body is larger than {self.limit:,} bytes (the cap follows "
            "ATELIER_MAX_INPUT_BYTES: a source image of that size, base64-encoded, plus 1 MB)",
            code="PAYLOAD_TOO_LARGE",
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        declared = headers.get(b"content-length")
        if declared is None and b"transfer-encoding" not in headers:
            await self.app(scope, receive, send)  # no body (a GET): nothing to count
            return
        for rule in self.streamed:
            if scope["method"] == rule.method and rule.path.fullmatch(route_path(scope)):
                await self._streamed(rule, declared, scope, receive, send)
                return
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            await self.render_error(self._too_large())(scope, receive, send)
            return
        body = bytearray()
        read: deque[Message] = deque()
        while True:
            message = await receive()
            if message["type"] != "http.request":
                read.append(message)  # the client left
                break
            body += message.get("body", b"")
            if len(body) > self.limit:
                await self.render_error(self._too_large())(scope, receive, send)
                return
            if not message.get("more_body", False):
                read.appendleft({"type": "http.request", "body": bytes(body), "more_body": False})
                break

        async def replay() -> Message:
            return read.popleft() if read else await receive()

        await self.app(scope, replay, send)

    async def _streamed(
        self, rule: StreamedBody, declared: bytes | None, scope: Scope, receive: Receive, send: Send
    ) -> None:
        if declared is not None and declared.isdigit() and int(declared) > rule.limit:
            await self.render_error(BodyTooLarge(rule.limit, rule.setting))(scope, receive, send)
            return
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > rule.limit:
                    raise BodyTooLarge(rule.limit, rule.setting)
            return message

        await self.app(scope, counted, send)
