"""Nodes of a procrastinate dispatch for the tests: a fresh PostgreSQL database, `atelier worker`
processes (real ones, their output in a log file), fake ComfyUI servers for them, and reading the ledger and the task queue as an
operator would (SQL)."""

from __future__ import annotations

import os
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import anyio
import httpx
import pytest

from tests.fakes.comfyui import FakeComfyUI, serve_fake
from tests.ledgers import TEST_DATABASE_URL
from tests.procs import atelier_command, atelier_env

T = TypeVar("T")
STEP_MS = "50"
# The tests that start several nodes on PostgreSQL run one after another in one xdist worker
# (`make test` passes --dist loadgroup): each node opens connections of its own (ledger pool,
# task queue, event relay), and four such tests at once went past PostgreSQL's default 100.
NODES = pytest.mark.xdist_group("postgres-nodes")


def cannot_run(reason: str) -> Any:
    if os.environ.get("CI"):
        pytest.fail(f"the PostgreSQL tests must run in CI: {reason}", pytrace=False)
    pytest.skip(reason)


@contextmanager
def fresh_database() -> Iterator[str]:
    """The URL of a fresh database (dropped afterwards) for the nodes of a test module. Skipped
    when PostgreSQL cannot be reached, except in CI (`CI` set), where that fails."""
    try:
        import procrastinate  # noqa: F401
        import psycopg
    except ImportError as exc:
        cannot_run(f"the postgres extra is not installed ({exc})")
    name = f"atelier_d_{uuid.uuid4().hex[:16]}"
    try:
        admin = psycopg.connect(TEST_DATABASE_URL, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:
        cannot_run(f"PostgreSQL at {TEST_DATABASE_URL} cannot be reached: {exc}")
    with admin:
        admin.execute(f"CREATE DATABASE {name}".encode())
        try:
            yield urlunsplit(urlsplit(TEST_DATABASE_URL)._replace(path=f"/{name}", query=""))
        finally:
            admin.execute(f"DROP DATABASE {name} WITH (FORCE)".encode())


def rows(url: str, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        cursor = conn.execute(sql.encode(), args)
        return cursor.fetchall() if cursor.description else []


def node_env(url: str, **extra: str) -> dict[str, str]:
    return {
        "ATELIER_DATABASE_URL": url,
        "ATELIER_DISPATCH": "procrastinate",
        "ATELIER_DATABASE_POOL_SIZE": "4",
        "ATELIER_LOCAL_STEP_MS": STEP_MS,
        "ATELIER_WORKER_HEARTBEAT_S": "0.5",
        "ATELIER_WORKER_STALLED_S": "2",
        **extra,
    }


@contextmanager
def worker(
    home: Path, url: str, log: Path, *args: str, step_ms: str = STEP_MS, **env: str
) -> Iterator[subprocess.Popen[bytes]]:
    """`atelier worker` (its output in `log`), once procrastinate's worker has started; stopped
    (SIGTERM) when the block ends, unless the test killed it."""
    with log.open("wb") as out:
        process = subprocess.Popen(
            [*atelier_command(), "worker", *args],
            env=atelier_env(home, **node_env(url, ATELIER_LOCAL_STEP_MS=step_ms, **env)),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_for(lambda: "Starting worker" in log.read_text() or process.poll() is not None, 60)
        assert process.poll() is None, log.read_text()
        yield process
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)


def wait_for(check: Callable[[], T], timeout: float, every: float = 0.1) -> T:
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result or time.monotonic() > deadline:
            assert result, f"not within {timeout} s"
            return result
        time.sleep(every)


def submit(base: str, prompt: str, steps: int) -> str:
    answer = httpx.post(
        f"{base}/adgen/generate",
        json={"prompt": prompt, "width": 64, "height": 64, "steps": steps, "seed": 1},
        timeout=10,
    )
    assert answer.status_code == 200, answer.text
    return answer.json()["run_id"]


def status_of(base: str, run_id: str) -> dict[str, Any]:
    answer = httpx.get(f"{base}/adgen/runs/{run_id}", timeout=10)
    assert answer.status_code == 200, answer.text
    return answer.json()


def ledger_run(url: str, run_id: str) -> tuple[str, int, int]:
    """(status, attempts, step) as the ledger has them."""
    [row] = rows(url, "SELECT status, attempts, step FROM runs WHERE id = %s", run_id)
    return row


@contextmanager
def fake_comfyui(prompt_seconds: float) -> Iterator[tuple[FakeComfyUI, str]]:
    """A fake ComfyUI server on a loopback port, in a thread of its own (the nodes are processes)."""
    fake = FakeComfyUI(prompt_seconds=prompt_seconds)
    ready: list[str] = []
    stop = threading.Event()

    async def run() -> None:
        async with serve_fake(fake) as server:
            ready.append(server.url)
            while not stop.is_set():
                await anyio.sleep(0.05)

    thread = threading.Thread(target=anyio.run, args=(run,), daemon=True)
    thread.start()
    try:
        wait_for(lambda: ready, 10)
        yield fake, ready[0]
    finally:
        stop.set()
        thread.join(10)


def comfyui_env(*urls: str) -> dict[str, str]:
    """A node's settings for rendering on these ComfyUI servers."""
    return {"ATELIER_BACKEND": "comfyui", "ATELIER_COMFYUI_URLS": ",".join(urls)}
