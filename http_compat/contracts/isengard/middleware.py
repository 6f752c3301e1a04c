"""Around every Isengard route: correlation ids, and the document's per-client rate limits."""

from __future__ import annotations

import contextvars
import logging
import math
import re
import uuid

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from http_compat.contracts.isengard.envelope import render_error
from http_compat.errors import ApiError
from http_compat.inputs import route_path
from http_compat.ratelimit import RateLimiter

CORRELATION_RE = re.compile(r"^[\x21-\x7e]{1,128}$")
CORRELATION_ID: contextvars.ContextVar[str] = contextvars.ContextVar("isengard_correlation_id", default="")
request_log = logging.getLogger("atelier.isengard")


class CorrelationId:
    """Give each request a correlation id, echo it on the response, log the request with it."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        raw = b""
        for name, value in scope["headers"]:
            if name == b"x-correlation-id":
                raw = value  # the last one, as a dict of the headers would keep
        given = raw.decode("latin-1")
        cid = given if CORRELATION_RE.fullmatch(given) else uuid.uuid4().hex
        token = CORRELATION_ID.set(cid)

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != b"x-correlation-id"]
                message["headers"] = [*headers, (b"x-correlation-id", cid.encode())]
                # An access line: `atelier serve` shows it only at ATELIER_LOG_LEVEL=debug.
                if request_log.isEnabledFor(logging.INFO):
                    request_log.info(
                        "%s %s -> %s (correlation id %s)",
                        scope["method"],
                        scope["path"],
                        message["status"],
                        cid,
                        extra={"correlation_id": cid},
                    )
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            CORRELATION_ID.reset(token)


class RateLimits:
    """The document's per-client limits, counted before anything else looks at the request."""

    def __init__(self, app: ASGIApp, rules: list[tuple[str, re.Pattern[str], RateLimiter]]) -> None:
        self.app = app
        self.rules = rules

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            path = None
            for method, pattern, limiter in self.rules:
                if scope["method"] != method:
                    continue
                if path is None:
                    path = route_path(scope)
                if pattern.fullmatch(path):
                    host = (scope.get("client") or ("unknown", 0))[0]
                    wait = limiter.check(str(host))
                    if wait > 0:
                        seconds = max(1, math.ceil(wait))
                        response = render_error(
                            ApiError(
                                429,
                                f"Rate limit exceeded. Try again in {seconds} seconds.",
                                headers={
                                    "Retry-After": str(seconds),
                                    "X-RateLimit-Limit": str(limiter.limit),
                                },
                            )
                        )
                        await response(scope, receive, send)
                        return
                    break
        await self.app(scope, receive, send)
