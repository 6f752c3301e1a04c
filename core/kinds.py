"""What a kind of run provides to the run lifecycle (the `RunHandler` protocol), and what it is given.

Submitting: the engine checks how a run is to be queued (`Queueing`: priority, attempts,
timeout, idempotency key, the front door's fields) and the kind validates its own request and
makes the queued run(s) with those terms; the engine then records them in one transaction,
answers a repeated idempotency key, publishes and queues them (`Engine._accept`). A kind whose
submit lives outside the engine (`core.training.trainings`, `core.publishing.products`) is given
that path as an `Accept`.

The engine (`core/engine.py`) owns what every run shares: accepting it into the ledger,
queueing it by priority in its lane (`run.backend` names the lane), attempts and backoff, the
timeout, cancellation, handing runs back when the process stops, recovery after a crash, and
events. What a run *does* belongs to its kind's handler, one module per kind (`core/images.py`
for `image`, `core/training/kind.py`, `core/publishing/products_kind.py` and `publish_kind.py`,
each with its own lane). For each attempt of a queued run of its kind, the engine calls:

1. `prepare(run, attempt)` once the run is recorded as running: gather what the work needs
   (the spec parsed, inputs read) and return it. Raise `AttemptFailed` when the attempt cannot
   start; `retryable` says whether another attempt could succeed.
2. `execute(work, on_progress)` under the run's timeout and cancel scope: do the work,
   reporting `Progress` as it goes, and return its outputs. Raise `core.errors.BackendError`
   when it fails (its `retryable` decides a retry); anything else is retried as a crash. A
   cancelled run is stopped by anyio cancellation of this call.
3. `complete(run, outputs)` to keep the outputs: store their files and say what the ledger
   records (`Completion`). An `OSError` is a storage failure: the run's files are discarded and
   the attempt is retried. The engine then records the run completed and publishes it.

A handler keeps no state of a run between those calls beyond what it returns, so the engine
can run any number of attempts of any number of runs through one handler at once.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from core.backends import ProgressCallback
from core.errors import Conflict, InvalidInput
from core.ids import check_idempotency_key, new_run_id
from core.models import Artifact, Priority, Run, RunKind, RunStatus


@dataclass(slots=True, frozen=True)
class Queueing:
    """How a submitted run is queued: its priority, attempts, timeout, idempotency key, and the
    fields its front door keeps with it (`meta`). A kind copies these into the runs it makes."""

    priority: Priority
    max_attempts: int
    timeout_s: float | None = None
    idempotency_key: str | None = None
    meta: dict[str, Any] | None = None

    @classmethod
    def check(
        cls,
        priority: str | Priority,
        idempotency_key: str | None,
        max_attempts: int | None,
        timeout_s: float | None,
        meta: Mapping[str, Any] | None,
        *,
        default_attempts: int,
    ) -> Queueing:
        """The terms a caller asked for, each checked (`InvalidInput` names the field)."""
        rank = Priority.parse(priority)
        key = check_idempotency_key(idempotency_key)
        if max_attempts is not None and not 1 <= max_attempts <= 20:
            raise InvalidInput("max_attempts", f"must be an integer in 1..20 (got {max_attempts!r})")
        if timeout_s is not None and not 0 < timeout_s <= 86_400:
            raise InvalidInput("timeout_s", f"must be a number of seconds in (0, 86400] (got {timeout_s!r})")
        return cls(rank, max_attempts or default_attempts, timeout_s, key, dict(meta) if meta else None)

    def new_run(
        self,
        kind: RunKind,
        backend: str,
        inputs: dict[str, Any],
        max_steps: int,
        *,
        timeout_s: float | None = None,
    ) -> Run:
        """A queued run of `kind` in lane `backend` on these terms (`timeout_s`: a kind's own limit
        instead of the one asked for)."""
        return Run(
            id=new_run_id(),
            seq=0,
            kind=kind,
            status=RunStatus.QUEUED,
            priority=self.priority,
            inputs=inputs,
            backend=backend,
            created_at=time.time(),
            max_steps=max_steps,
            max_attempts=self.max_attempts,
            timeout_s=self.timeout_s if timeout_s is None else timeout_s,
            idempotency_key=self.idempotency_key,
            meta=self.meta,
        )


class Accept(Protocol):
    """The engine's one path into the ledger and the queue (`Engine._accept`), which each kind's
    submit ends in: record the runs `make_runs` makes (called only if no run holds the key yet),
    publish and queue them, and answer the first; a repeated idempotency key is answered through
    `same_request`, which raises `Conflict` when a different request made the run."""

    async def __call__(
        self,
        queueing: Queueing,
        make_runs: Callable[[], Awaitable[Sequence[Run]]],
        *,
        log: str,
        same_request: Callable[[Run], Run] = ...,
    ) -> Run: ...


def same_inputs(existing: Run, inputs: Mapping[str, Any]) -> Run:
    """`existing` if made by the same request; `Conflict` if its idempotency key was reused."""
    if existing.inputs != dict(inputs):
        raise Conflict(
            f"idempotency key {existing.idempotency_key!r} was used for a different request "
            f"(run {existing.id}); use a new key for new parameters"
        )
    return existing


async def one(run: Run) -> list[Run]:
    """`make_runs` for a kind whose request makes one run."""
    return [run]


class AttemptFailed(Exception):
    """An attempt could not start; `retryable` says whether another attempt could succeed."""

    def __init__(self, message: str, *, retryable: bool) -> None:
        self.retryable = retryable
        super().__init__(message)


@dataclass(slots=True, frozen=True)
class Attempt:
    """What the lifecycle knows about one attempt of a run, for the handler to pass on to its backend."""

    number: int
    # Set after a restart: where the backend put this run's work before the process stopped.
    resume_handle: str | None
    # Saves where this attempt's work lives (e.g. a ComfyUI prompt id), for recovery.
    record_handle: Callable[[str], Awaitable[None]]
    # What the lane's `admit()` handed out for this attempt, if anything.
    ticket: Any
    # True once the process is stopping (a cancellation then is not the user's).
    shutting_down: Callable[[], bool]


@dataclass(slots=True)
class Completion:
    """What the ledger records when a run completes: its result, its files and a log line."""

    result: dict[str, Any]
    artifacts: list[Artifact] = field(default_factory=list)
    log: str = "completed"


class RunHandler(Protocol):
    """One kind of run's part of executing it (see the module docstring for when each is called)."""

    async def prepare(self, run: Run, attempt: Attempt) -> Any: ...

    async def execute(self, work: Any, on_progress: ProgressCallback) -> Any: ...

    async def complete(self, run: Run, outputs: Any) -> Completion: ...

    async def forget(self, run: Run) -> None:
        """The run is deleted: remove what the kind keeps of it beyond its files (a training folder)."""
        ...
