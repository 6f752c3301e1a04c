"""ComfyUI generation server (../shared/contracts/comfygen.md), served at `/comfygen`.

Mapping onto the engine:
- A job `id` is the Atelier run id (26 characters), the same run whichever door made it: a run
  submitted over MCP, `/adgen` or any other contract is visible at `GET /generate/{id}`.
- Status words: queued, running, completed, failed are the engine's own. The document has no
  word for a cancelled run, so an Atelier `cancelled` run shows as `failed` with error
  `"cancelled"`.
- `progress` is the run's 0..1 fraction (1.0 once completed).
- Errors are FastAPI's: `{"detail": "message"}`; a body that does not validate (wrong types,
  missing `prompt`, out-of-range values such as width 7, an unknown workflow) is 422 with
  `{"detail": [{"loc": ["body", field], "msg", "type"}]}`; malformed JSON is 400; a body over
  the size cap is 413; an unknown or malformed job id is 404.

Request fields (`POST /generate`, every documented one is accepted):
- prompt, negative_prompt, width, height, steps, cfg, sampler, scheduler go to the engine as is.
- `seed`: -1 or omitted means random (the engine picks one and records it in the run's inputs).
- `loras`: a list of `"name:strength"` strings, passed as the engine's `loras`.
- `workflow`: `"flux-dev.json"` names Atelier's `flux-dev` workflow (a trailing `.json` is
  stripped). An unknown name is a 422 naming it and the text-to-image workflows available.
  Deviation: when omitted, the run uses Atelier's default for the configured backend (the
  preview renderer needs none; ComfyUI gets Atelier's default text-to-image workflow), not
  `flux-dev.json`, so a request without a workflow works on any install.
- `character` (extension, from issue 11: an Atelier character's id or name) and
  `character_strength` (0..2, default 0.8): the character's active LoRA joins the run's LoRAs and
  its trigger word goes at the front of the prompt, as over MCP; the run records the character
  and LoRA version it used. `character_strength` is a field of its own because the document's
  knobs are flat fields beside the prompt (cfg, steps), and the character's strength would
  otherwise be the one LoRA strength a client could not choose; packing it into `character` as
  `"name:strength"` (the `loras` style) would make a name and an id read differently from the
  same field elsewhere (MCP, Isengard's `lora_id`). An unknown character, one with no trained
  LoRA, one whose LoRA ComfyUI cannot load, or `character_strength` without `character` is a 422
  naming `character` (or `character_strength`) with the reason, like any other field.
- Fields outside the document are refused (422), so a misspelt field is not silently dropped.
- The run's `meta` records the door and the workflow file name exactly as the client gave it.

Responses:
- `POST /generate` answers 202 at once with the job's status object (normally `queued`).
- `image_url` is an absolute URL of the first image once completed, served by this contract at
  `GET /images/{id}/{filename}` under the prefix the client used. Extension: `image_urls`
  lists every image of the run (a batch made over another door lists its children's images).
- `GET /health`: `comfyui_available` says whether the configured generation backend is up (the
  preview renderer when no ComfyUI is configured); `status` is `healthy` when it is, else
  `degraded`, always with 200 so a client can read why.

WebSocket `/ws/progress/{id}`:
- On connect the job's current state, then one message per change or progress step, shaped
  `{job_id, status, progress, step, max_steps, message, image_url, error}` (`image_url` set when
  completed, `error` when failed, null otherwise); after the final message the socket closes
  normally (1000). Messages from the client are ignored.
- An unknown (or malformed) id: the socket is accepted, one message in the same shape with
  status `failed` and error `job <id> not found` is sent, then it closes with code 4404. A job
  deleted while watched ends the same way.
- A client that goes away ends the watch at once (its event subscription included).

Extension, not in the document (whose "Future enhancements" lists it):
`POST /generate/{id}/cancel` cancels the job and answers its status object (a final job is
returned unchanged).
"""

