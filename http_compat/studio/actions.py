"""What the run page's buttons do, as JSON routes under `<prefix>/api/runs/{id}`.

- `GET` the run's card and its whole record (`Run.to_dict`);
- `POST .../cancel`: a queued or running run stops; a finished one is a 409 (the engine answers
  a finished run as it is, which a person pressing Cancel would read as a cancel that worked);
- `POST .../retry`: a failed or cancelled run is queued again (409 otherwise);
- `POST .../again`: the same request with a new seed, as a new run (image runs);
- `DELETE`: the run, its files, its log and its thumbnails are gone.
Each answers the run's card (and the page to go to, for `again`); an unknown or malformed id is
a 404.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from core.engine import Engine
from core.errors import Conflict
from core.models import Run, RunKind
from core.settings import Settings
from http_compat.api import Api
from http_compat.studio.errors import run_id_of
from http_compat.studio.pages import prefix_of
from http_compat.studio.views import card

STUDIO_DOOR = {"door": "studio"}


def again_params(run: Run) -> dict[str, Any]:
    """An image run's request as `submit_image` takes it again, without its seed (a new one is drawn).

    The stored source (already kept by hash) is passed as it was recorded; the character by its
    id and strength, so the new run uses the character's LoRA as it is now."""
    params = {k: v for k, v in run.inputs.items() if k != "seed"}
    character = params.pop("character", None)
    if isinstance(character, dict):
        params["character"] = character["id"]
        params["character_strength"] = character["strength"]
    return params


def add_actions(
    api: Api, engine: Engine, settings: Settings, forget_thumbnails: Callable[[str], None]
) -> None:
    """Declare the run actions on `api`; `forget_thumbnails(run_id)` drops a deleted run's thumbnails."""

    def answer(run: Run, request: Request, status: int = 200, **more: Any) -> Response:
        return JSONResponse({"run": card(run, prefix_of(request)), **more}, status_code=status)

    @api.route("GET", "/api/runs/{run_id}", summary="A run's card and its whole record")
    async def get_run(request: Request) -> Response:
        run = await engine.get_run(run_id_of(request))
        return answer(run, request, record=run.to_dict())

    @api.route(
        "POST",
        "/api/runs/{run_id}/cancel",
        summary="Cancel a queued or running run",
        responses={200: None, 409: "The run has finished"},
    )
    async def cancel(request: Request) -> Response:
        run = await engine.get_run(run_id_of(request))
        if run.status.is_final:
            raise Conflict(
                f"run {run.id} is already {run.status.value}; only queued or running runs can be cancelled"
            )
        return answer(await engine.cancel(run.id), request)

    @api.route(
        "POST",
        "/api/runs/{run_id}/retry",
        summary="Queue a failed or cancelled run again",
        responses={200: None, 409: "The run is not failed or cancelled"},
    )
    async def retry(request: Request) -> Response:
        return answer(await engine.retry(run_id_of(request)), request)

    @api.route(
        "POST",
        "/api/runs/{run_id}/again",
        summary="The same image request with a new seed, as a new run",
        responses={201: None, 409: "Not an image run"},
    )
    async def again(request: Request) -> Response:
        run = await engine.get_run(run_id_of(request))
        if run.kind is not RunKind.IMAGE:
            raise Conflict(f"run {run.id} is a {run.kind.value} run; only image runs can be made again")
        new = await engine.submit_image(again_params(run), priority=run.priority, meta=STUDIO_DOOR)
        return answer(new, request, status=201, url=f"{prefix_of(request)}/runs/{new.id}")

    @api.route(
        "DELETE", "/api/runs/{run_id}", summary="Delete a run, its files and its log (stopping it first)"
    )
    async def delete(request: Request) -> Response:
        run_id = run_id_of(request)
        children = []
        run = await engine.get_run(run_id)
        if run.kind is RunKind.BATCH:
            children = [child.id for child in (await engine.list_runs(parent_id=run_id, limit=200)).items]
        gone = await engine.delete(run_id)
        for each in (run_id, *children):
            forget_thumbnails(each)
        return answer(gone, request, deleted=run_id)
