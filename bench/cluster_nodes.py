"""What the cluster benchmarks share: a fresh PostgreSQL database per round, `atelier worker`
processes on it (tests/dispatch_nodes.py's, with their logs), a front-door engine in the bench
process, and the exactly-once check read from the ledger and the task queue (SQL)."""

from __future__ import annotations

import os
import sys
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import anyio

from core.settings import Settings
from tests.dispatch_nodes import node_env, worker

# A loaded two-core machine must not make a live worker look dead (its runs would run twice):
# heartbeats and the stall verdict at a pace an operator would set, not the tests' hasty one.
PACE = {"ATELIER_WORKER_HEARTBEAT_S": "5", "ATELIER_WORKER_STALLED_S": "60", "ATELIER_LOG_LEVEL": "info"}


def admin_url(given: str | None) -> str:
    """--database-url, else ATELIER_TEST_DATABASE_URL, else the local server's `test` database."""
    return given or os.environ.get("ATELIER_TEST_DATABASE_URL") or "postgresql://root@127.0.0.1:5432/test"


@contextmanager
def fresh_database(admin: str, synchronous_commit: bool = True) -> Iterator[str]:
    """The URL of a new database on `admin`'s server, dropped when the block ends. Without
    `synchronous_commit`, its commits return before their WAL reaches the disk (a reference for
    what those flushes cost, not a setting to run a ledger with)."""
    import psycopg

    name = f"atelier_b_{uuid.uuid4().hex[:16]}"
    with psycopg.connect(admin, autocommit=True, connect_timeout=5) as conn:
        conn.execute(f"CREATE DATABASE {name}".encode())
        if not synchronous_commit:
            conn.execute(f"ALTER DATABASE {name} SET synchronous_commit = off".encode())
    try:
        yield urlunsplit(urlsplit(admin)._replace(path=f"/{name}", query=""))
    finally:
        with psycopg.connect(admin, autocommit=True, connect_timeout=5) as conn:
            conn.execute(f"DROP DATABASE {name} WITH (FORCE)".encode())


@contextmanager
def workers(url: str, where: Path, envs: list[dict[str, str]], step_ms: str = "0") -> Iterator[list[Path]]:
    """One `atelier worker` per entry of `envs` (its extra settings), each with a data directory
    of its own under `where` (a box of its own), started at once; yields their log files once all
    have started, and stops them (SIGTERM) when the block ends."""
    where.mkdir(parents=True, exist_ok=True)
    logs = [where / f"worker-{index}.log" for index in range(len(envs))]
    with ExitStack() as stack, ThreadPoolExecutor(max_workers=len(envs)) as starting:
        started = [
            starting.submit(
                stack.enter_context,
                worker(where / f"worker-{index}", url, logs[index], step_ms=step_ms, **{**PACE, **env}),
            )
            for index, env in enumerate(envs)
        ]
        for future in started:
            future.result()
        yield logs


def front_door_settings(url: str, home: Path, **env: str) -> Settings:
    """A node that accepts runs and executes none (as `atelier serve` without --execute)."""
    return Settings.from_env(node_env(url, **{**PACE, "ATELIER_LOG_LEVEL": "warning", **env}), home=home)


async def until_finished(url: str, runs: int, timeout_s: float, every_s: float = 0.02) -> tuple[float, float]:
    """(the ledger's first start time, its latest finish time), once `runs` runs have finished
    (polled on one connection)."""
    import psycopg

    query = (
        b"SELECT COUNT(*) FILTER (WHERE status IN ('completed', 'failed', 'cancelled')), "
        b"MIN(started_at), MAX(finished_at) FROM runs"
    )
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        with anyio.fail_after(timeout_s):
            while True:
                row = await (await conn.execute(query)).fetchone()
                assert row is not None
                if row[0] >= runs:
                    return float(row[1]), float(row[2])
                await anyio.sleep(every_s)


def exactly_once(url: str, run_ids: list[str]) -> list[str]:
    """What is wrong, per the ledger and procrastinate's jobs: a run not completed, run more than
    once (attempts != 1), with other than one job (succeeded) or other than one image."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        found: dict[str, Any] = {
            row[0]: row[1:]
            for row in conn.execute(
                b"SELECT r.id, r.status, r.attempts, "
                b"(SELECT COUNT(*) FROM artifacts a WHERE a.run_id = r.id), "
                b"(SELECT COUNT(*) FROM procrastinate_jobs j WHERE j.args->>'run_id' = r.id), "
                b"(SELECT COUNT(*) FROM procrastinate_jobs j WHERE j.args->>'run_id' = r.id "
                b"AND j.status = 'succeeded') "
                b"FROM runs r WHERE r.id = ANY(%s)",
                (run_ids,),
            )
        }
    wrong = []
    for run_id in run_ids:
        if run_id not in found:
            wrong.append(f"{run_id}: not in the ledger")
            continue
        status, attempts, images, jobs, succeeded = found[run_id]
        if (status, attempts, images, jobs, succeeded) != ("completed", 1, 1, 1, 1):
            wrong.append(
                f"{run_id}: {status}, attempts {attempts}, images {images}, jobs {jobs} ({succeeded} succeeded)"
            )
    return wrong


def load() -> str:
    """The load averages (1, 5, 15 min) on this machine, for the figures beside them."""
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


def commit_cost(admin: str, synchronous_commit: bool = True, commits: int = 200) -> float:
    """Seconds per one-row INSERT and commit, one after another, in a fresh database on `admin`'s
    server: what each of a run's ledger and task-queue writes pays at least."""
    import psycopg

    with fresh_database(admin, synchronous_commit) as url, psycopg.connect(url, autocommit=True) as conn:
        conn.execute(b"CREATE TABLE bench_commits (n bigint)")
        started = time.perf_counter()
        for n in range(commits):
            conn.execute(b"INSERT INTO bench_commits VALUES (%s)", (n,))
        return (time.perf_counter() - started) / commits


def explain(logs: list[Path], wrong: list[str], lines: int = 20) -> None:
    """Print (stderr) what the workers logged about the runs in `wrong`, and their warnings and errors."""
    ids = [problem.split(":", 1)[0] for problem in wrong]
    for log in logs:
        said = [
            line
            for line in log.read_text(errors="replace").splitlines()
            if " WARNING " in line or " ERROR " in line or any(run_id in line for run_id in ids)
        ]
        print(f"--- {log}", *said[-lines:], sep="\n", file=sys.stderr)
