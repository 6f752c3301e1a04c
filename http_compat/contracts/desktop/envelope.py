"""The contract's error envelope `{success: false, error, code, details?}`, its model for the
OpenAPI document, and the guard that turns storage and ledger failures into the document's codes."""

from __future__ import annotations

import functools
import logging
import sqlite3
from collections.abc import Awaitable, Callable
from typing import Any, Literal

from pydantic import BaseModel
from starlette.responses import Response

from http_compat.api import Api
from http_compat.errors import ApiError
from http_compat.responses import json_response

log = logging.getLogger("atelier.http.desktop")

Handler = Callable[..., Awaitable[Response]]

# The codes this contract answers with; anything else is mapped from the status.
OWN_CODES = {
    "INVALID_PROMPT",
    "INVALID_PARAMETERS",
    "NOT_FOUND",
    "API_TIMEOUT",
    "API_ERROR",
    "STORAGE_ERROR",
    "DATABASE_ERROR",
    "PAYLOAD_TOO_LARGE",
    "METHOD_NOT_ALLOWED",
    "RATE_LIMITED",
}
CODE_OF_STATUS = {
    401: "UNAUTHORIZED",
    403: "FORBIDDEN",
    404: "NOT_FOUND",
    405: "METHOD_NOT_ALLOWED",
    413: "PAYLOAD_TOO_LARGE",
    415: "UNSUPPORTED_MEDIA_TYPE",
    421: "MISDIRECTED_REQUEST",
    429: "RATE_LIMITED",
    504: "API_TIMEOUT",
}


def render_error(error: ApiError) -> Response:
    if error.code in OWN_CODES:
        code = error.code
    elif error.status < 500:
        code = CODE_OF_STATUS.get(error.status, "INVALID_PARAMETERS")
    else:
        code = CODE_OF_STATUS.get(error.status, "API_ERROR")
    body: dict[str, Any] = {"success": False, "error": error.message, "code": code}
    if error.details is not None:
        body["details"] = error.details if isinstance(error.details, dict) else {"errors": error.details}
    return json_response(body, error.status, error.headers)


class ErrorBody(BaseModel):
    success: Literal[False]
    error: str
    code: str
    details: dict[str, Any] | None = None


# The error answers the routes document (OpenAPI `responses`).
BAD_REQUEST = {400: (ErrorBody, "Invalid request (INVALID_PROMPT or INVALID_PARAMETERS)")}
NOT_FOUND = {404: (ErrorBody, "Generation not found (NOT_FOUND)")}


def guarded(handler: Callable[..., Awaitable[Response]]) -> Callable[..., Awaitable[Response]]:
    """Storage and ledger failures as the document's STORAGE_ERROR / DATABASE_ERROR (logged)."""

    @functools.wraps(handler)
    async def wrapper(*args: Any) -> Response:
        try:
            return await handler(*args)
        except sqlite3.Error:
            log.exception("the ledger failed")
            raise ApiError(
                500, "The generation history could not be read or written", code="DATABASE_ERROR"
            ) from None
        except OSError:
            log.exception("the artifact store failed")
            raise ApiError(
                500, "A file could not be read or written in the image store", code="STORAGE_ERROR"
            ) from None

    return wrapper


def route(api: Api, method: str, path: str, **options: Any) -> Callable[[Handler], Handler]:
    """`api.route` for a guarded handler."""

    def register(handler: Handler) -> Handler:
        return api.route(method, path, **options)(guarded(handler))

    return register
