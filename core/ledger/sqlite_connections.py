"""Opening a SQLite ledger file: its connections' settings, and the migrations of its schema.

Kept apart from the adapter's operations (`core.ledger.sqlite`) because it runs only when a
connection is opened (the ledger's reader and writer at start-up, the checkpointer's and a
waiting read's later) and when the file is migrated: every connection is in WAL mode with the
ledger's `synchronous` and foreign keys on, and the schema is the SQL files of `migrations/`,
applied in order, versioned by `PRAGMA user_version`.
"""

from __future__ import annotations

import sqlite3
import time
from importlib import resources
from pathlib import Path

from core.ledger.sqlite_writes import is_busy

# The page size of a new ledger file. Every commit appends each page it changed to the WAL, whole,
# and a run's transitions change ~14 small pieces of pages (its row, its index entries, its log
# lines, the counts): 2 KB pages made a commit ~20% cheaper than SQLite's default 4 KB (10% of
# a run's ledger time on tmpfs), while a run's row (~0.5 KB) still fits a page several times.
PAGE_SIZE = 2048


def connect(path: Path, busy_ms: int, synchronous: str) -> sqlite3.Connection:
    """A connection to the ledger file in WAL mode, waiting up to `busy_ms` for a lock."""
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=busy_ms / 1000)
    conn.row_factory = sqlite3.Row
    conn.execute(f"PRAGMA busy_timeout={busy_ms}")
    # Takes effect only when the file is created (an existing ledger keeps its page size).
    conn.execute(f"PRAGMA page_size={PAGE_SIZE}")
    # Switching a new file to WAL needs it to itself, and SQLite answers "locked" at once, without
    # its busy handler, while another process is doing the same: try again until the busy timeout.
    deadline = time.monotonic() + busy_ms / 1000
    while True:
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            break
        except sqlite3.OperationalError as exc:
            if not is_busy(exc) or time.monotonic() >= deadline:
                conn.close()
                raise
            time.sleep(0.01)
    conn.execute(f"PRAGMA synchronous={synchronous}")
    conn.execute("PRAGMA foreign_keys=ON")
    return conn


def migrate(conn: sqlite3.Connection) -> None:
    """Bring the schema up to the newest migration, in the caller's transaction."""
    current = conn.execute("PRAGMA user_version").fetchone()[0]
    for version, script in _migrations():
        if version > current:
            # executescript would commit our transaction; run statement by statement instead.
            for statement in _statements(script):
                conn.execute(statement)
            conn.execute(f"PRAGMA user_version={version}")


def _migrations() -> list[tuple[int, str]]:
    folder = resources.files("core.ledger") / "migrations"
    found = []
    for entry in folder.iterdir():
        if entry.name.endswith(".sql"):
            found.append((int(entry.name.split("_", 1)[0]), entry.read_text(encoding="utf-8")))
    return sorted(found)


def _statements(script: str) -> list[str]:
    """The statements of a migration script, in order (a trigger's body stays whole)."""
    found, pending = [], ""
    for piece in script.split(";"):
        pending += piece + ";"
        if sqlite3.complete_statement(pending):
            if pending.strip(" \t\n;"):
                found.append(pending)
            pending = ""
    if pending.strip(" \t\n;"):
        found.append(pending)
    return found
