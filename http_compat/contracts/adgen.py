"""AdGen backend (../shared/contracts/adgen.md), served at `/adgen`.

Mapping onto the engine:
- `run_id` is the Atelier run id (26 characters), the same whichever door made the run.
- Status words: queued -> PENDING, running -> RUNNING, completed -> COMPLETED,
  failed -> FAILED, cancelled -> CANCELLED.
- Times are `2025-08-21T12:00:00+0000`; `duration` is whole seconds from creation to finish.
- Errors are FastAPI's: `{"detail": "message"}`, and 422 `{"detail": [{"loc", "msg", "type"}]}`
  for a body that does not validate.

Decisions where the document is vague:
- `POST /generate` answers at once with the run queued (`PENDING`); `prompt_id` is ComfyUI's
  prompt id once a server has it (null before, and with the preview renderer). Runs wait in
  Atelier's queue while ComfyUI is down, so the "FAILED at start" answer only comes from a
  request that cannot run at all, which is a 422 instead. Optional extras beyond the document:
  width, height, steps, cfg, count, workflow.
- `GET /runs` lists newest first, `limit` (default 200, at most 200) and `offset` page it;
  batch children are left out (their parent is listed).
- Artifact `url`s are the contract's own `/runs/{run_id}/files/{filename}` under the prefix the
  client used. `POST /finalize` waits up to `wait` seconds (default 300) for the run to finish,
  then writes the ZIP; `GET /download` streams it from disk, writing it first if the run is
  complete but was never finalized (404 while it has no outputs).
- A malformed run id is 400 on DELETE (as documented) and 404 elsewhere (it cannot exist).
"""

from __future__ import annotations

import functools
import json
import time
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, RootModel
from starlette.requests import Request
from starlette.responses import Response

from core.engine import Engine
from core.ids import RUN_ID_RE
from core.models import Run, RunStatus
from core.settings import Settings
from http_compat.answers import KeptAnswers, single
from http_compat.api import Api, Param
from http_compat.errors import ApiError, Detail, fastapi_error
from http_compat.inputs import query_int
from http_compat.responses import artifact_response, file_response, json_response

STATUS = {
    RunStatus.QUEUED: "PENDING",
    RunStatus.RUNNING: "RUNNING",
    RunStatus.COMPLETED: "COMPLETED",
    RunStatus.FAILED: "FAILED",
    RunStatus.CANCELLED: "CANCELLED",
}


render_error = fastapi_error


# --- shapes ---------------------------------------------------------------------------------


class GenerateRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    prompt: str = Field(description="What to make.")
    negative_prompt: str | None = Field(default=None, description="What to avoid.")
    seed: int | None = Field(default=None, description="Same seed and inputs, same image.")
    width: int | None = Field(default=None, description="Atelier extension: pixels.")
    height: int | None = Field(default=None, description="Atelier extension: pixels.")
    steps: int | None = Field(default=None, description="Atelier extension: sampler steps.")
    cfg: float | None = Field(default=None, description="Atelier extension: guidance scale.")
    count: int | None = Field(default=None, description="Atelier extension: images in the run.")
    workflow: str | None = Field(default=None, description="Atelier extension: a workflow name.")


class GenerateResponse(BaseModel):
    run_id: str
    status: str
    prompt_id: str | None = None
    error: str | None = None


class RunSummary(BaseModel):
    run_id: str
    prompt: str | None
    status: str
    created_at: str
    finished_at: str | None
    duration: int | None


RunList = RootModel[list[RunSummary]]


class ArtifactView(BaseModel):
    filename: str
    type: str
    url: str


class RunDetail(BaseModel):
    run_id: str
    status: str
    created_at: str
    finished_at: str | None
    inputs: dict[str, Any]
    artifacts: list[ArtifactView]
    error: str | None = None
    progress: float = Field(description="Atelier extension: 0..1.")


class Health(BaseModel):
    ok: bool


class DetailedHealth(BaseModel):
    api: str
    timestamp: float
    storage: str
    graph: str
    comfy: str
    ledger: str = Field(description="Atelier extension: the run ledger.")
    backends: dict[str, str] = Field(description="Atelier extension: each generation backend.")
    ok: bool


# --- mapping --------------------------------------------------------------------------------


def stamp(ts: float | None) -> str | None:
    return None if ts is None else _stamp(ts)


