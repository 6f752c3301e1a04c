"""Isengard's generation jobs: start (by character too, `lora_id`), list, get, SSE progress,
cancel, and the generated files by name."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from starlette.requests import Request
from starlette.responses import Response

from core.characters.models import CHARACTER_ID_RE
from core.engine import Engine
from core.errors import CharacterNotFound, InvalidInput, RunNotFound
from core.models import MAX_PROMPT_CHARS, MAX_SEED, MAX_SIDE, MIN_SIDE, Run
from core.settings import Settings
from http_compat.answers import KeptAnswers, single
from http_compat.api import Api, Param
from http_compat.contracts.isengard.envelope import Detail, not_found
from http_compat.contracts.isengard.streams import cancel_job, job_stream
from http_compat.contracts.isengard.views import (
    GENERATION_KINDS,
    OUTPUT_RE,
    GenerationJob,
    GenerationJobs,
    Jobs,
    ProgressEvent,
    output_name,
)
from http_compat.errors import ApiError
from http_compat.inputs import query_int
from http_compat.responses import artifact_response, json_response

# Why each toggle of the original cannot be honoured by Atelier's generation runs.
TOGGLES = {
    "use_controlnet": "Atelier's generation workflows have no ControlNet stage",
    "use_ipadapter": "Atelier's generation workflows have no IP-Adapter stage",
    "use_facedetailer": "Atelier's generation workflows have no face-detailer stage",
    "use_upscale": "upscaling is its own run in Atelier (the upscale operation), not a stage of a generation job",
}
# The engine's range for a character's strength (`character_strength`).
MAX_LORA_STRENGTH = 2.0


class GenerationConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    prompt: str = Field(min_length=1, max_length=MAX_PROMPT_CHARS, description="What to make.")
    negative_prompt: str = Field(default="", max_length=MAX_PROMPT_CHARS, description="What to avoid.")
    width: int = Field(default=1024, ge=MIN_SIDE, le=MAX_SIDE, multiple_of=8, description="Pixels.")
    height: int = Field(default=1024, ge=MIN_SIDE, le=MAX_SIDE, multiple_of=8, description="Pixels.")
    steps: int = Field(default=20, ge=1, le=150, description="Sampler steps.")
    guidance_scale: float = Field(default=3.5, ge=0.0, le=30.0, description="The sampler's cfg.")
    seed: int | None = Field(default=None, ge=0, le=MAX_SEED, description="null: a random seed.")
    lora_id: str | None = Field(
        default=None,
        max_length=200,
        description="A character's id: its active LoRA and trigger word are used.",
    )
    lora_strength: float = Field(
        default=1.0, ge=0.0, le=MAX_LORA_STRENGTH, description="How strongly the character's LoRA applies."
    )
    use_controlnet: bool = Field(default=False, description="Not supported: must be false.")
    use_ipadapter: bool = Field(default=False, description="Not supported: must be false.")
    use_facedetailer: bool = Field(default=False, description="Not supported: must be false.")
    use_upscale: bool = Field(default=False, description="Not supported: must be false.")


class GenerateRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    config: GenerationConfig
    count: int = Field(default=1, ge=1, le=16, description="Images to make in the one job.")


EXAMPLE = {
    "config": {
        "prompt": "A portrait photo of johnsmith_person",
        "negative_prompt": "blurry, distorted",
        "width": 1024,
        "height": 1024,
        "steps": 20,
        "guidance_scale": 3.5,
        "seed": None,
        "lora_id": None,
        "lora_strength": 1.0,
        "use_controlnet": False,
        "use_ipadapter": False,
        "use_facedetailer": False,
        "use_upscale": False,
    },
    "count": 1,
}


def declare(api: Api, engine: Engine, settings: Settings, jobs: Jobs) -> None:
    """The generation routes, on `api`."""
    bad_request = (Detail, "The request is malformed or a field is invalid (the message says which)")
    not_found_job = {404: (Detail, "No such generation job")}
    limited = (Detail, "Rate limit exceeded (Retry-After says when to try again)")
    answers = KeptAnswers(engine)

    @api.route(
        "GET",
        "/api/generation",
        summary="Generation jobs, newest first (runs from every door)",
        responses={200: (GenerationJobs, "A JSON array of jobs"), 400: bad_request},
        params=[Param("limit", type="integer", description="At most this many (1..200, default 20).")],
    )
    async def list_jobs(request: Request) -> Response:
        limit = query_int(request, "limit", 20, low=1, high=200, invalid_status=400)
        page = await engine.list_runs(kind=list(GENERATION_KINDS), top_level=True, limit=limit)
        return json_response([await jobs.generation_view(run) for run in page.items])

    @api.route(
        "POST",
        "/api/generation",
        summary="Start a generation job (lora_id: by a character)",
        body=GenerateRequest,
        responses={
            201: GenerationJob,
            400: (Detail, "A field is invalid, a toggle is on, or the character has no trained LoRA"),
            404: (Detail, "The lora_id names no character"),
            429: limited,
        },
        example=EXAMPLE,
    )
    async def generate(request: Request, body: GenerateRequest) -> Response:
        config = body.config
        refused = [name for name in TOGGLES if getattr(config, name)]
        if refused:
            reasons = "; ".join(f"{name} is not supported: {TOGGLES[name]}" for name in refused)
            raise ApiError(400, f"{reasons}. Set {' and '.join(refused)} to false.")
        params: dict[str, Any] = {
            "prompt": config.prompt,
            "negative_prompt": config.negative_prompt,
            "width": config.width,
            "height": config.height,
            "steps": config.steps,
            "cfg": config.guidance_scale,
            "seed": config.seed,
            "count": body.count,
        }
        if config.lora_id is not None:
            # Only ids: a character's name here would make `lora_id` mean two things.
            if not CHARACTER_ID_RE.fullmatch(config.lora_id):
                raise not_found("Character", config.lora_id)
            params |= {"character": config.lora_id, "character_strength": config.lora_strength}
        meta = {"door": "isengard", "config": config.model_dump(), "count": body.count}
        try:
            run = await engine.submit_image(params, meta=meta)
        except CharacterNotFound:
            raise not_found("Character", config.lora_id or "") from None
        except InvalidInput as exc:
            if exc.field != "character":
                raise
            raise ApiError(400, f"lora_id: {exc.problem}") from None  # the engine's field, by its name here
        return json_response(await jobs.generation_view(run), 201)

    # Before /{id}/stream, or a file named "stream" would be read as a job id.
    @api.route(
        "GET",
        "/api/generation/output/{filename}",
        summary="A generated image, by a name from output_paths",
        responses={200: "The image's bytes", 404: (Detail, "No such output")},
        produces="image/png",
    )
    async def output(request: Request) -> Response:
        filename = request.path_params["filename"]
        match = OUTPUT_RE.fullmatch(filename)
        missing = not_found("Output", filename)
        if match is None:
            raise missing
        run_id, index = match.group(1), int(match.group(2))
        try:
            run = await engine.get_run(run_id)
        except RunNotFound:
            raise missing from None
        if index >= len(run.artifacts) or output_name(run, index) != filename:
            raise missing  # no such image, or the right image under another extension
        return await artifact_response(engine, run, run.artifacts[index].filename)

    @api.route(
        "GET",
        "/api/generation/{id}",
        summary="A generation job",
        responses={200: GenerationJob, **not_found_job},
    )
    async def get_job(request: Request) -> Response:
        given = request.path_params["id"]

        async def render(run: Run) -> Response:
            return json_response(await jobs.generation_view(run))

        return await answers.answer(request, lambda: jobs.generation_run(given), render, single)

    @api.route(
        "GET",
        "/api/generation/{id}/stream",
        summary="Server-Sent Events: progress, then complete",
        responses={
            200: (ProgressEvent, "text/event-stream of `progress` then one `complete`"),
            **not_found_job,
        },
        produces="text/event-stream",
    )
    async def stream(request: Request) -> Response:
        run = await jobs.generation_run(request.path_params["id"])

        return job_stream(engine, run.id, lambda now, _: jobs.generation_event(now), settings.sse_keepalive_s)

    @api.route(
        "POST",
        "/api/generation/{id}/cancel",
        summary="Cancel a queued or running job",
        responses={200: GenerationJob, 400: (Detail, "The job is already final"), **not_found_job},
    )
    async def cancel(request: Request) -> Response:
        run = await jobs.generation_run(request.path_params["id"])
        return json_response(await jobs.generation_view(await cancel_job(engine, run)))
