"""Group commit: writes that arrive together are committed together, and each caller still gets
its own outcome (see `core.ledger.sqlite_writes`). The outcomes a caller sees (concurrent runs each
recorded whole, a failing write failing alone, a cancelled write writing nothing, progress others
can read) are checked on PostgreSQL too; another process's write lock and the file's integrity
are SQLite's own."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import anyio
import pytest

from core.engine import Engine
from core.errors import Conflict
from core.ledger import Ledger
from core.ledger.sqlite import SQLiteLedger
from core.models import RunStatus
from core.settings import Settings
from tests.ledgers import LedgerPlace
from tests.scripted_backend import ScriptedBackend, wait_until
from tests.test_ledger import hold_write_lock, new_run

pytestmark = pytest.mark.anyio


async def test_many_concurrent_runs_each_complete_with_their_files_and_log(
    settings: Settings, ledger_place: LedgerPlace
) -> None:
    settings = ledger_place.settings(settings.model_copy(update={"local_concurrency": 8}))
    async with Engine.open(settings) as engine:
        ids: list[str] = []

        async def submit(index: int) -> None:
            run = await engine.submit_image(
                {"prompt": f"lantern {index}", "width": 64, "height": 64, "steps": 4}
            )
            ids.append(run.id)

        async with anyio.create_task_group() as group:
            for index in range(120):
                group.start_soon(submit, index)
        for run_id in ids:
            run = await engine.wait(run_id, 30)
            assert run.status is RunStatus.COMPLETED, run
    # What another process reads from the ledger once the engine has stopped: every run, its
    # image and its whole log.
    completed = dict(ledger_place.raw("SELECT id, status FROM runs"))
    assert completed == dict.fromkeys(ids, "completed")
    files = ledger_place.raw("SELECT run_id, storage_key, size FROM artifacts")
    assert sorted(run_id for run_id, _, _ in files) == sorted(ids)
    for _, key, size in files:
        assert (settings.artifacts_dir / key).stat().st_size == size
    logs = ledger_place.raw("SELECT run_id, message FROM run_logs ORDER BY id")
    for run_id in ids:
        messages = [message for owner, message in logs if owner == run_id]
        assert messages[0].startswith("queued") and messages[1] == "started", messages
        assert messages[-1] == "completed with 1 image(s)", messages


async def test_a_write_that_fails_among_concurrent_writes_fails_alone(
    ledger: Ledger, ledger_place: LedgerPlace
) -> None:
    await ledger.insert_run(new_run(idempotency_key="taken"))
    outcomes: dict[str, object] = {}

    async def insert(name: str, key: str | None) -> None:
        try:
            outcomes[name] = (await ledger.insert_run(new_run(idempotency_key=key, message=name))).id
        except Conflict as exc:
            outcomes[name] = exc

    async with anyio.create_task_group() as group:
        group.start_soon(insert, "before", None)
        group.start_soon(insert, "reused key", "taken")
        group.start_soon(insert, "after", "fresh")
    assert isinstance(outcomes["reused key"], Conflict)
    for name in ("before", "after"):
        stored = await ledger.get_run(outcomes[name])  # type: ignore[arg-type]
        assert stored is not None and stored.message == name
    assert len(ledger_place.raw("SELECT id FROM runs")) == 3


async def test_a_cancelled_write_that_leads_no_group_writes_nothing(ledger: Ledger) -> None:
    run = await ledger.insert_run(new_run(message="before"))
    with anyio.CancelScope() as scope:
        scope.cancel()
        await ledger.update_run(run.id, message="never")
    assert (await ledger.get_run(run.id)).message == "before"  # type: ignore[union-attr]
    assert (await ledger.update_run(run.id, message="after")).message == "after"  # type: ignore[union-attr]


async def test_completions_refused_by_a_locked_ledger_are_retried_until_recorded(settings: Settings) -> None:
    """Concurrent runs finish while another process holds the write lock past the busy timeout:
    each run's completion is refused, none is reported completed before it is recorded, the
    engine keeps serving, and once the lock is gone every run completes with its file."""
    settings = settings.model_copy(update={"ledger_busy_timeout_s": 0.2})
    backend = ScriptedBackend(concurrency=4, hold_all=True)
    async with Engine.open(settings, backends={"local": backend}) as engine:
        runs = [
            await engine.submit_image({"prompt": f"tide {i}", "width": 64, "height": 64, "steps": 2})
            for i in range(4)
        ]
        await wait_until(lambda: backend.running == 4, what="four runs to be running")
        other = hold_write_lock(settings.home / "ledger.sqlite3")
        try:
            backend.release_all()
            await wait_until(lambda: len(backend.finished) == 4, what="the backend to finish the runs")
            await anyio.sleep(0.6)  # the completions are refused at least once (busy timeout 0.2 s)
            for run in runs:
                assert (await engine.get_run(run.id)).status is RunStatus.RUNNING
            status = await engine.status()
            assert "ledger" in str(status), status
        finally:
            other.execute("COMMIT")
            other.close()
        started = time.monotonic()
        for run in runs:
            done = await engine.wait(run.id, 15)
            assert done.status is RunStatus.COMPLETED, done
            assert (settings.artifacts_dir / done.artifacts[0].storage_key).is_file()
        assert time.monotonic() - started < 15


def test_the_ledger_file_is_consistent_after_grouped_writes(tmp_path: Path) -> None:
    """Grouped writes leave a file SQLite itself finds sound."""

    async def write_many() -> None:
        ledger = SQLiteLedger.open(tmp_path / "ledger.sqlite3")
        try:
            async with anyio.create_task_group() as group:
                for index in range(50):
                    group.start_soon(ledger.insert_run, new_run(message=str(index)))
        finally:
            await ledger.close()

    anyio.run(write_many)
    conn = sqlite3.connect(tmp_path / "ledger.sqlite3")
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert conn.execute("SELECT COUNT(*) FROM runs").fetchone()[0] == 50
    finally:
        conn.close()


async def test_progress_of_every_running_run_reaches_the_ledger_other_processes_read(
    settings: Settings, ledger_place: LedgerPlace
) -> None:
    settings = ledger_place.settings(settings)
    backend = ScriptedBackend(concurrency=3, hold_all=True)
    async with Engine.open(settings, backends={"local": backend}) as engine:
        runs = [
            await engine.submit_image({"prompt": f"dune {i}", "width": 64, "height": 64, "steps": 5})
            for i in range(3)
        ]
        await wait_until(lambda: backend.running == 3, what="three runs to be running")

        def steps() -> dict[str, tuple[str, int, float]]:
            rows = ledger_place.raw("SELECT id, status, step, progress FROM runs")
            return {run_id: (status, step, progress) for run_id, status, step, progress in rows}

        # The housekeeping flush (once a second) writes each run's latest step.
        await wait_until(
            lambda: all(steps()[run.id] == ("running", 5, 1.0) for run in runs), 5.0, "progress in the ledger"
        )
        backend.release_all()
        for run in runs:
            assert (await engine.wait(run.id, 10)).status is RunStatus.COMPLETED
