"""The generation port: a backend turns a validated spec into images, reporting progress.

A backend also says which named workflows runs on it can use (`workflows`, `workflow_for`) and
whether a spec can succeed there (`check`), so that accepting a request asks the backend new
runs go to and never a particular adapter.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from contextlib import AbstractAsyncContextManager, nullcontext
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol

from anyio.abc import TaskGroup

from core.errors import InvalidInput
from core.models import ImageSpec


class Progress(NamedTuple):
    """How far a run has come: `step` of `max_steps`, and what it is doing now.

    A named tuple rather than a frozen dataclass: as immutable, and made in a third of the time
    (a backend reports every step, 20 a run at 0 ms/step: ~1.5 us of the engine's cost each).
    """

    step: int
    max_steps: int
    message: str = ""
    # A trainer's loss at this step and its estimate of the time left, when it reports them.
    loss: float | None = None
    eta_s: float | None = None

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


async def _forget(handle: str) -> None:
    return None


@dataclass(slots=True)
class Job:
    """One attempt at a run, as a backend sees it."""

    run_id: str
    attempt: int
    spec: ImageSpec
    # The source image's bytes, for image-to-image and upscaling.
    source: bytes | None = None
    # Set after an Atelier restart: where the backend put this run's work before it stopped.
    resume_handle: str | None = None
    # Saves where this attempt's work lives (e.g. a ComfyUI prompt id) before it is submitted,
    # so that a crash between submitting and finishing can be reconciled.
    record_handle: Callable[[str], Awaitable[None]] = field(default=_forget)
    # What the scheduler's `admit()` handed out for this attempt, if the backend has one.
    ticket: Any = None
    # Asked when `run` is cancelled: True means Atelier is shutting down, not the user
    # cancelling, so work a backend holds elsewhere (a queued ComfyUI prompt) should be left
    # to finish; the run resumes from its recorded handle on the next start.
    shutting_down: Callable[[], bool] = field(default=lambda: False)
    # Preview styles to apply (the preview renderer's stand-in for LoRAs): each a preview
    # trainer's `.safetensors` bytes and its strength, 0..1. Other backends ignore them.
    styles: tuple[tuple[bytes, float], ...] = ()


class WorkflowTemplate(Protocol):
    """A named recipe a run can ask for: its defaults, and what requests it can take."""

    @property
    def name(self) -> str: ...

    @property
    def defaults(self) -> dict[str, Any]: ...

    def check(self, spec: ImageSpec, given: Iterable[str]) -> None:
        """Raise `InvalidInput` for a parameter that was asked for but this workflow cannot take."""
        ...


class WorkflowCatalog(Protocol):
    """The workflows runs on a backend can name (the ComfyUI adapter's `WorkflowLibrary` is one)."""

    @property
    def problems(self) -> list[str]:
        """Workflow files that could not be loaded, shown rather than failing start-up."""
        ...

    def for_request(self, operation: str, name: str | None) -> WorkflowTemplate:
        """The named workflow, or the default one for the operation; `InvalidInput` if unknown."""
        ...

    def describe(self) -> list[dict[str, Any]]: ...


class NoWorkflows:
    """The catalog of a backend that runs no named workflows: it lists none and refuses a name."""

    @property
    def problems(self) -> list[str]:
        return []

    def for_request(self, operation: str, name: str | None) -> WorkflowTemplate:
        raise InvalidInput("workflow", "this backend runs no named workflows; leave workflow out")

    def describe(self) -> list[dict[str, Any]]:
        return []


NO_WORKFLOWS = NoWorkflows()


class GenerationBackend(Protocol):
    """A place images are made. Cancellation arrives as anyio cancellation of `run`.

    Subclass it to inherit the defaults of the optional parts (no background work, fixed
    concurrency, no named workflows, nothing to check up front).
    """

    name: str
    concurrency: int
    # The workflows runs on this backend can name, as `list_workflows` shows them.
    workflows: WorkflowCatalog = NO_WORKFLOWS

    async def run(self, job: Job, on_progress: ProgressCallback) -> list[ImageOutput]:
        """Produce `job.spec.count` images. Raise `core.errors.BackendError` when it cannot."""
        ...

    async def health(self) -> dict[str, Any]:
        """What a status page shows: at least `{"up": bool}`. Must not block for long."""
        ...

    def start(self, task_group: TaskGroup) -> None:
        """Start background work (connections, health checks); returns at once."""
        return None

    def admit(self) -> AbstractAsyncContextManager[Any]:
        """Wait until the backend can take one more run; the value becomes `Job.ticket`."""
        return nullcontext()

    def workflow_for(self, operation: str, name: str | None) -> WorkflowTemplate | None:
        """The workflow a request runs with: the named one from `workflows` (`InvalidInput` if
        there is none of that name), else this backend's default for the operation; None when
        the request runs without one."""
        return self.workflows.for_request(operation, name) if name else None

    def check(self, spec: ImageSpec) -> None:
        """Raise `InvalidInput` if `spec` cannot succeed here (unknown workflow, model not installed)."""
        return None

    async def models(self) -> dict[str, Any]:
        """Installed model files by kind (`checkpoints`, `loras`, ...); empty if it has none."""
        return {}

    async def refresh_models(self) -> None:
        """Re-read the installed model files now (a LoRA was just installed); must not raise."""
        return None

    async def aclose(self) -> None:
        return None
