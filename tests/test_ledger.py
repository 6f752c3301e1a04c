"""The ledger on its own: guarded updates, uniqueness, cascades and cursors on both adapters (the
`ledger` fixture: SQLite, then PostgreSQL), and the SQLite file's own schema upgrades, WAL and locks."""

from __future__ import annotations

import base64
import sqlite3
import time
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import pytest

from core.errors import Conflict, InvalidInput, LedgerUnavailable
from core.ids import new_run_id
from core.ledger import Increment, Ledger
from core.ledger.sqlite import SQLiteLedger
from core.ledger.sqlite_queries import decode_cursor, encode_cursor
from core.models import Artifact, Priority, Run, RunKind, RunStatus
from tests.ledgers import LedgerPlace

pytestmark = pytest.mark.anyio


def new_run(**fields: object) -> Run:
    values: dict[str, object] = {
        "id": new_run_id(),
        "seq": 0,
        "kind": RunKind.IMAGE,
        "status": RunStatus.QUEUED,
        "priority": Priority.NORMAL,
        "inputs": {"prompt": "a lighthouse", "seed": 3, "cfg": 7.5},
        "backend": "local",
        "created_at": time.time(),
        "max_steps": 20,
    }
    values.update(fields)
    return Run(**values)  # type: ignore[arg-type]


def artifact(run_id: str, filename: str) -> Artifact:
    return Artifact(
        run_id=run_id,
        filename=filename,
        media_type="image/png",
        size=10,
        sha256="0" * 64,
        storage_key=f"runs/{run_id}/{filename}",
        width=64,
        height=64,
    )


def raw(path: Path, sql: str, *args: object) -> list[tuple]:
    """Read the file with a separate connection, as another process would."""
    conn = sqlite3.connect(path)
    try:
        return conn.execute(sql, args).fetchall()
    finally:
        conn.close()


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "ledger" / "ledger.sqlite3"


@pytest.fixture
async def sqlite_ledger(path: Path) -> AsyncIterator[SQLiteLedger]:
    opened = SQLiteLedger.open(path)
    try:
        yield opened
    finally:
        await opened.close()


# --- schema ---------------------------------------------------------------------------------


