"""The history routes: list, one generation, delete, and the generated files themselves."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from core.engine import Engine
from core.errors import InvalidInput, RunNotFound
from core.ids import check_filename
from core.models import Run
from http_compat.answers import KeptAnswers, single
from http_compat.api import Api, Param
from http_compat.contracts.desktop.envelope import BAD_REQUEST, NOT_FOUND, ErrorBody, route
from http_compat.contracts.desktop.shapes import DetailResponse, Done, HistoryPage
from http_compat.contracts.desktop.views import detail, find, history_item
from http_compat.errors import ApiError
from http_compat.inputs import query_int
from http_compat.responses import artifact_response, json_response


def declare(api: Api, engine: Engine) -> None:
    """The history and file routes, on `api`."""
    answers = KeptAnswers(engine)

    @route(
        api,
        "GET",
        "/api/history",
        summary="Generations, newest first",
        responses={200: HistoryPage, **BAD_REQUEST},
        params=[
            Param("limit", type="integer", description="At most this many (1..200, default 50)."),
            Param("offset", type="integer", description="Skip this many (default 0)."),
            Param("type", description="Only this type (Atelier makes images only).", enum=["image", "video"]),
        ],
    )
    async def history(request: Request) -> Response:
        limit = query_int(request, "limit", 50, low=1, high=200, invalid_status=400)
        offset = query_int(request, "offset", 0, low=0, high=2**31 - 1, invalid_status=400)
        kind = request.query_params.get("type") or "image"
        if kind not in ("image", "video"):
            raise ApiError(
                400, f"type: must be image or video (got {kind[:40]!r})", details={"field": "type"}
            )
        if kind == "video":
            return json_response({"success": True, "data": [], "total": 0})
        page = await engine.list_runs(kind="image", top_level=True, limit=limit, offset=offset)
        total = await engine.count_runs(kind="image", top_level=True)
        return json_response(
            {"success": True, "data": [history_item(run) for run in page.items], "total": total}
        )

    @route(
        api,
        "GET",
        "/api/history/{id}",
        summary="One generation with its parameters",
        responses={200: DetailResponse, **BAD_REQUEST, **NOT_FOUND},
    )
    async def get_generation(request: Request) -> Response:
        raw_id = request.path_params["id"]

        async def render(run: Run) -> Response:
            return json_response({"success": True, "data": detail(request, run)})

        return await answers.answer(request, lambda: find(engine, raw_id), render, single)

    @route(
        api,
        "DELETE",
        "/api/history/{id}",
        summary="Delete a generation and its files (stopping it if it is still going)",
        responses={200: Done, **BAD_REQUEST, **NOT_FOUND},
    )
    async def delete_generation(request: Request) -> Response:
        run = await find(engine, request.path_params["id"])
        try:
            await engine.delete(run.id)
        except RunNotFound:
            raise ApiError(404, "Generation not found", code="NOT_FOUND") from None
        return json_response({"success": True, "message": "Generation deleted"})

    @route(
        api,
        "GET",
        "/generated/{id}/{filename}",
        summary="A generation's image file (the url and filePath of a generation)",
        responses={200: "The image's bytes", 404: (ErrorBody, "No such file (NOT_FOUND)")},
        produces="image/png",
    )
    async def generated_file(request: Request) -> Response:
        raw_id, filename = request.path_params["id"], request.path_params["filename"]
        try:
            check_filename(filename)
            run = await find(engine, raw_id)
        except (ApiError, InvalidInput):
            raise ApiError(404, "File not found", code="NOT_FOUND") from None
        return await artifact_response(engine, run, filename)
