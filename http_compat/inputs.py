"""Reading requests: JSON bodies within a size cap, validated into pydantic models, and query
parameters in range; every failure an `ApiError` the contract renders in its envelope.
"""

from __future__ import annotations

import json
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from http_compat.errors import CODES, ApiError, ErrorRenderer, describe_validation, validation_details

# No contract's body is more than a few levels deep; deeper JSON would only exhaust the stack of
# the parser, the validators or the encoders after them (a RecursionError, answered as a 500).
MAX_JSON_DEPTH = 64


async def read_json(request: Request) -> Any:
    """The request's JSON body (None when empty). Malformed or too deeply nested JSON is a 400."""
    body = await request.body()
    if not body.strip():
        return None
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
