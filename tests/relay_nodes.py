"""Two nodes of a cluster in one test process, their events relayed through a real PostgreSQL.

Node A owns the data directory and executes the runs (the preview renderer); node B is a client
of the same ledger that executes nothing, as a front-door node is. Each relay listens on the
channel the test names (one per test: tests running in parallel never hear each other).

PostgreSQL: ATELIER_TEST_DATABASE_URL (default postgresql://root@127.0.0.1:5432/test). Tests are
skipped when it cannot be reached, except in CI (env CI set), where that fails them.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import psycopg
import pytest

from core.engine import Engine
from core.relay_postgres import PostgresRelay
from core.settings import Settings
from tests.scripted_backend import wait_until

DATABASE_URL = os.environ.get("ATELIER_TEST_DATABASE_URL", "postgresql://root@127.0.0.1:5432/test")
WAIT = 10.0


def reachable_database() -> str:
    """The test database's URL; skips (fails in CI) the test when it cannot be reached."""
    try:
        with psycopg.connect(DATABASE_URL, connect_timeout=3):
            pass
    except psycopg.Error as exc:
        reason = f"PostgreSQL is not reachable at ATELIER_TEST_DATABASE_URL: {type(exc).__name__}"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    return DATABASE_URL


def new_channel() -> str:
    return f"atelier_test_{uuid.uuid4().hex[:16]}"


def node_settings(tmp_path: Path, step_ms: float) -> Settings:
    return Settings.from_env({}, home=tmp_path / "home", local_step_ms=step_ms, retry_backoff_s=0.01)


@asynccontextmanager
async def two_nodes(
    settings: Settings, url: str, channel: str, *, b_backoff_s: float = 0.5
) -> AsyncIterator[tuple[Engine, Engine]]:
    """Node A (owner: executes) and node B (a client of the same ledger), both relays up."""
    relay_a = PostgresRelay(url, channel=channel)
    relay_b = PostgresRelay(url, channel=channel, first_backoff_s=b_backoff_s)
    async with (
        Engine.open(settings, relay=relay_a) as a,
        Engine.open(settings, role="client", relay=relay_b) as b,
    ):
        assert a.is_owner and not b.is_owner
        await wait_until(lambda: relay_a.health()["up"] and relay_b.health()["up"], WAIT, "both relays up")
        yield a, b