from __future__ import annotations

import json
from contextlib import aclosing
from typing import Any

import anyio
from pydantic import BaseModel, ConfigDict, Field
from starlette.requests import HTTPConnection, Request
from starlette.responses import Response
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from core.engine import Engine
from core.errors import CharacterNotFound, InvalidInput, RunNotFound
from core.ids import RUN_ID_RE
from core.models import Run, RunKind, RunStatus
from core.settings import Settings
from http_compat.answers import KeptAnswers, single
from http_compat.api import Api
from http_compat.errors import ApiError, Detail, fastapi_error
from http_compat.realtime import run_updates
from http_compat.responses import artifact_response, base_url, json_response

VERSION = "0.1.0"
NOT_FOUND_CLOSE = 4404


render_error = fastapi_error


# --- shapes ---------------------------------------------------------------------------------


class GenerateRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    prompt: str = Field(description="What to make.")
    negative_prompt: str | None = Field(default=None, description="What to avoid.")
    workflow: str | None = Field(
        default=None,
        description="A workflow file such as 'flux-dev.json' (or its name). Default: the backend's default.",
    )
    width: int | None = Field(default=None, description="Pixels, a multiple of 8 in 64..4096.")
    height: int | None = Field(default=None, description="Pixels, a multiple of 8 in 64..4096.")
    steps: int | None = Field(default=None, description="Sampler steps, 1..150.")
    cfg: float | None = Field(default=None, description="Guidance scale, 0..30.")
    seed: int | None = Field(default=None, description="-1 or omitted: random.")
    loras: list[str] | None = Field(default=None, description="LoRAs as 'name:strength'.")
    sampler: str | None = Field(default=None, description="Sampler name, e.g. 'euler'.")
    scheduler: str | None = Field(default=None, description="Scheduler name, e.g. 'normal'.")
    character: str | None = Field(
        default=None,
        description="Atelier extension: a character's id or name; its trained LoRA is applied and its "
        "trigger word put at the front of the prompt.",
    )
    character_strength: float | None = Field(
        default=None, description="Atelier extension: how strongly the character's LoRA applies, 0..2 (0.8)."
    )


class JobStatus(BaseModel):
    id: str
    status: str = Field(description="queued | running | completed | failed")
    progress: float = Field(description="0..1")
    image_url: str | None = Field(description="The first image, once completed.")
    error: str | None = Field(description="Why it failed ('cancelled' for a cancelled job).")
    image_urls: list[str] = Field(description="Atelier extension: every image of the job.")


class Health(BaseModel):
    status: str = Field(description="healthy | degraded")
    comfyui_available: bool
    version: str


# --- mapping --------------------------------------------------------------------------------


def status_word(run: Run) -> str:
    return "failed" if run.status is RunStatus.CANCELLED else run.status.value


def error_of(run: Run) -> str | None:
    if run.status is RunStatus.CANCELLED:
        return "cancelled"
    if run.status is RunStatus.FAILED:
        return run.error or "failed"
    return None


def parse_workflow(requested: str, known: list[str]) -> str:
    """`flux-dev.json` (or `flux-dev`) as the engine's workflow name; 422 naming the known ones."""
    name = requested.removesuffix(".json")
    if name not in known:
        choices = ", ".join(f"{k}.json" for k in known)
        problem = f"unknown workflow {requested!r}; available: {choices}"
        raise ApiError(
            422,
            f"workflow: {problem}",
            details=[{"loc": ["body", "workflow"], "msg": problem, "type": "value_error"}],
        )
    return name


def invalid_body(exc: InvalidInput) -> ApiError:
    """An engine refusal of a field, in FastAPI's 422 shape."""
    return ApiError(
        422,
        str(exc),
        details=[
            {"loc": ["body", *p.field.split(".")], "msg": p.problem, "type": "value_error"}
            for p in exc.problems
        ],
    )


