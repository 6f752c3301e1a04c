"""Isengard (../shared/contracts/isengard.md), served at `/isengard`: generation, SSE progress,
job logs, client logs, rate limits and correlation ids. Characters and LoRA training come later.

Mapping onto the engine:
- A generation job is an Atelier run: its id is `gen-<run id>`, the same run whichever door made
  it, so runs made over MCP or another contract are listed too (batches as one job). Runs of
  other kinds (publishing, POD) are not generation jobs: 404 here.
- Status words are the engine's: queued, running, completed, failed, cancelled ("pending" is
  never produced). `progress` is an integer 0..100; times are ISO 8601 UTC with milliseconds
  and `Z`. Jobs also carry `started_at` and `completed_at`, as the original backend's do.
- `config` echoes what the client sent (kept in the run's `meta`), except `seed`: null becomes
  the seed the run actually uses, so the image can be made again. For runs from other doors it
  is read from the run's inputs (`guidance_scale` = cfg, `lora_id` null, `lora_strength` 1.0,
  every toggle false).
- `count` (1..16, default 1) is the number of images of the one run. `output_paths` are file
  NAMES (Known Issue 2), `gen-<run id>-<index>.<ext>` with the index from 0, which
  `GET /api/generation/output/{filename}` parses back to the run and its file; any other name
  is a 404 (names are matched whole against that pattern, so no path can reach the disk).
- Errors are `{"detail": "message"}`: validation 400 (as the document says), malformed JSON 400,
  unknown ids 404, oversized bodies 413, rate limits 429 with `Retry-After`.

Decisions where the document is vague:
- Config defaults are the document's example values (1024 x 1024, 20 steps, guidance 3.5) and
  its limits are the engine's real ones (sides multiples of 8 in 64..4096, steps 1..150,
  guidance 0..30, seed 0..2**32-1); an unknown config field is a 400, so a misspelt toggle is
  never silently ignored. `/info` publishes exactly these.
- No characters exist yet, so any `lora_id` is 404 "Character <id> not found". A toggle set to
  true is a 400 naming the toggle and why Atelier cannot do it (checked before `lora_id`).
- `/api/characters*` and `/api/training*`, any method, answer 501 until that issue lands; they
  are declared so OpenAPI shows them. Their rate limits (30/min image uploads, 5/min training)
  still apply. `/info` says training is unavailable and why (`wired: false` everywhere).
- Rate limits count every request to the limited endpoint per client host (the socket's peer;
  `X-Forwarded-For` is not trusted, or any client could pick its own bucket), valid or not.
- Health is served at `/health` and `/api/health` (Known Issue 1), and so are `/ready` and
  `/info` (the same router in the original). `/ready` has no redis: Atelier keeps its queue in
  its ledger, so the dependencies are storage, ledger and the generation backend; any of them
  failing makes it `not_ready` with 503. `mode` is "fast-test" with the preview renderer and
  "production" with ComfyUI.
- SSE `/api/generation/{id}/stream`: `event: progress` whenever what it carries changes, then
  one `event: complete` for every final state, its `status` saying which (completed, failed or
  cancelled), as the original backend does; a failure's text is in `message` and `error`. There
  is no `event: error`, because browsers' EventSource reserves `error` for a dropped
  connection. The final event also lists the job's `output_paths`.
- `GET /api/jobs/{id}/logs` is JSONL `{timestamp, level, message, job_id}` (a batch's lines
  include its items'); `train-` ids have no logs yet (404).
- `POST /api/client-logs` takes at most 100 entries of at most 2,000 characters each (400
  beyond) and writes each to the `atelier.client` logger at its level with the correlation id;
  answers 204. Fields an entry has beyond the document's are ignored.
- `X-Correlation-ID`: a request's own (1..128 printable ASCII characters, no spaces) or a new
  uuid4 hex, echoed on every response (413s included, so it wraps the body-size cap) and in the
  one line per request logged to `atelier.isengard`.
"""

