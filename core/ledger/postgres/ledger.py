"""The PostgreSQL ledger's runs: the `Ledger` port's run operations (see `core.ledger.postgres`).

The reads are the ones both adapters share (`core.ledger.shared_reads`); the writes' statements
are SQLite's where the two dialects agree (`core.ledger.sqlite_queries`: guarded updates, list
pages; `pg` turns `?` into psycopg's placeholder) and a run's row is read and written by the same
mapping (`core.ledger.sqlite_rows`). What differs: a run's files are
upserted with `ON CONFLICT`, a log line's number comes from a sequence, the purge's scan is a
plain query (the server does the work, not our event loop), and `change_marker` is None (the
port allows it: reused answers are then rebuilt each time).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Collection, Sequence
from typing import Any, TypeVar

import psycopg
from psycopg.rows import dict_row

from core.errors import Conflict
from core.ledger.postgres.characters import PostgresCharacters
from core.ledger.postgres.connections import Connections, pg
from core.ledger.postgres.products import PostgresProducts
from core.ledger.shared_reads import RunReads
from core.ledger.sqlite_queries import (
    INSERT_RUN,
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
from core.models import Artifact, Run, RunKind, RunStatus

T = TypeVar("T")
Conn = psycopg.AsyncConnection[Any]
_INSERT_RUN = pg(INSERT_RUN) + " RETURNING seq"
_ADD_LOG = "INSERT INTO run_logs (run_id, at, level, message) VALUES (%s, %s, %s, %s)"
_PUT_ARTIFACT = (
    "INSERT INTO artifacts (run_id, filename, media_type, size, sha256, storage_key, width, height) "
    "VALUES (%s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT (run_id, filename) DO UPDATE SET "
    "media_type = excluded.media_type, size = excluded.size, sha256 = excluded.sha256, "
    "storage_key = excluded.storage_key, width = excluded.width, height = excluded.height"
)


class PostgresLedger(PostgresCharacters, PostgresProducts, RunReads):
    """`Ledger` over a PostgreSQL database. `PostgresLedger.open(url)` returns at once; the first
    call connects and migrates (see `core.ledger.postgres.connections`)."""

    _limit_arms = True  # PostgreSQL appends a page's arms and sorts them: see `page_query`

    def __init__(self, connections: Connections) -> None:
        self._connections = connections
        # UPDATE statements by the shape of the change: built once, not on every transition.
        self._update_sql: dict[tuple[Any, ...], Any] = {}
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

    # -- runs ---------------------------------------------------------------------------------

    async def insert_run(self, run: Run, log: str | None = None) -> Run:
        [inserted] = await self.insert_runs([run], log)
        return inserted

    async def insert_runs(self, runs: Sequence[Run], log: str | None = None) -> list[Run]:
        async def insert(conn: Conn) -> list[int]:
            seqs = []
            for run in runs:
                row = await (await conn.execute(_INSERT_RUN, new_run_row(run))).fetchone()
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

    def change_marker(self) -> int | None:
        # Other nodes commit without telling this process; a marker would need a round trip.
        return None

    async def mean_duration(
        self,
        *,
        statuses: Collection[RunStatus] | None = None,
        kinds: Collection[RunKind] | None = None,
        top_level: bool = False,
        newest: int = 200,
    ) -> float | None:
        sql, args = mean_duration_query(statuses, kinds, top_level, newest, limit_arms=True)
        return (await self._one(sql, args))[0]

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
        sql, args = update_of(run_id, expect, changes, self._update_sql, pg)

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
        return None if row is None else await self._updated(row, artifacts, replace_artifacts)

    async def add_log(self, run_id: str, message: str, level: str = "info") -> None:
        args = (time.time(), level, message, run_id)
        await self._write(
            lambda conn: conn.execute(
                "INSERT INTO run_logs (run_id, at, level, message) SELECT id, %s, %s, %s FROM runs WHERE id = %s",
                args,
            )
        )

    async def delete_run(self, run_id: str) -> list[Artifact]:
        async def delete(conn: Conn) -> list[Any]:
            # The run and its children (the cascade takes them, their files and logs, and the
            # counts' trigger uncounts each); their files' rows are returned for the storage.
            cursor = await conn.execute(
                f"SELECT {ARTIFACT_COLUMNS} FROM artifacts WHERE run_id IN "
                "(SELECT id FROM runs WHERE id = %s OR parent_id = %s)",
                (run_id, run_id),
            )
            rows = await cursor.fetchall()
            await conn.execute("DELETE FROM runs WHERE id = %s", (run_id,))
            return rows

        return [artifact_from_row(r) for r in await self._write(delete)]

    async def close(self) -> None:
        await self._connections.close()


async def _nothing(conn: Conn) -> None:
    return None
