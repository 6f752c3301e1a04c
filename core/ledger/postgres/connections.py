"""Connections to a PostgreSQL ledger: the pool, the schema's migrations, and errors as heard.

The pool opens on the ledger's first call, not when the ledger is made, and never waits for the
server at start-up: a process starts while its database is down and its health reports the
outage; each call then waits up to `timeout_s` for a connection and fails as `LedgerUnavailable`.
The first call that reaches the server brings the schema up to date, in one transaction, under
an advisory lock, so nodes started together migrate once, one after the other.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from functools import lru_cache
from importlib import resources
from typing import Any, TypeVar

import anyio
import anyio.lowlevel
import psycopg
from psycopg.types.string import TextLoader
from psycopg_pool import AsyncConnectionPool

from core.errors import LedgerUnavailable
from core.settings import redacted_url

T = TypeVar("T")
log = logging.getLogger("atelier.ledger")
# A transaction that lost a deadlock or a serialization conflict is run again, this many times in all.
ATTEMPTS = 3
# One lock key for the migrations of every schema (`current_schema()` tells them apart).
_MIGRATION_LOCK = (
    "SELECT pg_advisory_xact_lock(hashtext('atelier ledger migrations ' || COALESCE(current_schema(), '')))"
)


@lru_cache(maxsize=512)
def pg(sql: str) -> str:
    """A statement written with SQLite's `?` placeholders (the shared SQL), with psycopg's."""
    return sql.replace("%", "%%").replace("?", "%s")


class Connections:
    """The ledger's pool of connections to `url`, opened and migrated on first use."""

    def __init__(self, url: str, *, timeout_s: float, max_size: int) -> None:
        self.where = redacted_url(url)
        self._pool = AsyncConnectionPool(
            url,
            min_size=1,
            max_size=max_size,
            open=False,
            timeout=timeout_s,
            kwargs={"autocommit": True},
            configure=_configure,
            name="atelier-ledger",
        )
        self._opened = False
        self._migrated = False
        self._opening: anyio.Lock | None = None
        self.schema_version = 0

    async def run(self, work: Callable[[psycopg.AsyncConnection[Any]], Awaitable[T]], *, write: bool) -> T:
        """`work`'s result, run on a pooled connection in one transaction (`write`) or as it is (a
        read: one statement, one snapshot).

        A caller cancelled while it waits for a connection gives up at once (a health check's time
        limit, a shutdown); once it holds one, `work` runs to its end and the connection goes back
        to the pool whole: never in the middle of a statement, and never lost to the pool. A
        connection the server has closed since it was pooled (a restart, an administrator) fails
        before anything is done: the pool's connections are checked, and the call tried again once.
        """
        await self._ready()
        for attempt in range(1, ATTEMPTS + 1):
            try:
                return await self._on_connection(work, write)
            except psycopg.errors.TransactionRollback:  # a deadlock or serialization failure
                if attempt == ATTEMPTS:
                    raise self._unavailable("it kept conflicting with other writers") from None
            except _Failed as failed:
                if failed.stage == "start" and attempt == 1:
                    # Its neighbours in the pool are likely closed too: replace them all first.
                    with anyio.CancelScope(shield=True):
                        await self._pool.check()
                    continue
                raise self._unavailable(_reason(failed.error), maybe_done=failed.stage == "commit") from None
        raise AssertionError("unreachable")

    async def _on_connection(
        self, work: Callable[[psycopg.AsyncConnection[Any]], Awaitable[T]], write: bool
    ) -> T:
        # A caller already cancelled writes nothing, even when a connection is free at once.
        await anyio.lowlevel.checkpoint_if_cancelled()
        try:
            conn = await self._pool.getconn()
        except (psycopg.OperationalError, psycopg.InterfaceError) as exc:  # PoolTimeout: none came
            raise _Failed("wait", exc) from None
        with anyio.CancelScope(shield=True):
            stage = "start"
            try:
                if not write:
                    return await work(conn)
                async with conn.transaction():
                    stage = "work"
                    result = await work(conn)
                    stage = "commit"
                return result
            except psycopg.errors.TransactionRollback:
                raise
            except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
                # A read, or a write that had not begun, did nothing: it may be tried again.
                raise _Failed("start" if not write or stage == "start" else stage, exc) from None
            finally:
                await self._pool.putconn(conn)

    async def _ready(self) -> None:
        if self._migrated:
            return
        if self._opening is None:
            self._opening = anyio.Lock()
        async with self._opening:
            if self._migrated:
                return
            if not self._opened:
                await self._pool.open(wait=False)
                self._opened = True
            try:
                self.schema_version = await self._on_connection(migrate, write=True)
            except _Failed as failed:
                raise self._unavailable(_reason(failed.error)) from None
            self._migrated = True

    def _unavailable(self, reason: str, *, maybe_done: bool = False) -> LedgerUnavailable:
        outcome = (
            "the change may or may not have been recorded" if maybe_done else "nothing was changed, try again"
        )
        return LedgerUnavailable(
            f"the ledger's database at {self.where} cannot be used now ({reason}); {outcome}"
        )

    async def close(self) -> None:
        if self._opened:
            await self._pool.close()


class _Failed(Exception):
    """A call's connection failed: while it was awaited (`wait`), before anything was done
    (`start`), during the work (`work`), or while committing (`commit`: the outcome is unknown)."""

    def __init__(self, stage: str, error: Exception) -> None:
        super().__init__(stage)
        self.stage = stage
        self.error = error


async def migrate(conn: psycopg.AsyncConnection[Any]) -> int:
    """Bring the schema up to the newest migration in the caller's transaction; its version."""
    await conn.execute(_MIGRATION_LOCK)
    await conn.execute(
        "CREATE TABLE IF NOT EXISTS schema_version (version integer PRIMARY KEY, applied_at double precision NOT NULL)"
    )
    row = await (await conn.execute("SELECT COALESCE(MAX(version), 0) FROM schema_version")).fetchone()
    current = row[0] if row else 0
    for version, script in migrations():
        if version > current:
            log.info("applying ledger migration %04d", version)
            await conn.execute(script.encode(), prepare=False)
            await conn.execute("INSERT INTO schema_version VALUES (%s, %s)", (version, time.time()))
            current = version
    return current


def migrations() -> list[tuple[int, str]]:
    """(version, SQL) of every migration of `migrations_postgres/`, in order."""
    folder = resources.files("core.ledger") / "migrations_postgres"
    found = [
        (int(entry.name.split("_", 1)[0]), entry.read_text(encoding="utf-8"))
        for entry in folder.iterdir()
        if entry.name.endswith(".sql")
    ]
    return sorted(found)


async def _configure(conn: psycopg.AsyncConnection[Any]) -> None:
    # JSON columns come back as their text, as SQLite's do, so both adapters share one row mapping.
    conn.adapters.register_loader("jsonb", TextLoader)
    conn.adapters.register_loader("json", TextLoader)


def _reason(exc: Exception) -> str:
    """What went wrong, in a line (libpq's messages name the host and user, never a password)."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else 'no message'}"
