"""Events across nodes through PostgreSQL's LISTEN/NOTIFY: the relay of a cluster whose nodes
share a PostgreSQL database (ATELIER_DATABASE_URL).

Every node holds two connections of its own, outside any pool: one sends (`pg_notify` on one
channel, `atelier_events` unless told otherwise), one listens. NOTIFY is transactional and
ordered, and reaches every listening session, so each node hears each message once; a node
skips its own by node id. Payloads are `RelayMessage` JSON, well under the 8000-byte limit.

Nothing here makes the engine wait: the connections are made in the background (start-up never
waits for the server), a connection that drops is made again with backoff (0.5 s doubling to
10 s), and while the sending side is down messages are dropped and counted rather than kept:
the ledger still has every state change, and waiters read it now and then. A connection that
dies quietly is found out by a `SELECT 1` after `PROBE_S` of silence. Once it listens again
after a break, the engine reads again the runs followed on this node (`heard_again`): what was
said meanwhile is lost. The health report says whether both sides are up and how many messages
went, came and were dropped.

LISTEN holds a session: the URL must reach PostgreSQL directly (or a pooler in session mode),
not through a transaction-mode pooler such as PgBouncer's default.
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, suppress
from typing import Any
from urllib.parse import urlsplit

import anyio
import psycopg
from anyio.abc import ObjectSendStream
from psycopg import sql

from core.backends import Progress
from core.models import Run
from core.relay import Outbox, RelayMessage

log = logging.getLogger("atelier.relay")

CHANNEL = "atelier_events"
PROBE_S = 5.0
CONNECT_TIMEOUT_S = 5.0
STATEMENT_S = 2.0
FIRST_BACKOFF_S = 0.5
MAX_BACKOFF_S = 10.0
# Messages sent in one statement at most (one round trip for a burst).
BATCH = 64
# Messages heard and not yet published here; more are dropped (counted).
INBOX_SIZE = 4096
_CHANNEL_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")


class PostgresRelay:
    """The relay over one PostgreSQL database; `serve` runs it (in the engine's task group)."""

    enabled = True

    def __init__(
        self,
        url: str,
        *,
        channel: str = CHANNEL,
        node: str | None = None,
        progress_per_s: float = 10.0,
        first_backoff_s: float = FIRST_BACKOFF_S,
    ) -> None:
        if not _CHANNEL_NAME.fullmatch(channel):
            raise ValueError("the channel must be a lower-case SQL name (letters, digits, _)")
        self._url = url
        self.channel = channel
        self.node = node or uuid.uuid4().hex[:12]
        self._first_backoff_s = first_backoff_s
        self._outbox = Outbox(per_s=progress_per_s)
        self._seq = 0
        self._sending = False
        self._listening = False
        self.sent = 0
        self.received = 0
        self.ignored = 0
        self._dropped_heard = 0
        self.reconnects = 0
        self._last_error: tuple[float, str] | None = None

    # -- what the engine tells it --------------------------------------------------------------

    def run_changed(self, run: Run) -> None:
        self._outbox.put(RelayMessage.of_run(self.node, self._next_seq(), run))

    def progressed(self, run_id: str, progress: Progress) -> None:
        self._outbox.put(RelayMessage.of_progress(self.node, self._next_seq(), run_id, progress))

    def deleted(self, run_id: str) -> None:
        self._outbox.put(RelayMessage(self.node, self._next_seq(), run_id, "deleted"))

    def _next_seq(self) -> int:
        self._seq += 1
        return self._seq

    # -- running -------------------------------------------------------------------------------

    async def serve(
        self,
        deliver: Callable[[RelayMessage], Awaitable[None]],
        heard_again: Callable[[], Awaitable[None]],
    ) -> None:
        # None in the stream: the listener is back after a break.
        heard_in, heard = anyio.create_memory_object_stream[RelayMessage | None](INBOX_SIZE)
        async with anyio.create_task_group() as group, heard_in, heard:
            group.start_soon(self._send_forever)
            group.start_soon(self._listen_forever, heard_in)
            # Publishing (which may read the ledger) is apart from listening: a slow read never
            # stops the connection from being read.
            async for message in heard:
                try:
                    await (heard_again() if message is None else deliver(message))
                except Exception:
                    log.exception("could not publish an event heard from another node")

    async def _send_forever(self) -> None:
        backoff = self._first_backoff_s
        while True:
            try:
                connection = await self._connect("send")
            except (psycopg.Error, OSError, TimeoutError) as exc:
                self._outbox.accepting = False
                self._outbox.drop_all()
                self._down("sending", exc)
                await anyio.sleep(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF_S)
                continue
            backoff = self._first_backoff_s
            self._outbox.accepting = True
            self._sending = True
            try:
                async with _closing(connection):
                    await self._send_on(connection)
            except (psycopg.Error, OSError) as exc:
                self._down("sending", exc)
            finally:
                self._sending = False
                self._outbox.accepting = False
                self._outbox.drop_all()
            self.reconnects += 1
            await anyio.sleep(backoff)

    async def _send_on(self, connection: psycopg.AsyncConnection[Any]) -> None:
        statement = sql.SQL("SELECT pg_notify({}, payload) FROM unnest(%s::text[]) AS payload").format(
            sql.Literal(self.channel)
        )
        while True:
            message = await self._outbox.get(PROBE_S)
            if message is None:
                await _briefly(connection, "SELECT 1")  # a connection that died quietly fails here
                continue
            batch = [message]
            while len(batch) < BATCH:
                more = await self._outbox.get(0)
                if more is None:
                    break
                batch.append(more)
            try:
                await _briefly(connection, statement, ([m.encode() for m in batch],))
            except BaseException:
                self._outbox.dropped += len(batch)
                raise
            self.sent += len(batch)

    async def _listen_forever(self, heard: ObjectSendStream[RelayMessage | None]) -> None:
        backoff = self._first_backoff_s
        missed = False
        while True:
            try:
                connection = await self._connect("listen")
                try:
                    await connection.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self.channel)))
                except BaseException:
                    with anyio.CancelScope(shield=True):
                        await connection.close()
                    raise
            except (psycopg.Error, OSError, TimeoutError) as exc:
                self._down("listening", exc)
                missed = True
                await anyio.sleep(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF_S)
                continue
            backoff = self._first_backoff_s
            self._listening = True
            if missed:
                # What was said while nobody listened is lost: the followed runs are read again.
                with suppress(anyio.WouldBlock):
                    heard.send_nowait(None)
            missed = False
            try:
                async with _closing(connection):
                    while True:
                        async for notify in connection.notifies(timeout=PROBE_S):
                            self._hear(notify.payload, heard)
                        await _briefly(connection, "SELECT 1")
            except (psycopg.Error, OSError) as exc:
                self._down("listening", exc)
            finally:
                self._listening = False
                missed = True
            self.reconnects += 1
            await anyio.sleep(backoff)

    def _hear(self, payload: str, heard: ObjectSendStream[RelayMessage | None]) -> None:
        message = RelayMessage.decode(payload)
        if message is None:
            self.ignored += 1
            return
        if message.node == self.node:
            return  # our own, published here already
        self.received += 1
        try:
            heard.send_nowait(message)
        except anyio.WouldBlock:
            self._dropped_heard += 1

    async def _connect(self, role: str) -> psycopg.AsyncConnection[Any]:
        with anyio.fail_after(CONNECT_TIMEOUT_S + 1):
            return await psycopg.AsyncConnection.connect(
                self._url,
                autocommit=True,
                connect_timeout=max(2, int(CONNECT_TIMEOUT_S)),
                # What an operator sees in pg_stat_activity: which node, which side.
                application_name=f"atelier-events-{role} {self.node}",
            )

    def _down(self, side: str, exc: BaseException) -> None:
        message = f"{side}: {self._safe(exc)}"
        if self._last_error is None or self._last_error[1] != message:
            log.warning("event relay %s", message)
        self._last_error = (time.time(), message)

    def _safe(self, exc: BaseException) -> str:
        """What went wrong, never the database URL or its password."""
        text = (str(exc).strip().splitlines() or [""])[0] or type(exc).__name__
        try:
            password = urlsplit(self._url).password
        except ValueError:
            password = None
        for secret in (self._url, password):
            if secret:
                text = text.replace(secret, "***")
        return f"{type(exc).__name__}: {text}"[:300]

    # -- health --------------------------------------------------------------------------------

    def health(self) -> dict[str, Any]:
        """Whether both connections are up (`state`), and what went through them since start."""
        last = self._last_error
        up = self._sending and self._listening
        return {
            "enabled": True,
            # "connecting" until the first connections are made or fail; "down" after a failure.
            "state": "up" if up else "down" if last else "connecting",
            "up": up,
            "sending": self._sending,
            "listening": self._listening,
            "node": self.node,
            "channel": self.channel,
            "sent": self.sent,
            "received": self.received,
            "dropped": self._outbox.dropped + self._dropped_heard,
            "waiting": len(self._outbox),
            "reconnects": self.reconnects,
            "last_error": last[1] if last else None,
            "last_error_at": round(last[0], 3) if last else None,
        }


async def _briefly(connection: psycopg.AsyncConnection[Any], statement: Any, params: Any = None) -> None:
    """Run a short statement to its end even if the engine is stopping (a statement cut off in
    the middle leaves psycopg cancelling it on the server), but never for more than `STATEMENT_S`."""
    with anyio.fail_after(STATEMENT_S, shield=True):  # TimeoutError: an OSError, a lost connection
        await connection.execute(statement, params)


@asynccontextmanager
async def _closing(connection: psycopg.AsyncConnection[Any]) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
    """`connection`, closed on the way out even when the engine is stopping (cancelled)."""
    try:
        yield connection
    finally:
        with anyio.CancelScope(shield=True):
            await connection.close()
