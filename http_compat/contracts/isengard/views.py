"""What Isengard's clients see of Atelier's runs and characters: generation jobs, training jobs,
characters and SSE event data, with the ids that name them (`gen-`, `train-`, `char-`)."""

from __future__ import annotations

import math
import re
from typing import Any, Literal

from pydantic import BaseModel, Field, RootModel

from core.characters.models import CHARACTER_ID_RE, Character
from core.engine import Engine
from core.errors import CharacterNotFound, RunNotFound
from core.models import Run, RunKind, RunStatus
from http_compat.contracts.isengard.envelope import not_found
from http_compat.responses import iso

GENERATION_KINDS = (RunKind.IMAGE.value, RunKind.BATCH.value)
RUN_ID = r"[0-9a-hjkmnp-tv-z]{26}"
GENERATION_ID_RE = re.compile(rf"^gen-({RUN_ID})$")
TRAINING_ID_RE = re.compile(rf"^train-({RUN_ID})$")
OUTPUT_RE = re.compile(rf"^gen-({RUN_ID})-(0|[1-9][0-9]?)\.[a-z0-9]{{1,5}}$")

Status = Literal["queued", "running", "completed", "failed", "cancelled"]


# --- shapes ---------------------------------------------------------------------------------


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
    status: Status
    config: ConfigView
    progress: int = Field(ge=0, le=100)
    error_message: str | None
    created_at: str
    started_at: str | None
    completed_at: str | None
    output_paths: list[str] = Field(description="File names for GET /api/generation/output/{filename}.")


class GenerationJobs(RootModel[list[GenerationJob]]):
    pass


class TrainingConfigView(BaseModel):
    """Every parameter the training used (the trainer's defaults filled in), with `method`."""

    method: Literal["lora"]
    steps: int
    learning_rate: float
    batch_size: int
    resolution: int
    lora_rank: int
    optimizer: str | None = None
    scheduler: str | None = None
    precision: str | None = None


class TrainingJob(BaseModel):
    id: str = Field(description="train-<Atelier run id>")
    character_id: str
    status: Status
    config: TrainingConfigView
    progress: int = Field(ge=0, le=100)
    current_step: int
    total_steps: int
    error_message: str | None
    created_at: str
    started_at: str | None
    completed_at: str | None
    output_path: str | None = Field(description="The LoRA file on the server's disk, once completed.")


class TrainingJobs(RootModel[list[TrainingJob]]):
    pass


class ProgressEvent(BaseModel):
    """The data of an SSE `progress` or `complete` event."""

    job_id: str
    job_type: Literal["generation", "training"]
    status: str
    progress: int
    message: str
    current_step: int
    total_steps: int
    loss: float | None = Field(default=None, description="training: the trainer's loss, when it reports one.")
    error: str | None = Field(default=None, description="complete only: why a job failed.")
    output_paths: list[str] | None = Field(default=None, description="complete only (generation).")
    output_path: str | None = Field(default=None, description="complete only (training).")


class CharacterView(BaseModel):
    id: str = Field(description="char- and 12 characters of [0-9a-z]")
    name: str
    description: str | None
    trigger_word: str
    created_at: str
    updated_at: str
    image_count: int
    lora_path: str | None = Field(description="The active LoRA file on the server's disk.")
    lora_trained_at: str | None


class CharacterViews(RootModel[list[CharacterView]]):
    pass


# --- generation -----------------------------------------------------------------------------


def output_name(run: Run, index: int) -> str:
    extension = run.artifacts[index].filename.rsplit(".", 1)[-1].lower()
    return f"gen-{run.id}-{index}.{extension}"


def percent(run: Run) -> int:
    if run.status is RunStatus.COMPLETED:
        return 100
    # A hair over: 116/400 is 0.28999... in floating point, and should read 29.
    return max(0, min(100, math.floor(run.progress * 100 + 1e-9)))


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
    character = inputs.get("character") or {}
    return ConfigView(
        prompt=inputs.get("prompt", ""),
        negative_prompt=inputs.get("negative_prompt", ""),
        width=inputs.get("width", source.get("width")),
        height=inputs.get("height", source.get("height")),
        steps=inputs.get("steps"),
        guidance_scale=inputs.get("cfg"),
        seed=inputs.get("seed"),
        lora_id=character.get("id"),
        lora_strength=character.get("strength", 1.0),
    )


def detail_message(run: Run) -> str:
    if run.status is RunStatus.QUEUED:
        return "Queued"
    if run.max_steps and run.step:
        return f"Step {run.step}/{run.max_steps}"
    return (run.message or "starting").capitalize()


def final_message(run: Run, what: str) -> str:
    """`<What> complete`, `... cancelled` or `... failed: why`."""
    return {
        RunStatus.COMPLETED: f"{what} complete",
        RunStatus.CANCELLED: f"{what} cancelled",
    }.get(run.status, f"{what} failed: {run.error or 'unknown error'}")


