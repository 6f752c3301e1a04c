"""The PostgreSQL ledger's runs: the `Ledger` port's run operations (see `core.ledger.postgres`).

The statements are SQLite's where the two dialects agree (`core.ledger.sqlite_queries`: filters,
list pages, guarded updates; `pg` turns `?` into psycopg's placeholder) and a run's row is read
and written by the same mapping (`core.ledger.sqlite_rows`). What differs: a run's files are
upserted with `ON CONFLICT`, a log line's number comes from a sequence, the purge's scan is a
plain query (the server does the work, not our event loop), and `change_marker` is None (the
port allows it: reused answers are then rebuilt each time).
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable, Collection, Sequence
from typing import Any, TypeVar

import psycopg
from psycopg.rows import dict_row

from core.errors import Conflict
from core.ledger import Increment
from core.ledger.postgres.characters import PostgresCharacters
from core.ledger.postgres.connections import Connections, pg
from core.ledger.postgres.products import PostgresProducts
from core.ledger.sqlite_queries import (
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
from core.models import Artifact, LogEntry, Page, Priority, Run, RunKind, RunStatus

T = TypeVar("T")
Conn = psycopg.AsyncConnection[Any]
_INSERT_COLUMNS = [name.strip() for name in RUN_COLUMNS.split(",") if name.strip() != "seq"]
_INSERT_RUN = (
    f"INSERT INTO runs ({', '.join(_INSERT_COLUMNS)}) VALUES ({', '.join('%s' for _ in _INSERT_COLUMNS)}) "
    "RETURNING seq"
)
_ADD_LOG = "INSERT INTO run_logs (run_id, at, level, message) VALUES (%s, %s, %s, %s)"
_PUT_ARTIFACT = (
    "INSERT INTO artifacts (run_id, filename, media_type, size, sha256, storage_key, width, height) "
    "VALUES (%s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT (run_id, filename) DO UPDATE SET "
    "media_type = excluded.media_type, size = excluded.size, sha256 = excluded.sha256, "
    "storage_key = excluded.storage_key, width = excluded.width, height = excluded.height"
)


class PostgresLedger(PostgresCharacters, PostgresProducts):
    """`Ledger` over a PostgreSQL database. `PostgresLedger.open(url)` returns at once; the first
    call connects and migrates (see `core.ledger.postgres.connections`)."""

    def __init__(self, connections: Connections) -> None:
        self._connections = connections
        # UPDATE statements by the shape of the change: built once, not on every transition.
        self._update_sql: dict[tuple[Any, ...], str] = {}
        # Called in the transaction that inserts runs, with its connection: a dispatch defers the
        # runs' jobs there, so a run is never recorded without its job, nor a job without its run.
        self.on_insert_runs: Callable[[Conn, Sequence[Run]], Awaitable[None]] | None = None

    @classmethod
    def open(cls, url: str, *, timeout_s: float = 30.0, pool_size: int = 10) -> PostgresLedger:
        """The ledger in the database at `url` (`postgresql://user@host:port/db`). Nothing is
        connected yet: `timeout_s` is how long each call may wait for a connection."""
        return cls(Connections(url, timeout_s=timeout_s, max_size=pool_size))

    @property
    def where(self) -> str:
        """The database's URL without its password."""
        return self._connections.where

    async def schema_version(self) -> int:
        """The newest migration applied (connecting first if no call has yet)."""
        await self._connections.run(_nothing, write=False)
        return self._connections.schema_version

    async def _write(self, work: Callable[[Conn], Awaitable[T]]) -> T:
        return await self._connections.run(work, write=True)

    async def _rows(self, sql: str, args: Sequence[Any] = (), *, named: bool = False) -> list[Any]:
        async def read(conn: Conn) -> list[Any]:
            cursor = conn.cursor(row_factory=dict_row) if named else conn.cursor()
            async with cursor:
                await cursor.execute(pg(sql), args)
                return await cursor.fetchall()

        return await self._connections.run(read, write=False)

    async def _one(self, sql: str, args: Sequence[Any] = ()) -> Any:
        rows = await self._rows(sql, args)
        return rows[0] if rows else None

    # -- runs ---------------------------------------------------------------------------------

    async def insert_run(self, run: Run, log: str | None = None) -> Run:
        [inserted] = await self.insert_runs([run], log)
        return inserted

    async def insert_runs(self, runs: Sequence[Run], log: str | None = None) -> list[Run]:
        async def insert(conn: Conn) -> list[int]:
            seqs = []
            for run in runs:
                values = run_values(run)
                values.pop("seq")
                row = await (await conn.execute(_INSERT_RUN, tuple(values.values()))).fetchone()
                seqs.append(row[0])  # type: ignore[index]
                if log:
                    await conn.execute(_ADD_LOG, (run.id, run.created_at, "info", log))
            if self.on_insert_runs is not None:
                await self.on_insert_runs(conn, runs)
            return seqs

        try:
            seqs = await self._write(insert)
        except psycopg.errors.UniqueViolation as exc:
            if "idempotency_key" in str(exc):
                keys = ", ".join(repr(r.idempotency_key) for r in runs if r.idempotency_key)
                raise Conflict(f"idempotency key {keys} is already used") from None
            raise
        for run, seq in zip(runs, seqs, strict=True):
            run.seq = seq
        return list(runs)

    async def get_run(self, run_id: str) -> Run | None:
        return run_with_artifacts(await self._rows(RUN_BY_ID, (run_id,)))

    def change_marker(self) -> int | None:
        # Other nodes commit without telling this process; a marker would need a round trip.
        return None

    async def find_by_idempotency_key(self, key: str) -> Run | None:
        row = await self._one(f"SELECT {RUN_COLUMNS} FROM runs WHERE idempotency_key = ?", (key,))
        return (await self._with_artifacts([run_from_row(row)]))[0] if row else None

    async def find_by_key_prefix(self, prefix: str, limit: int = 1000) -> list[Run]:
        # A range of the key's unique index (its collation is "C": bytewise, as in SQLite).
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
        # A sum over the few rows of run_counts, kept by the trigger of migration 0001.
        clause, args = count_filters(statuses, kinds, top_level)
        return int((await self._one(f"SELECT COALESCE(SUM(n), 0) FROM run_counts {clause}", args))[0])

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
            "LIMIT ?) AS newest WHERE finished_at IS NOT NULL"
        )
        return (await self._one(sql, (*args, newest)))[0]

    async def get_run_by_seq(self, seq: int) -> Run | None:
        return run_with_artifacts(await self._rows(RUN_BY_SEQ, (seq,)))

    async def finished_before(self, cutoff: float, statuses: Collection[RunStatus]) -> list[str]:
        rows = await self._rows(
            "SELECT id FROM runs WHERE parent_id IS NULL AND finished_at < ? AND status = ANY(?) ORDER BY seq",
            (cutoff, [s.value for s in statuses]),
        )
        return [r[0] for r in rows]

    async def finished_since(self, since: float) -> dict[str, int]:
        rows = await self._rows(
            "SELECT status, COUNT(*) FROM runs WHERE parent_id IS NULL AND finished_at >= ? GROUP BY status",
            (since,),
        )
        return {r[0]: r[1] for r in rows}

    async def get_document(self, key: str) -> Any:
        row = await self._one("SELECT value FROM documents WHERE key = ?", (key,))
        return None if row is None else json.loads(row[0])

    async def put_document(self, key: str, value: Any) -> None:
        args = (key, to_json(value), time.time())
        await self._write(
            lambda conn: conn.execute(
                "INSERT INTO documents (key, value, updated_at) VALUES (%s, %s, %s) "
                "ON CONFLICT (key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
                args,
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
            sql = self._update_sql[shape] = pg(update_statement(*shape))
        args = [to_column(name, value) for name, value in changes.items()]
        args.append(run_id)
        if expect is not None:
            args.extend(shape[1])  # type: ignore[arg-type]

        async def update(conn: Conn) -> Any:
            row = await (await conn.execute(sql, args)).fetchone()
            if row is None:
                return None
            if replace_artifacts:
                await conn.execute("DELETE FROM artifacts WHERE run_id = %s", (run_id,))
            if artifacts:
                async with conn.cursor() as cursor:
                    await cursor.executemany(_PUT_ARTIFACT, artifact_rows(artifacts))
            if log:
                await conn.execute(_ADD_LOG, (run_id, time.time(), log_level, log))
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
        args = (time.time(), level, message, run_id)
        await self._write(
            lambda conn: conn.execute(
                "INSERT INTO run_logs (run_id, at, level, message) SELECT id, %s, %s, %s FROM runs WHERE id = %s",
                args,
            )
        )

    async def logs(self, run_id: str, limit: int = 1000) -> list[LogEntry]:
        rows = await self._rows(
            "SELECT at, level, message FROM run_logs WHERE run_id = ? ORDER BY id LIMIT ?", (run_id, limit)
        )
        return [LogEntry(at=r[0], level=r[1], message=r[2]) for r in rows]

    async def delete_run(self, run_id: str) -> list[Artifact]:
        async def delete(conn: Conn) -> list[Any]:
            # The run and its children (the cascade takes them, their files and logs, and the
            # counts' trigger uncounts each); their files' rows are returned for the storage.
            async with conn.cursor(row_factory=dict_row) as cursor:
                await cursor.execute(
                    "SELECT * FROM artifacts WHERE run_id IN "
                    "(SELECT id FROM runs WHERE id = %s OR parent_id = %s)",
                    (run_id, run_id),
                )
                rows = await cursor.fetchall()
            await conn.execute("DELETE FROM runs WHERE id = %s", (run_id,))
            return rows

        return [artifact_from_row(r) for r in await self._write(delete)]

    async def runs_in(self, statuses: Collection[RunStatus]) -> list[Run]:
        rows = await self._rows(
            f"SELECT {RUN_COLUMNS} FROM runs WHERE status = ANY(?) ORDER BY seq",
            ([s.value for s in statuses],),
        )
        return [run_from_row(r) for r in rows]

    async def statuses_of(self, run_ids: Collection[str]) -> dict[str, RunStatus]:
        if not run_ids:
            return {}
        rows = await self._rows("SELECT id, status FROM runs WHERE id = ANY(?)", (list(run_ids),))
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
        counts.update({r[0]: int(r[1]) for r in rows})
        return counts

    async def close(self) -> None:
        await self._connections.close()

    async def _with_artifacts(self, runs: list[Run]) -> list[Run]:
        if not runs:
            return runs
        by_id = {run.id: run for run in runs}
        rows = await self._rows(
            "SELECT * FROM artifacts WHERE run_id = ANY(?) ORDER BY run_id, filename",
            (list(by_id),),
            named=True,
        )
        for row in rows:
            by_id[row["run_id"]].artifacts.append(artifact_from_row(row))
        return runs


async def _nothing(conn: Conn) -> None:
    return None