from __future__ import annotations

import contextvars
import json
import logging
import math
import os
import re
import uuid
from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import Any, Literal

import anyio
from pydantic import BaseModel, ConfigDict, Field, RootModel, field_validator
from pydantic.fields import FieldInfo
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from core.engine import Engine
from core.errors import RunNotFound
from core.models import MAX_PROMPT_CHARS, MAX_SEED, MAX_SIDE, MIN_SIDE, Run, RunKind, RunStatus
from core.settings import Settings
from http_compat.api import Api, Param
from http_compat.errors import ApiError
from http_compat.inputs import query_int
from http_compat.ratelimit import RateLimiter
from http_compat.realtime import run_updates, sse_response
from http_compat.responses import artifact_response, iso, json_response

VERSION = "0.1.0"
GENERATION_KINDS = (RunKind.IMAGE.value, RunKind.BATCH.value)
NOT_YET = "Characters and LoRA training are not available in this Atelier release yet"
RUN_ID = r"[0-9a-hjkmnp-tv-z]{26}"
JOB_ID_RE = re.compile(rf"^gen-({RUN_ID})$")
OUTPUT_RE = re.compile(rf"^gen-({RUN_ID})-(0|[1-9][0-9]?)\.[a-z0-9]{{1,5}}$")
CORRELATION_RE = re.compile(r"^[\x21-\x7e]{1,128}$")
MAX_CLIENT_ENTRIES = 100
MAX_CLIENT_MESSAGE = 2_000
EVERY_METHOD = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]

# Why each toggle of the original cannot be honoured by Atelier's generation runs.
TOGGLES = {
    "use_controlnet": "Atelier's generation workflows have no ControlNet stage",
    "use_ipadapter": "Atelier's generation workflows have no IP-Adapter stage",
    "use_facedetailer": "Atelier's generation workflows have no face-detailer stage",
    "use_upscale": "upscaling is its own run in Atelier (the upscale operation), not a stage of a generation job",
}

CORRELATION_ID: contextvars.ContextVar[str] = contextvars.ContextVar("isengard_correlation_id", default="")
request_log = logging.getLogger("atelier.isengard")
client_log = logging.getLogger("atelier.client")


def render_error(error: ApiError) -> Response:
    return json_response({"detail": error.message}, error.status, error.headers)


# --- shapes ---------------------------------------------------------------------------------


class GenerationConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    prompt: str = Field(min_length=1, max_length=MAX_PROMPT_CHARS, description="What to make.")
    negative_prompt: str = Field(default="", max_length=MAX_PROMPT_CHARS, description="What to avoid.")
    width: int = Field(default=1024, ge=MIN_SIDE, le=MAX_SIDE, multiple_of=8, description="Pixels.")
    height: int = Field(default=1024, ge=MIN_SIDE, le=MAX_SIDE, multiple_of=8, description="Pixels.")
    steps: int = Field(default=20, ge=1, le=150, description="Sampler steps.")
    guidance_scale: float = Field(default=3.5, ge=0.0, le=30.0, description="The sampler's cfg.")
    seed: int | None = Field(default=None, ge=0, le=MAX_SEED, description="null: a random seed.")
    lora_id: str | None = Field(default=None, max_length=200, description="A character; none exist yet.")
    lora_strength: float = Field(default=1.0, ge=-5.0, le=5.0, description="Not used until characters exist.")
    use_controlnet: bool = Field(default=False, description="Not supported: must be false.")
    use_ipadapter: bool = Field(default=False, description="Not supported: must be false.")
    use_facedetailer: bool = Field(default=False, description="Not supported: must be false.")
    use_upscale: bool = Field(default=False, description="Not supported: must be false.")


class GenerateRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    config: GenerationConfig
    count: int = Field(default=1, ge=1, le=16, description="Images to make in the one job.")


