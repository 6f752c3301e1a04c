"""Isengard's training jobs: start one for a character, list (by character), get, SSE progress
with step and loss, cancel. A training job is an Atelier training run, `train-<run id>`."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, create_model
from starlette.requests import Request
from starlette.responses import Response

from core.engine import Engine
from core.errors import CharacterNotFound, Conflict, InvalidInput
from core.models import Run
from core.settings import Settings
from http_compat.api import Api, Param
from http_compat.contracts.isengard.envelope import Detail, not_found
from http_compat.contracts.isengard.streams import cancel_job, job_stream
from http_compat.contracts.isengard.views import Jobs, ProgressEvent, TrainingJob, TrainingJobs
from http_compat.errors import ApiError
from http_compat.responses import json_response

_TYPES: dict[str, Any] = {"int": int, "float": float, "str": str, "bool": bool}


def config_model(engine: Engine) -> type[BaseModel]:
    """The training config a request may send: `method` and the configured trainer's declared
    parameters, each optional (the trainer's default), with its declared type and range."""
    fields: dict[str, Any] = {
        "method": (Literal["lora"], Field(default="lora", description="The only method: lora.")),
    }
    for name, spec in engine.training.parameters()["parameters"].items():
        kind: Any = _TYPES[spec["type"]]
        if spec.get("choices"):
            kind = Literal[tuple(spec["choices"])]
        fields[name] = (
            kind | None,
            Field(
                default=None,
                ge=spec.get("min"),
                le=spec.get("max"),
                description=f"{spec['description']} (default {spec['default']!r}"
                + ("" if spec["wired"] else "; accepted and recorded, not used by this trainer")
                + ")",
                # Strict: a number sent as text is refused, as the trainer's own check refuses it
                # (ai-toolkit would read it as something else); a float still takes an integer.
                strict=None if spec.get("choices") else True,
            ),
        )
    return create_model("TrainingConfig", __config__=ConfigDict(extra="forbid"), **fields)


def declare(api: Api, engine: Engine, settings: Settings, jobs: Jobs) -> None:
    """The training routes, on `api`."""
    config = config_model(engine)
    start_request = create_model(
        "StartTraining",
        __config__=ConfigDict(extra="forbid"),
        character_id=(str, Field(max_length=200, description="The character to train (char-...).")),
        config=(config, Field(default_factory=config, description="The training parameters.")),
    )
    no_job = {404: (Detail, "No such training job")}

    @api.route(
        "GET",
        "/api/training",
        summary="Training jobs, newest first",
        responses={200: (TrainingJobs, "A JSON array of training jobs")},
        params=[Param("character_id", description="Only this character's jobs.")],
    )
    async def list_jobs(request: Request) -> Response:
        character_id = request.query_params.get("character_id")
        if character_id:
            runs = await engine.training.runs_of(character_id)
        else:
            runs = await _every_training(engine)
        return json_response([await jobs.training_view(run) for run in runs])

    @api.route(
        "POST",
        "/api/training",
        summary="Start a training job (5 req/min)",
        body=start_request,
        responses={
            201: TrainingJob,
            400: (Detail, "No training images uploaded for this character, or a config value is invalid"),
            404: (Detail, "No such character"),
            409: (Detail, "The character is already being trained"),
            429: (Detail, "Rate limit exceeded (Retry-After says when to try again)"),
        },
        example={
            "character_id": "char-xyz789abc012",
            "config": {
                "method": "lora",
                "steps": 1000,
                "learning_rate": 0.0001,
                "batch_size": 1,
                "resolution": 1024,
                "lora_rank": 16,
            },
        },
    )
    async def start(request: Request, body: Any) -> Response:
        character = await jobs.character(body.character_id)
        busy = await engine.training.runs_of(character.id, active_only=True)
        if busy:
            raise already_training(character.name, busy[0])
        params = body.config.model_dump(exclude={"method"}, exclude_none=True)
        try:
            run = await engine.training.submit(character.id, params, meta={"door": "isengard"})
        except CharacterNotFound:  # deleted meanwhile
            raise not_found("Character", body.character_id) from None
        except InvalidInput as exc:
            if exc.field != "character":
                raise
            raise ApiError(400, exc.problem) from None  # the document's own words, unprefixed
        except Conflict:  # another start won the race
            busy = await engine.training.runs_of(character.id, active_only=True)
            if not busy:
                raise
            raise already_training(character.name, busy[0]) from None
        return json_response(await jobs.training_view(run), 201)

    @api.route("GET", "/api/training/{id}", summary="A training job", responses={200: TrainingJob, **no_job})
    async def get(request: Request) -> Response:
        return json_response(await jobs.training_view(await jobs.training_run(request.path_params["id"])))

    @api.route(
        "GET",
        "/api/training/{id}/stream",
        summary="Server-Sent Events: progress (step, loss), then complete",
        responses={200: (ProgressEvent, "text/event-stream of `progress` then one `complete`"), **no_job},
        produces="text/event-stream",
    )
    async def stream(request: Request) -> Response:
        run = await jobs.training_run(request.path_params["id"])

        return job_stream(
            engine,
            run.id,
            lambda now, progress: jobs.training_event(now, progress.loss if progress is not None else None),
            settings.sse_keepalive_s,
        )

    @api.route(
        "POST",
        "/api/training/{id}/cancel",
        summary="Cancel a queued or running training job",
        responses={200: TrainingJob, 400: (Detail, "The job is already final"), **no_job},
    )
    async def cancel(request: Request) -> Response:
        run = await jobs.training_run(request.path_params["id"])
        return json_response(await jobs.training_view(await cancel_job(engine, run)))


def already_training(name: str, run: Run) -> ApiError:
    return ApiError(
        409,
        f"Character {name} is already being trained (job train-{run.id}, {run.status.value}): "
        f"wait for it or cancel it first (POST /api/training/train-{run.id}/cancel)",
    )


async def _every_training(engine: Engine) -> list[Run]:
    runs: list[Run] = []
    cursor = None
    while True:
        page = await engine.list_runs(kind="training", limit=200, cursor=cursor)
        runs += page.items
        if page.next_cursor is None:
            return runs
        cursor = page.next_cursor
