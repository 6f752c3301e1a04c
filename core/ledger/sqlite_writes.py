"""Group commit: the one writer of a SQLite ledger, committing concurrent writes together.

A transaction's fixed cost (`BEGIN IMMEDIATE` taking the write lock, `COMMIT` appending the WAL
frames and releasing it) was measured at ~65 us on tmpfs and ~105 us on a disk, against 6-40 us
for each statement of a run's transition. So writes that arrive together are committed together:

- the first write to arrive leads a group: it lets the event loop run once, and every write
  asked for meanwhile (other runs' transitions, logs, inserts, progress flushes) joins its group;
  while a turn brings more writes it lets the loop run again, up to `GATHER_TURNS` turns (a
  client submitting while two workers move their runs on: the three writes come a turn apart,
  and gathering them made one commit a run instead of 1.33, ~5% of the engine's cost a run);
- the leader then runs every change of the group, in arrival order, in one transaction, and
  hands each caller its own result. A caller hears back only after the commit, so a run
  reported completed is a committed run, as before;
- if one change fails (a reused idempotency key) or the commit does (a full disk), the
  transaction is rolled back and each change is tried again in a transaction of its own: each
  caller gets its own outcome, and one bad write never takes its neighbours down with it.

Grouping costs each write a turn of the event loop or a few (a write alone: one), and a group's
commit writes the union of its pages: with two or three writes a group (one client submitting,
two preview workers) it came out even with a transaction each on tmpfs; it pays when more
writes come together (a burst of submits commits as one, a ComfyUI pool's many runs) and on a disk.

A turn of the event loop is asyncio's `sleep(0)`, which `anyio.lowlevel.checkpoint()` awaits
on asyncio (the loop Atelier runs on: uvicorn, the CLI and the tests all pin it), without anyio's
look-up of the running library on every call: groups take 3-4 turns a run between them, and the
look-ups were ~2% of the engine's cost a run. Cancel scopes cancel it just the same.

A group that finds the write lock taken by another process, and every group after it, waits
for the lock on a worker thread, in order, up to `busy_timeout_s`; a change that still finds it
locked fails as `LedgerUnavailable`. The event loop never blocks waiting for a lock.

Nor does it copy the WAL back into the database file: SQLite's automatic checkpoint would run
inside the commit that crosses 1,000 WAL pages (every ~50 runs), its writes and fsyncs on the
event loop. A `Checkpointer` thread does that instead, every `CHECKPOINT_EVERY` commits.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import threading
import time
from collections.abc import Callable
from typing import Any, Generic, TypeVar

import anyio

from core.errors import LedgerUnavailable

T = TypeVar("T")
Change = Callable[[sqlite3.Connection], T]
log = logging.getLogger("atelier.ledger")

# Turns of the event loop a group may wait for more writes, as long as each brings some (two
# gather the bench's three concurrent writers as well as three did, with fewer task switches).
GATHER_TURNS = 2
# Commits between two checkpoints: a few hundred KB to a few MB of WAL, copied in one go.
CHECKPOINT_EVERY = 64
# SQLite's own checkpoint stays as a backstop, far out of the way (pages of WAL, ~40 MB).
BACKSTOP_CHECKPOINT_PAGES = 10_000


class _Pending(Generic[T]):
    """One write of a group: its change, and once the group is committed, its outcome."""

    __slots__ = ("change", "error", "value")

    def __init__(self, change: Change[T]) -> None:
        self.change = change
        self.value: T | None = None
        self.error: BaseException | None = None

    def outcome(self) -> T:
        if self.error is not None:
            error, self.error = self.error, None  # no reference cycle through the traceback
            raise error
        return self.value  # type: ignore[return-value]


class _Group:
    """The writes committed together, in arrival order."""

    __slots__ = ("committed", "done", "writes")

    def __init__(self, first: _Pending[Any]) -> None:
        self.writes = [first]
        self.done = False
        # Made by a follower that finds the group waiting for another process's lock.
        self.committed: anyio.Event | None = None


class GroupWriter:
    """Writes through `conn` (this process's only writing connection), grouped as described above."""

    def __init__(
        self,
        conn: sqlite3.Connection,
        busy_timeout_s: float,
        still_locked: Callable[[], Exception],
        checkpointer: Checkpointer | None = None,
    ) -> None:
        self._conn = conn
        self._checkpointer = checkpointer
        self._busy_timeout_s = busy_timeout_s
        self._still_locked = still_locked
        # The group forming now (its leader is at its checkpoint), or None.
        self._forming: _Group | None = None
        # Writes waiting for another process's lock, or queued behind one that is.
        self._waiting_writes = 0
        self._wait_turn: anyio.Lock | None = None

    async def write(self, change: Change[T]) -> T:
        """`change`'s result once committed (in one transaction with the writes that came with it).

        A caller cancelled before its group is committed has written nothing; once it has joined
        a group that another write leads, its outcome is decided and it waits to hear it.
        """
        pending: _Pending[T] = _Pending(change)
        group = self._forming
        if group is not None:
            group.writes.append(pending)
            # The leader commits inline once it stops gathering (a turn or a few); yielding as
            # many turns costs less than an event. If another process holds the lock (a worker
            # thread commits then), wait for the commit.
            with anyio.CancelScope(shield=True):
                for _ in range(GATHER_TURNS + 1):
                    await asyncio.sleep(0)
                    if group.done:
                        break
                else:
                    group.committed = group.committed or anyio.Event()
                    await group.committed.wait()
            return pending.outcome()
        group = self._forming = _Group(pending)
        try:
            # The writes ready to run now join this group; while a turn of the loop brings more,
            # the group waits one more (a run's next transition is often a turn behind its
            # neighbour's). A write alone is committed after one turn, as before.
            for _ in range(GATHER_TURNS):
                joined = len(group.writes)
                await asyncio.sleep(0)
                if len(group.writes) == joined:
                    break
        except BaseException:
            group.writes.remove(pending)  # cancelled: this write never happened
            raise
        finally:
            self._forming = None
            if group.writes:
                await self._commit(group)
        return pending.outcome()

    async def _commit(self, group: _Group) -> None:
        """Commit `group`'s writes (together if it can), settling each, and wake its followers."""
        try:
            left = group.writes if self._waiting_writes else self._commit_inline(group.writes)
            if left:
                with anyio.CancelScope(shield=True):
                    await self._commit_waiting(left)
        finally:
            group.done = True
            if group.committed is not None:
                group.committed.set()
            if self._checkpointer is not None:
                self._checkpointer.committed()

    def _commit_inline(self, group: list[_Pending[Any]]) -> list[_Pending[Any]]:
        """Commit `group` now, settling each write; returns those that found another process's lock."""
        try:
            in_transaction(self._conn, lambda conn: _run_all(conn, group))
            return []
        except sqlite3.OperationalError as exc:
            if is_busy(exc):
                return group
            failure: BaseException = exc
        except Exception as exc:
            failure = exc
        if len(group) == 1:
            group[0].error = _as_ledger_error(failure)
            return []
        # One change or the commit failed: each on its own, so each gets its own outcome.
        for index, pending in enumerate(group):
            if self._commit_inline([pending]):
                return group[index:]
        return []

    async def _commit_waiting(self, group: list[_Pending[Any]]) -> None:
        """Commit `group` (one transaction per write) on a worker thread, once the lock is free."""
        self._waiting_writes += len(group)
        deadline = time.monotonic() + self._busy_timeout_s  # counted from arrival, turn included
        try:
            if self._wait_turn is None:
                self._wait_turn = anyio.Lock()
            with anyio.move_on_after(self._busy_timeout_s) as waited:
                await self._wait_turn.acquire()
            if waited.cancelled_caught:
                for pending in group:
                    pending.error = self._still_locked()
                return
            try:
                await anyio.to_thread.run_sync(self._commit_each_waiting, group, deadline)
            finally:
                self._wait_turn.release()
        finally:
            self._waiting_writes -= len(group)

    def _commit_each_waiting(self, group: list[_Pending[Any]], deadline: float) -> None:
        for pending in group:
            patience_ms = max(1, int((deadline - time.monotonic()) * 1000))
            self._conn.execute(f"PRAGMA busy_timeout={patience_ms}")
            try:
                pending.value = in_transaction(self._conn, pending.change)
            except sqlite3.OperationalError as exc:
                pending.error = self._still_locked() if is_busy(exc) else _as_ledger_error(exc)
            except Exception as exc:
                pending.error = _as_ledger_error(exc)
            finally:
                self._conn.execute("PRAGMA busy_timeout=0")


class Checkpointer:
    """Copies committed transactions from the WAL into the database file, on a thread of its own
    with a connection of its own, once every `every` commits (a PASSIVE checkpoint: it never
    waits for, nor blocks, readers and writers). `connect` opens that connection."""

    def __init__(self, connect: Callable[[], sqlite3.Connection], every: int = CHECKPOINT_EVERY) -> None:
        self._connect = connect
        self._every = every
        self._commits = 0
        self._wake = threading.Event()
        self._closing = False
        self._thread: threading.Thread | None = None

    def committed(self) -> None:
        """Count a commit; every `every` of them, wake the thread (started the first time)."""
        self._commits += 1
        if self._commits < self._every or self._closing:
            return
        self._commits = 0
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="atelier-ledger-checkpoint", daemon=True)
            self._thread.start()
        self._wake.set()

    def close(self) -> None:
        """Stop the thread (after the checkpoint it may be doing); closing the last connection
        checkpoints what is left."""
        self._closing = True
        if self._thread is not None:
            self._wake.set()
            self._thread.join()

    def _run(self) -> None:
        try:
            conn = self._connect()
        except sqlite3.Error as exc:  # SQLite's own checkpoint (the backstop) does the work then
            log.warning("could not open a connection to checkpoint the ledger's WAL: %s", exc)
            return
        try:
            while True:
                self._wake.wait()
                self._wake.clear()
                if self._closing:
                    return
                try:
                    conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                except sqlite3.Error as exc:  # the next one tries again
                    log.warning("could not checkpoint the ledger's WAL: %s", exc)
        finally:
            conn.close()