class ConfigView(BaseModel):
    prompt: str
    negative_prompt: str
    width: int | None
    height: int | None
    steps: int | None
    guidance_scale: float | None
    seed: int | None
    lora_id: str | None
    lora_strength: float
    use_controlnet: bool = False
    use_ipadapter: bool = False
    use_facedetailer: bool = False
    use_upscale: bool = False


class GenerationJob(BaseModel):
    id: str = Field(description="gen-<Atelier run id>")
    status: Literal["queued", "running", "completed", "failed", "cancelled"]
    config: ConfigView
    progress: int = Field(ge=0, le=100)
    error_message: str | None
    created_at: str
    started_at: str | None
    completed_at: str | None
    output_paths: list[str] = Field(description="File names for GET /api/generation/output/{filename}.")


class GenerationJobs(RootModel[list[GenerationJob]]):
    pass


class ProgressEvent(BaseModel):
    """The data of an SSE `progress` or `complete` event."""

    job_id: str
    job_type: Literal["generation"]
    status: str
    progress: int
    message: str
    current_step: int
    total_steps: int
    error: str | None = Field(default=None, description="complete only: why a job failed.")
    output_paths: list[str] | None = Field(default=None, description="complete only.")


class ClientLogEntry(BaseModel):
    model_config = ConfigDict(extra="ignore")

    timestamp: str = Field(max_length=64)
    level: str = Field(description="DEBUG, INFO, WARN, WARNING, ERROR or CRITICAL (any case).")
    message: str = Field(max_length=MAX_CLIENT_MESSAGE)
    event: str | None = Field(default=None, max_length=200)
    context: dict[str, Any] | None = None

    @field_validator("level")
    @classmethod
    def _known_level(cls, value: str) -> str:
        level = value.strip().upper()
        if level not in CLIENT_LEVELS:
            raise ValueError(f"must be one of {', '.join(CLIENT_LEVELS)} (got {value[:20]!r})")
        return level


CLIENT_LEVELS = {
    "DEBUG": logging.DEBUG,
    "INFO": logging.INFO,
    "WARN": logging.WARNING,
    "WARNING": logging.WARNING,
    "ERROR": logging.ERROR,
    "CRITICAL": logging.CRITICAL,
}


class ClientLogs(BaseModel):
    model_config = ConfigDict(extra="forbid")

    entries: list[ClientLogEntry] = Field(max_length=MAX_CLIENT_ENTRIES)


class Health(BaseModel):
    status: Literal["healthy"]


class Dependencies(BaseModel):
    storage: str
    ledger: str
    backend: str


class Ready(BaseModel):
    status: Literal["ready", "not_ready"]
    mode: Literal["fast-test", "production"]
    dependencies: Dependencies


class ParameterSpec(BaseModel):
    type: Literal["int", "float", "str", "bool"]
    min: int | float | None = Field(default=None, description="Numbers: the least value; text: length.")
    max: int | float | None = Field(default=None, description="Numbers: the greatest value; text: length.")
    default: Any = None
    wired: bool
    description: str
    options: list[str] | None = None


class Toggle(BaseModel):
    supported: bool
    reason: str


class TrainingInfo(BaseModel):
    method: Literal["lora"]
    backend: str
    available: bool
    reason: str
    parameters: dict[str, ParameterSpec]


class ImageGenerationInfo(BaseModel):
    backend: str
    model_variants: list[str]
    toggles: dict[str, Toggle]
    parameters: dict[str, ParameterSpec]


class Info(BaseModel):
    name: str
    version: str
    mode: Literal["fast-test", "production"]
    training: TrainingInfo
    image_generation: ImageGenerationInfo


class Detail(BaseModel):
    detail: str


