"""Shared fixtures: a fresh data directory and an open engine on real SQLite."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from core.engine import Engine
from core.settings import Settings


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
