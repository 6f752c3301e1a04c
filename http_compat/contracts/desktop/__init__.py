"""Desktop studio backend (../shared/contracts/desktop.md), served at `/desktop`.

Mapping onto the engine:
- A generation is an Atelier image run; its `id` is the run's integer `seq` (the ledger's
  sequence number), so ids are the integers the document's client expects and every image run
  has one whichever door made it. History lists top-level image runs (batch items are left out;
  their batch is not an image), newest first; all of them have `type` "image".
- `negativePrompt` -> `negative_prompt`, `cfgScale` -> `cfg`, `strength` -> `denoise`,
  `seedImage` / `imagePath` -> `source`. Errors name the contract's fields, never the engine's.
- Envelopes: success `{success: true, data, message?}`; error `{success: false, error, code,
  details?}` with the document's codes: INVALID_PROMPT (prompt empty or over 4000 characters),
  INVALID_PARAMETERS (any other bad request, 400, malformed JSON included), NOT_FOUND (404),
  API_TIMEOUT (504: the generation did not finish in time), API_ERROR (500: the generation
  failed, or an unexpected server error), STORAGE_ERROR (500: a file could not be read or
  written), DATABASE_ERROR (500: the ledger could not be read or written); plus
  PAYLOAD_TOO_LARGE (413) and METHOD_NOT_ALLOWED (405), which the document has no word for.
  Validation errors carry `details: {"errors": [{loc, msg, type}]}`; engine refusals carry
  `details: {"field": ...}`.

Decisions where the document is vague:
- Generation is synchronous, as the document shows: the three POSTs wait for the run and answer
  200 `{id, prompt, filePath, url, seed, created_at}`. A failed (or cancelled) run answers 500
  API_ERROR "Generation failed: <reason>". A run still going at the deadline (600 s; the
  Atelier extension `?wait=<seconds>` (0..3600) changes it) answers 504 API_TIMEOUT with
  `details: {id, status}`: the run goes on and shows in history. A client that hangs up
  mid-wait does not stop its run either.
- `?wait=0` is a client asking not to wait, so it never gets the timeout error: the document's
  clients treat API_TIMEOUT as a failure of the generation service, which it is not. It answers
  the run as it stands: 200 as above if it is already done, 500 API_ERROR if it already failed,
  else 202 `{success: true, data}` with the same fields (`filePath` and `url` null) plus the
  extension `status`, queued or generating; `/ws/generation` (`taskId` is the `id`) or
  `GET /api/history/{id}` follow it from there.
- Missing width/height/steps/cfgScale take the persisted settings' defaults (defaultWidth,
  defaultHeight, defaultSteps, defaultCfgScale), which start at the document's 512, 512, 25, 7.5.
  Unknown request fields are a 400 (a typo such as `cfg_scale` must not be ignored silently).
- image-to-image takes `seedImage`, `prompt`, `strength` (0..1, default 0.7), `steps`,
  `cfgScale`, and as extensions `negativePrompt` and `seed`; its image keeps the source's size.
  upscale takes `imagePath` and `scale` (an integer 1..8, default 2). `seedImage` / `imagePath`
  may be the `filePath` or `url` this contract returned (mapped back to the run's image, no
  fetch), a `data:` URL or base64, a path inside a folder Atelier may read (ATELIER_HOME/inputs,
  ATELIER_INPUT_DIRS), or a loopback URL; anything else is a 400 naming the field (its message
  names those folders by setting, not by their place on the server's disk).
- `filePath` is `/generated/<id>/<filename>`, relative to the contract's base URL (never the
  machine's real path: a remote client must not learn the server's file layout); `url` is the
  absolute URL of `GET /generated/{id}/{filename}`, which serves the file. A run with several
  images shows its first; a run without an image yet has `filePath` and `url` null.
  `created_at` is ISO 8601 UTC with `Z`.
- `GET /api/history`: `limit` 1..200 (default 50), `offset` >= 0, `type` image|video (video:
  no rows, `total` 0: Atelier makes images); `total` counts every matching run. Rows and the
  detail add `status` (queued, generating, completed, failed) as an extension; the detail also
  adds `error` and gives `parameters.cfgScale` (null where the operation has no such setting).
  `DELETE` removes the run and its files, stopping it first if it is still going.
- Settings live in the ledger (document `desktop/settings`), so they survive restarts. PUT merges
  a partial update; unknown fields and nulls are a 400; the answer holds the full settings.
  `storagePath` is kept and reported but not used: Atelier keeps its files in its own store
  (ATELIER_HOME/artifacts); it must be a plain path string of at most 500 characters.
- `/ws/generation` broadcasts the progress of every image run, whichever door made it:
  `{type: "progress", taskId: "<id>", progress: 0..100, status}`; status queued, generating,
  completed or failed (a cancelled run is reported "failed"; failed messages add the extension
  `error`, "cancelled" for a cancelled run).
  On connect the socket first sends one message per run still queued or generating, so a
  client that connects mid-generation sees it. Messages from the client are ignored.
- `GET /health` is `{status: "ok", version: "0.1.0"}`: the API is up (the document asks no more).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import anyio
from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import Response

from core.engine import Engine
from core.errors import FieldProblem, InvalidInput, RunNotFound
from core.ids import check_filename
from core.models import MAX_PROMPT_CHARS, Run, RunKind, RunStatus
from core.settings import Settings
from http_compat.answers import KeptAnswers, single
from http_compat.api import Api, Param
from http_compat.contracts.desktop import realtime
from http_compat.contracts.desktop.envelope import ErrorBody, guarded, render_error
from http_compat.contracts.desktop.shapes import (
    AppSettings,
    DetailResponse,
    Done,
    GenerationResponse,
    Health,
    HistoryPage,
    ImageToImageRequest,
    PendingResponse,
    SettingsResponse,
    SettingsUpdate,
    TextToImageRequest,
    UpscaleRequest,
)
from http_compat.contracts.desktop.views import STATUS, detail, generation, history_item, parse_id
from http_compat.errors import ApiError
from http_compat.inputs import query_int
from http_compat.responses import artifact_response, json_response
from http_compat.security import is_loopback

log = logging.getLogger("atelier.http.desktop")

VERSION = "0.1.0"
SETTINGS_KEY = "desktop/settings"
DEFAULT_WAIT_S = 600
DEFAULT_SETTINGS: dict[str, Any] = {
    "storagePath": "./generated",
    "defaultWidth": 512,
    "defaultHeight": 512,
    "defaultSteps": 25,
    "defaultCfgScale": 7.5,
}

# --- mapping --------------------------------------------------------------------------------

_GENERATED = re.compile(r"^/?generated/(?P<id>[0-9]{1,18})/(?P<file>[^/?#]+)$")
_FIELD_NAMES = {"negative_prompt": "negativePrompt", "cfg": "cfgScale", "denoise": "strength"}


def check_prompt(prompt: str | None) -> str:
    if prompt is None or not prompt.strip():
        raise ApiError(400, "Prompt is required", code="INVALID_PROMPT", details={"field": "prompt"})
    if len(prompt) > MAX_PROMPT_CHARS:
        raise ApiError(
            400,
            f"Prompt is too long: at most {MAX_PROMPT_CHARS} characters (got {len(prompt)})",
            code="INVALID_PROMPT",
            details={"field": "prompt"},
        )
    return prompt


def renamed(exc: InvalidInput, source_field: str) -> ApiError:
    """The engine's refusal (every bad field), naming the contract's fields instead of the engine's."""

    def contract_name(field: str) -> str:
        head, _, rest = field.partition(".")
        name = source_field if head == "source" else _FIELD_NAMES.get(head, head)
        return name + (f".{rest}" if rest else "")

    first = contract_name(exc.field)
    message = "; ".join(f"{contract_name(p.field)}: {p.problem}" for p in exc.problems)
    code = "INVALID_PROMPT" if first == "prompt" else "INVALID_PARAMETERS"
    return ApiError(400, message, code=code, details={"field": first})


