"""Domain models: what a run is, what it asks for, and what it produced.

pydantic models sit at the boundary (specs arrive from MCP tools, REST bodies and the CLI);
the ledger hands back plain dataclasses.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal, TypeVar, get_args

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import ErrorDetails

from core.errors import FieldProblem, InvalidInput

MIN_SIDE, MAX_SIDE = 64, 4096
MAX_PROMPT_CHARS = 4000
MAX_SEED = 2**32 - 1
MAX_LORAS = 8
# ComfyUI model names are relative paths inside a model folder ("sdxl/detail.safetensors").
_MODEL_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9 _.+()\[\]-]*(/[A-Za-z0-9_][A-Za-z0-9 _.+()\[\]-]*)*$")
WORKFLOW_NAME_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,63}$"
Operation = Literal["txt2img", "img2img", "upscale"]
OPERATIONS: tuple[str, ...] = get_args(Operation)


def _check_model_name(value: str) -> str:
    if ".." in value or not _MODEL_NAME.fullmatch(value):
        raise ValueError("not a model file name")
    return value


ModelName = Annotated[str, Field(min_length=1, max_length=200), AfterValidator(_check_model_name)]


class RunStatus(enum.StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def is_final(self) -> bool:
        return self in FINAL_STATUSES


FINAL_STATUSES = frozenset({RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.CANCELLED})
# Waiting or executing: what recovery, cancel and a character's training list look for.
ACTIVE_STATUSES = frozenset({RunStatus.QUEUED, RunStatus.RUNNING})


class RunKind(enum.StrEnum):
    IMAGE = "image"
    BATCH = "batch"
    TRAINING = "training"
    PUBLISH = "publish"
    POD = "pod"


class Priority(enum.StrEnum):
    LOW = "low"
    NORMAL = "normal"
    HIGH = "high"
    URGENT = "urgent"

    @property
    def rank(self) -> int:
        """Higher runs first."""
        return _PRIORITY_RANK[self]

    @classmethod
    def parse(cls, value: str | Priority) -> Priority:
        try:
            return cls(str(value).lower())
        except ValueError:
            allowed = ", ".join(p.value for p in cls)
            raise InvalidInput("priority", f"must be one of {allowed} (got {value!r})") from None


_PRIORITY_RANK = {Priority.LOW: 0, Priority.NORMAL: 1, Priority.HIGH: 2, Priority.URGENT: 3}
_Choice = TypeVar("_Choice", bound=enum.StrEnum)


def parse_filter(
    choices: type[_Choice], field: str, value: str | Collection[str] | None
) -> set[_Choice] | None:
    """The values a listing filter names (`"a,b"`, `["a", "b"]`, any case), or None for no filter;
    `InvalidInput` names the field and the allowed values."""
    if value is None or value == "" or value == []:
        return None
    values = [value] if isinstance(value, str) else list(value)
    parsed = set()
    for item in values:
        for part in str(item).split(","):
            try:
                parsed.add(choices(part.strip().lower()))
            except ValueError:
                allowed = ", ".join(e.value for e in choices)
                raise InvalidInput(field, f"must be one of {allowed} (got {part!r})") from None
    return parsed


class LoraRef(BaseModel):
    """A LoRA to apply: its file name on the ComfyUI server and how strongly."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: ModelName
    strength: float = Field(default=1.0, ge=-5.0, le=5.0)

    @classmethod
    def parse(cls, value: object) -> object:
        """Accept `"name"`, `"name:0.8"` or `{"name", "strength"}`; pydantic checks the rest."""
        if isinstance(value, str):
            name, sep, strength = value.rpartition(":")
            if sep:
                try:
                    return {"name": name.strip(), "strength": float(strength)}
                except ValueError:
                    pass
            return {"name": value.strip()}
        return value


class SourceImage(BaseModel):
    """An input image Atelier has stored (content-addressed), for image-to-image and upscaling."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    media_type: str
    width: int = Field(ge=1)
    height: int = Field(ge=1)
    origin: str = Field(default="", max_length=300, description="Where it came from, for the record.")


class CharacterUse(BaseModel):
    """The character a run was made with, as it was then: retraining later does not change it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(pattern=r"^char-[0-9a-z]{12}$")
    name: str = Field(max_length=80)
    version: int = Field(ge=1)
    trigger_word: str = Field(pattern=r"^[a-z0-9_]{2,48}$")
    strength: float = Field(ge=0.0, le=2.0)
    trainer: str = Field(max_length=32)
    # The version's file in the character's folder (the preview renderer reads its style from it).
    lora_file: str = Field(max_length=200)