# What /info publishes: the training parameters of the document (none wired yet) ...
TRAINING_PARAMETERS = {
    "steps": ParameterSpec(type="int", min=100, max=10000, default=1000, wired=False, description="Number of training steps"),
    "learning_rate": ParameterSpec(type="float", min=1e-6, max=1e-2, default=1e-4, wired=False, description="Learning rate"),
    "batch_size": ParameterSpec(type="int", min=1, max=8, default=1, wired=False, description="Batch size"),
    "resolution": ParameterSpec(type="int", min=512, max=2048, default=1024, wired=False, description="Training resolution in pixels"),
    "lora_rank": ParameterSpec(type="int", min=4, max=128, default=16, wired=False, description="LoRA rank"),
    "optimizer": ParameterSpec(type="str", default="adamw8bit", wired=False, description="Optimizer", options=["adamw8bit", "adamw"]),
    "scheduler": ParameterSpec(type="str", default="cosine", wired=False, description="Learning-rate schedule", options=["cosine", "constant"]),
    "precision": ParameterSpec(type="str", default="bf16", wired=False, description="Training precision", options=["bf16", "fp16"]),
}  # fmt: skip


def generation_parameters() -> dict[str, ParameterSpec]:
    """... and the generation parameters, read from the request model so they cannot drift."""
    fields = GenerationConfig.model_fields
    descriptions = {
        "prompt": "Text prompt (length in characters)",
        "negative_prompt": "What to avoid (length in characters)",
        "width": "Image width in pixels, a multiple of 8",
        "height": "Image height in pixels, a multiple of 8",
        "steps": "Sampler steps",
        "guidance_scale": "Classifier-free guidance (the sampler's cfg)",
        "seed": "Random seed; null picks one (the job's config then shows it)",
        "lora_strength": "Strength of the character LoRA; not wired until characters exist",
    }
    kinds = {"prompt": "str", "negative_prompt": "str", "guidance_scale": "float", "lora_strength": "float"}
    result = {
        name: _spec(fields[name], kinds.get(name, "int"), text, wired=name != "lora_strength")
        for name, text in descriptions.items()
    }
    result["count"] = _spec(GenerateRequest.model_fields["count"], "int", "Images in one job", wired=True)
    return result


def _spec(info: FieldInfo, kind: str, description: str, *, wired: bool) -> ParameterSpec:
    """A field's bounds (numbers: its value; text: its length) and default, as /info shows them."""
    low = high = None
    for rule in info.metadata:
        low = getattr(rule, "ge", getattr(rule, "min_length", low))
        high = getattr(rule, "le", getattr(rule, "max_length", high))
    return ParameterSpec.model_validate(
        {
            "type": kind,
            "min": low,
            "max": high,
            "default": None if info.is_required() else info.default,
            "wired": wired,
            "description": description,
        }
    )


# --- mapping --------------------------------------------------------------------------------


def job_id(run: Run) -> str:
    return f"gen-{run.id}"


def output_name(run: Run, index: int) -> str:
    extension = run.artifacts[index].filename.rsplit(".", 1)[-1].lower()
    return f"gen-{run.id}-{index}.{extension}"


def percent(run: Run) -> int:
    if run.status is RunStatus.COMPLETED:
        return 100
    return max(0, min(100, math.floor(run.progress * 100)))


def config_of(run: Run, first_item: Run | None) -> ConfigView:
    """What the client asked for: Isengard's own config when this door made the run, else the
    nearest reading of the run's inputs (a batch: its first item's)."""
    own = (run.meta or {}).get("config") if (run.meta or {}).get("door") == "isengard" else None
    inputs = (first_item or run).inputs
    if isinstance(own, dict):
        try:
            return ConfigView.model_validate({**own, "seed": inputs.get("seed", own.get("seed"))})
        except ValueError:
            pass  # an older or foreign meta: read the inputs instead
    source = inputs.get("source") or {}
    return ConfigView(
        prompt=inputs.get("prompt", ""),
        negative_prompt=inputs.get("negative_prompt", ""),
        width=inputs.get("width", source.get("width")),
        height=inputs.get("height", source.get("height")),
        steps=inputs.get("steps"),
        guidance_scale=inputs.get("cfg"),
        seed=inputs.get("seed"),
        lora_id=None,
        lora_strength=1.0,
    )


