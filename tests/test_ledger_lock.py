"""Another process holding the ledger's write lock: the server keeps answering, waits, and carries on.

A real `atelier serve` and a real second process (`sqlite3`, `BEGIN IMMEDIATE`) that holds the
write lock for longer than the server's busy timeout, as a backup tool or a stuck client would.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.procs import serve

HOLD_S = 4.0
BUSY_TIMEOUT_S = 1.0

LOCKER = """
import sqlite3, sys, time
conn = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=30)
conn.execute("BEGIN IMMEDIATE")
print("locked", flush=True)
time.sleep(float(sys.argv[2]))
conn.execute("COMMIT")
"""


def test_a_locked_ledger_never_stops_the_server(tmp_path: Path) -> None:
    home = tmp_path / "home"
    env = {"ATELIER_LEDGER_BUSY_TIMEOUT_S": str(BUSY_TIMEOUT_S), "ATELIER_LOCAL_STEP_MS": "50"}
    with serve(home, env=env) as server, httpx.Client(base_url=server.url, timeout=10) as http:
        body = {"prompt": "a tide pool", "width": 64, "height": 64, "steps": 40}
        before = [http.post("/adgen/generate", json=body).json()["run_id"] for _ in range(3)]

        locker = subprocess.Popen(
            [sys.executable, "-c", LOCKER, str(home / "ledger.sqlite3"), str(HOLD_S)],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert locker.stdout is not None and locker.stdout.readline().strip() == "locked"
        locked_at = time.monotonic()

        slowest = 0.0
        refused = None
        while locker.poll() is None:
            started = time.monotonic()
            health = http.get("/health")
            slowest = max(slowest, time.monotonic() - started)
            assert health.status_code in (200, 503)
            if refused is None and time.monotonic() - locked_at > 0.5:
                # A write waits for the lock off the event loop, then is refused in the contract's shape.
                refused = http.post("/adgen/generate", json=body)
            time.sleep(0.02)
        assert locker.returncode == 0
        assert server.process.poll() is None, "the server exited while the ledger was locked"
        assert slowest < 0.1, f"/health took {slowest * 1000:.0f} ms while the ledger was locked"

        assert refused is not None and refused.status_code == 503, refused.text if refused else None
        assert "locked by another process" in refused.json()["detail"]
        assert refused.headers["retry-after"]

        # Once the lock is gone, everything accepted before it finishes, once.
        deadline = time.monotonic() + 30
        for run_id in before:
            while (run := http.get(f"/adgen/runs/{run_id}").json())["status"] != "COMPLETED":
                assert run["status"] in ("PENDING", "RUNNING"), run
                assert time.monotonic() < deadline, run
                time.sleep(0.05)
        after = http.post("/adgen/generate", json={**body, "steps": 2})
        assert after.status_code < 300, after.text
        assert http.get("/health").status_code == 200
        assert server.process.poll() is None
