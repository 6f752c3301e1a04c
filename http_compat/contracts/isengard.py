"""Placeholder until the isengard contract lands: every route answers 501 in a neutral shape."""

from __future__ import annotations

from starlette.responses import Response

from core.engine import Engine
from core.settings import Settings
from http_compat.kit import Api, ApiError, json_response


def render_error(error: ApiError) -> Response:
    return json_response({"error": error.message}, error.status, error.headers)


def build(engine: Engine, settings: Settings) -> Api:
    return Api(
        name="isengard",
        title="isengard",
        version="0",
        description="not yet served",
        render_error=render_error,
    )
