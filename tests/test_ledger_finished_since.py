"""`Ledger.finished_since`: the status page's throughput, counted from the `finished_at` index
(on both adapters)."""

from __future__ import annotations

import time

import pytest

from core.ledger import Ledger
from core.models import RunStatus
from tests.test_ledger import new_run

pytestmark = pytest.mark.anyio


async def test_counts_top_level_runs_finished_since_by_status(ledger: Ledger) -> None:
    now = time.time()
    parent = new_run(status=RunStatus.COMPLETED, finished_at=now - 5)
    await ledger.insert_runs(
        [
            parent,
            new_run(status=RunStatus.COMPLETED, finished_at=now - 5, parent_id=parent.id),  # a child
            new_run(status=RunStatus.COMPLETED, finished_at=now - 30),
            new_run(status=RunStatus.FAILED, finished_at=now - 1800),
            new_run(status=RunStatus.COMPLETED, finished_at=now - 7200),  # too long ago
            new_run(status=RunStatus.RUNNING),  # not finished
        ]
    )
    assert await ledger.finished_since(now - 60) == {"completed": 2}
    assert await ledger.finished_since(now - 3600) == {"completed": 2, "failed": 1}
