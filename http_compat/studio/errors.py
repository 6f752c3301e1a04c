"""The studio's error answers: Atelier's `{"error", "message"}` envelope, plus the fields at fault.

A refused form names each bad field (`field`, and `problems`: `[{"field", "message"}]`) so the
page can show each message next to its input. A malformed id or file name in a path is a 404,
like an unknown one: a path either names something that exists or it does not.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from core.errors import InvalidInput
from core.ids import check_filename, check_run_id
from http_compat.errors import CODES, ApiError


def studio_error(error: ApiError) -> Response:
    """`{"error": code, "message": ...}`, with `field` and `problems` for invalid input."""
    body: dict[str, Any] = {
        "error": (error.code or CODES.get(error.status, "error")).lower(),
        "message": error.message,
    }
    if isinstance(error.details, dict):
        body.update({k: v for k, v in error.details.items() if k in ("field", "problems")})
    return JSONResponse(body, status_code=error.status, headers=error.headers)


def invalid(exc: InvalidInput, status: int = 422) -> ApiError:
    """An `InvalidInput` as the studio answers it: every bad field with its own message."""
    problems = [{"field": p.field, "message": p.problem} for p in exc.problems]
    return ApiError(
        status, str(exc), code="INVALID_PARAMETERS", details={"field": exc.field, "problems": problems}
    )


def run_id_of(request: Request) -> str:
    """The path's run id, or a 404 for one that cannot be a run's."""
    try:
        return check_run_id(request.path_params["run_id"])
    except InvalidInput:
        raise ApiError(404, "no such run (that is not a run id)", code="NOT_FOUND") from None


def filename_of(request: Request) -> str:
    """The path's file name, or a 404 for one no run file can have."""
    try:
        return check_filename(request.path_params["filename"])
    except InvalidInput:
        raise ApiError(404, "no such file (that is not a run file's name)", code="NOT_FOUND") from None