# --- the contract ---------------------------------------------------------------------------


def build(engine: Engine, settings: Settings) -> Api:
    api = Api(
        name="desktop",
        title="Desktop studio backend (Atelier)",
        version=VERSION,
        description="The desktop studio's generation, history and settings API, served by Atelier "
        "over its engine.",
        render_error=render_error,
        error_model=ErrorBody,
        invalid_status=400,
    )
    settings_lock = anyio.Lock()
    bad_request = {400: (ErrorBody, "Invalid request (INVALID_PROMPT or INVALID_PARAMETERS)")}
    answers = KeptAnswers(engine)
    not_found = {404: (ErrorBody, "Generation not found (NOT_FOUND)")}
    generated = {
        202: (
            PendingResponse,
            "With ?wait=0 only: accepted, still queued or generating (filePath and url null); "
            "/ws/generation and /api/history/{id} follow it",
        ),
        **bad_request,
        500: (ErrorBody, "Generation failed (API_ERROR)"),
        504: (ErrorBody, "Generation did not finish in time (API_TIMEOUT); details.id finds it in history"),
    }
    wait_param = Param(
        "wait",
        type="integer",
        description=f"Atelier extension: seconds to wait (0..3600, default {DEFAULT_WAIT_S}); 0 answers "
        "at once, 202 if the generation is not done yet.",
    )

    def route(method: str, path: str, **options: Any) -> Callable[[Any], Any]:
        def register(handler: Callable[..., Awaitable[Response]]) -> Callable[..., Awaitable[Response]]:
            return api.route(method, path, **options)(guarded(handler))

        return register

    # The engine names the folders a source may come from; a remote client learns their names only.
    folders = {
        **{str(d): "an ATELIER_INPUT_DIRS folder" for d in settings.allowed_input_dirs},
        str(settings.inputs_dir): "ATELIER_HOME/inputs",
        str(settings.home): "ATELIER_HOME",
    }
    folders.update({str(Path(real).expanduser().resolve()): label for real, label in folders.items()})

    def hide_folders(text: str) -> str:
        for real in sorted(folders, key=len, reverse=True):
            text = text.replace(real, folders[real])
        return text

    async def load_settings() -> AppSettings:
        stored = await engine.get_document(SETTINGS_KEY)
        merged = {**DEFAULT_SETTINGS, **(stored if isinstance(stored, dict) else {})}
        try:
            return AppSettings.model_validate({name: merged[name] for name in DEFAULT_SETTINGS})
        except ValidationError:
            log.warning("stored desktop settings are invalid; using the defaults")
            return AppSettings.model_validate(DEFAULT_SETTINGS)

    async def find(raw_id: str) -> Run:
        """The image run with this id, or the document's 404."""
        try:
            run = await engine.get_run_by_seq(parse_id(raw_id))
        except (RunNotFound, InvalidInput):
            run = None
        if run is None or run.kind is not RunKind.IMAGE:
            raise ApiError(404, "Generation not found", code="NOT_FOUND")
        return run

    async def source_of(request: Request, value: str, name: str) -> str:
        """An image this contract served (its filePath or url) as the engine's run reference;
        any other form is passed on for the engine to fetch and check."""
        path = value.strip()
        if path.startswith(("http://", "https://")):
            parts = urlsplit(path)
            prefix = request.scope.get("root_path", "") + "/generated/"
            ours = parts.hostname is not None and (
                is_loopback(parts.hostname) or parts.hostname == request.url.hostname
            )
            if not (ours and parts.path.startswith(prefix) and not parts.query):
                return value
            path = parts.path.removeprefix(request.scope.get("root_path", ""))
        match = _GENERATED.fullmatch(path)
        if match is None:
            if path.lstrip("/").startswith("generated/"):
                raise ApiError(
                    400,
                    f"{name}: {value[:80]!r} is not an image of this API (/generated/<id>/<filename>)",
                    code="INVALID_PARAMETERS",
                    details={"field": name},
                )
            return value
        try:
            run = await find(match["id"])
            filename = check_filename(match["file"])
        except (ApiError, InvalidInput):
            raise ApiError(
                400, f"{name}: generation {match['id']} does not exist", details={"field": name}
            ) from None
        if not any(a.filename == filename for a in run.artifacts):
            raise ApiError(
                400,
                f"{name}: generation {run.seq} has no image {filename!r} (it is {STATUS[run.status]})",
                details={"field": name},
            )
        return f"{run.id}/{filename}"

    async def generate(request: Request, params: dict[str, Any], source_field: str) -> Response:
        """Submit, wait for the run, and answer as the document does."""
        wait_s = query_int(request, "wait", DEFAULT_WAIT_S, low=0, high=3600, invalid_status=400)
        try:
            run = await engine.submit_image(params, meta={"door": "desktop"})
        except InvalidInput as exc:
            hidden = InvalidInput.of(FieldProblem(p.field, hide_folders(p.problem)) for p in exc.problems)
            raise renamed(hidden, source_field) from None
        try:
            run = await engine.wait(run.id, wait_s)
        except RunNotFound:
            raise ApiError(
                500, "Generation failed: it was deleted before it finished", code="API_ERROR",
                details={"id": run.seq},
            ) from None  # fmt: skip
        if run.status is RunStatus.COMPLETED:
            return json_response({"success": True, "data": generation(request, run)})
        if run.status.is_final:
            reason = run.error or ("cancelled" if run.status is RunStatus.CANCELLED else "unknown error")
            raise ApiError(500, f"Generation failed: {reason}", code="API_ERROR", details={"id": run.seq})
        if wait_s == 0:
            pending = {**generation(request, run), "status": STATUS[run.status]}
            return json_response({"success": True, "data": pending}, 202)
        raise ApiError(
            504,
            f"Generation did not finish within {wait_s} s; it is still {STATUS[run.status]} "
            f"and will show in /api/history/{run.seq}",
            code="API_TIMEOUT",
            details={"id": run.seq, "status": STATUS[run.status]},
        )

    @route("GET", "/health", summary="Is the API running", responses={200: Health})
    async def health(request: Request) -> Response:
        return json_response({"status": "ok", "version": VERSION})

    @route(
        "POST",
        "/api/generate/text-to-image",
        summary="Generate an image from a text prompt (waits for it)",
        body=TextToImageRequest,
        responses={200: GenerationResponse, **generated},
        params=[wait_param],
        example={
            "prompt": "A beautiful sunset over mountains",
            "negativePrompt": "blurry, low quality",
            "width": 512,
            "height": 512,
            "steps": 25,
            "cfgScale": 7.5,
            "seed": 42,
        },
    )
    async def text_to_image(request: Request, body: TextToImageRequest) -> Response:
        prompt = check_prompt(body.prompt)
        defaults = await load_settings()
        params = {
            "prompt": prompt,
            "negative_prompt": body.negativePrompt,
            "width": body.width if body.width is not None else defaults.defaultWidth,
            "height": body.height if body.height is not None else defaults.defaultHeight,
            "steps": body.steps if body.steps is not None else defaults.defaultSteps,
            "cfg": body.cfgScale if body.cfgScale is not None else defaults.defaultCfgScale,
            "seed": body.seed,
        }
        return await generate(request, params, "source")

    @route(
        "POST",
        "/api/generate/image-to-image",
        summary="Transform an image with a text prompt (waits for it); the result keeps its size",
        body=ImageToImageRequest,
        responses={200: GenerationResponse, **generated},
        params=[wait_param],
        example={
            "seedImage": "/generated/1/image-01.png",
            "prompt": "A futuristic cyberpunk version",
            "strength": 0.7,
            "steps": 25,
            "cfgScale": 7.5,
        },
    )
    async def image_to_image(request: Request, body: ImageToImageRequest) -> Response:
        prompt = check_prompt(body.prompt)
        defaults = await load_settings()
        params = {
            "operation": "img2img",
            "source": await source_of(request, body.seedImage, "seedImage"),
            "prompt": prompt,
            "negative_prompt": body.negativePrompt,
            "denoise": body.strength,
            "steps": body.steps if body.steps is not None else defaults.defaultSteps,
            "cfg": body.cfgScale if body.cfgScale is not None else defaults.defaultCfgScale,
            "seed": body.seed,
        }
        return await generate(request, params, "seedImage")

    @route(
        "POST",
        "/api/generate/upscale",
        summary="Upscale an image by an integer factor (waits for it)",
        body=UpscaleRequest,
        responses={200: GenerationResponse, **generated},
        params=[wait_param],
        example={"imagePath": "/generated/1/image-01.png", "scale": 2},
    )
    async def upscale(request: Request, body: UpscaleRequest) -> Response:
        params = {
            "operation": "upscale",
            "source": await source_of(request, body.imagePath, "imagePath"),
            "scale": body.scale,
        }
        return await generate(request, params, "imagePath")

    @route(
        "GET",
        "/api/history",
        summary="Generations, newest first",
        responses={200: HistoryPage, **bad_request},
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
        "GET",
        "/api/history/{id}",
        summary="One generation with its parameters",
        responses={200: DetailResponse, **bad_request, **not_found},
    )
    async def get_generation(request: Request) -> Response:
        raw_id = request.path_params["id"]

        async def render(run: Run) -> Response:
            return json_response({"success": True, "data": detail(request, run)})

        return await answers.answer(request, lambda: find(raw_id), render, single)

    @route(
        "DELETE",
        "/api/history/{id}",
        summary="Delete a generation and its files (stopping it if it is still going)",
        responses={200: Done, **bad_request, **not_found},
    )
    async def delete_generation(request: Request) -> Response:
        run = await find(request.path_params["id"])
        try:
            await engine.delete(run.id)
        except RunNotFound:
            raise ApiError(404, "Generation not found", code="NOT_FOUND") from None
        return json_response({"success": True, "message": "Generation deleted"})

    @route(
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
            run = await find(raw_id)
        except (ApiError, InvalidInput):
            raise ApiError(404, "File not found", code="NOT_FOUND") from None
        return await artifact_response(engine, run, filename)

    @route("GET", "/api/settings", summary="The application settings", responses={200: SettingsResponse})
    async def get_settings(request: Request) -> Response:
        return json_response({"success": True, "data": (await load_settings()).model_dump()})

    @route(
        "PUT",
        "/api/settings",
        summary="Update some or all settings",
        body=SettingsUpdate,
        responses={200: SettingsResponse, **bad_request},
        example={"storagePath": "./custom/path", "defaultWidth": 768, "defaultHeight": 768},
    )
    async def put_settings(request: Request, body: SettingsUpdate) -> Response:
        async with settings_lock:
            current = await load_settings()
            updated = AppSettings.model_validate(
                {**current.model_dump(), **body.model_dump(exclude_unset=True)}
            )
            await engine.put_document(SETTINGS_KEY, updated.model_dump())
        return json_response({"success": True, "message": "Settings updated", "data": updated.model_dump()})

    realtime.declare(api, engine)
    return api
