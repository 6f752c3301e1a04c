"""The generation routes: text-to-image, image-to-image and upscale, each waiting for its run
(`?wait=`), with the contract's field names in every refusal."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from starlette.requests import Request
from starlette.responses import Response

from core.engine import Engine
from core.errors import FieldProblem, InvalidInput, RunNotFound
from core.ids import check_filename
from core.models import MAX_PROMPT_CHARS, RunStatus
from core.settings import Settings
from http_compat.api import Api, Param
from http_compat.contracts.desktop.app_settings import load_settings
from http_compat.contracts.desktop.envelope import BAD_REQUEST, ErrorBody, route
from http_compat.contracts.desktop.shapes import (
    GenerationResponse,
    ImageToImageRequest,
    PendingResponse,
    TextToImageRequest,
    UpscaleRequest,
)
from http_compat.contracts.desktop.views import STATUS, find, generation
from http_compat.errors import ApiError
from http_compat.inputs import query_int
from http_compat.responses import json_response
from http_compat.security import is_loopback

DEFAULT_WAIT_S = 600
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


def declare(api: Api, engine: Engine, settings: Settings) -> None:
    """The generation routes, on `api`."""
    generated = {
        202: (
            PendingResponse,
            "With ?wait=0 only: accepted, still queued or generating (filePath and url null); "
            "/ws/generation and /api/history/{id} follow it",
        ),
        **BAD_REQUEST,
        500: (ErrorBody, "Generation failed (API_ERROR)"),
        504: (ErrorBody, "Generation did not finish in time (API_TIMEOUT); details.id finds it in history"),
    }
    wait_param = Param(
        "wait",
        type="integer",
        description=f"Atelier extension: seconds to wait (0..3600, default {DEFAULT_WAIT_S}); 0 answers "
        "at once, 202 if the generation is not done yet.",
    )

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
            run = await find(engine, match["id"])
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

    @route(
        api,
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
        defaults = await load_settings(engine)
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
        api,
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
        defaults = await load_settings(engine)
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
        api,
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