def detail_message(run: Run) -> str:
    if run.status is RunStatus.QUEUED:
        return "Queued"
    if run.max_steps and run.step:
        return f"Step {run.step}/{run.max_steps}"
    return (run.message or "starting").capitalize()


class Jobs:
    """Generation jobs over the engine's runs."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    async def run_of(self, given: str) -> Run:
        """The run behind `gen-<run id>`; anything else (or another kind of run) is a 404."""
        match = JOB_ID_RE.fullmatch(given)
        try:
            run = await self.engine.get_run(match.group(1)) if match else None
        except RunNotFound:
            run = None
        if run is None or run.kind.value not in GENERATION_KINDS:
            raise ApiError(404, f"Generation job {given[:80]} not found")
        return run

    async def items(self, run: Run) -> list[Run]:
        """A batch's items in the order they were asked for; an image run is its own item."""
        if run.kind is not RunKind.BATCH:
            return [run]
        page = await self.engine.list_runs(parent_id=run.id, limit=200)
        return list(reversed(page.items))

    async def view(self, run: Run) -> dict[str, Any]:
        items = await self.items(run)
        return GenerationJob(
            id=job_id(run),
            status=run.status.value,
            config=config_of(run, items[0] if items and items[0] is not run else None),
            progress=percent(run),
            error_message=run.error if run.status is RunStatus.FAILED else None,
            created_at=iso(run.created_at, millis=True) or "",
            started_at=iso(run.started_at, millis=True),
            completed_at=iso(run.finished_at, millis=True),
            output_paths=[output_name(item, i) for item in items for i in range(len(item.artifacts))],
        ).model_dump()

    async def event(self, run: Run) -> tuple[str, dict[str, Any]]:
        """The SSE event for the run as it is now."""
        data = ProgressEvent(
            job_id=job_id(run),
            job_type="generation",
            status=run.status.value,
            progress=percent(run),
            message=detail_message(run),
            current_step=run.step,
            total_steps=run.max_steps,
        )
        if not run.status.is_final:
            return "progress", data.model_dump(exclude={"error", "output_paths"})
        data.message = {
            RunStatus.COMPLETED: "Generation complete",
            RunStatus.CANCELLED: "Generation cancelled",
        }.get(run.status, f"Generation failed: {run.error or 'unknown error'}")
        data.error = run.error if run.status is RunStatus.FAILED else None
        data.output_paths = (await self.view(run))["output_paths"]
        return "complete", data.model_dump()


# --- middleware -----------------------------------------------------------------------------


def route_path(scope: Scope) -> str:
    """The path inside this contract (without the prefix it is mounted at)."""
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    if root and path.startswith(root):
        return path[len(root) :] or "/"
    return path


class CorrelationId:
    """Give each request a correlation id, echo it on the response, log the request with it."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = dict(scope["headers"]).get(b"x-correlation-id", b"").decode("latin-1")
        cid = given if CORRELATION_RE.fullmatch(given) else uuid.uuid4().hex
        token = CORRELATION_ID.set(cid)

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != b"x-correlation-id"]
                message["headers"] = [*headers, (b"x-correlation-id", cid.encode())]
                request_log.info(
                    "%s %s -> %s (correlation id %s)",
                    scope["method"],
                    scope["path"],
                    message["status"],
                    cid,
                    extra={"correlation_id": cid},
                )
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            CORRELATION_ID.reset(token)


class RateLimits:
    """The document's per-client limits, counted before anything else looks at the request."""

    def __init__(self, app: ASGIApp, rules: list[tuple[str, re.Pattern[str], RateLimiter]]) -> None:
        self.app = app
        self.rules = rules

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            path = route_path(scope)
            for method, pattern, limiter in self.rules:
                if scope["method"] == method and pattern.fullmatch(path):
                    host = (scope.get("client") or ("unknown", 0))[0]
                    wait = limiter.check(str(host))
                    if wait > 0:
                        seconds = max(1, math.ceil(wait))
                        response = render_error(
                            ApiError(
                                429,
                                f"Rate limit exceeded. Try again in {seconds} seconds.",
                                headers={
                                    "Retry-After": str(seconds),
                                    "X-RateLimit-Limit": str(limiter.limit),
                                },
                            )
                        )
                        await response(scope, receive, send)
                        return
                    break
        await self.app(scope, receive, send)


