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

A server-backed ledger (PostgreSQL) would await real I/O behind the same async port.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Callable, Collection, Sequence
from pathlib import Path
from typing import Any, TypeVar

import anyio

from core.errors import Conflict, LedgerUnavailable
from core.ledger import Increment
from core.ledger.sqlite_characters import SQLiteCharacters
from core.ledger.sqlite_connections import connect, migrate
from core.ledger.sqlite_products import SQLiteProducts
from core.ledger.sqlite_queries import (
    ADD_LOG,
    PUT_ARTIFACT,
    RUN_BY_ID,
    RUN_BY_SEQ,
    TIMING_COLUMNS,
    count_filters,
    decode_cursor,
    encode_cursor,
    page_query,
    run_filters,
    status_values,
    update_statement,
)
from core.ledger.sqlite_rows import (
    RUN_COLUMNS,
    artifact_from_row,
    artifact_rows,
    run_from_row,
    run_values,
    run_with_artifacts,
    to_column,
    to_json,
)
from core.ledger.sqlite_writes import BACKSTOP_CHECKPOINT_PAGES, Checkpointer, GroupWriter
from core.ledger.sqlite_writes import in_transaction as _in_transaction
from core.ledger.sqlite_writes import is_busy as _is_busy
from core.ledger.sqlite_writes import unavailable as _unavailable
from core.models import Artifact, LogEntry, Page, Priority, Run, RunKind, RunStatus

T = TypeVar("T")
# A read waits this long for a lock (only WAL recovery or a truncating checkpoint take one).
_READ_BUSY_MS = 100


