"""POD Engine (../shared/contracts/pod-engine.md), served at `/pod`, with its socket.io events.

Mapping onto the engine:
- A job is an Atelier run; its id is `job_<run id>` (the 26-character run id). A bare run id is
  accepted too; anything else is 404 `Job X not found`. The same run whichever door made it:
  runs made over MCP or another contract are jobs of type `generate` (a batch run: `batch`),
  with `request` rebuilt from what the run made (`{prompt, count}`).
- Status words: queued -> `pending`, running, completed, failed, cancelled. `progress` is a
  whole percent (0..100). Times (`createdAt`, `startedAt`, `completedAt`) are epoch milliseconds.
  `retryCount` = attempts - 1 (never below 0); `maxRetries` = the run's attempts - 1. A request's
  `maxRetries` (0..19) becomes the engine's `max_attempts` = maxRetries + 1.
- `logs` are the run's log lines: level info -> INFO, warning -> WARNING, error -> ERROR, and the
  line saying it completed -> SUCCESS. `GET /api/jobs` keeps the last 50 lines of each job.
- `error` is the run's error once it has failed (null otherwise, even while an earlier attempt's
  error waits for a retry: its log says so).
- Errors are `{"error": "message"}`: validation (wrong types, missing required fields, values
  outside an enum, unknown fields) 400, malformed JSON 400, unknown job 404, too large 413.

Generation (decisions where the document is vague):
- A generate request is `{prompt?, theme?, style?, niche?, productTypes, count, autoPublish}`.
  `productTypes` is required (at least one of `tshirt`, `hoodie`); `count` 1..16 (default 1)
  designs, made as one run; `autoPublish` defaults to true. A `prompt` is used as is; without
  one, the prompt is composed deterministically as `a/an {style} {theme} design for {niche}`
  (style and niche optional). There is no LLM here, so nothing is "AI-generated": the same
  theme, style and niche always give the same prompt. Neither prompt nor theme is a 400.
  Atelier extensions: `width`, `height`, `steps`, `seed` (passed to the engine as they are).
- Generation works; products, mockups and publishing (Printify, Shopify) come with a later
  issue. A finished generate job's `result` is `{success: true, generatedImages: [{id, url,
  prompt}], products: [], errors: ["products (tshirt, hoodie) and publishing are not supported
  yet; the designs were generated"], totalTime}`: `errors` says plainly what was not done.
  Image ids are `img_<run id>_<n>` (n from 1); `url` is this contract's absolute
  `/api/files/{jobId}/{filename}`; `totalTime` is milliseconds from start to finish.
- A batch (`POST /api/generate/batch`, or `POST /api/jobs` with type `batch` and
  `request.items`) is one parent run with one child run per item (1..100 items). Its progress
  is the children's combined steps. Once final its `result` is `{results, errors, total}`:
  `results[i]` is item i's generate result (`success: false` with its error for an item that
  failed or was cancelled), `errors` lists `item N: error` of each failed item.
  The children are jobs too (`GET /api/jobs/{child}` works) but are not listed on their own.
- `POST /api/jobs` type `custom` is 501: Atelier runs image generation only.
- Submitting answers 200 `{jobId, job}` with the job as it is then (normally `pending`).
  `priority` is low | normal | high | urgent (default normal); higher runs first.

Listing, managing, health:
- `GET /api/jobs` lists top-level jobs newest first, at most 200 (`limit` extension, 1..200),
  optionally of one `status` (an unknown status is 400).
- Cancel: a pending or running job (a batch: all its unfinished items) -> `{success: true}`; a
  finished one is 400 `Cannot cancel job: it is completed`. Retry: a failed or cancelled job is
  queued again with fresh attempts -> `{success: true}`; otherwise 400 `Cannot retry job: ...`.
- `POST /api/jobs/cleanup {maxAge}` deletes completed and failed top-level jobs (and their
  files) that finished more than `maxAge` ms ago (default 86400000, >= 0) -> `{cleared: n}`.
- `GET /health`: `services.comfyui` says whether the configured generation backend is up (the
  key keeps the document's name even with the preview renderer); `printify` and `shopify` are
  false: publishing is not configured, which is not an outage. `status` is `unhealthy` (HTTP
  503, same body) when the backend is down, `degraded` when it is up but fewer than 50% of at
  least 10 finished jobs completed, else `healthy`.
- Metrics count top-level jobs. `averageJobTime` is the mean start-to-finish time (ms) of the
  last 200 completed jobs (0 before any). `successRate` is completed / (completed + failed) in
  percent with 2 decimals (cancelled jobs are not failures; 100 before any job finished).
  `uptime` counts from when this server started; `lastActivity` is the newest change of any
  run (epoch ms; the start time before any).

Realtime: a socket.io server (Engine.IO 4) at `/pod/socket.io/`, and at `/socket.io/` when pod
is the root contract. Starlette's Mount keeps the full path in `scope["path"]` (and moves the
prefix into `root_path`), so the socket.io app is mounted with `socketio_path=None`: whatever
reaches the mount is Engine.IO traffic, whichever prefix it came through. Events:
`job:update {id, status, progress}` on each status change of a top-level job; `job:progress
{id, progress}` when a top-level job's whole percent changes (a batch: its combined progress);
`log {message, type, timestamp}` for submitted / started / retrying / completed (SUCCESS) /
failed (ERROR) / cancelled; `metrics` (the `/api/metrics` object) on connect and every
3 s while anyone is connected. Which browsers may connect is decided in front of the app, as for
every route (`http_compat.origins`): Engine.IO's own origin check and CORS headers are turned
off (`cors_allowed_origins=[]`) so that one policy, and one allow list, governs the channel.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, Literal

import anyio
import socketio
from pydantic import BaseModel, ConfigDict, Field, RootModel, ValidationError, model_validator
from starlette.requests import Request
from starlette.responses import Response

from core.engine import Engine
from core.errors import Conflict, RunNotFound
from core.events import Event, Subscription
from core.ids import RUN_ID_RE
from core.models import LogEntry, Run, RunKind, RunStatus
from core.settings import Settings
from http_compat.api import Api, Endpoint, Param
from http_compat.errors import ApiError
from http_compat.inputs import query_int
from http_compat.responses import artifact_response, base_url, json_response

log = logging.getLogger("atelier.http.pod")

STATUS = {
    RunStatus.QUEUED: "pending",
    RunStatus.RUNNING: "running",
    RunStatus.COMPLETED: "completed",
    RunStatus.FAILED: "failed",
    RunStatus.CANCELLED: "cancelled",
}
FROM_STATUS = {word: status for status, word in STATUS.items()}
LIST_LIMIT = 200
LIST_LOG_LINES = 50
METRICS_EVERY_S = 3.0
DEFAULT_MAX_AGE_MS = 86_400_000
Priority = Literal["low", "normal", "high", "urgent"]
ProductType = Literal["tshirt", "hoodie"]
LogType = Literal["INFO", "SUCCESS", "WARNING", "ERROR"]
HealthWord = Literal["healthy", "degraded", "unhealthy"]


def render_error(error: ApiError) -> Response:
    return json_response({"error": error.message}, error.status, error.headers)


# --- shapes ---------------------------------------------------------------------------------

STRICT = ConfigDict(extra="forbid", strict=True)


class GenerateRequest(BaseModel):
    """One design to make (the request of a generate job, or one batch item)."""

    model_config = STRICT

    prompt: str | None = Field(default=None, max_length=4000, description="Used as is.")
    theme: str | None = Field(default=None, max_length=200, description="Composes the prompt if none.")
    style: str | None = Field(default=None, max_length=200, description="Composes the prompt if none.")
    niche: str | None = Field(default=None, max_length=200, description="Composes the prompt if none.")
    productTypes: list[ProductType] = Field(min_length=1, description="Products wanted (not made yet).")
    count: int = Field(default=1, ge=1, le=16, description="Designs to generate.")
    autoPublish: bool = Field(default=True, description="Publish to platforms (not supported yet).")
    width: int | None = Field(default=None, description="Atelier extension: pixels (64..4096, /8).")
    height: int | None = Field(default=None, description="Atelier extension: pixels (64..4096, /8).")
    steps: int | None = Field(default=None, description="Atelier extension: sampler steps (1..150).")
    seed: int | None = Field(default=None, description="Atelier extension: same seed, same image.")

    @model_validator(mode="after")
    def _has_a_prompt_or_theme(self) -> GenerateRequest:
        if not (self.prompt or "").strip() and not (self.theme or "").strip():
            raise ValueError("give a prompt, or a theme (with an optional style and niche) to compose one")
        return self


class QuickGenerate(GenerateRequest):
    priority: Priority = Field(default="normal", description="Atelier extension: queue priority.")
    maxRetries: int | None = Field(default=None, ge=0, le=19, description="Atelier extension.")


class BatchRequest(BaseModel):
    model_config = STRICT

    items: list[GenerateRequest] = Field(min_length=1, max_length=100, description="One per design.")


class BatchBody(BatchRequest):
    priority: Priority = "normal"
    maxRetries: int | None = Field(default=None, ge=0, le=19, description="Atelier extension.")


class JobBody(BaseModel):
    model_config = STRICT

    type: Literal["generate", "batch", "custom"]
    request: dict[str, Any] = Field(description="A generate request, or {items: [...]} for a batch.")
    priority: Priority = "normal"
    maxRetries: int | None = Field(default=None, ge=0, le=19, description="Default: from config.")


class CleanupBody(BaseModel):
    model_config = STRICT

    maxAge: float = Field(default=DEFAULT_MAX_AGE_MS, ge=0, description="Milliseconds.")


class GeneratedImage(BaseModel):
    id: str
    url: str
    prompt: str


class GenerateResult(BaseModel):
    success: bool
    generatedImages: list[GeneratedImage]
    products: list[dict[str, Any]]
    errors: list[str]
    totalTime: int | None


class BatchResult(BaseModel):
    results: list[GenerateResult]
    errors: list[str]
    total: int


class LogLine(BaseModel):
    timestamp: int
    message: str
    type: LogType


class Job(BaseModel):
    id: str
    type: Literal["generate", "batch"]
    status: Literal["pending", "running", "completed", "failed", "cancelled"]
    priority: str
    progress: int
    request: dict[str, Any] | None
    createdAt: int
    startedAt: int | None
    completedAt: int | None
    result: GenerateResult | BatchResult | None
    error: str | None
    retryCount: int
    maxRetries: int
    logs: list[LogLine]


class JobList(RootModel[list[Job]]):
    pass


class Submitted(BaseModel):
    jobId: str
    job: Job


class Success(BaseModel):
    success: bool


class Cleared(BaseModel):
    cleared: int


class Metrics(BaseModel):
    totalJobs: int
    completedJobs: int
    failedJobs: int
    runningJobs: int
    pendingJobs: int
    averageJobTime: int
    successRate: float
    uptime: int
    lastActivity: int


class Services(BaseModel):
    comfyui: bool
    printify: bool
    shopify: bool


class Health(BaseModel):
    status: HealthWord
    uptime: int
    metrics: Metrics
    services: Services


class InfoConfig(BaseModel):
    maxConcurrent: int
    maxRetries: int
    persistenceEnabled: bool
    monitoringEnabled: bool


class Info(BaseModel):
    name: str
    version: str
    config: InfoConfig


class Error(BaseModel):
    error: str


# --- mapping --------------------------------------------------------------------------------


def ms(ts: float | None) -> int | None:
    return None if ts is None else int(ts * 1000)


def job_id(run_id: str) -> str:
    return f"job_{run_id}"


def run_id_of(given: str) -> str:
    """The run behind a job id (`job_<run id>` or the bare run id), or 404."""
    run_id = given.removeprefix("job_")
    if not RUN_ID_RE.fullmatch(run_id):
        raise ApiError(404, f"Job {given[:60]} not found")
    return run_id


def percent(fraction: float) -> int:
    return max(0, min(100, math.floor(fraction * 100 + 1e-9)))


def compose_prompt(request: GenerateRequest) -> str:
    """The request's prompt, or one made from its theme, style and niche (always the same one)."""
    if (request.prompt or "").strip():
        return request.prompt or ""
    words = " ".join(part.strip() for part in (request.style, request.theme) if part and part.strip())
    article = "an" if words[:1].lower() in ("a", "e", "i", "o", "u") else "a"
    niche = (request.niche or "").strip()
    return f"{article} {words} design" + (f" for {niche}" if niche else "")


