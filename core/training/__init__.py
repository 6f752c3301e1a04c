"""The trainer port: what a LoRA trainer declares and does, whichever program does the training.

A trainer declares its parameters (`TrainerParameter`): their type, range, default, and whether
they really reach the trainer (`wired`). The MCP tool's schema, Isengard's `/info` training
section and the validation of a request all come from that one declaration, so what a client is
told can never drift from what is used.

`Trainer.train(job, on_progress)` trains one attempt of a training run: it reads the character's
images and captions from `job.images`, works in `job.workdir` (kept between attempts of the same
run, so a trainer that saves checkpoints there resumes from the last one after a restart), reports
`Progress` (step, loss, ETA) as it goes, and returns the finished LoRA file, still in `workdir`.
It is stopped by anyio cancellation (a cancelled run, a timeout, the process stopping) and must
leave nothing running behind. It raises `core.errors.BackendError` for a failure, its message
what a person needs to act on (`retryable=False` where trying again cannot help).

Adapters: `core.training.aitoolkit` (ostris/ai-toolkit as a subprocess, GPU boxes) and
`core.training.preview` (the embedded preview trainer, no GPU, seconds). The training run kind
is `core.training.kind`; what callers ask of training (`engine.training`) is
`core.training.trainings`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

from core.backends import ProgressCallback

ParameterType = Literal["int", "float", "str", "bool"]
# Receives the few lines of a training worth keeping in the run's log (resumed, each tenth, errors).
LogCallback = Callable[[str], None]


@dataclass(slots=True, frozen=True)
class TrainerParameter:
    """One training parameter as a trainer declares it."""

    name: str
    type: ParameterType
    default: Any
    description: str
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple[str, ...] = ()
    # False when the trainer accepts and records the value but does not use it.
    wired: bool = True

    def to_dict(self) -> dict[str, Any]:
        """The declaration as Isengard's `/info` and `get_character`'s trainer view show it."""
        view: dict[str, Any] = {"type": self.type, "default": self.default}
        if self.minimum is not None:
            view["min"] = self.minimum
        if self.maximum is not None:
            view["max"] = self.maximum
        if self.choices:
            view["choices"] = list(self.choices)
        view["wired"] = self.wired
        view["description"] = self.description
        return view


@dataclass(slots=True, frozen=True)
class TrainingImage:
    """One image of the training set: its file and caption (the trigger word already in it)."""

    path: Path
    caption: str


@dataclass(slots=True, frozen=True)
class TrainingJob:
    """One attempt of a training run, as a trainer sees it."""

    run_id: str
    attempt: int
    character_id: str
    # The LoRA's name (also its files' stem): `<slug of the character>-v<N>`.
    name: str
    trigger_word: str
    images: tuple[TrainingImage, ...]
    # Checked against the trainer's declaration: every declared parameter has a value.
    params: Mapping[str, Any]
    # The run's own folder, kept across attempts (checkpoints live here) and removed once the
    # LoRA is kept or the run is deleted.
    workdir: Path


@dataclass(slots=True, frozen=True)
class TrainedLora:
    """A finished LoRA file (in the job's workdir) and what the character records about it."""

    path: Path
    steps: int
    base_model: str
    # Where an attempt picked up after a restart (0 when it started afresh), for the run's log.
    resumed_from_step: int = 0
    metadata: Mapping[str, str] = field(default_factory=dict)


class Trainer(Protocol):
    """A LoRA trainer (see the module docstring)."""

    # "aitoolkit" or "preview": recorded on the run and on each LoRA version.
    name: str
    # The base model its LoRAs are for ("preview-style" for the preview trainer).
    base_model: str

    def parameters(self) -> dict[str, TrainerParameter]:
        """Every parameter a training request may set, by name."""
        ...

    async def train(
        self, job: TrainingJob, on_progress: ProgressCallback, *, on_log: LogCallback | None = None
    ) -> TrainedLora: ...

    async def health(self) -> dict[str, Any]:
        """`{"ok": bool, ...}`: whether training can start (e.g. ai-toolkit is installed)."""
        ...