class Jobs:
    """Generation and training jobs over the engine's runs, and characters over its catalog."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    # -- generation ---------------------------------------------------------------------------

    async def generation_run(self, given: str) -> Run:
        """The run behind `gen-<run id>`; anything else (or another kind of run) is a 404."""
        run = await self._run(GENERATION_ID_RE, given)
        if run is None or run.kind.value not in GENERATION_KINDS:
            raise not_found("Generation job", given)
        return run

    async def items(self, run: Run) -> list[Run]:
        """A batch's items in the order they were asked for; an image run is its own item."""
        if run.kind is not RunKind.BATCH:
            return [run]
        page = await self.engine.list_runs(parent_id=run.id, limit=200)
        return list(reversed(page.items))

    async def generation_view(self, run: Run) -> dict[str, Any]:
        items = await self.items(run)
        return GenerationJob(
            id=f"gen-{run.id}",
            status=run.status.value,
            config=config_of(run, items[0] if items and items[0] is not run else None),
            progress=percent(run),
            error_message=run.error if run.status is RunStatus.FAILED else None,
            created_at=iso(run.created_at, millis=True) or "",
            started_at=iso(run.started_at, millis=True),
            completed_at=iso(run.finished_at, millis=True),
            output_paths=[output_name(item, i) for item in items for i in range(len(item.artifacts))],
        ).model_dump()

    async def generation_event(self, run: Run) -> tuple[str, dict[str, Any]]:
        """The SSE event for the run as it is now."""
        data = self._event_data(run, "generation", f"gen-{run.id}")
        if not run.status.is_final:
            return "progress", data.model_dump(exclude={"loss", "error", "output_paths", "output_path"})
        data.message = final_message(run, "Generation")
        data.output_paths = (await self.generation_view(run))["output_paths"]
        return "complete", data.model_dump(exclude={"loss", "output_path"})

    # -- training -----------------------------------------------------------------------------

    async def training_run(self, given: str) -> Run:
        """The run behind `train-<run id>`; anything else is a 404."""
        run = await self._run(TRAINING_ID_RE, given)
        if run is None or run.kind is not RunKind.TRAINING:
            raise not_found("Training job", given)
        return run

    async def training_view(self, run: Run) -> dict[str, Any]:
        params = dict(run.inputs.get("params") or {})
        done = run.status is RunStatus.COMPLETED
        total = int(params.get("steps") or run.max_steps or 0)
        return TrainingJob(
            id=f"train-{run.id}",
            character_id=run.inputs.get("character_id", ""),
            status=run.status.value,
            config=TrainingConfigView.model_validate({**params, "method": "lora"}),
            progress=percent(run),
            current_step=total if done else run.step,
            total_steps=total,
            error_message=run.error if run.status is RunStatus.FAILED else None,
            created_at=iso(run.created_at, millis=True) or "",
            started_at=iso(run.started_at, millis=True),
            completed_at=iso(run.finished_at, millis=True),
            output_path=await self.output_path(run) if done else None,
        ).model_dump()

    async def output_path(self, run: Run) -> str | None:
        """Where the LoRA a finished training made is on disk; None once its character is deleted."""
        result = run.result or {}
        character_id = result.get("character_id")
        if not isinstance(character_id, str) or not CHARACTER_ID_RE.fullmatch(character_id):
            return None
        try:
            character = await self.engine.characters.get(character_id)
        except CharacterNotFound:
            return None
        version = next((v for v in character.versions if v.version == result.get("version")), None)
        return str(self.engine.characters.lora_path(character, version)) if version else None

    async def training_event(self, run: Run, loss: float | None) -> tuple[str, dict[str, Any]]:
        data = self._event_data(run, "training", f"train-{run.id}")
        data.loss = loss
        if not run.status.is_final:
            return "progress", data.model_dump(exclude={"error", "output_paths", "output_path"})
        data.message = final_message(run, "Training")
        if run.status is RunStatus.COMPLETED:
            data.current_step = data.total_steps
            data.output_path = await self.output_path(run)
        return "complete", data.model_dump(exclude={"output_paths"})

    # -- characters ---------------------------------------------------------------------------

    async def character(self, given: str) -> Character:
        """The character with this id; a name, a malformed id or an unknown one is a 404."""
        if not CHARACTER_ID_RE.fullmatch(given):
            raise not_found("Character", given)
        try:
            return await self.engine.characters.get(given)
        except CharacterNotFound:
            raise not_found("Character", given) from None

    def character_view(self, character: Character) -> dict[str, Any]:
        active = character.active
        return CharacterView(
            id=character.id,
            name=character.name,
            description=character.description or None,
            trigger_word=character.trigger_word,
            created_at=iso(character.created_at, millis=True) or "",
            updated_at=iso(character.updated_at, millis=True) or "",
            image_count=len(character.images),
            lora_path=str(self.engine.characters.lora_path(character, active)) if active else None,
            lora_trained_at=iso(active.created_at, millis=True) if active else None,
        ).model_dump()

    # -- both ---------------------------------------------------------------------------------

    async def _run(self, pattern: re.Pattern[str], given: str) -> Run | None:
        match = pattern.fullmatch(given)
        try:
            return await self.engine.get_run(match.group(1)) if match else None
        except RunNotFound:
            return None

    @staticmethod
    def _event_data(run: Run, job_type: Literal["generation", "training"], job_id: str) -> ProgressEvent:
        return ProgressEvent(
            job_id=job_id,
            job_type=job_type,
            status=run.status.value,
            progress=percent(run),
            message=detail_message(run),
            current_step=run.step,
            total_steps=run.max_steps,
            error=run.error if run.status is RunStatus.FAILED else None,
        )