# Fields an operation has no use for, left out of the run's record (the source sets the size).
_NOT_USED_BY: dict[str, set[str]] = {
    "txt2img": set(),
    "img2img": {"width", "height"},
    "upscale": {"width", "height", "steps", "cfg", "sampler", "scheduler", "count", "negative_prompt"},
}


class ImageSpec(BaseModel):
    """An image request, validated: text-to-image, image-to-image or upscale. Stored as the run's `inputs`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    operation: Operation = "txt2img"
    prompt: str = Field(default="", max_length=MAX_PROMPT_CHARS)
    negative_prompt: str = Field(default="", max_length=MAX_PROMPT_CHARS)
    width: int = Field(default=512, ge=MIN_SIDE, le=MAX_SIDE, multiple_of=8)
    height: int = Field(default=512, ge=MIN_SIDE, le=MAX_SIDE, multiple_of=8)
    steps: int = Field(default=20, ge=1, le=150)
    cfg: float = Field(default=7.0, ge=0.0, le=30.0)
    seed: int = Field(ge=0, le=MAX_SEED)
    sampler: str = Field(default="euler", min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.+-]+$")
    scheduler: str = Field(default="normal", min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.+-]+$")
    count: int = Field(default=1, ge=1, le=16)
    workflow: str | None = Field(default=None, pattern=WORKFLOW_NAME_PATTERN)
    checkpoint: ModelName | None = None
    loras: tuple[LoraRef, ...] = Field(default=(), max_length=MAX_LORAS)
    denoise: float | None = Field(default=None, ge=0.0, le=1.0)
    scale: float | None = Field(default=None, ge=1.0, le=8.0)
    source: SourceImage | None = None
    character: CharacterUse | None = None

    @field_validator("loras", mode="before")
    @classmethod
    def _parse_loras(cls, value: object) -> object:
        if isinstance(value, str):
            value = [part for part in value.split(",") if part.strip()]
        if isinstance(value, list | tuple):
            return [LoraRef.parse(item) for item in value]
        return value

    @model_validator(mode="after")
    def _fits_the_operation(self) -> ImageSpec:
        if self.operation != "upscale" and not self.prompt.strip():
            raise ValueError(f"prompt: {FIELD_RULES['prompt']} (got {len(self.prompt)} characters)")
        if self.operation != "txt2img" and self.source is None:
            raise ValueError(f"source: is required for {self.operation}")
        if self.operation == "txt2img" and self.source is not None:
            raise ValueError("source: is only for image-to-image and upscale")
        return self

    @property
    def effective_denoise(self) -> float:
        """How much of the source to repaint: all of it for text-to-image, 0.6 by default otherwise."""
        if self.denoise is not None:
            return self.denoise
        return 1.0 if self.operation == "txt2img" else 0.6

    @property
    def effective_scale(self) -> float:
        return self.scale if self.scale is not None else 2.0

    def stored(self) -> dict[str, Any]:
        """The run's `inputs`: what was asked, leaving out the options that are not in use."""
        inputs = self.model_dump(exclude_none=True, exclude=_NOT_USED_BY[self.operation])
        if not self.loras:
            del inputs["loras"]
        if not self.prompt:
            del inputs["prompt"]
        return inputs

    @classmethod
    def parse(cls, data: dict[str, Any]) -> ImageSpec:
        """Validate `data`, raising `InvalidInput` that names the field and its allowed values."""
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise invalid_input_from(exc) from None


# What a person is told for each field, whatever pydantic's own wording.
FIELD_RULES: dict[str, str] = {
    "prompt": f"must be non-blank text of 1..{MAX_PROMPT_CHARS} characters",
    "negative_prompt": f"must be text of at most {MAX_PROMPT_CHARS} characters",
    "width": f"must be a multiple of 8 in {MIN_SIDE}..{MAX_SIDE}",
    "height": f"must be a multiple of 8 in {MIN_SIDE}..{MAX_SIDE}",
    "steps": "must be an integer in 1..150",
    "cfg": "must be a number in 0..30",
    "seed": f"must be an integer in 0..{MAX_SEED}",
    "sampler": "must be a sampler name (letters, digits, _ . + -)",
    "scheduler": "must be a scheduler name (letters, digits, _ . + -)",
    "count": "must be an integer in 1..16",
    "workflow": "must be a workflow name (lower-case letters, digits, _ and -); see list_workflows",
    "checkpoint": "must be a model file name such as 'sd_xl_base_1.0.safetensors'; see list_models",
    "loras": f"must be at most {MAX_LORAS} LoRAs, each 'name' or 'name:strength' (strength in -5..5)",
    "denoise": "must be a number in 0..1",
    "scale": "must be a number in 1..8",
    "operation": "must be one of txt2img, img2img, upscale",
}


