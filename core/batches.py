"""Batches: one parent run whose status, progress and result follow its children.

A parent runs nowhere itself (its backend is `batch`, no lane has that name); its children are
ordinary runs of one kind (image runs, or products runs) with `parent_id` set, queued, retried
and cancelled like any other. What is
particular to a batch is kept here:

- building one: every item validated before anything is recorded, an invalid one named by its
  index (`validate_items`), the parent made first and each child attached to it (`new_parent`,
  `attach`);
- keeping the parent in step with its children (`derive` says what it should be, a pure
  function; `BatchRefresher` reads the children, writes the parent and publishes it, refreshes
  asked for meanwhile coalescing into one).

The engine assembles this with its own lifecycle: it decides when a refresh is due (a child
changed state or made progress) and starts it in its task group.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import anyio

from core.backends import Progress
from core.errors import FieldProblem, InvalidInput
from core.kinds import Queueing
from core.ledger import Ledger
from core.models import Run, RunKind, RunStatus

MAX_BATCH = 100
# A batch parent runs nowhere itself: its children do the work.
BATCH_BACKEND = "batch"
T = TypeVar("T")


def check_items(items: Sequence[Mapping[str, Any]], item_meta: Sequence[Any] | None) -> None:
    """Raise `InvalidInput` unless there are 1..`MAX_BATCH` items (and one `item_meta` entry each)."""
    if not items:
        raise InvalidInput("items", "must list at least one image to make")
    if len(items) > MAX_BATCH:
        raise InvalidInput("items", f"may list at most {MAX_BATCH} images (got {len(items)})")
    if item_meta is not None and len(item_meta) != len(items):
        raise ValueError("item_meta must have one entry per item")


async def validate_items(
    items: Sequence[Mapping[str, Any]], validate: Callable[[dict[str, Any]], Awaitable[T]]
) -> list[T]:
    """Each item validated (its unset fields dropped); a problem's field names the item's index."""
    validated = []
    for index, params in enumerate(items):
        try:
            validated.append(await validate({k: v for k, v in params.items() if v is not None}))
        except InvalidInput as exc:
            raise InvalidInput.of(
                FieldProblem(f"items[{index}].{p.field}", p.problem) for p in exc.problems
            ) from None
    return validated


def new_parent(count: int, queueing: Queueing) -> Run:
    """A queued batch run for `count` items, with no steps until its children are attached."""
    return queueing.new_run(RunKind.BATCH, BATCH_BACKEND, {"items": count}, 0)


def attach(parent: Run, child: Run) -> None:
    """Make `child` one of the batch's items: its steps count towards the parent's."""
    child.parent_id = parent.id
    parent.max_steps += child.max_steps


@dataclass(slots=True, frozen=True)
class BatchState:
    """What a batch parent should record, given its children."""

    status: RunStatus
    progress: Progress
    # Fields besides status and progress: attempts, started_at, finished_at, result, error.
    settled: dict[str, Any]


def derive(children: Sequence[Run]) -> BatchState:
    """A batch's status, progress and result, derived from its (non-empty list of) children.

    Running while any child is active; when all are final: completed if all completed,
    failed if any failed, else cancelled. Progress is the children's steps over their total.
    """
    counts = {status: 0 for status in RunStatus}
    for child in children:
        counts[child.status] += 1
    done = sum(counts[s] for s in RunStatus if s.is_final)
    message = f"{counts[RunStatus.COMPLETED]} of {len(children)} done" + (
        f", {counts[RunStatus.FAILED]} failed" if counts[RunStatus.FAILED] else ""
    )
    progress = Progress(
        sum(c.max_steps if c.status.is_final else c.step for c in children),
        sum(c.max_steps for c in children) or 1,
        message,
    )
    settled: dict[str, Any] = {"attempts": max(c.attempts for c in children)}
    if done == len(children):
        if counts[RunStatus.COMPLETED] == len(children):
            status = RunStatus.COMPLETED
        elif counts[RunStatus.FAILED]:
            status = RunStatus.FAILED
        else:
            status = RunStatus.CANCELLED
        first_error = next((c.error for c in reversed(children) if c.status is RunStatus.FAILED), None)
        settled.update(
            finished_at=max(c.finished_at or 0 for c in children) or time.time(),
            result={
                "runs": [c.id for c in reversed(children)],
                **{s.value: counts[s] for s in RunStatus if s.is_final},
            },
            error=f"{counts[RunStatus.FAILED]} of {len(children)} failed; first: {first_error}"
            if status is RunStatus.FAILED
            else None,
        )
    else:
        status = RunStatus.RUNNING if done or counts[RunStatus.RUNNING] else RunStatus.QUEUED
        settled.update(finished_at=None, result=None, error=None)
    started = [c.started_at for c in children if c.started_at]
    settled["started_at"] = min(started) if started else None
    return BatchState(status, progress, settled)


class BatchRefresher:
    """Brings batch parents up to date with their children, one refresh at a time.

    Built from the engine's parts: `live` gives a run its in-memory progress, `on_progress`
    reports a parent's progress the way a running run's is (events now, the ledger at the next
    flush), `forget_progress` drops that before a ledger write, `publish` announces a changed run.
    """

    def __init__(
        self,
        ledger: Ledger,
        *,
        live: Callable[[Run], Run],
        on_progress: Callable[[str, Progress], None],
        forget_progress: Callable[[str], None],
        publish: Callable[[Run], None],
    ) -> None:
        self._ledger = ledger
        self._live = live
        self._on_progress = on_progress
        self._forget_progress = forget_progress
        self._publish = publish
        self._pending: set[str] = set()
        self._lock = anyio.Lock()

    def claim(self, parent_id: str) -> bool:
        """True if a refresh of the parent should be started: none is pending already."""
        if parent_id in self._pending:
            return False
        self._pending.add(parent_id)
        return True

    async def refresh(self, parent_id: str) -> None:
        """Record the parent's state as its children now make it (see `derive`), if it changed."""
        async with self._lock:
            self._pending.discard(parent_id)
            parent = await self._ledger.get_run(parent_id)
            if parent is None or parent.kind is not RunKind.BATCH:
                return
            children = [
                self._live(c)
                for c in (await self._ledger.list_runs(parent_id=parent_id, limit=MAX_BATCH)).items
            ]
            if not children:
                return
            state = derive(children)
            status, progress, settled = state.status, state.progress, state.settled
            status_changed = status is not parent.status
            if not status_changed and all(getattr(parent, name) == value for name, value in settled.items()):
                # Only progress moved: live, like a running run's steps (written at most once a second).
                now = self._live(parent)
                if (now.step, now.max_steps, now.message) != (
                    progress.step,
                    progress.max_steps,
                    progress.message,
                ):
                    self._on_progress(parent_id, progress)
                return
            self._forget_progress(parent_id)
            updated = await self._ledger.update_run(
                parent_id,
                status=status,
                step=progress.step,
                max_steps=progress.max_steps,
                progress=progress.fraction,
                message=progress.message,
                log=f"batch {status.value}: {progress.message}" if status_changed else None,
                log_level="error" if status is RunStatus.FAILED else "info",
                **settled,
            )
            if updated is not None:
                self._publish(updated)