def job_id_of(connection: HTTPConnection) -> str:
    job_id = connection.path_params["id"]
    if not RUN_ID_RE.fullmatch(job_id):
        raise ApiError(404, f"job {job_id[:40]!r} not found")
    return job_id


# --- the contract ---------------------------------------------------------------------------


def build(engine: Engine, settings: Settings) -> Api:
    api = Api(
        name="comfygen",
        title="ComfyUI Generation Server (Atelier)",
        version=VERSION,
        description="The ComfyUI generation server's submit/poll/progress API, served by Atelier over its engine.",
        render_error=render_error,
        error_model=Detail,
        invalid_status=422,
    )
    not_found = {404: (Detail, "No such job")}
    answers = KeptAnswers(engine)

    async def load(job_id: str) -> Run:
        try:
            return await engine.get_run(job_id)
        except RunNotFound:
            raise ApiError(404, f"job {job_id} not found") from None

    async def image_urls(base: str, run: Run) -> list[str]:
        """URLs of the job's images; a batch's are its children's, in the order they were made."""
        runs = [run]
        if run.kind is RunKind.BATCH:
            page = await engine.list_runs(parent_id=run.id, limit=200)
            runs = sorted(page.items, key=lambda child: child.seq)
        return [
            f"{base}/images/{r.id}/{a.filename}"
            for r in runs
            for a in r.artifacts
            if a.media_type.startswith("image/")
        ]

    async def view(base: str, run: Run) -> dict[str, Any]:
        urls = await image_urls(base, run) if run.status is RunStatus.COMPLETED else []
        return JobStatus(
            id=run.id,
            status=status_word(run),
            progress=1.0 if run.status is RunStatus.COMPLETED else round(run.progress, 4),
            image_url=urls[0] if urls else None,
            error=error_of(run),
            image_urls=urls,
        ).model_dump()

    async def message(base: str, run: Run) -> dict[str, Any]:
        """One WebSocket message: the document's progress shape."""
        shown = await view(base, run)
        return {
            "job_id": run.id,
            "status": shown["status"],
            "progress": shown["progress"],
            "step": run.step,
            "max_steps": run.max_steps,
            "message": run.message or None,
            "image_url": shown["image_url"],
            "error": shown["error"],
        }

    @api.route("GET", "/health", summary="Health check", responses={200: Health})
    async def health(request: Request) -> Response:
        status = await engine.status()
        up = bool(status["backends"].get(settings.backend, {}).get("up"))
        return json_response(
            Health(status="healthy" if up else "degraded", comfyui_available=up, version=VERSION).model_dump()
        )

    @api.route(
        "POST",
        "/generate",
        summary="Submit a generation request (returns the job id)",
        body=GenerateRequest,
        responses={
            202: JobStatus,
            400: (Detail, "The body is not valid JSON"),
            413: (Detail, "The body is too large"),
            422: (Detail, "A field is missing, of the wrong type or out of range"),
        },
        example={
            "prompt": "a sunset over mountains",
            "negative_prompt": "blurry",
            "workflow": "flux-dev.json",
            "width": 1024,
            "height": 1024,
            "steps": 20,
            "cfg": 7.0,
            "seed": 42,
        },
    )
    async def generate(request: Request, body: GenerateRequest) -> Response:
        params = body.model_dump(exclude_none=True, exclude={"workflow", "seed", "loras"})
        meta: dict[str, Any] = {"door": "comfygen"}
        if body.workflow is not None:
            known = [
                w["name"] for w in engine.images.list_workflows()["workflows"] if w["operation"] == "txt2img"
            ]
            params["workflow"] = parse_workflow(body.workflow, known)
            meta["workflow_file"] = body.workflow
        if body.seed is not None and body.seed != -1:
            params["seed"] = body.seed
        if body.loras:
            params["loras"] = body.loras
        try:
            run = await engine.submit_image(params, meta=meta)
        except InvalidInput as exc:
            raise invalid_body(exc) from None
        except CharacterNotFound as exc:  # a field of the body, like an unknown workflow
            raise invalid_body(InvalidInput("character", str(exc))) from None
        return json_response(await view(base_url(request), run), 202)

    @api.route(
        "GET",
        "/generate/{id}",
        summary="Poll a job's status",
        responses={200: JobStatus, **not_found},
    )
    async def get_job(request: Request) -> Response:
        job_id = job_id_of(request)

        async def render(run: Run) -> Response:
            # Only a completed job's answer has links.
            return json_response(
                await view(base_url(request) if run.status is RunStatus.COMPLETED else "", run)
            )

        return await answers.answer(request, lambda: load(job_id), render, single)

    @api.route(
        "POST",
        "/generate/{id}/cancel",
        summary="Atelier extension: cancel a job",
        responses={200: JobStatus, **not_found},
        description="Not in the original document (listed under its future enhancements). Answers the "
        "job's status object: a cancelled job shows as failed with error 'cancelled'.",
    )
    async def cancel(request: Request) -> Response:
        job_id = job_id_of(request)
        await load(job_id)
        return json_response(await view(base_url(request), await engine.cancel(job_id)))

    @api.route(
        "GET",
        "/images/{id}/{filename}",
        summary="One of a job's images (what image_url points at)",
        responses={200: "The image's bytes", **not_found},
        produces="image/png",
    )
    async def image(request: Request) -> Response:
        run = await load(job_id_of(request))
        return await artifact_response(engine, run, request.path_params["filename"])

    @api.websocket(
        "/ws/progress/{id}",
        summary="Stream a job's progress",
        description="Sends the job's state on connect, then a message per change or progress step: "
        "{job_id, status, progress, step, max_steps, message, image_url, error}. Closes with 1000 "
        "after the final (completed or failed) message; an unknown job gets one failed message "
        "and close code 4404.",
    )
    async def progress(ws: WebSocket) -> None:
        await ws.accept()
        job_id = ws.path_params["id"]
        base = base_url(ws)
        gone = False

        async def watch_client(scope: anyio.CancelScope) -> None:
            """End the watch as soon as the client leaves, even while the job is idle."""
            nonlocal gone
            try:
                while (await ws.receive())["type"] != "websocket.disconnect":
                    pass
            except (WebSocketDisconnect, RuntimeError):
                pass
            gone = True
            scope.cancel()

        async def stream() -> bool:
            """Send each state; True when the last one sent was final."""
            nonlocal gone
            if not RUN_ID_RE.fullmatch(job_id):
                return False
            last: dict[str, Any] | None = None
            try:
                # aclosing: the event subscription ends now, not whenever the generator is collected.
                async with aclosing(run_updates(engine, job_id)) as updates:
                    async for run in updates:
                        shown = await message(base, run)
                        if shown != last:
                            await ws.send_text(json.dumps(shown))
                            last = shown
                        if run.status.is_final:
                            return True
            except RunNotFound:
                pass
            except (WebSocketDisconnect, OSError):
                gone = True
            return False

        finished = False
        async with anyio.create_task_group() as tg:
            tg.start_soon(watch_client, tg.cancel_scope)
            finished = await stream()
            tg.cancel_scope.cancel()
        if gone or ws.application_state is WebSocketState.DISCONNECTED:
            return
        try:
            if finished:
                await ws.close(1000)
                return
            await ws.send_text(
                json.dumps(
                    {
                        "job_id": job_id,
                        "status": "failed",
                        "progress": 0.0,
                        "step": 0,
                        "max_steps": 0,
                        "message": None,
                        "image_url": None,
                        "error": f"job {job_id[:40]} not found",
                    }
                )
            )
            await ws.close(NOT_FOUND_CLOSE)
        except (WebSocketDisconnect, OSError, RuntimeError):
            pass

    return api
