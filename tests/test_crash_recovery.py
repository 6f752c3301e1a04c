"""Nothing accepted is lost: kill -9 with runs queued and running, start again, all complete once."""

from __future__ import annotations

import hashlib
import json
import sqlite3
import time
from pathlib import Path

import anyio
import pytest
from mcp import Client

from core.backends.local import render_png
from tests.procs import serve

pytestmark = pytest.mark.anyio

RUNS = 21
COUNT = 2


def _ledger(home: Path) -> list[sqlite3.Row]:
    conn = sqlite3.connect(home / "ledger.sqlite3")
    conn.row_factory = sqlite3.Row
    try:
        return conn.execute(
            "SELECT id, status, attempts, inputs, "
            "(SELECT group_concat(filename) FROM artifacts WHERE run_id = runs.id) AS files "
            "FROM runs ORDER BY seq"
        ).fetchall()
    finally:
        conn.close()


async def test_kill_9_with_20_queued_and_1_running_then_restart_completes_all(tmp_path: Path) -> None:
    home = tmp_path / "home"
    slow = {"ATELIER_LOCAL_CONCURRENCY": "1", "ATELIER_LOCAL_STEP_MS": "200"}
    with serve(home, env=slow) as server:
        async with Client(f"{server.url}/mcp") as client:
            for index in range(RUNS):
                result = await client.call_tool(
                    "generate_image",
                    {
                        "prompt": f"crash test {index}",
                        "width": 64,
                        "height": 64,
                        "seed": index,
                        "count": COUNT,
                        "wait_seconds": 0,
                    },
                )
                assert not result.is_error, result.content
        deadline = time.monotonic() + 10
        while sorted(r["status"] for r in _ledger(home)).count("running") != 1:
            assert time.monotonic() < deadline, "no run started"
            await anyio.sleep(0.05)
        server.kill_hard()

    before = _ledger(home)
    assert [r["status"] for r in before].count("running") == 1
    assert [r["status"] for r in before].count("queued") == RUNS - 1
    interrupted = next(r["id"] for r in before if r["status"] == "running")

    with serve(home, env={"ATELIER_LOCAL_STEP_MS": "0"}):
        deadline = time.monotonic() + 30
        while any(r["status"] != "completed" for r in _ledger(home)):
            assert time.monotonic() < deadline, [r["status"] for r in _ledger(home)]
            await anyio.sleep(0.1)

    after = {r["id"]: r for r in _ledger(home)}
    assert len(after) == RUNS
    assert after[interrupted]["attempts"] == 2
    for run_id, row in after.items():
        inputs = json.loads(row["inputs"])
        folder = home / "artifacts" / "runs" / run_id
        files = sorted(p.name for p in folder.iterdir())
        assert files == [f"image-{i:02d}.png" for i in range(1, COUNT + 1)]
        assert sorted(row["files"].split(",")) == files
        for index, name in enumerate(files):
            expected = render_png(inputs["prompt"], "", inputs["seed"] + index, 64, 64)
            assert hashlib.sha256((folder / name).read_bytes()).digest() == hashlib.sha256(expected).digest()

    # The counts the ledger keeps (health, metrics, lists' totals) came through the kill too.
    conn = sqlite3.connect(home / "ledger.sqlite3")
    try:
        kept = dict(conn.execute("SELECT status, SUM(n) FROM run_counts GROUP BY status").fetchall())
    finally:
        conn.close()
    assert {status: n for status, n in kept.items() if n} == {"completed": RUNS}
