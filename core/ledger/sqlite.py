"""The embedded ledger: SQLite in WAL mode, schema versioned by `PRAGMA user_version`.

Statements are short and local, so they run inline on the event loop: a thread hop per
statement would cost more than the statement. Short means bounded by what the caller asked
for, never by how many runs the ledger holds: a count is a sum over `run_counts` (kept by
triggers), a list page reads its own rows from an index already in order (how, and the rest of
the runs' SQL: `core.ledger.sqlite_queries`), and the one read that grows with the history (a
purge's old runs) runs on a worker thread (`_scan`). A run's row is read and written by
`core.ledger.sqlite_rows`; connections are opened and the schema migrated by
`core.ledger.sqlite_connections`.

Two connections keep that safe when another process (the CLI, a second MCP host, a backup
tool) shares the file:

- reads use their own connection: in WAL mode a reader never waits for a writer (only another
  process's crash recovery or truncating checkpoint can lock one out; such a read then waits on
  a worker thread, on a connection of its own, like a write);
- writes go through one writer (`core.ledger.sqlite_writes`) that commits the writes arriving
  together in one transaction (group commit), with no busy wait. A group that finds the write
  lock taken by another process, and every write after it, waits for the lock on a worker
  thread (in order), up to `busy_timeout_s`, after which it fails as `LedgerUnavailable`. The
  event loop is never blocked waiting for a lock.

The server-backed ledger (`core.ledger.postgres`) awaits real I/O behind the same port; the reads
whose SQL both run as written are shared (`core.ledger.shared_reads`).
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable, Collection, Sequence
from pathlib import Path
from typing import Any, TypeVar

import anyio

from core.errors import Conflict, LedgerUnavailable
from core.ledger.shared_reads import RunReads
from core.ledger.sqlite_characters import SQLiteCharacters
from core.ledger.sqlite_connections import connect, migrate
from core.ledger.sqlite_products import SQLiteProducts
from core.ledger.sqlite_queries import (
    ADD_LOG,
    ADD_LOG_IF_RUN,
    INSERT_RUN,
    PUT_ARTIFACT,
    RUN_ROW_BY_ID,
    mean_duration_query,
    update_of,
)
from core.ledger.sqlite_rows import (
    ARTIFACT_COLUMNS,
    artifact_from_row,
    artifact_rows,
    new_run_row,
    to_json,
)
from core.ledger.sqlite_writes import BACKSTOP_CHECKPOINT_PAGES, Checkpointer, GroupWriter
from core.ledger.sqlite_writes import in_transaction as _in_transaction
from core.ledger.sqlite_writes import is_busy as _is_busy
from core.ledger.sqlite_writes import unavailable as _unavailable
from core.models import Artifact, Run, RunKind, RunStatus

T = TypeVar("T")
# A read waits this long for a lock (only WAL recovery or a truncating checkpoint take one).
_READ_BUSY_MS = 100


class SQLiteLedger(SQLiteCharacters, SQLiteProducts, RunReads):
    """`Ledger` over one SQLite file (its character and product rows: `core.ledger.sqlite_characters`,
    `core.ledger.sqlite_products`; the reads both adapters share: `core.ledger.shared_reads`).
    Open with `SQLiteLedger.open(path)`."""

    def __init__(self, path: Path, *, synchronous: str, busy_timeout_s: float) -> None:
        self._path = path
        self._sync = synchronous
        self._busy_timeout_s = busy_timeout_s
        # Opening may wait the whole busy timeout: another process may be creating the file and
        # switching it to WAL at this very moment (an exclusive lock), which a read cannot wait out.
        patience_ms = int(busy_timeout_s * 1000)
        self._writer = connect(path, patience_ms, synchronous)
        self._conn = connect(path, patience_ms, synchronous)
        self._conn.execute(f"PRAGMA busy_timeout={_READ_BUSY_MS}")
        # Reads that found a lock wait for it on a worker thread, on a connection of their own.
        self._patient: sqlite3.Connection | None = None
        self._patient_lock = threading.Lock()
        # Every write goes through it: concurrent ones are committed together, and the WAL is
        # copied back into the database file on a thread of its own.
        self._checkpointer = Checkpointer(lambda: connect(path, patience_ms, synchronous))
        self._writes = GroupWriter(self._writer, busy_timeout_s, self._still_locked, self._checkpointer)
        # mean_duration's answers, each with the `data_version` it was read at.
        self._means: dict[tuple[Any, ...], tuple[int, float | None]] = {}
        # UPDATE statements by the shape of the change: built once, not on every transition.
        self._update_sql: dict[tuple[Any, ...], Any] = {}

    @classmethod
    def open(cls, path: Path, *, synchronous: str = "NORMAL", busy_timeout_s: float = 30.0) -> SQLiteLedger:
        """Open (creating and migrating if needed) the ledger at `path`.

        `synchronous=NORMAL` in WAL mode keeps every committed transaction across a process
        crash; `FULL` also across power loss, at one fsync per commit.
        """
        path.parent.mkdir(parents=True, exist_ok=True)
        sync = "FULL" if synchronous.upper() == "FULL" else "NORMAL"
        ledger = cls(path, synchronous=sync, busy_timeout_s=busy_timeout_s)
        # Start-up may wait for the lock: nothing else runs yet.
        _in_transaction(ledger._writer, migrate)
        ledger._writer.execute("PRAGMA busy_timeout=0")
        ledger._writer.execute(f"PRAGMA wal_autocheckpoint={BACKSTOP_CHECKPOINT_PAGES}")
        return ledger

    @property
    def schema_version(self) -> int:
        return self._conn.execute("PRAGMA user_version").fetchone()[0]

    async def _write(self, change: Callable[[sqlite3.Connection], T]) -> T:
        """Run `change` in a write transaction (shared with the writes that arrive with it); see
        `core.ledger.sqlite_writes` for how writes are grouped and how they wait for a lock."""
        return await self._writes.write(change)

    async def _rows(self, sql: str, args: Sequence[Any] = (), *, named: bool = False) -> list[sqlite3.Row]:
        """A query's rows (`sqlite3.Row`: by position, and by name whether `named` or not), read inline. Only a lock held by another process's recovery or
        truncating checkpoint can stop a WAL read; then it waits on a worker thread instead."""
        try:
            return self._conn.execute(sql, args).fetchall()
        except sqlite3.OperationalError as exc:
            if not _is_busy(exc):
                raise _unavailable(exc) from None
        return await anyio.to_thread.run_sync(self._rows_waiting, sql, args)

    async def _scan(self, sql: str, args: Sequence[Any] = ()) -> list[sqlite3.Row]:
        """A query whose answer grows with the ledger (every old run a purge removes), read on a
        worker thread so that the event loop never waits for it."""
        return await anyio.to_thread.run_sync(self._rows_waiting, sql, args)

    def _rows_waiting(self, sql: str, args: Sequence[Any]) -> list[sqlite3.Row]:
        with self._patient_lock:
            if self._patient is None:
                self._patient = connect(self._path, int(self._busy_timeout_s * 1000), self._sync)
            try:
                return self._patient.execute(sql, args).fetchall()
            except sqlite3.OperationalError as exc:
                raise self._still_locked() if _is_busy(exc) else _unavailable(exc) from None

    def _still_locked(self) -> LedgerUnavailable:
        return LedgerUnavailable(
            f"the ledger is locked by another process and stayed locked for {self._busy_timeout_s:g} s "
            "(ATELIER_LEDGER_BUSY_TIMEOUT_S); nothing was changed, try again"
        )

    # -- runs ---------------------------------------------------------------------------------

    async def insert_run(self, run: Run, log: str | None = None) -> Run:
        [inserted] = await self.insert_runs([run], log)
        return inserted

    async def insert_runs(self, runs: Sequence[Run], log: str | None = None) -> list[Run]:
        def insert(conn: sqlite3.Connection) -> None:
            for run in runs:
                run.seq = conn.execute(INSERT_RUN, new_run_row(run)).lastrowid
                if log:
                    conn.execute(
                        "INSERT INTO run_logs (run_id, id, at, level, message) VALUES (?, 1, ?, 'info', ?)",
                        (run.id, run.created_at, log),
                    )

        try:
            await self._write(insert)
        except sqlite3.IntegrityError as exc:
            if "idempotency_key" in str(exc):
                keys = ", ".join(repr(r.idempotency_key) for r in runs if r.idempotency_key)
                raise Conflict(f"idempotency key {keys} is already used") from None
            raise
        return list(runs)

    def change_marker(self) -> int | None:
        # SQLite's data_version moves on every commit made by any other connection, our writer's
        # included: the reading connection itself never commits.
        try:
            return self._conn.execute("PRAGMA data_version").fetchone()[0]
        except sqlite3.Error:
            return None

    async def mean_duration(
        self,
        *,
        statuses: Collection[RunStatus] | None = None,
        kinds: Collection[RunKind] | None = None,
        top_level: bool = False,
        newest: int = 200,
    ) -> float | None:
        sql, args = mean_duration_query(statuses, kinds, top_level, newest)
        # Health checks and metrics channels ask for this over and over; between two commits to
        # the file (by any connection or process: `data_version` changes) the answer is the same.
        key = (sql, tuple(args))
        try:
            version = self._conn.execute("PRAGMA data_version").fetchone()[0]
        except sqlite3.OperationalError:  # locked out for now: read without the cache
            return (await self._one(sql, args))[0]
        known = self._means.get(key)
        if known is not None and known[0] == version:
            return known[1]
        mean = (await self._one(sql, args))[0]
        if len(self._means) >= 64:
            self._means.clear()
        self._means[key] = (version, mean)
        return mean

    async def finished_before(self, cutoff: float, statuses: Collection[RunStatus]) -> list[str]:
        marks = ", ".join("?" for _ in statuses)
        rows = await self._scan(
            f"SELECT id FROM runs WHERE parent_id IS NULL AND finished_at < ? AND status IN ({marks}) "
            "ORDER BY seq",
            (cutoff, *(s.value for s in statuses)),
        )
        return [r[0] for r in rows]

    async def finished_since(self, since: float) -> dict[str, int]:
        # `runs_by_finished` (top-level runs by finished_at) bounds this to the runs it counts; named,
        # since the planner would otherwise take `runs_by_parent` and read every top-level run.
        rows = await self._rows(
            "SELECT status, COUNT(*) FROM runs INDEXED BY runs_by_finished "
            "WHERE parent_id IS NULL AND finished_at >= ? GROUP BY status",
            (since,),
        )
        return {r[0]: r[1] for r in rows}

    async def put_document(self, key: str, value: Any) -> None:
        text = to_json(value)
        await self._write(
            lambda conn: conn.execute(
                "INSERT INTO documents (key, value, updated_at) VALUES (?, ?, ?) "
                "ON CONFLICT (key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
                (key, text, time.time()),
            )
        )

    async def update_run(
        self,
        run_id: str,
        *,
        expect: Collection[RunStatus] | None = None,
        log: str | None = None,
        log_level: str = "info",
        artifacts: Sequence[Artifact] = (),
        replace_artifacts: bool = False,
        **changes: Any,
    ) -> Run | None:
        sql, args = update_of(run_id, expect, changes, self._update_sql, returning=False)

        def update(conn: sqlite3.Connection) -> sqlite3.Row | None:
            if not conn.execute(sql, args).rowcount:  # gone, or not in a status expected
                return None
            row = conn.execute(RUN_ROW_BY_ID, (run_id,)).fetchone()
            if replace_artifacts:
                conn.execute("DELETE FROM artifacts WHERE run_id = ?", (run_id,))
            if artifacts:
                conn.executemany(PUT_ARTIFACT, artifact_rows(artifacts))
            if log:
                conn.execute(ADD_LOG, (run_id, time.time(), log_level, log))
            return row

        row = await self._write(update)
        return None if row is None else await self._updated(row, artifacts, replace_artifacts)

    async def add_log(self, run_id: str, message: str, level: str = "info") -> None:
        await self._write(lambda conn: conn.execute(ADD_LOG_IF_RUN, (run_id, time.time(), level, message)))

    async def delete_run(self, run_id: str) -> list[Artifact]:
        def delete(conn: sqlite3.Connection) -> list[sqlite3.Row]:
            ids = [run_id] + [
                r[0] for r in conn.execute("SELECT id FROM runs WHERE parent_id = ?", (run_id,)).fetchall()
            ]
            marks = ", ".join("?" for _ in ids)
            rows = conn.execute(
                f"SELECT {ARTIFACT_COLUMNS} FROM artifacts WHERE run_id IN ({marks})", ids
            ).fetchall()
            conn.execute(f"DELETE FROM runs WHERE id IN ({marks})", ids)
            return rows

        return [artifact_from_row(r) for r in await self._write(delete)]

    async def close(self) -> None:
        self._checkpointer.close()
        self._conn.close()
        self._writer.close()
        with self._patient_lock:
            if self._patient is not None:
                self._patient.close()