def _run_all(conn: sqlite3.Connection, group: list[_Pending[Any]]) -> None:
    for pending in group:
        pending.value = pending.change(conn)


def _as_ledger_error(exc: BaseException) -> BaseException:
    """What a caller hears of a failed write: a constraint (`IntegrityError`, which it turns into
    its own error, such as a reused idempotency key) or an exception of its change as they are;
    any other database error as `LedgerUnavailable`."""
    if isinstance(exc, sqlite3.IntegrityError) or not isinstance(exc, sqlite3.DatabaseError):
        return exc
    return unavailable(exc)


def in_transaction(conn: sqlite3.Connection, change: Change[T]) -> T:
    """`change` run in one write transaction on `conn` (rolled back if it raises)."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        result = change(conn)
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:  # never leave the connection inside a transaction that failed
            conn.execute("ROLLBACK")
        raise
    return result


def is_busy(exc: sqlite3.OperationalError) -> bool:
    """Whether `exc` says another connection holds a lock."""
    return getattr(exc, "sqlite_errorcode", None) in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED) or (
        "locked" in str(exc)
    )


def unavailable(exc: sqlite3.DatabaseError) -> LedgerUnavailable:
    """The error a caller hears when the ledger cannot take a write."""
    return LedgerUnavailable(f"the ledger cannot be written now ({exc}); nothing was changed, try again")