# --- the contract ---------------------------------------------------------------------------


def build(engine: Engine, settings: Settings) -> Api:
    api = Api(
        name="isengard",
        title="Isengard API (Atelier)",
        version=VERSION,
        description=(
            "Isengard's generation jobs, SSE progress, job logs and client logs, served by Atelier "
            "over its engine. Characters and LoRA training answer 501 in this release."
        ),
        render_error=render_error,
        error_model=Detail,
        invalid_status=400,
    )
    api.middleware.append(Middleware(CorrelationId))
    api.middleware.append(
        Middleware(
            RateLimits,
            rules=[
                ("POST", re.compile(r"/api/generation/?"), RateLimiter(20, 60.0)),
                ("POST", re.compile(r"/api/training/?"), RateLimiter(5, 60.0)),
                ("POST", re.compile(r"/api/characters/[^/]+/images/?"), RateLimiter(30, 60.0)),
            ],
        )
    )
    jobs = Jobs(engine)
    mode: Literal["fast-test", "production"] = "fast-test" if settings.backend == "local" else "production"
    bad_request = (Detail, "The request is malformed or a field is invalid (the message says which)")
    not_found = {404: (Detail, "No such generation job")}
    limited = (Detail, "Rate limit exceeded (Retry-After says when to try again)")

    # -- health --------------------------------------------------------------------------------

    for prefix in ("", "/api"):

        @api.route("GET", f"{prefix}/health", summary="Is the API up", responses={200: Health})
        async def health(request: Request) -> Response:
            return json_response({"status": "healthy"})

        @api.route(
            "GET",
            f"{prefix}/ready",
            summary="Readiness of storage, the ledger and the generation backend (no redis here)",
            responses={200: Ready, 503: (Ready, "Not ready: a dependency says why")},
        )
        async def ready(request: Request) -> Response:
            storage = await anyio.to_thread.run_sync(_storage_state, settings)
            try:
                await engine.count_runs()
                ledger = "ok"
            except Exception as exc:  # a broken ledger is what this endpoint reports
                ledger = f"error: {type(exc).__name__}: {exc}"
            status = await engine.status()
            backend_health = status["backends"].get(settings.backend) or {}
            backend = (
                "ok"
                if backend_health.get("up")
                else f"error: {backend_health.get('error') or settings.backend + ' is down'}"
            )
            ok = storage == ledger == backend == "ok"
            body = Ready(
                status="ready" if ok else "not_ready",
                mode=mode,
                dependencies=Dependencies(storage=storage, ledger=ledger, backend=backend),
            )
            return json_response(body.model_dump(), 200 if ok else 503)

        @api.route(
            "GET", f"{prefix}/info", summary="Capabilities and parameter schemas", responses={200: Info}
        )
        async def info(request: Request) -> Response:
            variants = [
                w["name"] for w in engine.list_workflows()["workflows"] if w.get("operation") == "txt2img"
            ]
            body = Info(
                name="Isengard API",
                version=VERSION,
                mode=mode,
                training=TrainingInfo(
                    method="lora",
                    backend="ai-toolkit",
                    available=False,
                    reason=NOT_YET,
                    parameters=TRAINING_PARAMETERS,
                ),
                image_generation=ImageGenerationInfo(
                    backend=settings.backend,
                    model_variants=variants,
                    toggles={name: Toggle(supported=False, reason=why) for name, why in TOGGLES.items()},
                    parameters=generation_parameters(),
                ),
            )
            return json_response(body.model_dump())

    # -- generation ----------------------------------------------------------------------------

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
        return json_response([await jobs.view(run) for run in page.items])

    @api.route(
        "POST",
        "/api/generation",
        summary="Start a generation job",
        body=GenerateRequest,
        responses={
            201: GenerationJob,
            400: bad_request,
            404: (Detail, "The lora_id names no character (none exist yet)"),
            429: limited,
        },
        example={
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
        },
    )
    async def generate(request: Request, body: GenerateRequest) -> Response:
        config = body.config
        refused = [name for name in TOGGLES if getattr(config, name)]
        if refused:
            reasons = "; ".join(f"{name} is not supported: {TOGGLES[name]}" for name in refused)
            raise ApiError(400, f"{reasons}. Set {' and '.join(refused)} to false.")
        if config.lora_id is not None:
            raise ApiError(
                404,
                f"Character {config.lora_id} not found (characters are not available in this release yet)",
            )
        params = {
            "prompt": config.prompt,
            "negative_prompt": config.negative_prompt,
            "width": config.width,
            "height": config.height,
            "steps": config.steps,
            "cfg": config.guidance_scale,
            "seed": config.seed,
            "count": body.count,
        }
        meta = {"door": "isengard", "config": config.model_dump(), "count": body.count}
        run = await engine.submit_image(params, meta=meta)
        return json_response(await jobs.view(run), 201)

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
        missing = ApiError(404, f"Output {filename[:80]} not found")
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
        responses={200: GenerationJob, **not_found},
    )
    async def get_job(request: Request) -> Response:
        return json_response(await jobs.view(await jobs.run_of(request.path_params["id"])))

    @api.route(
        "GET",
        "/api/generation/{id}/stream",
        summary="Server-Sent Events: progress, then complete",
        responses={200: (ProgressEvent, "text/event-stream of `progress` then one `complete`"), **not_found},
        produces="text/event-stream",
    )
    async def stream(request: Request) -> Response:
        run = await jobs.run_of(request.path_params["id"])

        async def events() -> AsyncIterator[tuple[str, dict[str, Any]]]:
            last: dict[str, Any] | None = None
            # aclosing: the event subscription ends with the stream, not when the generator is collected.
            async with aclosing(run_updates(engine, run.id)) as updates:
                async for now in updates:
                    name, data = await jobs.event(now)
                    if name == "complete":
                        yield name, data
                        return
                    if data != last:
                        last = data
                        yield name, data

        return sse_response(events(), keepalive_s=settings.sse_keepalive_s)

    @api.route(
        "POST",
        "/api/generation/{id}/cancel",
        summary="Cancel a queued or running job",
        responses={200: GenerationJob, 400: (Detail, "The job is already final"), **not_found},
    )
    async def cancel(request: Request) -> Response:
        run = await jobs.run_of(request.path_params["id"])
        if run.status.is_final:
            raise ApiError(400, f"Cannot cancel job in {run.status.value} state")
        return json_response(await jobs.view(await engine.cancel(run.id)))

    # -- jobs and logs -------------------------------------------------------------------------

    @api.route(
        "GET",
        "/api/jobs/{id}/logs",
        summary="A job's log as JSONL: {timestamp, level, message, job_id} per line",
        responses={200: "text/plain: one JSON object per line", 404: (Detail, "Job logs not found")},
        produces="text/plain",
    )
    async def job_logs(request: Request) -> Response:
        try:
            run = await jobs.run_of(request.path_params["id"])
        except ApiError:
            raise ApiError(404, "Job logs not found") from None
        lines = [(entry.at, entry.message, entry.level) for entry in await engine.logs(run.id)]
        if run.kind is RunKind.BATCH:
            for item in await jobs.items(run):
                lines += [
                    (e.at, f"item gen-{item.id}: {e.message}", e.level) for e in await engine.logs(item.id)
                ]
        text = "".join(
            json.dumps(
                {
                    "timestamp": iso(at, millis=True),
                    "level": {"WARN": "WARNING"}.get(level.upper(), level.upper()),
                    "message": message,
                    "job_id": job_id(run),
                }
            )
            + "\n"
            for at, message, level in sorted(lines, key=lambda line: line[0])
        )
        return Response(text, media_type="text/plain")

    @api.route(
        "POST",
        "/api/client-logs",
        summary="Client-side log entries, written to the server log with the correlation id",
        body=ClientLogs,
        responses={204: None, 400: bad_request},
        example={
            "entries": [
                {
                    "timestamp": "2025-01-15T10:30:00.000Z",
                    "level": "ERROR",
                    "message": "Button click failed",
                    "event": "ui.error",
                    "context": {"page": "/characters", "button": "create"},
                }
            ]
        },
    )
    async def client_logs(request: Request, body: ClientLogs) -> Response:
        cid = CORRELATION_ID.get()
        for entry in body.entries:
            client_log.log(
                CLIENT_LEVELS[entry.level],
                "client %s at %s: %s (correlation id %s)",
                entry.event or "log",
                entry.timestamp,
                _one_line(entry.message),
                cid,
                extra={
                    "correlation_id": cid,
                    "client_timestamp": entry.timestamp,
                    "client_event": entry.event,
                    "client_context": entry.context,
                },
            )
        return Response(status_code=204)

    # -- characters and training: a later issue -----------------------------------------------

    async def not_yet(request: Request) -> Response:
        raise ApiError(501, NOT_YET)

    later = {501: (Detail, NOT_YET)}
    for method, path, summary, extra in [
        ("GET", "/api/characters", "List characters", {}),
        ("POST", "/api/characters", "Create a character", {}),
        ("GET", "/api/characters/{id}", "A character", {}),
        ("PATCH", "/api/characters/{id}", "Update a character", {}),
        ("DELETE", "/api/characters/{id}", "Delete a character", {}),
        ("POST", "/api/characters/{id}/images", "Upload training images (30 req/min)", {429: limited}),
        ("GET", "/api/characters/{id}/images", "A character's images", {}),
        ("GET", "/api/characters/{id}/images/{filename}", "One training image", {}),
        ("DELETE", "/api/characters/{id}/images/{filename}", "Delete a training image", {}),
        ("GET", "/api/training", "Training jobs", {}),
        ("POST", "/api/training", "Start a training job (5 req/min)", {429: limited}),
        ("GET", "/api/training/{id}", "A training job", {}),
        ("GET", "/api/training/{id}/stream", "Server-Sent Events of a training job", {}),
        ("POST", "/api/training/{id}/cancel", "Cancel a training job", {}),
    ]:
        api.route(method, path, summary=f"{summary} (not available yet: 501)", responses={**later, **extra})(
            not_yet
        )

    async def not_yet_anywhere(request: Request) -> Response:
        return render_error(ApiError(501, NOT_YET))

    # Any other method or path under those prefixes is the same later issue, not a 404/405.
    for path in (
        "/api/characters",
        "/api/characters/{rest:path}",
        "/api/training",
        "/api/training/{rest:path}",
    ):
        api.routes.append(Route(path, not_yet_anywhere, methods=EVERY_METHOD))

    return api


def _one_line(text: str) -> str:
    """A client's message on one log line: it cannot forge lines of its own."""
    return text.replace("\r", "\\r").replace("\n", "\\n")


def _storage_state(settings: Settings) -> str:
    folder = settings.artifacts_dir
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        return f"error: {exc.strerror or exc}"
    return "ok" if os.access(folder, os.W_OK) else f"error: {folder} is not writable"
