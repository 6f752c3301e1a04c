"""The engine: the run lifecycle every kind shares, and the use cases of runs as a whole.

Every state change is one ledger transaction followed by one event. Runs execute in the
engine's own task group, so a caller that stops waiting (a cancelled MCP call, a closed
socket) never stops the run.

This module keeps what every run shares: accepting it (`_accept`, the one path every kind's
submit ends in), queueing it in its lane (its attempts, backoff and timeout: `core.attempts`),
handing back on stop, recovery after a crash, events. What a run does is
its kind's (`core.kinds` says what a kind provides and gets), and so is what a caller asks of
a kind beyond the lifecycle, held by the engine as one object per kind: `engine.images`
(`core.images`: the workflows and models runs can name, reading a source), `engine.training`
(`core.training.trainings`: a character's training runs, the trainer) and `engine.products`
(`core.publishing.products`: products, their runs and platforms). `core.batches` derives a batch
from its children. Around the lifecycle: `core.progress` keeps live progress, `core.waiting`
waits for a run, `core.bundles` zips a run's outputs, `core.health` makes the status report,
`core.relay` carries events to and from the other nodes of a cluster (nothing on one box).
Three groups of the engine's methods live in mixins of their own: `core.attempts` (one attempt
of a run, from its start to its end recorded), `core.management` (reading, listing, cancelling,
retrying, deleting runs, their logs and outputs: what front doors call about existing runs)
and `core.held` (the runs a dispatch shared by several nodes hands this one).
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any, Literal, TypeVar

import anyio
from anyio.abc import TaskGroup

from core import batches, factory, health
from core.artifacts import ArtifactStore
from core.attempts import Attempts
from core.backends import GenerationBackend
from core.bundles import Bundle, Bundles
from core.characters.catalog import Characters
from core.dispatch import Dispatch, InProcessDispatch
from core.errors import (
    Conflict,
    HomeLocked,
    LedgerUnavailable,
)
from core.events import Event, EventBus
from core.held import HeldRuns
from core.homelock import HomeLock
from core.images import ImageKind
from core.kinds import Queueing, RunHandler
from core.ledger import Increment, Ledger
from core.management import RunManagement
from core.models import ACTIVE_STATUSES, Priority, Run, RunKind, RunStatus
from core.progress import LiveProgress
from core.publishing import Publisher
from core.publishing.catalog import load_catalog
from core.publishing.products import Products
from core.publishing.runs import LANE as PUBLISHING_LANE
from core.publishing.runs import Publishing, RunServices
from core.relay import EventRelay, NoRelay, RelayMessage, publish_here
from core.scheduler import Scheduler
from core.settings import Settings
from core.training import Trainer
from core.training.kind import LANE as TRAINING_LANE
from core.training.kind import TrainingKind
from core.training.trainings import Trainings

log = logging.getLogger("atelier.engine")

PROGRESS_FLUSH_S = 1.0
PUBLISHING_CONCURRENCY = 2
Role = Literal["owner", "shared", "client"]
T = TypeVar("T")


class Engine(RunManagement, HeldRuns, Attempts):
    """Open with `async with Engine.open(settings) as engine:`; every method is safe to call concurrently."""

    def __init__(
        self,
        settings: Settings,
        ledger: Ledger,
        store: ArtifactStore,
        backends: Mapping[str, GenerationBackend],
        trainer: Trainer | None = None,
        publishers: Mapping[str, Publisher] | None = None,
        relay: EventRelay | None = None,
        dispatch: Dispatch | None = None,
    ) -> None:
        self.settings = settings
        self.ledger = ledger
        # Who puts queued runs into this process's lanes (`core.dispatch`): this process itself
        # (one box), or a task queue shared by several nodes.
        self._dispatch: Dispatch = dispatch or InProcessDispatch()
        self.store = store
        self.backends = dict(backends)
        self.events = EventBus()
        # Events across nodes (`core.relay`): what happens here goes out, what other nodes say
        # comes into `events`. Nothing to relay on a single box.
        self.relay: EventRelay = relay if relay is not None else NoRelay()
        self._progress = LiveProgress(ledger)
        self._bundles = Bundles(settings.bundles_dir, store)
        self._scheduler = Scheduler(self._execute)
        for name, backend in self.backends.items():
            self._scheduler.add_lane(name, backend.concurrency, backend.admit)
        self.characters = Characters(settings, ledger)
        # What a caller asks of a kind beyond the lifecycle every run shares is that kind's own:
        # `images` (workflows, models, sources), `training`, `products` (and their platforms).
        self.images = ImageKind(settings, store, self.backends, self.get_run, self.characters)
        training = TrainingKind(
            settings,
            ledger,
            self.characters,
            trainer or factory.make_trainer(settings),
            self.images.refresh_models,
        )
        self._scheduler.add_lane(TRAINING_LANE, settings.training_concurrency)
        self.training = Trainings(settings, self.characters, training, self._accept, self._progress.apply)
        publishing = Publishing(
            settings,
            ledger,
            store,
            load_catalog(settings.catalog),
            publishers or factory.make_publishers(settings, ledger),
            RunServices(
                self.submit_image,
                self.wait,
                self.read_artifact,
                self.images.read_source,
                self.cancel,
                self.retry,
                self.delete,
                ledger.find_by_key_prefix,
            ),
        )
        self.products = Products(publishing, ledger, self._accept)
        self._scheduler.add_lane(PUBLISHING_LANE, PUBLISHING_CONCURRENCY)
        # Each kind's part of executing a run (see `core.kinds`); a batch parent never executes.
        self._kinds: dict[RunKind, RunHandler] = {
            RunKind.IMAGE: self.images,
            RunKind.TRAINING: training,
            **self.products.handlers,
        }
        self._trainer = training.trainer
        # Runs a restarted engine reconnects to: run id -> where the backend had put its work.
        self._resume: dict[str, str] = {}
        self._shutting_down = False
        self._task_group: TaskGroup | None = None
        self._lock: HomeLock | None = None
        self.is_owner = True
        self._active: dict[str, anyio.CancelScope] = {}
        self._delayed: dict[str, anyio.CancelScope] = {}
        self._metrics = health.Metrics()
        # Batch children running here -> their parent.
        self._parent_of: dict[str, str] = {}
        self._batches = batches.BatchRefresher(
            ledger,
            live=self._progress.apply,
            on_progress=self._on_progress,
            forget_progress=self._progress.forget,
            publish=self._publish_run,
        )
        self._problems = health.Problems()
        # When set, this process runs only these runs (a short-lived CLI command's own).
        self._own: set[str] | None = None
        # Runs this process has started and not yet seen to an end: handed back when it stops.
        self._started_here: set[str] = set()
        # Runs a shared dispatch handed to this node -> set when their attempt here has ended.
        self._held: dict[str, anyio.Event] = {}
        # Held runs that could not start because the ledger refused (their job is tried again).
        self._unstarted: set[str] = set()

    # -- life cycle ---------------------------------------------------------------------------

    @classmethod
    @asynccontextmanager
    async def open(
        cls,
        settings: Settings,
        *,
        backends: Mapping[str, GenerationBackend] | None = None,
        store: ArtifactStore | None = None,
        role: Role = "owner",
        only_own_runs: bool = False,
        relay: EventRelay | None = None,
    ) -> AsyncIterator[Engine]:
        """Open the ledger, and (as the owner of the data directory) recover unfinished runs and work.

        One process owns a data directory's runs at a time. `role` says what to do about that:
        `owner` fails with `HomeLocked` if another process owns it; `shared` becomes its client
        and takes over when the owner exits; `client` never runs anything. A client's runs are
        queued in the ledger for the owner, and its cancels reach the owner through the ledger.
        `only_own_runs` (for short-lived commands) makes an owner run only what it submits itself
        and leave the rest queued for a long-lived process. `relay` carries events between nodes
        (default: the one the settings choose, none without ATELIER_DATABASE_URL); it connects in
        the background, so opening never waits for it.

        On the way out, whatever was running here is handed back as queued, without spending an
        attempt (see `_hand_back`), so no run is left "running" by a process that has stopped.
        """
        lock: HomeLock | None = None
        # With a dispatch shared by nodes, the task queue decides who runs what, not the home lock.
        if role != "client" and settings.dispatch == "in-process":
            try:
                lock = HomeLock.acquire(settings.home)
            except HomeLocked:
                if role == "owner":
                    raise
        ledger: Ledger | None = None
        engine: Engine | None = None
        dispatch: Dispatch | None = None
        try:
            ledger = factory.make_ledger(settings)
            dispatch = factory.make_dispatch(settings, ledger)
            engine = cls(
                settings,
                ledger,
                store if store is not None else factory.make_store(settings),
                backends if backends is not None else factory.make_backends(settings),
                relay=relay if relay is not None else factory.make_relay(settings),
                dispatch=dispatch,
            )
            if only_own_runs:
                engine._own = set()
            try:
                async with anyio.create_task_group() as task_group:
                    engine._task_group = task_group
                    engine.is_owner = False
                    if engine.relay.enabled:
                        task_group.start_soon(
                            engine._guarded, engine.relay.serve, engine._heard, engine._heard_again
                        )
                    if dispatch.shared:
                        if dispatch.executes and role != "client":
                            engine._start_executing()
                        await dispatch.start(engine, task_group)
                    elif lock is not None:
                        await engine._take_ownership(lock)
                    elif role == "shared":
                        task_group.start_soon(engine._guarded, engine._take_ownership_when_free)
                    try:
                        yield engine
                    finally:
                        engine._shutting_down = True
                        task_group.cancel_scope.cancel()
            except BaseExceptionGroup as group:
                # The caller's own error, not a group: the task group only wrapped it.
                if len(group.exceptions) == 1:
                    raise group.exceptions[0] from None
                raise
        finally:
            if engine is not None:
                with anyio.CancelScope(shield=True):
                    await engine._hand_back(engine._started_here)
                    await engine._dispatch.aclose()
                    for backend in engine.backends.values():
                        await backend.aclose()
                    for publisher in engine.products.publishers.values():
                        await publisher.aclose()
            if ledger is not None:
                await ledger.close()
            owned = engine._lock if engine is not None else lock
            if owned is not None:
                owned.release()

    async def _take_ownership(self, lock: HomeLock) -> None:
        assert self._task_group is not None
        self._lock = lock
        self.is_owner = True
        for backend in self.backends.values():
            backend.start(self._task_group)
        try:
            await self._recover()
        except LedgerUnavailable as exc:
            # Start-up never waits on a backend (a database server that is down): health reports
            # the outage, and the runs are recovered once the ledger answers.
            self._problems.note("ledger", str(exc))
            log.warning("cannot recover unfinished runs yet (%s); trying again in the background", exc)
            self._start(self._recover_when_the_ledger_answers)
        self._scheduler.start(self._task_group)
        self._start(self._housekeeping_forever)

    def _start_executing(self) -> None:
        """A node of a shared dispatch that executes: its backends, lanes and housekeeping; the
        dispatch hands it runs (`execute_held`) and recovers a dead node's (`requeue_stalled`)."""
        assert self._task_group is not None
        for backend in self.backends.values():
            backend.start(self._task_group)
        self._scheduler.start(self._task_group)
        self._start(self._housekeeping_forever)

    async def _take_ownership_when_free(self) -> None:
        while True:
            await anyio.sleep(PROGRESS_FLUSH_S)
            try:
                lock = HomeLock.acquire(self.settings.home)
            except HomeLocked:
                continue
            log.info("the owner of %s has gone; this process takes over its runs", self.settings.home)
            await self._take_ownership(lock)
            return

    async def _recover_when_the_ledger_answers(self) -> None:
        delay = 0.5
        while True:
            await anyio.sleep(delay)
            try:
                await self._recover()
            except LedgerUnavailable as exc:
                self._problems.note("ledger", str(exc))
                delay = min(delay * 2, 10.0)
                continue
            self._problems.clear("ledger")
            log.info("the ledger answers again: unfinished runs recovered")
            return

    async def _recover(self) -> None:
        """Queue again what was queued; reconcile or run again what was running when the last process stopped.

        A run whose backend recorded where its work went (a ComfyUI prompt) is handed back to
        that backend, which collects the outputs, follows the work, or runs it again if the
        backend has forgotten it.
        """
        for run in await self.ledger.runs_in(ACTIVE_STATUSES):
            if self._own is not None and run.id not in self._own:
                continue  # a short-lived command leaves other runs to a long-lived process
            if run.kind is RunKind.BATCH:
                self._start(self._batches.refresh, run.id)
                continue
            if run.status is RunStatus.RUNNING:
                recovered = await self._requeue_interrupted(run, "a restart", "Atelier stopped")
                if recovered is None:
                    continue
                run = recovered
            if run.backend_handle and run.backend in self._scheduler.lanes:
                # Handed back or interrupted while its backend still had the work.
                self._resume[run.id] = run.backend_handle
            self._enqueue(run)

    async def _requeue_interrupted(self, run: Run, after: str, when: str) -> Run | None:
        """A run left running by a process that stopped (`after` a restart, `when` Atelier
        stopped), queued again: to be reconciled with its backend if the backend recorded where
        its work went (that attempt goes on), else to run again (its next attempt), or failed if
        that was its last. None if it is not queued (failed, or changed meanwhile)."""
        if run.backend_handle and (self._dispatch.shared or run.backend in self._scheduler.lanes):
            return await self.ledger.update_run(
                run.id,
                expect={RunStatus.RUNNING},
                status=RunStatus.QUEUED,
                message=f"recovered after {after}; reconnecting to its backend",
                log=f"was running on {run.backend} when {when}; reconciling with it",
                log_level="warning",
            )
        if run.attempts >= run.max_attempts:
            await self._fail_now(
                run.id,
                RunStatus.RUNNING,
                f"interrupted by {after} on its last attempt ({run.attempts}/{run.max_attempts})",
                f"interrupted by {after} on its last attempt",
            )
            return None
        return await self.ledger.update_run(
            run.id,
            expect={RunStatus.RUNNING},
            status=RunStatus.QUEUED,
            message=f"recovered after {after}",
            log=f"was running when {when}; queued to run again",
            log_level="warning",
        )

    async def _fail_now(self, run_id: str, expect: RunStatus, error: str, log: str) -> None:
        """Record a run that is still `expect` failed, with `error` and the log line `log`, and
        publish it (nothing if it has moved on meanwhile)."""
        failed = await self.ledger.update_run(
            run_id,
            expect={expect},
            status=RunStatus.FAILED,
            finished_at=time.time(),
            error=error,
            log=log,
            log_level="error",
        )
        if failed is not None:
            self._publish_run(failed)

    # -- submit -------------------------------------------------------------------------------

    async def submit_image(
        self,
        params: Mapping[str, Any],
        *,
        priority: str | Priority = Priority.NORMAL,
        idempotency_key: str | None = None,
        max_attempts: int | None = None,
        timeout_s: float | None = None,
        meta: Mapping[str, Any] | None = None,
    ) -> Run:
        """Validate and queue an image run; the same idempotency key returns the same run.

        `params` are `ImageSpec` fields; `operation` picks text-to-image (default),
        image-to-image or upscale, and the latter two take a `source` (see `core.sources`).
        `meta` is kept with the run for the front door that made it (its contract's own fields).
        """
        queueing = self._queueing(priority, idempotency_key, max_attempts, timeout_s, meta)
        given = {k: v for k, v in params.items() if v is not None}
        spec, source = await self.images.validate(given)
        return await self._accept(
            queueing,
            lambda: self.images.new_runs(spec, source, queueing),
            log=f"queued ({queueing.priority.value} priority, backend {self.settings.backend})",
            same_request=lambda existing: self.images.same_request(existing, spec, "seed" in given),
        )

    async def submit_batch(
        self,
        items: Sequence[Mapping[str, Any]],
        *,
        priority: str | Priority = Priority.NORMAL,
        idempotency_key: str | None = None,
        max_attempts: int | None = None,
        timeout_s: float | None = None,
        meta: Mapping[str, Any] | None = None,
        item_meta: Sequence[Mapping[str, Any] | None] | None = None,
    ) -> Run:
        """Queue one image run per item under a parent `batch` run, all or nothing.

        Every item is validated before anything is recorded; an invalid one names its index.
        The parent's status, progress and result follow its children (see `core.batches`);
        cancelling or retrying the parent does so to its children.
        """
        queueing = self._queueing(priority, idempotency_key, max_attempts, timeout_s, meta)
        batches.check_items(items, item_meta)
        return await self._accept(
            queueing,
            lambda: self.images.new_batch(items, item_meta, queueing),
            log=f"queued as part of a batch ({queueing.priority.value} priority)",
        )

    def _queueing(
        self,
        priority: str | Priority,
        idempotency_key: str | None,
        max_attempts: int | None,
        timeout_s: float | None,
        meta: Mapping[str, Any] | None,
    ) -> Queueing:
        """How a submitted run is to be queued, checked; attempts default to the settings'."""
        return Queueing.check(
            priority,
            idempotency_key,
            max_attempts,
            timeout_s,
            meta,
            default_attempts=self.settings.max_attempts,
        )

    async def _accept(
        self,
        queueing: Queueing,
        make_runs: Callable[[], Awaitable[Sequence[Run]]],
        *,
        log: str,
        same_request: Callable[[Run], Run] = lambda existing: existing,
    ) -> Run:
        """Record the runs a kind makes, in one transaction; publish them, queue each in its lane,
        and answer the first (a batch parent, whose children follow it and are the ones queued).

        `make_runs` is called only if no run holds `queueing.idempotency_key` yet: a run that
        does (recorded before, or by a concurrent request that won the race) is answered through
        `same_request`, which raises `Conflict` when it was made by a different request.
        `log` is the first log line of each run recorded.
        """
        key = queueing.idempotency_key
        if key is not None:
            existing = await self.ledger.find_by_idempotency_key(key)
            if existing is not None:
                return same_request(existing)
        made = await make_runs()
        try:
            runs = await self.ledger.insert_runs(made, log=log)
        except Conflict:
            # Another request with the same key won the race; answer as it did.
            existing = await self.ledger.find_by_idempotency_key(key or "")
            if existing is None:
                raise
            return same_request(existing)
        self._metrics.counters["submitted"] += sum(run.kind is not RunKind.BATCH for run in runs)
        if self._own is not None:
            self._own.update(run.id for run in runs)
        for run in runs:
            self._publish_run(run)
            # A batch runs nowhere itself: its children do. A shared dispatch has deferred their
            # jobs in the ledger's transaction.
            if run.kind is not RunKind.BATCH and not self._dispatch.shared:
                self._enqueue(run)
        return runs[0]

    def _enqueue(self, run: Run) -> None:
        self._enqueue_ref(run.id, run.backend, run.priority, run.seq)

    def _enqueue_ref(self, run_id: str, backend: str, priority: Priority, seq: int) -> None:
        if not self.is_owner:
            return  # the owning process picks it up from the ledger
        if backend not in self._scheduler.lanes:
            raise Conflict(f"backend {backend!r} is not configured on this server")
        self._scheduler.enqueue(backend, run_id, priority.rank, seq)

    async def _adopt_changes_from_other_processes(self) -> None:
        """Pick up runs another process queued (CLI, a sharing client) and stop the ones it cancelled."""
        waiting = {**self._active, **self._delayed}
        if waiting:
            statuses = await self.ledger.statuses_of(list(waiting))
            for run_id, scope in waiting.items():
                wanted = RunStatus.RUNNING if run_id in self._active else RunStatus.QUEUED
                if statuses.get(run_id) is not wanted:
                    scope.cancel()
        if self._dispatch.shared:
            return  # queued runs reach this node through the dispatch
        for run_id, backend, priority, seq in await self.ledger.queued_refs():
            if (
                run_id not in self._active
                and run_id not in self._delayed
                and backend in self._scheduler.lanes
                and (self._own is None or run_id in self._own)
            ):
                self._enqueue_ref(run_id, backend, priority, seq)

    async def _enqueue_later(self, run: Run, delay: float) -> None:
        with anyio.CancelScope() as scope:
            self._delayed[run.id] = scope
            try:
                await anyio.sleep(delay)
            finally:
                self._delayed.pop(run.id, None)
            self._enqueue(run)

    def _start(self, fn: Callable[..., Awaitable[Any]], *args: Any) -> None:
        if self._task_group is None:
            raise RuntimeError("the engine is not open")
        self._task_group.start_soon(self._guarded, fn, *args)

    async def _guarded(self, fn: Callable[..., Awaitable[Any]], *args: Any) -> None:
        """Run a background task whose failure is logged and noted, never the process's end."""
        try:
            await fn(*args)
        except LedgerUnavailable as exc:
            self._problems.note("ledger", str(exc))
            log.warning("%s: %s", getattr(fn, "__name__", fn), exc)
        except Exception:
            log.exception("background task %s failed", getattr(fn, "__name__", fn))

    async def _housekeeping_forever(self) -> None:
        while True:
            await anyio.sleep(PROGRESS_FLUSH_S)
            for chore in (self._progress.flush, self._adopt_changes_from_other_processes):
                await self._guarded(chore)

    async def _hand_back(self, run_ids: Collection[str]) -> None:
        """Runs this process was running when it stopped go back to the queue, their attempt not
        spent: the next process to own the data directory runs them (or, where the backend still
        has the work, such as a ComfyUI prompt, collects it)."""
        for run_id in list(run_ids):
            try:
                run = await self.ledger.get_run(run_id)
                if run is None or run.status is not RunStatus.RUNNING:
                    continue
                if run.backend_handle:
                    message = (
                        "handed back when Atelier stopped; it resumes from its last checkpoint"
                        if run.kind is RunKind.TRAINING
                        else f"handed back when Atelier stopped; its work continues on {run.backend}"
                    )
                    changes: dict[str, Any] = {}
                else:
                    message = "handed back when Atelier stopped; it starts again, this attempt not counted"
                    changes = {"attempts": Increment(-1), "progress": 0.0, "step": 0}
                    await self._discard_files(run_id)
                handed = await self.ledger.update_run(
                    run_id,
                    expect={RunStatus.RUNNING},
                    status=RunStatus.QUEUED,
                    message=message,
                    log=message,
                    log_level="warning",
                    **changes,
                )
                if handed is not None:
                    self._publish_run(handed)
                    if self._dispatch.shared:
                        await self._dispatch.queue([handed])
            except Exception:
                log.exception("run %s could not be handed back; the next start recovers it", run_id)

    # -- status -------------------------------------------------------------------------------

    async def status(self) -> dict[str, Any]:
        """Health of each backend, the queue, and throughput/latency since start (see `core.health`);
        with a shared dispatch, its queues and workers, and a node that executes nothing reports
        no backends (the workers have them)."""
        dispatch: dict[str, Any] | None = None
        if self._dispatch.shared:
            dispatch = {"executes": self._dispatch.executes}
            with anyio.move_on_after(health.HEALTH_CHECK_S):
                try:
                    dispatch.update(await self._dispatch.status())
                except Exception as exc:
                    dispatch["error"] = f"{type(exc).__name__}: {exc}"
        return await health.report(
            backends=self.backends if self._dispatch.executes else {},
            dispatch=dispatch,
            default_backend=self.settings.backend,
            scheduler=self._scheduler,
            store=self.store,
            ledger=self.ledger,
            problems=self._problems,
            metrics=self._metrics,
            trainer=self._trainer if self._dispatch.executes else None,
            training_lane=TRAINING_LANE,
            relay=self.relay.health(),
        )

    def _publish_run(self, run: Run) -> None:
        if self.events.wants(run.id):
            self.events.publish(Event("run", run.id, run=run))
        self.relay.run_changed(run)
        if run.parent_id is not None and self._task_group is not None:
            self._refresh_batch_soon(run.parent_id)

    async def _heard(self, message: RelayMessage) -> None:
        """Another node's event, published here (and never sent on: see `core.relay`)."""
        await publish_here(message, self.events, self.ledger.get_run, self._progress)

    async def _heard_again(self) -> None:
        """After the relay could not listen for a while: the runs followed here, as they are now
        (what was said meanwhile is lost)."""
        for run_id in self.events.followed():
            run = await self.ledger.get_run(run_id)
            self.events.publish(Event("run", run_id, run=run, message="" if run else "deleted"))

    def _refresh_batch_soon(self, parent_id: str) -> None:
        """Bring a batch up to date with its children; refreshes asked for meanwhile coalesce."""
        if self._task_group is not None and self._batches.claim(parent_id):
            self._start(self._batches.refresh, parent_id)


__all__ = ["Bundle", "Engine"]
