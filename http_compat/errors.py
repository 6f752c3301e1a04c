"""Errors in each contract's own words: `ApiError` carries the status, message and code; the
engine's errors and pydantic's validation errors are turned into one.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from pydantic import BaseModel, ValidationError
from starlette.responses import JSONResponse, Response

from core.errors import (
    ArtifactNotFound,
    AtelierError,
    CharacterNotFound,
    Conflict,
    HomeLocked,
    InvalidInput,
    LedgerUnavailable,
    ProductNotFound,
    RunNotFound,
)


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
    return JSONResponse({"detail": detail}, status_code=error.status, headers=error.headers)


def atelier_error(error: ApiError) -> Response:
    """Atelier's own envelope, for paths no contract owns (`/health` without a root contract):
    `{"error": "not_found", "message": ...}`."""
    code = (error.code or CODES.get(error.status, "error")).lower()
    return JSONResponse(
        {"error": code, "message": error.message}, status_code=error.status, headers=error.headers
    )


def jsonrpc_error(error: ApiError) -> Response:
    """MCP's envelope, for `/mcp`: a JSON-RPC error (Invalid Request), which MCP clients show to
    their user as is; a bare status would reach them as "Server returned an error response"."""
    body = {"jsonrpc": "2.0", "id": None, "error": {"code": -32600, "message": error.message}}
    return JSONResponse(body, status_code=error.status, headers=error.headers)


CODES = {
    400: "INVALID_PARAMETERS",
    401: "UNAUTHORIZED",
    403: "FORBIDDEN",
    404: "NOT_FOUND",
    405: "METHOD_NOT_ALLOWED",
    409: "CONFLICT",
    413: "PAYLOAD_TOO_LARGE",
    415: "UNSUPPORTED_MEDIA_TYPE",
    421: "MISDIRECTED_REQUEST",
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
    if isinstance(exc, RunNotFound | ArtifactNotFound | CharacterNotFound | ProductNotFound):
        return ApiError(404, str(exc), code="NOT_FOUND")
    if isinstance(exc, Conflict):
        return ApiError(409, str(exc), code="CONFLICT")
    if isinstance(exc, HomeLocked):
        return ApiError(503, str(exc), code="SERVICE_UNAVAILABLE")
    if isinstance(exc, LedgerUnavailable):
        return ApiError(503, str(exc), code="SERVICE_UNAVAILABLE", headers={"Retry-After": "5"})
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