def engine_params(request: GenerateRequest) -> dict[str, Any]:
    return {
        "prompt": compose_prompt(request),
        "count": request.count,
        "width": request.width,
        "height": request.height,
        "steps": request.steps,
        "seed": request.seed,
    }


def item_meta(request: GenerateRequest) -> dict[str, Any]:
    return {"door": "pod", "type": "generate", "request": request.model_dump(exclude_unset=True)}


def pod_request(run: Run) -> dict[str, Any] | None:
    """The request a POD client sent for this run (None for runs other doors made)."""
    meta = run.meta or {}
    request = meta.get("request") if meta.get("door") == "pod" else None
    return request if isinstance(request, dict) else None


def log_type(entry: LogEntry) -> LogType:
    if entry.level == "error":
        return "ERROR"
    if entry.level == "warning":
        return "WARNING"
    if entry.message.startswith(("completed", "batch completed")):
        return "SUCCESS"
    return "INFO"


def not_done_note(request: dict[str, Any] | None) -> list[str]:
    """What a POD client asked for that Atelier did not do, said plainly."""
    if not request:
        return []
    types = ", ".join(str(t) for t in request.get("productTypes") or []) or "none"
    what = "products ({}) and publishing are" if request.get("autoPublish", True) else "products ({}) are"
    return [f"{what.format(types)} not supported yet; the designs were generated"]


