"""Dispatch across machines through procrastinate, a task queue kept in the ledger's PostgreSQL.

Chosen by `ATELIER_DISPATCH=procrastinate` (with `ATELIER_DATABASE_URL`). Mapping decisions:

- One task, `atelier.execute_run(run_id)`; a job per queued run, in the queue of the run's lane
  (`image` for every image backend, `training`, `publishing`: `core.dispatch.queue_of`), with the
  run's priority rank as the job's priority (higher first). The job's `lock` and `queueing_lock`
  are the run id: two jobs of one run never execute at once, and at most one waits. A run's jobs
  are found by that lock (`_JOBS_OF_RUN`).
- Accepting runs defers their jobs in the transaction that inserts them, on the ledger's own
  connection (`defer_within`, the PostgreSQL ledger's `on_insert_runs`), through procrastinate's
  `procrastinate_defer_jobs_v1`: a run is never recorded without its job, nor the reverse.
- A worker (`executes`: `atelier worker`, or a front door told to execute) runs procrastinate's
  `Worker` on its queues; each job hands its run to the engine (`RunHolder.execute_held`), which
  runs the attempt in the backend's lane, with the lane's own concurrency and admission, exactly
  as on one box. The job ends when the attempt does; a failed attempt's next one is a new job
  deferred for later (`queue`), so the run's attempts, backoff and time limits stay the engine's.
- Cancel: the node that records a cancel asks procrastinate to cancel the run's jobs with
  `abort=True` (a waiting job is dropped; a running one is marked, and its worker hears it
  through LISTEN/NOTIFY or its poll and cancels the job's task), and the worker then stops the
  run (`RunHolder.stop_held`: its cancel scope, so a ComfyUI prompt is interrupted as today).
  The job ends as aborted even when the worker heard of the cancel from the ledger first.
- A worker that dies stops sending heartbeats. Every worker sweeps, one at a time (an advisory
  lock, which PostgreSQL frees if a sweeper stops mid-sweep: see `_sweep`): it prunes workers
  silent for `stalled_s`, and for each of their jobs still "doing" it
  queues the run again in the ledger (`RunHolder.requeue_stalled`, recovery's rules: an attempt
  counted, a recorded ComfyUI prompt kept to be collected) and then retries the job
  (`retry_job`), so another worker takes it. Nothing else recovers runs in this mode.
- A worker that stops cleanly hands its runs back (the engine does, and queues them again here).
  The sweep also defers a job for any queued run that has none (a node stopped between putting
  a run back in the queue and deferring its job).
- procrastinate's schema is applied when missing, under an advisory lock (nodes start together).

procrastinate is imported only here: the embedded default never needs it installed.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging
import os
import socket
from collections.abc import Sequence
from importlib.metadata import version
from typing import Any

import anyio
import psycopg
from anyio.abc import TaskGroup
from procrastinate import App, PsycopgConnector, RetryStrategy
from procrastinate import exceptions as procrastinate_errors
from procrastinate.job_context import AbortReason, JobContext
from procrastinate.jobs import Job, Status
from procrastinate.schema import SchemaManager
from procrastinate.worker import Worker

from core.dispatch import RunHolder, queue_of
from core.errors import LedgerUnavailable
from core.models import Run, RunKind, RunStatus
from core.settings import Settings

log = logging.getLogger("atelier.dispatch")
TASK = "atelier.execute_run"
_SCHEMA_LOCK = "SELECT pg_advisory_xact_lock(hashtext('atelier procrastinate schema'))"
# Which procrastinate made the schema is kept as the jobs table's comment.
_SCHEMA_MADE_BY = (
    "SELECT to_regclass('procrastinate_jobs') IS NOT NULL, "
    "obj_description(to_regclass('procrastinate_jobs'), 'pg_class')"
)
_SWEEP_LOCK = "SELECT pg_try_advisory_xact_lock(hashtext('atelier procrastinate stalled workers'))"
# Waiting jobs are unique by queueing lock, running ones by lock: both are the run id.
_JOBS_OF_RUN = (
    "SELECT id FROM procrastinate_jobs WHERE task_name = %(task)s AND "
    "((queueing_lock = %(run_id)s AND status = 'todo') OR (lock = %(run_id)s AND status = 'doing'))"
)
_QUEUE_COUNTS = (
    "SELECT queue_name, CASE status WHEN 'todo' THEN 'waiting' ELSE 'running' END AS state, COUNT(*) AS n "
    "FROM procrastinate_jobs WHERE status IN ('todo', 'doing') GROUP BY 1, 2"
)
_WORKERS_ALIVE = (
    "SELECT COUNT(*) AS n FROM procrastinate_workers "
    "WHERE last_heartbeat > NOW() - make_interval(secs => %(seconds)s)"
)
_RUNS_WITH_JOBS = (
    "SELECT lock AS run_id FROM procrastinate_jobs WHERE task_name = %(task)s AND lock = ANY(%(ids)s) "
    "AND status IN ('todo', 'doing')"
)
# A worker whose procrastinate loop ended while the engine is open starts it again after this.
RESTART_DELAY_S = 2.0


class ProcrastinateDispatch:
    """The dispatch port over procrastinate (see the module's docstring)."""

    shared = True

    def __init__(
        self,
        url: str,
        *,
        executes: bool,
        queues: Sequence[str],
        concurrency: int | None,
        heartbeat_s: float,
        stalled_s: float,
        poll_s: float = 5.0,
    ) -> None:
        self.executes = executes
        self._queues = list(queues)
        self._concurrency = concurrency
        self._heartbeat_s = heartbeat_s
        self._stalled_s = stalled_s
        self._poll_s = poll_s
        # How long a sweep's transaction may sit waiting on its worker before PostgreSQL ends
        # the worker's session and so frees the sweep's lock (see `_sweep`).
        self._sweep_patience_ms = int(max(10.0, 4 * stalled_s) * 1000)
        # The worker's own connections: one listens, one per job at its start and end, the sweep
        # (the pool opens them as they are needed).
        self._connector = PsycopgConnector(
            conninfo=url,
            min_size=1,
            max_size=(concurrency or 8) * len(self._queues) + 2 * len(self._queues) + 2,
        )
        self.app = App(connector=self._connector)
        # A run that could not start because the ledger refused it is tried again, later.
        retry = RetryStrategy(exponential_wait=2, max_attempts=12, retry_exceptions={LedgerUnavailable})
        self.app.task(name=TASK, pass_context=True, queue="image", retry=retry)(self._execute_run)
        self._node: RunHolder | None = None
        # Queued runs the last sweep found without a job (see `_defer_lost`).
        self._jobless: set[str] = set()
        self._opened = False
        self._opening: anyio.Lock | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> ProcrastinateDispatch:
        assert settings.database_url is not None  # the settings refuse this dispatch without one
        return cls(
            settings.database_url.get_secret_value(),
            executes=settings.execute,
            queues=settings.worker_queue_list,
            concurrency=settings.worker_concurrency,
            heartbeat_s=settings.worker_heartbeat_s,
            stalled_s=settings.worker_stalled_s,
            poll_s=min(5.0, settings.worker_heartbeat_s),
        )

    # -- the port -----------------------------------------------------------------------------

    async def start(self, node: RunHolder, task_group: TaskGroup) -> None:
        self._node = node
        if self.executes:
            task_group.start_soon(self._work, name="atelier-procrastinate-worker")

    async def queue(self, runs: Sequence[Run], delay_s: float = 0.0) -> None:
        await self._ready()
        for job in self._jobs(runs, delay_s):
            try:
                await self.app.job_manager.defer_job_async(job)
            except procrastinate_errors.AlreadyEnqueued:
                log.info("run %s already has a job waiting", job.task_kwargs["run_id"])

    async def abort(self, run_id: str) -> None:
        await self._ready()
        rows = await self._connector.execute_query_all_async(
            query=_JOBS_OF_RUN,  # type: ignore[arg-type]
            task=TASK,
            run_id=run_id,
        )
        for row in rows:
            if await self.app.job_manager.cancel_job_by_id_async(row["id"], abort=True):
                log.info("run %s cancelled: its job %s is withdrawn or aborted", run_id, row["id"])

    async def status(self) -> dict[str, Any]:
        """The jobs waiting and running in each queue, and the workers alive (heard from within
        `stalled_s`; an `atelier worker` runs one per queue it takes)."""
        await self._ready()
        queues: dict[str, dict[str, int]] = {}
        for row in await self._connector.execute_query_all_async(query=_QUEUE_COUNTS):  # type: ignore[arg-type]
            queues.setdefault(row["queue_name"], {"waiting": 0, "running": 0})[row["state"]] = row["n"]
        [alive] = await self._connector.execute_query_all_async(
            query=_WORKERS_ALIVE,  # type: ignore[arg-type]
            seconds=self._stalled_s,
        )
        return {"mode": "procrastinate", "queues": queues, "workers": alive["n"]}

    async def aclose(self) -> None:
        if self._opened:
            await self.app.close_async()
            self._opened = False

    # -- accepting: in the ledger's transaction ------------------------------------------------

    async def defer_within(self, conn: psycopg.AsyncConnection[Any], runs: Sequence[Run]) -> None:
        """Defer the jobs of `runs` on `conn`, in the transaction that records them."""
        jobs = self._jobs(runs, 0.0)
        if jobs:
            await self._ready()
            try:
                await self.app.job_manager.batch_defer_jobs_async(jobs, connection=conn)
            except procrastinate_errors.ConnectorException as exc:
                # The ledger's transaction rolls back with it: the runs are not recorded either.
                raise LedgerUnavailable(
                    f"the task queue cannot take the run now ({_reason(exc.__cause__ or exc)}); "
                    "nothing was recorded, try again"
                ) from None

    def _jobs(self, runs: Sequence[Run], delay_s: float) -> list[Job]:
        at = None
        if delay_s > 0:
            at = datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=delay_s)
        return [
            Job(
                queue=queue_of(run.backend),
                task_name=TASK,
                priority=run.priority.rank,
                lock=run.id,
                queueing_lock=run.id,
                task_kwargs={"run_id": run.id},
                scheduled_at=at,
            )
            for run in runs
            if run.kind is not RunKind.BATCH  # a batch runs nowhere itself: its children do
        ]

    # -- the schema ---------------------------------------------------------------------------

    async def _ready(self) -> None:
        """Open the connections and apply procrastinate's schema if the database has none."""
        if self._opened:
            return
        if self._opening is None:
            self._opening = anyio.Lock()
        async with self._opening:
            if self._opened:
                return
            await self.app.open_async()
            try:
                async with self._connector.pool.connection() as conn, conn.transaction():
                    await conn.execute(_SCHEMA_LOCK)
                    present, made_by = await (await conn.execute(_SCHEMA_MADE_BY)).fetchone() or (False, None)
                    ours = f"procrastinate {version('procrastinate')}"
                    if not present:
                        log.info("applying %s's schema", ours)
                        await conn.execute(SchemaManager.get_schema().encode(), prepare=False)
                        await conn.execute(f"COMMENT ON TABLE procrastinate_jobs IS '{ours}'".encode())
                    elif made_by != ours:
                        # procrastinate ships migrations between versions; the operator applies
                        # them (`procrastinate schema --migrate` lists them), as for any upgrade.
                        log.warning(
                            "the task queue's schema was made by %s, and this node runs %s: apply "
                            "procrastinate's migrations in between if there are any",
                            made_by or "an unknown procrastinate",
                            ours,
                        )
            except BaseException:
                await self.app.close_async()
                raise
            self._opened = True

    # -- a worker -----------------------------------------------------------------------------

    async def _execute_run(self, context: JobContext, run_id: str) -> None:
        """The task: execute the run here; stop it if its job is aborted (a cancel elsewhere)."""
        node = self._node
        assert node is not None
        try:
            status = await node.execute_held(run_id)
        except asyncio.CancelledError:
            if context.abort_reason() is AbortReason.USER_REQUEST:
                log.info("run %s: cancelled elsewhere; stopping it here", run_id)
                node.stop_held(run_id)
            raise
        if status is RunStatus.CANCELLED:
            # This node may hear of a cancel from the ledger before its job is marked: the job
            # ends as aborted all the same, not as succeeded.
            raise procrastinate_errors.JobAborted(f"run {run_id} was cancelled")

    async def _work(self) -> None:
        """A procrastinate worker per queue of this node (each holding as many jobs as its lane
        runs at once, so a run never waits on a busy node while another is idle), with the
        stalled-worker sweep beside them, until the engine closes."""
        node = self._node
        assert node is not None
        mine: set[Worker] = set()
        async with anyio.create_task_group() as group:
            for queue in self._queues:
                concurrency = self._concurrency or max(1, node.capacity([queue]))
                group.start_soon(self._work_on, queue, concurrency, mine)
            group.start_soon(self._sweep_forever, mine)

    async def _work_on(self, queue: str, concurrency: int, mine: set[Worker]) -> None:
        """procrastinate's worker on `queue`, started again if it stops while the engine is open;
        stopped when the engine closes: its jobs let go at once (the engine hands the runs back)."""
        while True:
            try:
                await self._ready()
            except Exception as exc:
                log.warning("the task queue cannot be reached (%s); trying again", _reason(exc))
                await anyio.sleep(RESTART_DELAY_S)
                continue
            worker = Worker(
                self.app,
                queues=[queue],
                name=f"atelier@{socket.gethostname()}:{os.getpid()}/{queue}",
                concurrency=concurrency,
                install_signal_handlers=False,
                update_heartbeat_interval=self._heartbeat_s,
                stalled_worker_timeout=self._stalled_s,
                fetch_job_polling_interval=self._poll_s,
                abort_job_polling_interval=self._poll_s,
                shutdown_graceful_timeout=0,
            )
            mine.add(worker)
            running = asyncio.ensure_future(worker.run())
            try:
                # Shielded: the engine closing stops the worker below, not by cancelling it.
                await asyncio.shield(running)
            except Exception as exc:
                # E.g. it was presumed dead while paused or cut off, and its registration is gone.
                log.warning("the %s worker stopped on an error: %s", queue, _reason(exc))
            finally:
                with anyio.CancelScope(shield=True):
                    worker.stop()
                    with contextlib.suppress(Exception):  # reported above
                        await running
                    mine.discard(worker)
            log.warning("the %s worker stopped while Atelier is running; starting it again", queue)
            await anyio.sleep(RESTART_DELAY_S)

    async def _sweep_forever(self, mine: set[Worker]) -> None:
        every = max(0.5, min(self._heartbeat_s, self._stalled_s / 2))
        while True:
            await anyio.sleep(every)
            try:
                await self._sweep({worker.worker_id for worker in mine})
            except Exception as exc:
                log.warning("could not look for dead workers: %s", _reason(exc))

    async def _sweep(self, mine: set[int | None]) -> None:
        """Runs of workers that stopped sending heartbeats go back to the queue (see the docstring)."""
        node = self._node
        assert node is not None
        manager = self.app.job_manager
        async with self._connector.pool.connection() as conn, conn.transaction():
            # A sweeper that stops mid-sweep (paused, its machine frozen, its network cut without
            # a reset) would hold the lock, and stop every sweep, for as long as PostgreSQL keeps
            # its session: PostgreSQL ends the session once it has sat in this transaction longer.
            await conn.execute(f"SET LOCAL idle_in_transaction_session_timeout = {self._sweep_patience_ms}")
            row = await (await conn.execute(_SWEEP_LOCK)).fetchone()
            if not (row and row[0]):
                return  # another worker is sweeping
            pruned = await manager.prune_stalled_workers(self._stalled_s)
            if pruned:
                log.warning("workers %s stopped sending heartbeats; their runs are queued again", pruned)
            for job in await manager.get_stalled_jobs(
                task_name=TASK, seconds_since_heartbeat=self._stalled_s
            ):
                if job.worker_id is not None and job.worker_id in mine:
                    continue
                run_id = str(job.task_kwargs.get("run_id", ""))
                await node.requeue_stalled(run_id)
                try:
                    await manager.retry_job(job)
                except procrastinate_errors.UniqueViolation:
                    # The run already has a waiting job (it was handed back): this one is spent.
                    await manager.finish_job(job, Status.ABORTED, delete_job=False)
                    continue
                log.warning("run %s: its worker died; queued again for another worker", run_id)
            await self._defer_lost(node)

    async def _defer_lost(self, node: RunHolder) -> None:
        """Defer a job for each queued run that has none: a node stopped between putting a run
        back in the queue (handed back, a failed attempt's next one, a retry) and deferring its
        job, or its job was deleted. Accepted runs never lack one (one transaction).

        The runs and the jobs are read one after the other, so a run read as queued may have
        been executed, its job finished, by the time the jobs are read: a run counts as lost
        only when two sweeps in a row find it queued without a job (a lost run stays so)."""
        queued = await node.queued_runs()
        if not queued:
            self._jobless = set()
            return
        rows = await self._connector.execute_query_all_async(
            query=_RUNS_WITH_JOBS,  # type: ignore[arg-type]
            task=TASK,
            ids=[run.id for run in queued],
        )
        held = {row["run_id"] for row in rows}
        jobless = {run.id for run in queued if run.id not in held}
        lost = [run for run in queued if run.id in jobless and run.id in self._jobless]
        self._jobless = jobless - {run.id for run in lost}
        if lost:
            log.warning("queued runs without a job, deferred again: %s", ", ".join(run.id for run in lost))
            await self.queue(lost)


def _reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else 'no message'}"


__all__ = ["TASK", "ProcrastinateDispatch"]
