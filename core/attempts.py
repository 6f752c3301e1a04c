"""One attempt of a run: started, executed by its kind, its outputs kept, and recorded completed,
failed or queued again to retry; the engine's run lifecycle from "queued" to an end.

A mixin of `core.engine.Engine`, kept apart from accepting, queueing and recovering runs (the
engine's own module) because this is the path every run takes once a lane takes it: every
state change is one ledger write, retried while the ledger refuses one a run's life depends on
(`_recorded`), then one event. Whatever goes wrong ends as the run's error, never the
process's. What a run does is its kind's (`core.kinds`).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any, TypeVar

import anyio

from core import health
from core.artifacts import ArtifactStore, run_prefix
from core.backends import Progress
from core.bundles import Bundles
from core.dispatch import Dispatch
from core.errors import BackendError, LedgerUnavailable
from core.events import Event, EventBus
from core.kinds import Attempt, AttemptFailed, RunHandler
from core.ledger import Increment, Ledger
from core.models import Run, RunKind, RunStatus
from core.progress import LiveProgress
from core.relay import EventRelay
from core.settings import Settings

log = logging.getLogger("atelier.engine")
T = TypeVar("T")


class Attempts:
    """Executing runs' attempts (the engine's state it works on is declared here;
    `Engine.__init__` sets it)."""

    settings: Settings
    ledger: Ledger
    store: ArtifactStore
    events: EventBus
    relay: EventRelay
    _dispatch: Dispatch
    _progress: LiveProgress
    _bundles: Bundles
    _kinds: dict[RunKind, RunHandler]
    _problems: health.Problems
    _metrics: health.Metrics
    _active: dict[str, anyio.CancelScope]
    _parent_of: dict[str, str]
    _resume: dict[str, str]
    _started_here: set[str]
    _unstarted: set[str]
    _shutting_down: bool
    _publish_run: Callable[[Run], None]
    _refresh_batch_soon: Callable[[str], None]
    _start: Callable[..., None]
    _enqueue_later: Callable[[Run, float], Awaitable[None]]
    _release_held: Callable[[str], None]
    _still_ours: Callable[[Run], Awaitable[bool]]
    _taken_over: Callable[[Run], Awaitable[bool]]

    async def _execute(self, run_id: str, ticket: Any = None) -> None:
        """Run one attempt of a queued run. Whatever goes wrong ends as the run's error, never the
        process's; only the process stopping cancels this far (a cancelled run stops inside), and
        then the run stays in `_started_here` for `_hand_back`."""
        try:
            await self._execute_attempt(run_id, ticket)
        except anyio.get_cancelled_exc_class():
            self._release_held(run_id)
            raise
        except Exception as exc:
            log.exception("run %s: unexpected error while executing it", run_id)
            try:
                run = await self.ledger.get_run(run_id)
                if run is not None and run.status is RunStatus.RUNNING:
                    await self._fail_or_retry(run, f"internal error: {type(exc).__name__}: {exc}", True)
            except Exception:
                log.exception("run %s: could not record its failure; recovery will pick it up", run_id)
        self._started_here.discard(run_id)
        self._release_held(run_id)

    async def _execute_attempt(self, run_id: str, ticket: Any) -> None:
        resume_handle = self._resume.pop(run_id, None)
        try:
            run = await self.ledger.update_run(
                run_id,
                expect={RunStatus.QUEUED},
                status=RunStatus.RUNNING,
                attempts=Increment(0 if resume_handle else 1),
                started_at=time.time(),
                progress=0.0,
                step=0,
                message="reconnecting" if resume_handle else "starting",
                backend_handle=resume_handle,
                log="reconnecting to its backend" if resume_handle else "started",
            )
        except LedgerUnavailable as exc:
            # Still queued in the ledger: housekeeping queues it here again once the ledger answers.
            self._problems.note("ledger", str(exc))
            if resume_handle:
                self._resume[run_id] = resume_handle
            log.warning("run %s could not start: %s", run_id, exc)
            self._unstarted.add(run_id)
            return
        if run is None:  # cancelled or deleted while it waited
            return
        self._started_here.add(run_id)
        self._publish_run(run)
        if run.parent_id is not None:
            self._parent_of[run_id] = run.parent_id
        handler = self._kinds[run.kind]
        attempt = Attempt(
            number=run.attempts,
            resume_handle=resume_handle,
            record_handle=lambda handle: self._record_handle(run_id, handle),
            ticket=ticket,
            shutting_down=lambda: self._shutting_down,
        )
        try:
            work = await handler.prepare(run, attempt)
        except AttemptFailed as exc:
            await self._fail_or_retry(run, str(exc), exc.retryable)
            return
        try:
            if run.attempts > 1 and not resume_handle:
                # Files of an interrupted attempt: this attempt writes the run's images afresh.
                await self.store.delete_prefix(run_prefix(run.id))
        except OSError as exc:
            self._problems.note("storage", f"cannot clear the files of an earlier attempt: {exc}")
            await self._fail_or_retry(
                run, f"storage error: cannot clear an earlier attempt's files ({exc})", True
            )
            return
        timeout = run.timeout_s or self.settings.run_timeout_s
        # One scope both for cancelling the run and for its timeout (while the backend works).
        scope = anyio.CancelScope(deadline=anyio.current_time() + timeout)
        self._active[run_id] = scope
        error, retryable = "", False
        try:
            with scope:
                try:
                    outputs = await handler.execute(work, partial(self._on_progress, run_id))
                except TimeoutError:  # a backend's own deadline
                    error, retryable = f"timed out after {timeout:g} s", True
                except BackendError as exc:
                    error, retryable = str(exc), exc.retryable
                except Exception as exc:
                    log.exception("backend %s crashed on run %s", run.backend, run_id)
                    error, retryable = f"backend error: {type(exc).__name__}: {exc}", True
                else:
                    scope.deadline = math.inf  # saving the outputs is not the backend's time
                    unsaved = await self._complete(run, handler, outputs)
                    if unsaved is None:
                        return
                    error, retryable = unsaved, True
        finally:
            # A retry may already have started a newer attempt of this run: leave its state alone.
            if self._active.get(run_id) is scope:
                del self._active[run_id]
                self._progress.forget(run_id)
                self._parent_of.pop(run_id, None)
        if scope.cancelled_caught and anyio.current_time() >= scope.deadline:
            # Timed out (a cancel that came meanwhile has already moved the run on in the ledger,
            # and `_fail_or_retry` leaves such a run alone).
            error, retryable = f"timed out after {timeout:g} s", True
        if not scope.cancelled_caught or error:
            await self._fail_or_retry(run, error, retryable)
        elif run_id not in self._active:
            # Cancelled (already recorded) perhaps while its outputs were being saved.
            with anyio.CancelScope(shield=True):
                if not await self._taken_over(run):
                    await self._discard_files(run_id)

    async def _record_handle(self, run_id: str, handle: str) -> None:
        await self.ledger.update_run(run_id, expect={RunStatus.RUNNING}, backend_handle=handle)

    def _on_progress(self, run_id: str, progress: Progress) -> None:
        self._progress.note(run_id, progress)
        if self.events.wants_progress(run_id):
            self.events.publish(Event("progress", run_id, progress=progress))
        self.relay.progressed(run_id, progress)
        parent_id = self._parent_of.get(run_id)
        if parent_id is not None and self.events.wants(parent_id):
            self._refresh_batch_soon(parent_id)

    async def _complete(self, run: Run, handler: RunHandler, outputs: Any) -> str | None:
        """Keep the outputs (the kind's part) and record the run completed; or say why they could
        not be saved."""
        if not await self._still_ours(run):
            return None
        try:
            if run.attempts > 1:  # a ZIP of an earlier attempt (a retry discards its own)
                self._bundles.discard(run.id)
            completion = await handler.complete(run, outputs)
        except OSError as exc:
            problem = f"could not save the run's images: {exc.strerror or exc}" + (
                f" ({exc.filename})" if exc.filename else ""
            )
            self._problems.note("storage", problem)
            log.error("run %s: %s", run.id, problem)
            with anyio.CancelScope(shield=True):
                await self._discard_files(run.id)
            return f"storage error: {problem}"
        self._problems.clear("storage")
        now = time.time()
        done = await self._recorded(
            lambda: self.ledger.update_run(
                run.id,
                expect={RunStatus.RUNNING},
                status=RunStatus.COMPLETED,
                progress=1.0,
                step=run.max_steps,
                message="completed",
                finished_at=now,
                error=None,
                result=completion.result,
                artifacts=completion.artifacts,
                log=completion.log,
            ),
            f"run {run.id} completed",
        )
        if done is None:  # cancelled or deleted in the meantime: its files must not linger
            await self._discard_files(run.id)
            return None
        self._metrics.completed(now, now - done.created_at)
        self._publish_run(done)
        return None

    async def _discard_files(self, run_id: str) -> None:
        """Remove a run's files, if the storage lets us; a failure is noted, never raised."""
        try:
            await self.store.delete_prefix(run_prefix(run_id))
        except OSError as exc:
            self._problems.note("storage", f"cannot remove the files of run {run_id}: {exc}")

    async def _recorded(self, write: Callable[[], Awaitable[T]], what: str) -> T:
        """A state change a run's life depends on (it finished, failed, is retried): retried for as
        long as the ledger refuses it, so the run never stays "running" in the ledger while this
        process lives. The ledger's own wait for a lock comes first (see `SQLiteLedger`)."""
        delay = 0.5
        while True:
            try:
                result = await write()
            except LedgerUnavailable as exc:
                self._problems.note("ledger", str(exc))
                log.warning("%s, but the ledger refused it (%s); trying again in %g s", what, exc, delay)
                await anyio.sleep(delay)
                delay = min(delay * 2, 10.0)
                continue
            self._problems.clear("ledger")
            return result

    async def _fail_or_retry(self, run: Run, error: str, retryable: bool) -> None:
        if not await self._still_ours(run):
            return
        if retryable and run.attempts < run.max_attempts:
            delay = self.settings.retry_backoff_s * 2 ** (run.attempts - 1)
            queued = await self._record_end(
                run,
                "retried",
                "failed an attempt",
                status=RunStatus.QUEUED,
                error=error,
                backend_handle=None,
                message=f"retrying in {delay:g} s",
                log=f"attempt {run.attempts}/{run.max_attempts} failed: {error}; retrying in {delay:g} s",
                log_level="warning",
            )
            if queued is not None:
                if self._dispatch.shared:
                    await self._dispatch.queue([queued], delay)
                else:
                    self._start(self._enqueue_later, queued, delay)
            return
        reason = error if retryable else f"{error} (not retried: trying again cannot succeed)"
        await self._record_end(
            run,
            "failed",
            "failed",
            status=RunStatus.FAILED,
            error=error,
            message="failed",
            finished_at=time.time(),
            log=f"failed after {run.attempts} attempt(s): {reason}",
            log_level="error",
        )

    async def _record_end(self, run: Run, counter: str, what: str, **changes: Any) -> Run | None:
        """Record how a running attempt ended (`changes`, retried while the ledger refuses it),
        then count it under `counter` and publish it; None if the run moved on meanwhile."""
        ended = await self._recorded(
            lambda: self.ledger.update_run(run.id, expect={RunStatus.RUNNING}, **changes),
            f"run {run.id} {what}",
        )
        if ended is not None:
            self._metrics.counters[counter] += 1
            self._publish_run(ended)
        return ended