def generate_result(run: Run, base: str) -> dict[str, Any]:
    """A finished image run as the document's generate result (success false unless completed)."""
    started = run.started_at or run.created_at
    total = None if run.finished_at is None else max(0, int((run.finished_at - started) * 1000))
    if run.status is not RunStatus.COMPLETED:
        error = run.error or f"the design was {run.status.value}"
        return GenerateResult(
            success=False, generatedImages=[], products=[], errors=[error], totalTime=total
        ).model_dump()
    prompt = str(run.inputs.get("prompt", ""))
    images = [
        GeneratedImage(
            id=f"img_{run.id}_{index}",
            url=f"{base}/api/files/{job_id(run.id)}/{artifact.filename}",
            prompt=prompt,
        )
        for index, artifact in enumerate(run.artifacts, start=1)
    ]
    return GenerateResult(
        success=True,
        generatedImages=images,
        products=[],
        errors=not_done_note(pod_request(run)),
        totalTime=total,
    ).model_dump()


def foreign_request(run: Run) -> dict[str, Any]:
    return {"prompt": run.inputs.get("prompt", ""), "count": run.inputs.get("count", 1)}


async def children_of(engine: Engine, run: Run) -> list[Run]:
    """A batch's item runs, in item order."""
    page = await engine.list_runs(parent_id=run.id, limit=LIST_LIMIT)
    return sorted(page.items, key=lambda child: child.seq)


