"""Isengard's `/health`, `/ready` and `/info` (capabilities and the parameter schemas), each also
under `/api` (Known Issue 1)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field
from pydantic.fields import FieldInfo
from starlette.requests import Request
from starlette.responses import Response

from core.engine import Engine
from core.settings import Settings
from http_compat.api import Api
from http_compat.contracts.isengard.generation import TOGGLES, GenerateRequest, GenerationConfig
from http_compat.responses import json_response

# The trainer's name as Isengard's `/info` says it.
TRAINER_BACKENDS = {"aitoolkit": "ai-toolkit", "preview": "preview"}
TRAINER_NOTES = {
    "aitoolkit": "ostris/ai-toolkit trains a diffusion LoRA for the base model on this server's GPU",
    "preview": (
        "the embedded preview trainer: it learns the character's colours and tone (a preview style "
        "the preview renderer applies), not a diffusion LoRA; set ATELIER_TRAINER=aitoolkit on a GPU box"
    ),
}


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
    backend: str = Field(description="ai-toolkit, or preview (the embedded preview trainer)")
    base_model: str
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


def training_parameters(engine: Engine) -> dict[str, ParameterSpec]:
    """The configured trainer's declared parameters (what a training config is checked against)."""
    declared = engine.training.parameters()["parameters"]
    return {
        name: ParameterSpec(
            type=spec["type"],
            min=_whole(spec.get("min"), spec["type"]),
            max=_whole(spec.get("max"), spec["type"]),
            default=spec.get("default"),
            wired=spec["wired"],
            description=spec["description"],
            options=spec.get("choices"),
        )
        for name, spec in declared.items()
    }


def _whole(value: float | None, kind: str) -> int | float | None:
    return int(value) if value is not None and kind == "int" else value


def generation_parameters() -> dict[str, ParameterSpec]:
    """The generation parameters, read from the request model so they cannot drift."""
    fields = GenerationConfig.model_fields
    descriptions = {
        "prompt": "Text prompt (length in characters)",
        "negative_prompt": "What to avoid (length in characters)",
        "width": "Image width in pixels, a multiple of 8",
        "height": "Image height in pixels, a multiple of 8",
        "steps": "Sampler steps",
        "guidance_scale": "Classifier-free guidance (the sampler's cfg)",
        "seed": "Random seed; null picks one (the job's config then shows it)",
        "lora_strength": "Strength of the character's LoRA (with lora_id)",
    }
    kinds = {"prompt": "str", "negative_prompt": "str", "guidance_scale": "float", "lora_strength": "float"}
    result = {name: _spec(fields[name], kinds.get(name, "int"), text) for name, text in descriptions.items()}
    result["count"] = _spec(GenerateRequest.model_fields["count"], "int", "Images in one job")
    return result


def _spec(info: FieldInfo, kind: str, description: str) -> ParameterSpec:
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
            "wired": True,
            "description": description,
        }
    )


def declare(api: Api, engine: Engine, settings: Settings, version: str) -> None:
    """`/health`, `/ready` and `/info`, at the root and under `/api`, on `api`."""
    mode: Literal["fast-test", "production"] = "fast-test" if settings.backend == "local" else "production"
    trainer = engine.training.parameters()["trainer"]

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
            storage = _storage_state(await engine.store.health())
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
                w["name"]
                for w in engine.images.list_workflows()["workflows"]
                if w.get("operation") == "txt2img"
            ]
            declared = engine.training.parameters()
            ready = await engine.training.health()
            body = Info(
                name="Isengard API",
                version=version,
                mode=mode,
                training=TrainingInfo(
                    method="lora",
                    backend=TRAINER_BACKENDS.get(trainer, trainer),
                    base_model=declared["base_model"],
                    available=bool(ready.get("ok")),
                    reason=TRAINER_NOTES.get(trainer, trainer)
                    if ready.get("ok")
                    else f"cannot train now: {ready.get('error') or ready.get('reason') or 'the trainer is not ready'}",
                    parameters=training_parameters(engine),
                ),
                image_generation=ImageGenerationInfo(
                    backend=settings.backend,
                    model_variants=variants,
                    toggles={name: Toggle(supported=False, reason=why) for name, why in TOGGLES.items()},
                    parameters=generation_parameters(),
                ),
            )
            return json_response(body.model_dump())


def _storage_state(health: dict[str, object]) -> str:
    """The artifact store's own health (a folder or a bucket) in Isengard's words."""
    return "ok" if health.get("ok") else f"error: {health.get('error') or 'the storage cannot be written'}"