class SQLiteLedger(SQLiteCharacters, SQLiteProducts):
    """`Ledger` over one SQLite file (its character and product rows: `core.ledger.sqlite_characters`,
    `core.ledger.sqlite_products`). Open with `SQLiteLedger.open(path)`."""

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
        self._update_sql: dict[tuple[Any, ...], str] = {}

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

    async def _rows(self, sql: str, args: Sequence[Any] = ()) -> list[sqlite3.Row]:
        """A query's rows, read inline. Only a lock held by another process's recovery or
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

    async def _one(self, sql: str, args: Sequence[Any] = ()) -> sqlite3.Row | None:
        rows = await self._rows(sql, args)
        return rows[0] if rows else None

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
                values = run_values(run)
                values.pop("seq")
                names = ", ".join(values)
                marks = ", ".join("?" for _ in values)
                row = conn.execute(
                    f"INSERT INTO runs ({names}) VALUES ({marks}) RETURNING seq", tuple(values.values())
                ).fetchone()
                run.seq = row[0]
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

    async def get_run(self, run_id: str) -> Run | None:
        return run_with_artifacts(await self._rows(RUN_BY_ID, (run_id,)))

    def change_marker(self) -> int | None:
        # SQLite's data_version moves on every commit made by any other connection, our writer's
        # included: the reading connection itself never commits.
        try:
            return self._conn.execute("PRAGMA data_version").fetchone()[0]
        except sqlite3.Error:
            return None

    async def find_by_idempotency_key(self, key: str) -> Run | None:
        row = await self._one(f"SELECT {RUN_COLUMNS} FROM runs WHERE idempotency_key = ?", (key,))
        return (await self._with_artifacts([run_from_row(row)]))[0] if row else None

    async def find_by_key_prefix(self, prefix: str, limit: int = 1000) -> list[Run]:
        # A range over the key's unique index: every key that starts with `prefix` sorts between
        # `prefix` and `prefix` + the highest character.
        rows = await self._rows(
            f"SELECT {RUN_COLUMNS} FROM runs WHERE idempotency_key >= ? AND idempotency_key < ? "
            "ORDER BY seq LIMIT ?",
            (prefix, prefix + "\U0010ffff", limit),
        )
        return await self._with_artifacts([run_from_row(row) for row in rows])

    async def list_runs(
        self,
        *,
        statuses: Collection[RunStatus] | None = None,
        kinds: Collection[RunKind] | None = None,
        parent_id: str | None = None,
        top_level: bool = False,
        limit: int = 50,
        cursor: str | None = None,
        offset: int = 0,
    ) -> Page:
        after = None if not cursor else decode_cursor(cursor)
        sql, args = page_query(statuses, kinds, parent_id, top_level, after)
        rows = await self._rows(f"{sql} ORDER BY seq DESC LIMIT ? OFFSET ?", (*args, limit + 1, offset))
        runs = await self._with_artifacts([run_from_row(r) for r in rows[:limit]])
        next_cursor = encode_cursor(runs[-1].seq) if len(rows) > limit else None
        return Page(items=runs, next_cursor=next_cursor)

    async def count_runs(
        self,
        *,
        statuses: Collection[RunStatus] | None = None,
        kinds: Collection[RunKind] | None = None,
        parent_id: str | None = None,
        top_level: bool = False,
    ) -> int:
        if parent_id is not None:  # one batch's children: a range of runs_by_parent
            clause, args = run_filters(statuses, kinds, parent_id, top_level)
            return (await self._one(f"SELECT COUNT(*) FROM runs {clause}", args))[0]
        # A sum over the few rows of run_counts, kept by triggers (migration 0005).
        clause, args = count_filters(statuses, kinds, top_level)
        return (await self._one(f"SELECT COALESCE(SUM(n), 0) FROM run_counts {clause}", args))[0]

    async def mean_duration(
        self,
        *,
        statuses: Collection[RunStatus] | None = None,
        kinds: Collection[RunKind] | None = None,
        top_level: bool = False,
        newest: int = 200,
    ) -> float | None:
        sql, args = page_query(statuses, kinds, None, top_level, None, columns=TIMING_COLUMNS)
        sql = (
            f"SELECT AVG(finished_at - COALESCE(started_at, created_at)) FROM ({sql} ORDER BY seq DESC "
            "LIMIT ?) WHERE finished_at IS NOT NULL"
        )
        args.append(newest)
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

    async def get_run_by_seq(self, seq: int) -> Run | None:
        return run_with_artifacts(await self._rows(RUN_BY_SEQ, (seq,)))

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

    async def get_document(self, key: str) -> Any:
        row = await self._one("SELECT value FROM documents WHERE key = ?", (key,))
        return None if row is None else json.loads(row[0])

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
        shape = (
            tuple((name, isinstance(value, Increment)) for name, value in changes.items()),
            status_values(expect),
        )
        sql = self._update_sql.get(shape)
        if sql is None:
            sql = self._update_sql[shape] = update_statement(*shape)
        args = [to_column(name, value) for name, value in changes.items()]
        args.append(run_id)
        if expect is not None:
            args.extend(shape[1])

        def update(conn: sqlite3.Connection) -> sqlite3.Row | None:
            row = conn.execute(sql, args).fetchone()
            if row is None:
                return None
            if replace_artifacts:
                conn.execute("DELETE FROM artifacts WHERE run_id = ?", (run_id,))
            if artifacts:
                conn.executemany(PUT_ARTIFACT, artifact_rows(artifacts))
            if log:
                conn.execute(ADD_LOG, (run_id, time.time(), log_level, log))
            return row

        row = await self._write(update)
        if row is None:
            return None
        run = run_from_row(row)
        if (
            replace_artifacts
            or run.status in (RunStatus.QUEUED, RunStatus.RUNNING)
            or (artifacts and run.status is RunStatus.COMPLETED)
        ):
            # Just written, or none recorded yet (files are recorded when a run completes).
            run.artifacts = list(artifacts)
            return run
        return (await self._with_artifacts([run]))[0]

    async def add_log(self, run_id: str, message: str, level: str = "info") -> None:
        await self._write(
            lambda conn: conn.execute(
                f"{ADD_LOG} FROM runs WHERE id = ?1", (run_id, time.time(), level, message)
            )
        )

    async def logs(self, run_id: str, limit: int = 1000) -> list[LogEntry]:
        rows = await self._rows(
            "SELECT at, level, message FROM run_logs WHERE run_id = ? ORDER BY id LIMIT ?", (run_id, limit)
        )
        return [LogEntry(at=r["at"], level=r["level"], message=r["message"]) for r in rows]

    async def delete_run(self, run_id: str) -> list[Artifact]:
        def delete(conn: sqlite3.Connection) -> list[sqlite3.Row]:
            ids = [run_id] + [
                r[0] for r in conn.execute("SELECT id FROM runs WHERE parent_id = ?", (run_id,)).fetchall()
            ]
            marks = ", ".join("?" for _ in ids)
            rows = conn.execute(f"SELECT * FROM artifacts WHERE run_id IN ({marks})", ids).fetchall()
            conn.execute(f"DELETE FROM runs WHERE id IN ({marks})", ids)
            return rows

        return [artifact_from_row(r) for r in await self._write(delete)]

    async def runs_in(self, statuses: Collection[RunStatus]) -> list[Run]:
        marks = ", ".join("?" for _ in statuses)
        rows = await self._rows(
            f"SELECT {RUN_COLUMNS} FROM runs WHERE status IN ({marks}) ORDER BY seq",
            [s.value for s in statuses],
        )
        return [run_from_row(r) for r in rows]

    async def statuses_of(self, run_ids: Collection[str]) -> dict[str, RunStatus]:
        if not run_ids:
            return {}
        marks = ", ".join("?" for _ in run_ids)
        rows = await self._rows(f"SELECT id, status FROM runs WHERE id IN ({marks})", list(run_ids))
        return {r[0]: RunStatus(r[1]) for r in rows}

    async def queued_refs(self) -> list[tuple[str, str, Priority, int]]:
        rows = await self._rows(
            "SELECT id, backend, priority, seq FROM runs WHERE status = 'queued' ORDER BY seq"
        )
        return [(r[0], r[1], Priority(r[2]), r[3]) for r in rows]

    async def count_by_status(
        self, *, kinds: Collection[RunKind] | None = None, top_level: bool = False
    ) -> dict[str, int]:
        where, args = count_filters(None, kinds, top_level)
        rows = await self._rows(f"SELECT status, SUM(n) FROM run_counts {where} GROUP BY status", args)
        counts = {s.value: 0 for s in RunStatus}
        counts.update({r[0]: r[1] for r in rows})
        return counts

    async def close(self) -> None:
        self._checkpointer.close()
        self._conn.close()
        self._writer.close()
        with self._patient_lock:
            if self._patient is not None:
                self._patient.close()

    async def _with_artifacts(self, runs: list[Run]) -> list[Run]:
        if not runs:
            return runs
        by_id = {run.id: run for run in runs}
        marks = ", ".join("?" for _ in by_id)
        rows = await self._rows(
            f"SELECT * FROM artifacts WHERE run_id IN ({marks}) ORDER BY run_id, filename", list(by_id)
        )
        for row in rows:
            by_id[row["run_id"]].artifacts.append(artifact_from_row(row))
        return runs