def invalid_input_from(exc: ValidationError, rules: Mapping[str, str] = FIELD_RULES) -> InvalidInput:
    """Turn pydantic's errors into one `InvalidInput` naming every bad field and its allowed values.

    `rules` says, per field, what a person is told instead of pydantic's own wording.
    """
    problems: dict[str, FieldProblem] = {}
    for error in exc.errors():
        problem = field_problem(error, rules)
        problems.setdefault(problem.field, problem)  # a field's first error is the one to fix first
    return InvalidInput.of(problems.values())


def field_problem(error: ErrorDetails, rules: Mapping[str, str]) -> FieldProblem:
    """One pydantic error as "field: rule (got value)", without pydantic's type codes and links."""
    loc = error["loc"]
    if error["type"] == "value_error" and not loc:
        # Our own cross-field checks say "field: problem".
        field, _, problem = str(error.get("ctx", {}).get("error", error["msg"])).partition(": ")
        return FieldProblem(field, problem)
    name = str(loc[0]) if loc else "input"
    if error["type"] == "extra_forbidden":
        return FieldProblem(".".join(str(part) for part in loc), "is not a known parameter")
    if error["type"] == "missing":
        return FieldProblem(".".join(str(part) for part in loc), "is required")
    rule = rules.get(name) or _plain(error["msg"])
    return FieldProblem(name, f"{rule} (got {shown_value(name, error.get('input'))})")


def shown_value(field: str, value: object) -> str:
    """A rejected value as an error shows it: short, on one line, and never a whole prompt."""
    if isinstance(value, str) and "prompt" in field:
        return f"{len(value)} characters"
    if isinstance(value, list | tuple) and len(value) > 3:
        return f"{len(value)} items"
    text = repr(value if not isinstance(value, str) or len(value) <= 40 else value[:40] + "...")
    return text if len(text) <= 60 else text[:57] + "..."


def _plain(message: str) -> str:
    """pydantic's "Input should be ..." as "must be ..."."""
    for said, meant in (("Input should be", "must be"), ("Value error, ", ""), ("String should", "must")):
        message = message.replace(said, meant)
    return message


@dataclass(slots=True)
class Run:
    """One row of the ledger: a unit of work and everything known about it."""

    id: str
    seq: int
    kind: RunKind
    status: RunStatus
    priority: Priority
    inputs: dict[str, Any]
    backend: str
    created_at: float
    parent_id: str | None = None
    progress: float = 0.0
    step: int = 0
    max_steps: int = 0
    message: str = ""
    result: dict[str, Any] | None = None
    error: str | None = None
    attempts: int = 0
    max_attempts: int = 3
    timeout_s: float | None = None
    idempotency_key: str | None = None
    backend_handle: str | None = None
    started_at: float | None = None
    finished_at: float | None = None
    artifacts: list[Artifact] = field(default_factory=list)
    # What the front door that created the run asked for beyond `inputs` (its contract's own fields).
    meta: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready view, the same for every front door."""
        return {
            "id": self.id,
            "seq": self.seq,
            "kind": self.kind.value,
            "parent_id": self.parent_id,
            "status": self.status.value,
            "priority": self.priority.value,
            "progress": round(self.progress, 4),
            "step": self.step,
            "max_steps": self.max_steps,
            "message": self.message,
            "inputs": self.inputs,
            "result": self.result,
            "error": self.error,
            "attempts": self.attempts,
            "max_attempts": self.max_attempts,
            "idempotency_key": self.idempotency_key,
            "backend": self.backend,
            "created_at": self.created_at,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "artifacts": [a.to_dict() for a in self.artifacts],
        }


@dataclass(slots=True, frozen=True)
class Artifact:
    """A file a run produced, as recorded in the ledger."""

    run_id: str
    filename: str
    media_type: str
    size: int
    sha256: str
    storage_key: str
    width: int | None = None
    height: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "filename": self.filename,
            "media_type": self.media_type,
            "size": self.size,
            "sha256": self.sha256,
            "width": self.width,
            "height": self.height,
        }


@dataclass(slots=True, frozen=True)
class Page:
    """One page of a listing; pass `next_cursor` back to get the next one."""

    items: list[Run]
    next_cursor: str | None


@dataclass(slots=True, frozen=True)
class LogEntry:
    at: float
    level: str
    message: str