async def job_view(engine: Engine, run: Run, base: str, *, log_lines: int | None = None) -> dict[str, Any]:
    """The run as the document's job object."""
    request = pod_request(run)
    result: dict[str, Any] | None = None
    if run.kind is RunKind.BATCH:
        children = await children_of(engine, run)
        if request is None:
            request = {"items": [foreign_request(child) for child in children]}
        if run.status.is_final:
            results = [generate_result(child, base) for child in children]
            errors = [
                f"item {index}: {child.error or 'failed'}"
                for index, child in enumerate(children, start=1)
                if child.status is RunStatus.FAILED
            ]
            result = BatchResult.model_validate(
                {"results": results, "errors": errors, "total": len(children)}
            ).model_dump()
    else:
        if request is None:
            request = foreign_request(run)
        if run.status is RunStatus.COMPLETED:
            result = generate_result(run, base)
    entries = await engine.logs(run.id)
    if log_lines is not None:
        entries = entries[-log_lines:]
    return Job(
        id=job_id(run.id),
        type="batch" if run.kind is RunKind.BATCH else "generate",
        status=STATUS[run.status],
        priority=run.priority.value,
        progress=100 if run.status is RunStatus.COMPLETED else percent(run.progress),
        request=request,
        createdAt=ms(run.created_at) or 0,
        startedAt=ms(run.started_at),
        completedAt=ms(run.finished_at),
        result=result,
        error=run.error if run.status is RunStatus.FAILED else None,
        retryCount=max(0, run.attempts - 1),
        maxRetries=max(0, run.max_attempts - 1),
        logs=[
            LogLine(timestamp=ms(entry.at) or 0, message=entry.message, type=log_type(entry))
            for entry in entries
        ],
    ).model_dump()