# Status answers show the same few timestamps (a run's creation and finish) again and again.
@functools.lru_cache(maxsize=4096)
def _stamp(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S%z")


def prompt_id(run: Run) -> str | None:
    if not run.backend_handle:
        return None
    try:
        return json.loads(run.backend_handle).get("prompt_id")
    except (ValueError, AttributeError):
        return None


def summary(run: Run) -> dict[str, Any]:
    return RunSummary(
        run_id=run.id,
        prompt=run.inputs.get("prompt"),
        status=STATUS[run.status],
        created_at=stamp(run.created_at) or "",
        finished_at=stamp(run.finished_at),
        duration=None if run.finished_at is None else round(run.finished_at - run.created_at),
    ).model_dump()


def detail(request: Request, run: Run) -> dict[str, Any]:
    prefix = request.scope.get("root_path", "")
    return RunDetail(
        run_id=run.id,
        status=STATUS[run.status],
        created_at=stamp(run.created_at) or "",
        finished_at=stamp(run.finished_at),
        inputs=run.inputs,
        artifacts=[
            ArtifactView(
                filename=a.filename,
                type=a.media_type.split("/")[0],
                url=f"{prefix}/runs/{run.id}/files/{a.filename}",
            )
            for a in run.artifacts
        ],
        error=run.error,
        progress=round(run.progress, 4),
    ).model_dump()


def run_id_of(request: Request, *, malformed_status: int = 404) -> str:
    run_id = request.path_params["run_id"]
    if not RUN_ID_RE.fullmatch(run_id):
        raise ApiError(malformed_status, f"{run_id[:40]!r} is not a valid run id (26 characters of 0-9 a-z)")
    return run_id


# --- the contract ---------------------------------------------------------------------------


def build(engine: Engine, settings: Settings) -> Api:
    api = Api(
        name="adgen",
        title="AdGen API (Atelier)",
        version="1.0.0",
        description="The AdGen backend's runs ledger, served by Atelier over its engine.",
        render_error=render_error,
        error_model=Detail,
        invalid_status=422,
    )
    not_found = {404: (Detail, "No such run")}
    answers = KeptAnswers(engine)

    @api.route("GET", "/health", summary="Is the API up", responses={200: Health})
    async def health(request: Request) -> Response:
        return json_response({"ok": True})

    @api.route(
        "GET",
        "/health/detailed",
        summary="Health of storage, the ledger and each generation backend",
        responses={200: DetailedHealth},
    )
    async def health_detailed(request: Request) -> Response:
        status = await engine.status()
        backends = {
            name: "ok" if health.get("up") else f"error: {health.get('error') or 'down'}"
            for name, health in status["backends"].items()
        }
        storage, ledger = (_state(status[part]) for part in ("storage", "ledger"))
        comfy = backends.get(settings.backend, "error: not configured")
        return json_response(
            DetailedHealth(
                api="ok",
                timestamp=time.time(),
                storage=storage,
                graph=ledger,
                comfy=comfy,
                ledger=ledger,
                backends=backends,
                ok=storage == "ok" and ledger == "ok" and comfy == "ok",
            ).model_dump()
        )

    @api.route(
        "POST",
        "/generate",
        summary="Start a generation run",
        body=GenerateRequest,
        responses={200: GenerateResponse, 422: (Detail, "The request cannot run (the message says why)")},
        example={
            "prompt": "A futuristic sports car on a neon-lit highway",
            "negative_prompt": "blurry, old, vintage",
            "seed": 12345,
        },
    )
    async def generate(request: Request, body: GenerateRequest) -> Response:
        run = await engine.submit_image(body.model_dump(exclude_none=True), meta={"door": "adgen"})
        return json_response(
            GenerateResponse(run_id=run.id, status=STATUS[run.status], prompt_id=prompt_id(run)).model_dump()
        )

    @api.route(
        "GET",
        "/runs",
        summary="Runs, newest first",
        responses={200: (RunList, "The runs, newest first")},
        params=[
            Param("limit", type="integer", description="At most this many (1..200, default 200)."),
            Param("offset", type="integer", description="Skip this many (default 0)."),
        ],
    )
    async def list_runs(request: Request) -> Response:
        limit = query_int(request, "limit", 200, low=1, high=200)
        offset = query_int(request, "offset", 0)
        page = await engine.list_runs(top_level=True, limit=limit, offset=offset)
        return json_response([summary(run) for run in page.items])

    @api.route(
        "GET",
        "/runs/{run_id}",
        summary="A run with its inputs and files",
        responses={200: RunDetail, **not_found},
    )
    async def get_run(request: Request) -> Response:
        run_id = run_id_of(request)

        async def render(run: Run) -> Response:
            return json_response(detail(request, run))

        return await answers.answer(request, lambda: engine.get_run(run_id), render, single)

    @api.route(
        "GET",
        "/runs/{run_id}/files/{filename}",
        summary="One of a run's files",
        responses={200: "The file's bytes", **not_found},
        produces="image/png",
    )
    async def get_file(request: Request) -> Response:
        run = await engine.get_run(run_id_of(request))
        return await artifact_response(engine, run, request.path_params["filename"])

    @api.route(
        "POST",
        "/finalize/{run_id}",
        summary="Wait for the run to finish, then write its ZIP",
        responses={200: RunDetail, **not_found},
        params=[
            Param("wait", type="number", description="Seconds to wait for the run (0..3600, default 300).")
        ],
    )
    async def finalize(request: Request) -> Response:
        run_id = run_id_of(request)
        wait = query_int(request, "wait", 300, low=0, high=3600)
        run = await engine.wait(run_id, wait)
        if run.status is RunStatus.COMPLETED and run.artifacts:
            await engine.bundle(run_id)
        return json_response(detail(request, run))

    @api.route(
        "POST",
        "/runs/{run_id}/cancel",
        summary="Cancel a pending or running run",
        responses={200: RunDetail, **not_found},
    )
    async def cancel(request: Request) -> Response:
        return json_response(detail(request, await engine.cancel(run_id_of(request))))

    @api.route(
        "DELETE",
        "/runs/{run_id}",
        summary="Delete a run, its files and its ZIP",
        responses={204: None, 400: (Detail, "Malformed run id"), **not_found},
    )
    async def delete(request: Request) -> Response:
        await engine.delete(run_id_of(request, malformed_status=400))
        return Response(status_code=204)

    @api.route(
        "GET",
        "/download/{run_id}",
        summary="The run's ZIP (its images and run.json)",
        responses={200: "The ZIP archive", **not_found},
        produces="application/zip",
    )
    async def download(request: Request) -> Response:
        run = await engine.get_run(run_id_of(request))
        if not run.artifacts:
            raise ApiError(404, f"run {run.id} is {run.status.value} and has no files to download yet")
        bundle = await engine.bundle(run.id, reuse=True)
        return file_response(bundle.path, "application/zip", f"{run.id}.zip")

    return api


def _state(report: dict[str, object]) -> str:
    """The engine's report on its storage or ledger in this contract's words: `ok` or `error: ...`."""
    if report.get("ok"):
        return "ok"
    return f"error: {report.get('last_error') or report.get('error') or 'unavailable'}"
