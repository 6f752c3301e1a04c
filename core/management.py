"""The use cases of runs once accepted: read, list and count them, cancel, retry, delete and
purge them, their logs, waiting for one, and their outputs.

A mixin of `core.engine.Engine`: these are the engine's public methods a front door calls about
existing runs. Each state change goes through the ledger and is published as the lifecycle's
own are (`_publish_run`); cancelling a run that executes here stops its cancel scope, and one
that executes elsewhere is stopped through the dispatch.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Collection
from pathlib import Path
from typing import Any

import anyio

from core import waiting
from core.artifacts import ArtifactStore, ArtifactStream, run_prefix
from core.backends import Progress
from core.batches import MAX_BATCH, BatchRefresher
from core.bundles import Bundle, Bundles
from core.dispatch import Dispatch
from core.errors import ArtifactNotFound, Conflict, InvalidInput, RunNotFound
from core.events import Event, EventBus
from core.ids import check_filename, check_run_id
from core.kinds import RunHandler
from core.ledger import Ledger
from core.models import ACTIVE_STATUSES, Artifact, LogEntry, Page, Run, RunKind, RunStatus, parse_filter
from core.progress import LiveProgress
from core.relay import EventRelay
from core.scheduler import Scheduler

_RETRYABLE_FROM = frozenset({RunStatus.FAILED, RunStatus.CANCELLED})
MAX_PAGE = 200
log = logging.getLogger("atelier.engine")


class RunManagement:
    """Reading and managing runs (the engine's state it works on is declared here;
    `Engine.__init__` sets it)."""

    ledger: Ledger
    store: ArtifactStore
    events: EventBus
    relay: EventRelay
    is_owner: bool
    _dispatch: Dispatch
    _scheduler: Scheduler
    _progress: LiveProgress
    _bundles: Bundles
    _batches: BatchRefresher
    _kinds: dict[RunKind, RunHandler]
    _active: dict[str, anyio.CancelScope]
    _delayed: dict[str, anyio.CancelScope]
    _publish_run: Callable[[Run], None]
    _refresh_batch_soon: Callable[[str], None]
    _enqueue: Callable[[Run], None]

    # -- manage -------------------------------------------------------------------------------

    async def get_run(self, run_id: str) -> Run:
        """The run as it is now, with live progress. Raises `RunNotFound`."""
        run = await self.ledger.get_run(check_run_id(run_id))
        if run is None:
            raise RunNotFound(run_id)
        return self._progress.apply(run)

    def live_progress(self, run_id: str) -> Progress | None:
        """The progress `get_run` shows over the ledger's for `run_id`, if any: the same object
        until the run's next step (what a caller keeping an answer compares)."""
        return self._progress.of(run_id)

    async def get_run_by_seq(self, seq: int) -> Run:
        """The run with ledger sequence number `seq` (the id of contracts with integer ids)."""
        if not isinstance(seq, int) or not 0 < seq < 2**63:
            raise InvalidInput("id", f"must be a positive integer (got {seq!r})")
        run = await self.ledger.get_run_by_seq(seq)
        if run is None:
            raise RunNotFound(str(seq))
        return self._progress.apply(run)

    async def list_runs(
        self,
        *,
        status: str | Collection[str] | None = None,
        kind: str | Collection[str] | None = None,
        parent_id: str | None = None,
        top_level: bool = False,
        limit: int = 20,
        cursor: str | None = None,
        offset: int = 0,
    ) -> Page:
        """Runs newest first, filtered by status and kind (`top_level`: no batch children);
        page with `cursor`, or skip `offset` runs."""
        if not 1 <= limit <= MAX_PAGE:
            raise InvalidInput("limit", f"must be an integer in 1..{MAX_PAGE} (got {limit!r})")
        if not 0 <= offset < 2**31:
            raise InvalidInput("offset", f"must be an integer >= 0 (got {offset!r})")
        statuses = parse_filter(RunStatus, "status", status)
        kinds = parse_filter(RunKind, "kind", kind)
        if parent_id is not None:
            check_run_id(parent_id, "parent_id")
        page = await self.ledger.list_runs(
            statuses=statuses,
            kinds=kinds,
            parent_id=parent_id,
            top_level=top_level,
            limit=limit,
            cursor=cursor or None,
            offset=offset,
        )
        return Page([self._progress.apply(r) for r in page.items], page.next_cursor)

    async def count_runs(
        self,
        *,
        status: str | Collection[str] | None = None,
        kind: str | Collection[str] | None = None,
        top_level: bool = False,
    ) -> int:
        """How many runs `list_runs` with the same filters pages through."""
        return await self.ledger.count_runs(
            statuses=parse_filter(RunStatus, "status", status),
            kinds=parse_filter(RunKind, "kind", kind),
            top_level=top_level,
        )

    async def get_document(self, key: str) -> Any:
        """A small JSON document a front door keeps in the ledger (None if never written)."""
        return await self.ledger.get_document(key)

    async def put_document(self, key: str, value: Any) -> None:
        await self.ledger.put_document(key, value)

    async def cancel(self, run_id: str) -> Run:
        """Cancel a queued or running run (a running one is stopped), or every unfinished run of a
        batch. A finished run is returned as is."""
        run = await self.get_run(run_id)
        if run.kind is not RunKind.BATCH:
            return await self._cancel_one(run_id)
        for child in (
            await self.ledger.list_runs(parent_id=run_id, statuses=ACTIVE_STATUSES, limit=MAX_BATCH)
        ).items:
            await self._cancel_one(child.id)
        await self._batches.refresh(run_id)
        return await self.get_run(run_id)

    async def _cancel_one(self, run_id: str) -> Run:
        run = await self.ledger.update_run(
            run_id,
            expect=ACTIVE_STATUSES,
            status=RunStatus.CANCELLED,
            finished_at=time.time(),
            message="cancelled",
            log="cancelled on request",
        )
        if run is None:
            return await self.get_run(run_id)
        self._scheduler.dequeue(run_id)
        for scopes in (self._active, self._delayed):
            scope = scopes.get(run_id)
            if scope is not None:
                scope.cancel()
        if self._dispatch.shared:
            # Recorded first: the node holding it stops it when its job is aborted, and sees the
            # cancel in the ledger anyway (its housekeeping) if the abort cannot be sent.
            try:
                await self._dispatch.abort(run_id)
            except Exception as exc:
                log.warning("run %s cancelled, but its job could not be aborted: %s", run_id, exc)
        self._metrics.counters["cancelled"] += 1
        self._publish_run(run)
        return run

    async def retry(self, run_id: str) -> Run:
        """Queue a failed or cancelled run again, with a fresh set of attempts (for a batch: each
        of its children that failed or was cancelled)."""
        run = await self.get_run(run_id)
        if run.status not in _RETRYABLE_FROM:
            raise Conflict(
                f"run {run_id} is {run.status.value}; only failed or cancelled runs can be retried"
            )
        if run.kind is RunKind.BATCH:
            children = await self.ledger.list_runs(
                parent_id=run_id, statuses=_RETRYABLE_FROM, limit=MAX_BATCH
            )
            for child in children.items:
                await self._retry_one(child.id)
            await self.ledger.add_log(run_id, f"retry requested for {len(children.items)} item(s)")
            await self._batches.refresh(run_id)
            return await self.get_run(run_id)
        return await self._retry_one(run_id)

    async def _retry_one(self, run_id: str) -> Run:
        queued = await self.ledger.update_run(
            run_id,
            expect=_RETRYABLE_FROM,
            status=RunStatus.QUEUED,
            attempts=0,
            error=None,
            progress=0.0,
            step=0,
            message="queued again",
            backend_handle=None,
            started_at=None,
            finished_at=None,
            replace_artifacts=True,
            log="retry requested",
        )
        if queued is None:
            raise Conflict(f"run {run_id} changed state while being retried; look at it again")
        self._bundles.discard(run_id)  # its attempts count from 1 again
        self._publish_run(queued)
        if self._dispatch.shared:
            await self._dispatch.queue([queued])
        else:
            self._enqueue(queued)
        return queued

    async def delete(self, run_id: str) -> Run:
        """Delete a run, its files and its log (a batch: with its children), stopping it first if active."""
        run = await self.get_run(run_id)
        if not run.status.is_final:
            run = await self.cancel(run_id)
        children = (await self.ledger.list_runs(parent_id=run_id, limit=MAX_BATCH)).items
        await self.ledger.delete_run(run_id)
        for gone in (run, *children):
            await self.store.delete_prefix(run_prefix(gone.id))
            self._bundles.discard(gone.id)
            handler = self._kinds.get(gone.kind)
            if handler is not None:
                await handler.forget(gone)
        self.events.publish(Event("run", run_id, run=None, message="deleted"))
        self.relay.deleted(run_id)
        if run.parent_id is not None:
            self._refresh_batch_soon(run.parent_id)
        return run

    async def purge(
        self, older_than_s: float, statuses: Collection[str] = ("completed", "failed")
    ) -> list[str]:
        """Delete the top-level runs in `statuses` that finished more than `older_than_s` ago."""
        if not older_than_s >= 0:
            raise InvalidInput("older_than_s", f"must be a number of seconds >= 0 (got {older_than_s!r})")
        wanted = parse_filter(RunStatus, "status", list(statuses)) or set()
        if not wanted <= {s for s in RunStatus if s.is_final}:
            raise InvalidInput("status", "only finished runs (completed, failed, cancelled) can be purged")
        removed = []
        for run_id in await self.ledger.finished_before(time.time() - older_than_s, wanted):
            try:
                await self.delete(run_id)
            except RunNotFound:
                continue  # deleted meanwhile
            removed.append(run_id)
        return removed

    async def logs(self, run_id: str, limit: int = 1000) -> list[LogEntry]:
        """The run's log lines, oldest first. Raises `RunNotFound`."""
        entries = await self.ledger.logs(run_id, limit=limit)
        if not entries:  # only then can the run be missing: a line goes when its run does
            await self.get_run(run_id)
        return entries

    async def wait(
        self,
        run_id: str,
        timeout_s: float,
        on_progress: waiting.ProgressListener | None = None,
    ) -> Run:
        """Wait until the run is finished or `timeout_s` passes; returns the run either way.

        `on_progress` (sync or async) is called for each progress step seen while waiting. With a
        relay, the run may execute on another node: its events are followed all the same, and
        the ledger read now and then in case one was lost.
        """
        if self.relay.enabled:
            return await waiting.until_final(
                self.events,
                self.get_run,
                self._progress.apply,
                run_id,
                timeout_s,
                on_progress,
                recheck_s=waiting.RELAYED_RECHECK_S,
            )
        if not self.is_owner or self._dispatch.shared:
            # Another process runs it (with a shared dispatch, perhaps another machine).
            return await waiting.poll_until_final(self.get_run, run_id, timeout_s, on_progress)
        return await waiting.until_final(
            self.events, self.get_run, self._progress.apply, run_id, timeout_s, on_progress
        )

    # -- outputs ------------------------------------------------------------------------------

    async def read_artifact(self, run_id: str, filename: str) -> tuple[Artifact, bytes]:
        """A run's file and its bytes. Raises `RunNotFound` / `ArtifactNotFound`."""
        check_filename(filename)
        run = await self.get_run(run_id)
        for artifact in run.artifacts:
            if artifact.filename == filename:
                return artifact, await self.store.read(artifact.storage_key)
        raise ArtifactNotFound(run_id, filename)

    def artifact_path(self, artifact: Artifact) -> Path | None:
        return self.store.local_path(artifact.storage_key)

    def artifact_location(self, artifact: Artifact) -> str:
        """Where the file is, for a person: its path, or its `s3://` URL."""
        return self.store.location(artifact.storage_key)

    async def artifact_url(self, artifact: Artifact) -> str | None:
        """A time-limited URL of the file in the storage itself (S3 presigned), if configured."""
        return await self.store.signed_url(artifact.storage_key)

    async def stream_artifact(self, artifact: Artifact) -> ArtifactStream:
        """The file opened for streaming. Raises `FileNotFoundError` if the storage has lost it
        (the ledger says it is there: a storage error, as `read_artifact` reports it)."""
        return await self.store.stream(artifact.storage_key)

    async def bundle(self, run_id: str, *, reuse: bool = False) -> Bundle:
        """A ZIP of the run's images plus `run.json`; with `reuse`, the one already written if
        there is one (see `core.bundles`)."""
        return await self._bundles.write(await self.get_run(run_id), reuse=reuse)