def check_part(model: type[GenerateRequest] | type[BatchRequest], data: Any, where: str) -> Any:
    """`data` (part of a body) as `model`, or a 400 naming each bad field under `where`."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        parts = []
        for item in exc.errors(include_url=False):
            field = ".".join([where, *(str(p) for p in item["loc"])])
            message = "is required" if item["type"] == "missing" else item["msg"]
            if item["type"] == "extra_forbidden":
                message = "is not a field of this request"
            parts.append(f"{field}: {message}")
        raise ApiError(400, "; ".join(parts)) from None


def attempts(max_retries: int | None) -> int | None:
    return None if max_retries is None else max_retries + 1


# --- metrics --------------------------------------------------------------------------------


class Clock:
    """When this server started, and when a run last changed (as far as this process saw)."""

    def __init__(self) -> None:
        self.started = time.time()
        self.last_change = 0.0


async def compute_metrics(engine: Engine, clock: Clock) -> dict[str, Any]:
    async def count(status: str | None = None) -> int:
        return await engine.count_runs(status=status, top_level=True)

    completed, failed = await count("completed"), await count("failed")
    recent = (await engine.list_runs(status="completed", top_level=True, limit=LIST_LIMIT)).items
    times = [
        run.finished_at - (run.started_at or run.created_at) for run in recent if run.finished_at is not None
    ]
    newest = (await engine.list_runs(limit=1)).items
    changed = [t for run in newest for t in (run.created_at, run.started_at, run.finished_at) if t]
    last = max([clock.started, clock.last_change, *changed])
    finished = completed + failed
    return Metrics(
        totalJobs=await count(),
        completedJobs=completed,
        failedJobs=failed,
        runningJobs=await count("running"),
        pendingJobs=await count("queued"),
        averageJobTime=int(sum(times) / len(times) * 1000) if times else 0,
        successRate=round(completed / finished * 100, 2) if finished else 100.0,
        uptime=int((time.time() - clock.started) * 1000),
        lastActivity=int(last * 1000),
    ).model_dump()


# --- realtime -------------------------------------------------------------------------------


class Realtime:
    """The socket.io channel: engine events in, the document's events out."""

    def __init__(self, engine: Engine, clock: Clock) -> None:
        self.engine = engine
        self.clock = clock
        self.sio = socketio.AsyncServer(
            async_mode="asgi",
            cors_allowed_origins=[],  # checked in front of the app (http_compat.origins)
            logger=False,
            engineio_logger=False,
        )
        self.clients = 0
        self._status: dict[str, RunStatus] = {}
        self._percent: dict[str, int] = {}
        self._parent: dict[str, str | None] = {}
        self.sio.on("connect", self._connected)
        self.sio.on("disconnect", self._disconnected)

    def app(self) -> socketio.ASGIApp:
        # Routing is Starlette's: every request reaching this mount is Engine.IO traffic.
        return socketio.ASGIApp(self.sio, socketio_path=None)

    async def _connected(self, sid: str, environ: dict[str, Any], auth: Any = None) -> None:
        self.clients += 1
        self.sio.start_background_task(self._send_metrics, sid)

    async def _disconnected(self, sid: str, *args: Any) -> None:
        self.clients = max(0, self.clients - 1)

    async def _send_metrics(self, sid: str | None = None) -> None:
        try:
            await self.sio.emit("metrics", await compute_metrics(self.engine, self.clock), to=sid)
        except Exception:
            log.exception("could not send metrics over socket.io")

    @asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """Pump engine events to socket.io clients for the app's lifetime."""
        with self.engine.events.subscribe(None, maxlen=4096) as events:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._pump, events)
                tg.start_soon(self._tick)
                try:
                    yield
                finally:
                    tg.cancel_scope.cancel()
        with anyio.move_on_after(2, shield=True):
            await self.sio.shutdown()

    async def _tick(self) -> None:
        while True:
            await anyio.sleep(METRICS_EVERY_S)
            if self.clients:
                await self._send_metrics()

    async def _pump(self, events: Subscription) -> None:
        while True:
            event = await events.get()
            try:
                await self._handle(event)
            except Exception:  # one bad event must not end the channel
                log.exception("socket.io: could not relay %s event of run %s", event.kind, event.run_id)

    async def _handle(self, event: Event) -> None:
        if event.kind == "run":
            self.clock.last_change = time.time()
            if event.run is None:  # deleted
                for known in (self._status, self._percent, self._parent):
                    known.pop(event.run_id, None)
                return
            await self._on_run(event.run)
        elif event.kind == "progress" and event.progress is not None:
            if await self._parent_of(event.run_id) is not None:
                return  # a batch item: its batch reports the combined progress
            value = percent(event.progress.fraction)
            if self._percent.get(event.run_id) != value:
                self._remember(self._percent, event.run_id, value)
                await self.sio.emit("job:progress", {"id": job_id(event.run_id), "progress": value})

    async def _parent_of(self, run_id: str) -> str | None:
        if run_id not in self._parent:
            try:
                self._remember(self._parent, run_id, (await self.engine.get_run(run_id)).parent_id)
            except RunNotFound:
                return None
        return self._parent[run_id]

    async def _on_run(self, run: Run) -> None:
        self._remember(self._parent, run.id, run.parent_id)
        previous = self._status.get(run.id)
        if run.parent_id is not None or previous is run.status:
            return
        self._remember(self._status, run.id, run.status)
        progress = 100 if run.status is RunStatus.COMPLETED else percent(run.progress)
        self._remember(self._percent, run.id, progress)
        await self.sio.emit(
            "job:update", {"id": job_id(run.id), "status": STATUS[run.status], "progress": progress}
        )
        message, kind = lifecycle_line(run, previous)
        await self.sio.emit("log", {"message": message, "type": kind, "timestamp": ms(time.time())})

    @staticmethod
    def _remember(known: dict[str, Any], key: str, value: Any, limit: int = 10_000) -> None:
        known.pop(key, None)
        known[key] = value
        while len(known) > limit:
            known.pop(next(iter(known)))