async def test_open_creates_the_latest_schema(sqlite_ledger: SQLiteLedger, path: Path) -> None:
    assert sqlite_ledger.schema_version == 6
    tables = {r[0] for r in raw(path, "SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert {"runs", "artifacts", "run_logs", "documents"} <= tables


async def test_a_version_1_ledger_is_upgraded_in_place_keeping_its_runs(path: Path) -> None:
    from importlib import resources

    version_1 = (resources.files("core.ledger") / "migrations" / "0001_init.sql").read_text()
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path)
    conn.executescript(version_1)
    conn.execute(
        "INSERT INTO runs (id, kind, status, priority, inputs, backend, created_at) "
        "VALUES ('01jd0000000000000000000000', 'image', 'completed', 'normal', '{\"prompt\": \"old\"}', 'local', 1.0)"
    )
    conn.execute("PRAGMA user_version=1")
    conn.commit()
    conn.close()

    upgraded = SQLiteLedger.open(path)
    try:
        assert upgraded.schema_version == 6
        old = await upgraded.get_run("01jd0000000000000000000000")
        assert old is not None and old.inputs == {"prompt": "old"} and old.meta is None
        await upgraded.put_document("desktop/settings", {"defaultWidth": 768})
        assert await upgraded.get_document("desktop/settings") == {"defaultWidth": 768}
    finally:
        await upgraded.close()


async def test_a_version_5_ledger_keeps_each_runs_files_and_log_in_order(path: Path) -> None:
    from importlib import resources

    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA foreign_keys=ON")
    for entry in sorted((resources.files("core.ledger") / "migrations").iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".sql") and entry.name < "0006":
            conn.executescript(entry.read_text())
    conn.execute("PRAGMA user_version=5")
    first, second = "01jd0000000000000000000001", "01jd0000000000000000000002"
    for run_id in (first, second):
        conn.execute(
            "INSERT INTO runs (id, kind, status, priority, inputs, backend, created_at, finished_at) "
            "VALUES (?, 'image', 'completed', 'normal', '{}', 'local', 1.0, 2.0)",
            (run_id,),
        )
        conn.execute(
            "INSERT INTO artifacts VALUES (?, 'image-01.png', 'image/png', 10, ?, ?, 64, 64)",
            (run_id, "0" * 64, f"runs/{run_id}/image-01.png"),
        )
    # The two runs' lines interleaved, as concurrent runs write them.
    for run_id, message in [(first, "queued"), (second, "queued"), (first, "started"), (second, "started")]:
        conn.execute(
            "INSERT INTO run_logs (run_id, at, level, message) VALUES (?, 1.0, 'info', ?)", (run_id, message)
        )
    conn.close()

    upgraded = SQLiteLedger.open(path)
    try:
        assert upgraded.schema_version == 6
        await upgraded.add_log(first, "completed")
        assert [e.message for e in await upgraded.logs(first)] == ["queued", "started", "completed"]
        assert [e.message for e in await upgraded.logs(second)] == ["queued", "started"]
        stored = await upgraded.get_run(second)
        assert stored is not None and [a.filename for a in stored.artifacts] == ["image-01.png"]
        assert await upgraded.finished_before(3.0, {RunStatus.COMPLETED}) == [first, second]
        await upgraded.delete_run(first)
        assert await upgraded.logs(first) == []
        assert raw(path, "SELECT run_id FROM artifacts") == [(second,)]
    finally:
        await upgraded.close()


async def test_reopening_keeps_data_and_does_not_apply_migrations_again(ledger_place: LedgerPlace) -> None:
    first = ledger_place.open()
    run = await first.insert_run(new_run(), log="queued")
    await first.close()

    again = ledger_place.open()  # a second CREATE TABLE would raise here
    try:
        stored = await again.get_run(run.id)
        assert stored is not None and stored.inputs == run.inputs
        assert [e.message for e in await again.logs(run.id)] == ["queued"]
    finally:
        await again.close()


async def test_journal_mode_is_wal(sqlite_ledger: SQLiteLedger, path: Path) -> None:
    assert raw(path, "PRAGMA journal_mode") == [("wal",)]
    await sqlite_ledger.insert_run(new_run())
    assert path.with_name(path.name + "-wal").exists()


# --- runs -----------------------------------------------------------------------------------


async def test_insert_assigns_increasing_seq_and_round_trips_every_field(ledger: Ledger) -> None:
    first = await ledger.insert_run(new_run())
    second = await ledger.insert_run(
        new_run(priority=Priority.URGENT, idempotency_key="k-1", timeout_s=2.5, max_attempts=5)
    )
    assert second.seq > first.seq
    stored = await ledger.get_run(second.id)
    assert stored == second
    assert await ledger.get_run(new_run_id()) is None


async def test_update_with_matching_expect_applies_changes(ledger: Ledger) -> None:
    run = await ledger.insert_run(new_run())
    updated = await ledger.update_run(
        run.id, expect={RunStatus.QUEUED}, status=RunStatus.RUNNING, message="starting", log="started"
    )
    assert updated is not None
    assert updated.status is RunStatus.RUNNING
    assert (await ledger.get_run(run.id)) == updated
    assert [e.message for e in await ledger.logs(run.id)] == ["started"]


async def test_update_with_unmet_expect_returns_none_and_leaves_the_row(ledger: Ledger) -> None:
    run = await ledger.insert_run(new_run())
    before = await ledger.get_run(run.id)

    result = await ledger.update_run(
        run.id,
        expect={RunStatus.RUNNING, RunStatus.FAILED},
        status=RunStatus.COMPLETED,
        message="should not happen",
        artifacts=[artifact(run.id, "image-01.png")],
        log="should not be logged",
    )

    assert result is None
    assert await ledger.get_run(run.id) == before
    assert await ledger.logs(run.id) == []
    assert await ledger.update_run(new_run_id(), status=RunStatus.FAILED) is None


async def test_increment_adds_to_the_column(ledger: Ledger) -> None:
    run = await ledger.insert_run(new_run())
    await ledger.update_run(run.id, attempts=Increment(1))
    once = await ledger.update_run(run.id, attempts=Increment(1))
    assert once is not None and once.attempts == 2
    more = await ledger.update_run(run.id, attempts=Increment(3), step=4)
    assert more is not None and (more.attempts, more.step) == (5, 4)
    reset = await ledger.update_run(run.id, attempts=0)
    assert reset is not None and reset.attempts == 0


async def test_unknown_column_is_refused(ledger: Ledger) -> None:
    run = await ledger.insert_run(new_run())
    with pytest.raises(ValueError, match="not updatable"):
        await ledger.update_run(run.id, id="something-else")
    assert await ledger.get_run(run.id) is not None


async def test_reused_idempotency_key_is_a_conflict(ledger: Ledger) -> None:
    first = await ledger.insert_run(new_run(idempotency_key="same-key"))
    with pytest.raises(Conflict):
        await ledger.insert_run(new_run(idempotency_key="same-key"))
    found = await ledger.find_by_idempotency_key("same-key")
    assert found is not None and found.id == first.id
    assert len((await ledger.list_runs()).items) == 1
    # Runs without a key never collide.
    await ledger.insert_run(new_run())
    await ledger.insert_run(new_run())
    assert len((await ledger.list_runs()).items) == 3


async def test_artifacts_are_replaced_when_asked(ledger: Ledger) -> None:
    run = await ledger.insert_run(new_run())
    await ledger.update_run(
        run.id, artifacts=[artifact(run.id, "image-01.png"), artifact(run.id, "image-02.png")]
    )
    replaced = await ledger.update_run(
        run.id, artifacts=[artifact(run.id, "image-01.png")], replace_artifacts=True
    )
    assert replaced is not None
    assert [a.filename for a in replaced.artifacts] == ["image-01.png"]
    cleared = await ledger.update_run(run.id, replace_artifacts=True)
    assert cleared is not None and cleared.artifacts == []


async def test_delete_run_cascades_to_artifacts_logs_and_children(
    ledger: Ledger, ledger_place: LedgerPlace
) -> None:
    parent = await ledger.insert_run(new_run(kind=RunKind.BATCH), log="queued")
    child = await ledger.insert_run(new_run(parent_id=parent.id), log="queued")
    keep = await ledger.insert_run(new_run(), log="queued")
    await ledger.update_run(parent.id, artifacts=[artifact(parent.id, "image-01.png")], log="done")
    await ledger.update_run(child.id, artifacts=[artifact(child.id, "image-01.png")])
    await ledger.update_run(keep.id, artifacts=[artifact(keep.id, "image-01.png")])

    removed = await ledger.delete_run(parent.id)

    assert sorted(a.run_id for a in removed) == sorted([parent.id, child.id])
    assert await ledger.get_run(parent.id) is None
    assert await ledger.get_run(child.id) is None
    assert await ledger.logs(parent.id) == []
    assert ledger_place.raw("SELECT run_id FROM artifacts") == [(keep.id,)]
    assert {r[0] for r in ledger_place.raw("SELECT DISTINCT run_id FROM run_logs")} == {keep.id}
    assert (await ledger.get_run(keep.id)) is not None


async def test_count_by_status_reports_every_status(ledger: Ledger) -> None:
    await ledger.insert_run(new_run())
    await ledger.insert_run(new_run(status=RunStatus.FAILED))
    assert await ledger.count_by_status() == {
        "queued": 1,
        "running": 0,
        "completed": 0,
        "failed": 1,
        "cancelled": 0,
    }


# --- listing and cursors --------------------------------------------------------------------


async def test_list_runs_pages_newest_first_with_filters(ledger: Ledger) -> None:
    ids = [(await ledger.insert_run(new_run(status=s))).id for s in [RunStatus.QUEUED, RunStatus.FAILED] * 3]
    seen, cursor = [], None
    while True:
        page = await ledger.list_runs(limit=4, cursor=cursor)
        seen += [r.id for r in page.items]
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    assert seen == list(reversed(ids))
    failed = await ledger.list_runs(statuses={RunStatus.FAILED}, limit=2)
    assert [r.id for r in failed.items] == [ids[5], ids[3]]
    rest = await ledger.list_runs(statuses={RunStatus.FAILED}, limit=2, cursor=failed.next_cursor)
    assert [r.id for r in rest.items] == [ids[1]] and rest.next_cursor is None


@pytest.mark.parametrize("seq", [0, 1, 42, 2**53])
def test_cursor_round_trips(seq: int) -> None:
    cursor = encode_cursor(seq)
    assert cursor.isascii() and "=" not in cursor
    assert decode_cursor(cursor) == seq


@pytest.mark.parametrize(
    "garbage",
    [
        "",
        "!!!",
        "é",
        "seq:12",
        base64.urlsafe_b64encode(b"seq:").decode(),
        base64.urlsafe_b64encode(b"seq:-1").decode(),
        base64.urlsafe_b64encode(b"seq:1.5").decode(),
        base64.urlsafe_b64encode(b"id:12").decode(),
        base64.urlsafe_b64encode(b"\xff\xfe\xfd").decode(),
    ],
)
def test_cursor_rejects_garbage(garbage: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        decode_cursor(garbage)
    assert caught.value.field == "cursor"


# --- another process holding the write lock ---------------------------------------------------


class LoopWatch:
    """The longest the event loop went without running this task: how long anything blocked it."""

    def __init__(self) -> None:
        self.longest = 0.0

    async def run(self) -> None:
        last = time.monotonic()
        while True:
            await anyio.sleep(0.005)
            now = time.monotonic()
            self.longest = max(self.longest, now - last)
            last = now


def hold_write_lock(path: Path) -> sqlite3.Connection:
    """Another connection (to SQLite, another process) takes the write lock and keeps it."""
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    return other


async def test_a_write_waits_for_another_writer_without_blocking_the_event_loop(tmp_path: Path) -> None:
    ledger = SQLiteLedger.open(tmp_path / "ledger.sqlite3", busy_timeout_s=5)
    try:
        run = await ledger.insert_run(new_run())
        other = hold_write_lock(tmp_path / "ledger.sqlite3")
        watch = LoopWatch()
        async with anyio.create_task_group() as group:
            group.start_soon(watch.run)
            results: list[object] = []

            async def write(message: str) -> None:
                results.append(await ledger.update_run(run.id, message=message))

            group.start_soon(write, "first")
            group.start_soon(write, "second")
            await anyio.sleep(0.5)
            # Reads go on meanwhile (WAL): the old state.
            assert (await ledger.get_run(run.id)).message == run.message  # type: ignore[union-attr]
            assert results == []
            other.execute("COMMIT")
            with anyio.fail_after(5):
                while len(results) < 2:
                    await anyio.sleep(0.01)
            group.cancel_scope.cancel()
        assert watch.longest < 0.1, f"the event loop was blocked for {watch.longest * 1000:.0f} ms"
        # Both landed, in the order they were asked for.
        assert (await ledger.get_run(run.id)).message == "second"  # type: ignore[union-attr]
        other.close()
    finally:
        await ledger.close()


async def test_writes_give_up_after_the_busy_timeout_counted_from_their_arrival(tmp_path: Path) -> None:
    ledger = SQLiteLedger.open(tmp_path / "ledger.sqlite3", busy_timeout_s=0.5)
    try:
        run = await ledger.insert_run(new_run())
        other = hold_write_lock(tmp_path / "ledger.sqlite3")
        errors: list[Exception] = []

        async def write() -> None:
            try:
                await ledger.update_run(run.id, message="never")
            except LedgerUnavailable as exc:
                errors.append(exc)

        started = time.monotonic()
        async with anyio.create_task_group() as group:
            for _ in range(3):
                group.start_soon(write)
        elapsed = time.monotonic() - started
        assert len(errors) == 3
        assert "locked by another process" in str(errors[0])
        # Each gave up within its own timeout, not one timeout after another.
        assert elapsed < 1.4, elapsed
        other.execute("ROLLBACK")
        other.close()
        assert (await ledger.update_run(run.id, message="now")).message == "now"  # type: ignore[union-attr]
    finally:
        await ledger.close()


OPENER = """
import sys, time
from pathlib import Path
from core.ledger.sqlite import SQLiteLedger
time.sleep(max(0.0, float(sys.argv[2]) - time.time()))
SQLiteLedger.open(Path(sys.argv[1]))
print("opened")
"""


def test_processes_opening_a_new_ledger_at_the_same_moment_all_succeed(tmp_path: Path) -> None:
    """The CLI and a server started together: the first to open switches the new file to WAL under
    an exclusive lock, which the others must wait out rather than fail on."""
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    for attempt in range(3):
        path = tmp_path / f"ledger-{attempt}.sqlite3"
        start = time.time() + 1.0
        openers = [
            subprocess.Popen(
                [sys.executable, "-c", OPENER, str(path), str(start)],
                cwd=root,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for _ in range(8)
        ]
        for opener in openers:
            out, err = opener.communicate(timeout=60)
            assert opener.returncode == 0 and out.strip() == "opened", err
