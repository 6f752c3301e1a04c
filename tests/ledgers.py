"""The ledgers the ledger tests run on: SQLite in a temp directory, and PostgreSQL in a fresh schema.

Every test that takes the `ledger_place` or `ledger` fixture (tests/conftest.py) runs once on
each adapter. A PostgreSQL test gets a schema of its own (`atelier_t_<random hex>`, in the database
of `ATELIER_TEST_DATABASE_URL`, default postgresql://root@127.0.0.1:5432/test), its ledger's URL
naming it in `search_path`, so tests run side by side under pytest-xdist; the schema is dropped
afterwards. When the server cannot be reached the PostgreSQL tests are skipped, except in CI
(the `CI` variable set), where they fail: CI must run them.
"""

from __future__ import annotations

import os
import sqlite3
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from core.ledger import Ledger
from core.settings import Settings, redacted_url

ADAPTERS = ["sqlite", "postgres"]
TEST_DATABASE_URL = os.environ.get("ATELIER_TEST_DATABASE_URL", "postgresql://root@127.0.0.1:5432/test")


class LedgerPlace:
    """Where one test's ledger lives: opens ledgers there and reads it as another process would."""

    def __init__(self, adapter: str, *, path: Path | None = None, url: str | None = None) -> None:
        self.adapter = adapter
        self.path = path
        self.url = url

    def open(self) -> Ledger:
        """A new ledger on this place (another process's, if one is open already)."""
        if self.adapter == "sqlite":
            from core.ledger.sqlite import SQLiteLedger

            assert self.path is not None
            return SQLiteLedger.open(self.path)
        from core.ledger.postgres import PostgresLedger

        assert self.url is not None
        return PostgresLedger.open(self.url, timeout_s=5)

    def raw(self, sql: str, *args: Any) -> list[tuple[Any, ...]]:
        """Run `sql` (with `?` placeholders) on a connection of its own, committed, as another
        process would; its rows."""
        if self.adapter == "sqlite":
            assert self.path is not None
            conn = sqlite3.connect(self.path, isolation_level=None)
            try:
                conn.execute("PRAGMA foreign_keys=ON")
                return conn.execute(sql, args).fetchall()
            finally:
                conn.close()
        import psycopg

        from core.ledger.postgres.connections import pg

        assert self.url is not None
        with psycopg.connect(self.url, autocommit=True) as conn:
            cursor = conn.execute(pg(sql).encode(), args)
            return [tuple(row) for row in cursor.fetchall()] if cursor.description else []

    def settings(self, settings: Settings) -> Settings:
        """`settings` with this place's ledger: PostgreSQL's through ATELIER_DATABASE_URL; SQLite's
        is the file in the settings' home, which this place then reads."""
        if self.adapter == "sqlite":
            self.path = settings.ledger_path
            return settings
        url = Settings.from_env({}, database_url=self.url).database_url
        return settings.model_copy(update={"database_url": url})


@contextmanager
def ledger_place(adapter: str, tmp_path: Path) -> Iterator[LedgerPlace]:
    """A fresh place for `adapter`'s ledger, removed afterwards."""
    if adapter == "sqlite":
        yield LedgerPlace("sqlite", path=tmp_path / "ledger" / "ledger.sqlite3")
        return
    with postgres_schema() as url:
        yield LedgerPlace("postgres", url=url)


@contextmanager
def postgres_schema() -> Iterator[str]:
    """The URL of a fresh, empty schema in the test database (dropped afterwards)."""
    try:
        import psycopg
    except ImportError as exc:
        _cannot_run(f"psycopg is not installed ({exc})")
    schema = f"atelier_t_{uuid.uuid4().hex}"
    try:
        admin = psycopg.connect(TEST_DATABASE_URL, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:
        _cannot_run(f"PostgreSQL at {redacted_url(TEST_DATABASE_URL)} cannot be reached: {exc}")
    with admin:
        admin.execute(f"CREATE SCHEMA {schema}".encode())
        try:
            separator = "&" if "?" in TEST_DATABASE_URL else "?"
            yield f"{TEST_DATABASE_URL}{separator}options={quote(f'-csearch_path={schema}')}"
        finally:
            admin.execute(f"DROP SCHEMA {schema} CASCADE".encode())


def _cannot_run(reason: str) -> Any:
    if os.environ.get("CI"):
        pytest.fail(f"the PostgreSQL tests must run in CI: {reason}", pytrace=False)
    pytest.skip(reason)
