"""Isengard's error envelope, `{"detail": "message"}`, and its model for the OpenAPI document."""

from __future__ import annotations

from pydantic import BaseModel
from starlette.responses import Response

from http_compat.errors import ApiError
from http_compat.responses import json_response


class Detail(BaseModel):
    detail: str


def render_error(error: ApiError) -> Response:
    return json_response({"detail": error.message}, error.status, error.headers)


def not_found(what: str, given: str) -> ApiError:
    """`<What> <id> not found`, the document's words (an over-long id is cut, not echoed whole)."""
    return ApiError(404, f"{what} {given[:80]} not found")
