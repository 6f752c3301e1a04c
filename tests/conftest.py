"""Shared fixtures: a fresh data directory, an open engine on real SQLite, and a ledger on each adapter."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from core.engine import Engine
from core.ledger import Ledger
from core.settings import Settings
from tests.ledgers import ADAPTERS, LedgerPlace
from tests.ledgers import ledger_place as ledger_place_for


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """Embedded defaults on a temp home; no step delay and short retry backoff so tests run fast."""
    return Settings.from_env({}, home=tmp_path / "home", local_step_ms=0, retry_backoff_s=0.01)


@pytest.fixture
async def engine(settings: Settings) -> AsyncIterator[Engine]:
    async with Engine.open(settings) as opened:
        yield opened


@pytest.fixture(params=ADAPTERS)
def ledger_place(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[LedgerPlace]:
    """Where the test's ledger lives: once SQLite, once PostgreSQL (see tests/ledgers.py)."""
    with ledger_place_for(request.param, tmp_path) as place:
        yield place


@pytest.fixture
async def ledger(ledger_place: LedgerPlace) -> AsyncIterator[Ledger]:
    """An open ledger on each adapter in turn."""
    opened = ledger_place.open()
    try:
        yield opened
    finally:
        await opened.close()