def lifecycle_line(run: Run, previous: RunStatus | None) -> tuple[str, LogType]:
    """The `log` event for a job's status change: (message, type)."""
    name = f"{'Batch job' if run.kind is RunKind.BATCH else 'Job'} {job_id(run.id)}"
    if run.status is RunStatus.QUEUED:
        if previous is RunStatus.RUNNING:
            return f"{name} attempt {run.attempts} failed, retrying: {run.error}", "WARNING"
        if previous in (RunStatus.FAILED, RunStatus.CANCELLED):
            return f"{name} queued again (retry)", "INFO"
        return f"{name} submitted ({run.priority.value} priority)", "INFO"
    if run.status is RunStatus.RUNNING:
        return f"{name} started", "INFO"
    if run.status is RunStatus.COMPLETED:
        return f"{name} completed successfully", "SUCCESS"
    if run.status is RunStatus.FAILED:
        return f"{name} failed: {run.error}", "ERROR"
    return f"{name} cancelled", "WARNING"


# --- the contract ---------------------------------------------------------------------------


def build(engine: Engine, settings: Settings) -> Api:
    api = Api(
        name="pod",
        title="POD Engine API (Atelier)",
        version="1.0.0",
        description="The POD Engine's job queue, served by Atelier over its engine. Designs are "
        "generated; products, mockups and publishing are not supported yet.",
        render_error=render_error,
        error_model=Error,
        invalid_status=400,
    )
    clock = Clock()
    realtime = Realtime(engine, clock)
    api.mount("/socket.io", realtime.app())
    api.lifespans.append(realtime.running)
    api.endpoints.append(
        Endpoint(
            "get",
            "/socket.io/",
            "socket.io (Engine.IO 4): job:update, job:progress, metrics and log events",
            None,
            {
                101: (None, "Switching Protocols (or Engine.IO long-polling)"),
                400: (None, "Not a socket.io handshake (Engine.IO answers in its own format)"),
            },
            [],
            "Connect with a socket.io client, path `<prefix>/socket.io`. Events: "
            "`job:update {id, status, progress}`, `job:progress {id, progress}`, "
            "`metrics` (the /api/metrics object, on connect and every few seconds), "
            "`log {message, type, timestamp}`.",
        )
    )
    bad = {400: (Error, "Invalid request (the message names the field)")}
    not_found = {404: (Error, "No such job")}

    async def get(given: str) -> Run:
        try:
            return await engine.get_run(run_id_of(given))
        except RunNotFound:
            raise ApiError(404, f"Job {given[:60]} not found") from None

    async def submitted(request: Request, run: Run) -> Response:
        job = await job_view(engine, run, base_url(request))
        return json_response(Submitted(jobId=job["id"], job=job).model_dump())

    async def submit_generate(
        request: Request, body: GenerateRequest, priority: str, max_retries: int | None
    ) -> Response:
        run = await engine.submit_image(
            engine_params(body),
            priority=priority,
            max_attempts=attempts(max_retries),
            meta=item_meta(body),
        )
        return await submitted(request, run)

    async def submit_batch(
        request: Request, body: BatchRequest, original: dict[str, Any], priority: str, max_retries: int | None
    ) -> Response:
        run = await engine.submit_batch(
            [engine_params(item) for item in body.items],
            priority=priority,
            max_attempts=attempts(max_retries),
            meta={"door": "pod", "type": "batch", "request": original},
            item_meta=[item_meta(item) for item in body.items],
        )
        return await submitted(request, run)

    @api.route(
        "GET",
        "/health",
        summary="Health of the engine and its services",
        responses={200: Health, 503: (Health, "Unhealthy")},
    )
    async def health(request: Request) -> Response:
        status = await engine.status()
        backend_up = bool(status["backends"].get(settings.backend, {}).get("up"))
        metrics = await compute_metrics(engine, clock)
        finished = metrics["completedJobs"] + metrics["failedJobs"]
        word: HealthWord = "healthy"
        if not status["healthy"]:  # the backend, the storage or the ledger is in trouble
            word = "unhealthy"
        elif finished >= 10 and metrics["successRate"] < 50:
            word = "degraded"
        body = Health(
            status=word,
            uptime=metrics["uptime"],
            metrics=Metrics.model_validate(metrics),
            services=Services(comfyui=backend_up, printify=False, shopify=False),
        ).model_dump()
        return json_response(body, 503 if word == "unhealthy" else 200)

    @api.route("GET", "/api/info", summary="Engine information and configuration", responses={200: Info})
    async def info(request: Request) -> Response:
        status = await engine.status()
        slots = status["backends"].get(settings.backend, {}).get("slots") or settings.local_concurrency
        return json_response(
            Info(
                name="POD Engine",
                version="1.0.0",
                config=InfoConfig(
                    maxConcurrent=int(slots),
                    maxRetries=settings.max_attempts - 1,
                    persistenceEnabled=True,
                    monitoringEnabled=True,
                ),
            ).model_dump()
        )

    @api.route("GET", "/api/metrics", summary="Current engine metrics", responses={200: Metrics})
    async def metrics(request: Request) -> Response:
        return json_response(await compute_metrics(engine, clock))

    @api.route(
        "POST",
        "/api/jobs",
        summary="Submit a job (generate or batch)",
        body=JobBody,
        responses={200: Submitted, **bad, 501: (Error, "custom jobs are not supported")},
        example={
            "type": "generate",
            "request": {"prompt": "A beautiful landscape", "productTypes": ["tshirt"], "autoPublish": True},
            "priority": "normal",
            "maxRetries": 3,
        },
    )
    async def create_job(request: Request, body: JobBody) -> Response:
        if body.type == "custom":
            raise ApiError(
                501,
                "custom jobs are not supported by Atelier: it runs image generation only; submit "
                'type "generate" with {prompt or theme, productTypes}, or type "batch" with {items: [...]}',
            )
        if body.type == "batch":
            batch = check_part(BatchRequest, body.request, "request")
            return await submit_batch(request, batch, body.request, body.priority, body.maxRetries)
        one = check_part(GenerateRequest, body.request, "request")
        return await submit_generate(request, one, body.priority, body.maxRetries)

    @api.route(
        "GET",
        "/api/jobs",
        summary="Jobs, newest first (batch items are inside their batch)",
        responses={200: JobList, **bad},
        params=[
            Param("status", description="Only jobs in this status.", enum=list(FROM_STATUS)),
            Param(
                "limit",
                type="integer",
                description="Atelier extension: at most this many (1..200, default 200).",
            ),
        ],
    )
    async def list_jobs(request: Request) -> Response:
        word = request.query_params.get("status")
        status = None
        if word:
            if word not in FROM_STATUS:
                raise ApiError(400, f"status: must be one of {', '.join(FROM_STATUS)} (got {word[:40]!r})")
            status = FROM_STATUS[word].value
        limit = query_int(request, "limit", LIST_LIMIT, low=1, high=LIST_LIMIT, invalid_status=400)
        page = await engine.list_runs(status=status, top_level=True, limit=limit)
        base = base_url(request)
        return json_response(
            [await job_view(engine, run, base, log_lines=LIST_LOG_LINES) for run in page.items]
        )

    @api.route(
        "POST",
        "/api/jobs/cleanup",
        summary="Delete completed and failed jobs older than maxAge ms",
        body=CleanupBody,
        responses={200: Cleared, **bad},
        example={"maxAge": 86400000},
    )
    async def cleanup(request: Request, body: CleanupBody) -> Response:
        removed = await engine.purge(body.maxAge / 1000, statuses=("completed", "failed"))
        return json_response({"cleared": len(removed)})

    @api.route(
        "GET", "/api/jobs/{id}", summary="A job, with its result and logs", responses={200: Job, **not_found}
    )
    async def get_job(request: Request) -> Response:
        run = await get(request.path_params["id"])
        return json_response(await job_view(engine, run, base_url(request)))

    @api.route(
        "POST",
        "/api/jobs/{id}/cancel",
        summary="Cancel a pending or running job",
        responses={200: Success, 400: (Error, "The job is finished"), **not_found},
    )
    async def cancel(request: Request) -> Response:
        run = await get(request.path_params["id"])
        if not run.status.is_final:
            run = await engine.cancel(run.id)
            # A batch whose items partly failed ends `failed` once the rest are cancelled: that
            # is still a cancel done. A job that finished meanwhile was not cancelled.
            if run.status is RunStatus.CANCELLED or (
                run.kind is RunKind.BATCH and run.status is not RunStatus.COMPLETED
            ):
                return json_response({"success": True})
        raise ApiError(400, f"Cannot cancel job: it is {STATUS[run.status]}")

    @api.route(
        "POST",
        "/api/jobs/{id}/retry",
        summary="Queue a failed or cancelled job again",
        responses={200: Success, 400: (Error, "The job is not failed or cancelled"), **not_found},
    )
    async def retry(request: Request) -> Response:
        run = await get(request.path_params["id"])
        if run.status not in (RunStatus.FAILED, RunStatus.CANCELLED):
            raise ApiError(
                400,
                f"Cannot retry job: it is {STATUS[run.status]}; only failed or cancelled jobs can be retried",
            )
        try:
            await engine.retry(run.id)
        except Conflict as exc:
            raise ApiError(400, f"Cannot retry job: {exc}") from None
        return json_response({"success": True})

    @api.route(
        "GET",
        "/api/files/{id}/{filename}",
        summary="One of a job's generated images (the generatedImages url)",
        responses={200: "The image's bytes", **not_found},
        produces="image/png",
    )
    async def get_file(request: Request) -> Response:
        run = await get(request.path_params["id"])
        return await artifact_response(engine, run, request.path_params["filename"])

    @api.route(
        "POST",
        "/api/generate",
        summary="Generate designs (a generate job)",
        body=QuickGenerate,
        responses={200: Submitted, **bad},
        example={
            "prompt": "A futuristic cityscape at sunset",
            "productTypes": ["tshirt", "hoodie"],
            "autoPublish": True,
        },
    )
    async def generate(request: Request, body: QuickGenerate) -> Response:
        one = GenerateRequest.model_validate(
            body.model_dump(exclude={"priority", "maxRetries"}, exclude_unset=True)
        )
        return await submit_generate(request, one, body.priority, body.maxRetries)

    @api.route(
        "POST",
        "/api/generate/batch",
        summary="Generate several designs as one batch job",
        body=BatchBody,
        responses={200: Submitted, **bad},
        example={
            "items": [
                {"theme": "nature", "style": "minimalist", "productTypes": ["tshirt"]},
                {"theme": "technology", "style": "futuristic", "productTypes": ["hoodie"]},
                {"theme": "abstract", "style": "colorful", "productTypes": ["tshirt", "hoodie"]},
            ],
            "priority": "high",
        },
    )
    async def generate_batch(request: Request, body: BatchBody) -> Response:
        original = {"items": [item.model_dump(exclude_unset=True) for item in body.items]}
        return await submit_batch(request, body, original, body.priority, body.maxRetries)

    return api
