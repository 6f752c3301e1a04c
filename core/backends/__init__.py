"""The generation port: a backend turns a validated spec into images, reporting progress."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from core.models import ImageSpec


@dataclass(slots=True, frozen=True)
class Progress:
    """How far a run has come: `step` of `max_steps`, and what it is doing now."""

    step: int
    max_steps: int
    message: str = ""

    @property
    def fraction(self) -> float:
        return self.step / self.max_steps if self.max_steps else 0.0


@dataclass(slots=True, frozen=True)
class ImageOutput:
    """One produced image: encoded bytes plus what the ledger records about it."""

    data: bytes
    media_type: str
    width: int
    height: int
    extension: str = "png"


ProgressCallback = Callable[[Progress], None]


class GenerationBackend(Protocol):
    """A place images are made. Cancellation arrives as anyio cancellation of `run`."""

    name: str
    concurrency: int

    async def run(self, spec: ImageSpec, on_progress: ProgressCallback) -> list[ImageOutput]:
        """Produce `spec.count` images. Raise `core.errors.BackendError` when it cannot."""
        ...

    async def health(self) -> dict[str, object]:
        """What a status page shows: at least `{"up": bool}`. Must not block for long."""
        ...
