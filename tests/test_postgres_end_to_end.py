"""Atelier on a PostgreSQL ledger, end to end: `atelier serve` with ATELIER_DATABASE_URL makes a
preview run through the AdGen contract, and a second server on another data directory reads it
back from the database; an engine started while its database is down starts anyway, reports the
outage, and runs what was queued once the database answers (through a real TCP path that the test
opens late)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import anyio
import anyio.abc
import httpx
import pytest

from core.engine import Engine
from core.ledger.postgres import PostgresLedger
from core.models import Run, RunStatus
from core.settings import Settings
from tests.dispatch_nodes import NODES
from tests.ledgers import LedgerPlace, postgres_schema
from tests.procs import free_port, serve
from tests.scripted_backend import ScriptedBackend, wait_until

pytestmark = [pytest.mark.anyio, NODES]
# Trust authentication ignores a password; one in the URL must still never be shown.
PASSWORD = "not-shown-anywhere"


def with_password(url: str) -> str:
    parts = urlsplit(url)
    host = f"{parts.username or 'root'}:{PASSWORD}@{parts.hostname}:{parts.port or 5432}"
    return urlunsplit(parts._replace(netloc=host))


def with_port(url: str, port: int) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(netloc=f"{parts.username or 'root'}@127.0.0.1:{port}"))


def test_serve_on_postgres_makes_a_run_that_another_node_reads_back(tmp_path: Path) -> None:
    with postgres_schema() as schema_url:
        url = with_password(schema_url)
        env = {"ATELIER_DATABASE_URL": url, "ATELIER_LOCAL_STEP_MS": "0"}
        with serve(tmp_path / "node-a", env=env) as server:
            started = httpx.post(
                f"{server.url}/adgen/generate",
                json={"prompt": "a lighthouse at dusk", "seed": 7, "width": 64, "height": 64, "steps": 2},
                timeout=10,
            )
            assert started.status_code == 200, started.text
            run_id = started.json()["run_id"]
            finalized = httpx.post(f"{server.url}/adgen/finalize/{run_id}", timeout=30).json()
            assert finalized["status"] == "COMPLETED"
            [artifact] = finalized["artifacts"]
            image = httpx.get(f"{server.url}{artifact['url']}", timeout=10)
            assert image.status_code == 200 and image.headers["content-type"] == "image/png"
            health = httpx.get(f"{server.url}/health", timeout=10)
            assert health.status_code == 200 and PASSWORD not in health.text
            assert health.json()["ledger"]["ok"] is True, health.text
            server.process.terminate()
            output, _ = server.process.communicate(timeout=15)
            assert PASSWORD not in output.decode()
            assert "ledger at postgresql://root:***@127.0.0.1:" in output.decode()

        place = LedgerPlace("postgres", url=schema_url)
        assert place.raw("SELECT status FROM runs WHERE id = ?", run_id) == [("completed",)]
        assert place.raw("SELECT filename FROM artifacts WHERE run_id = ?", run_id) == [
            (artifact["filename"],)
        ]

        # Another node, with a data directory of its own, answers from the same ledger.
        with serve(tmp_path / "node-b", env=env) as other:
            detail = httpx.get(f"{other.url}/adgen/runs/{run_id}", timeout=10)
            assert detail.status_code == 200, detail.text
            assert detail.json()["status"] == "COMPLETED"
            assert detail.json()["inputs"]["prompt"] == "a lighthouse at dusk"


async def stored_runs(url: str, runs: list[Run]) -> list[Run]:
    """The runs as the database holds them, read by a ledger of its own."""
    ledger = PostgresLedger.open(url)
    try:
        return [await ledger.get_run(run.id) for run in runs]  # type: ignore[misc]
    finally:
        await ledger.close()


@asynccontextmanager
async def tcp_path(port: int, to_port: int) -> AsyncIterator[None]:
    """A TCP forwarder from loopback `port` to `to_port`, for as long as the block runs."""

    async def pipe(source: anyio.abc.ByteStream, sink: anyio.abc.ByteStream) -> None:
        try:
            async for chunk in source:
                await sink.send(chunk)
        except (anyio.BrokenResourceError, anyio.ClosedResourceError):
            pass
        finally:
            await sink.aclose()

    async def forward(client: anyio.abc.SocketStream) -> None:
        server = await anyio.connect_tcp("127.0.0.1", to_port)
        async with client, server, anyio.create_task_group() as group:
            group.start_soon(pipe, client, server)
            group.start_soon(pipe, server, client)

    listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=port)
    async with listener, anyio.create_task_group() as group:
        group.start_soon(listener.serve, forward)
        yield
        group.cancel_scope.cancel()


async def test_an_engine_starts_while_its_database_is_down_and_runs_its_queue_once_it_answers(
    settings: Settings,
) -> None:
    with postgres_schema() as schema_url:
        # Runs another node accepted (and stopped before running) before this one starts.
        up = settings.model_copy(
            update={"database_url": Settings.from_env({}, database_url=schema_url).database_url}
        )
        held = ScriptedBackend(concurrency=1, hold_all=True)
        async with Engine.open(up, backends={"local": held}) as other:
            queued = [
                await other.submit_image({"prompt": f"harbour {i}", "width": 64, "height": 64, "steps": 2})
                for i in range(3)
            ]
            await wait_until(lambda: held.running == 1, what="a run to start")
        assert {run.status for run in await stored_runs(schema_url, queued)} == {RunStatus.QUEUED}

        port = free_port()  # nothing listens there yet: the database is "down"
        down = settings.model_copy(
            update={
                "database_url": Settings.from_env({}, database_url=with_port(schema_url, port)).database_url,
                "ledger_busy_timeout_s": 1.0,
            }
        )
        started = time.monotonic()
        async with Engine.open(down) as engine:
            assert time.monotonic() - started < 5, "start-up waited for the database"
            status = await engine.status()
            assert status["ledger"]["ok"] is False and status["healthy"] is False, status["ledger"]
            async with tcp_path(port, urlsplit(schema_url).port or 5432):
                for run in queued:
                    done = await engine.wait(run.id, 30)
                    assert done.status is RunStatus.COMPLETED, done
                    assert [a.filename for a in done.artifacts] == ["image-01.png"]
                assert (await engine.status())["ledger"]["ok"] is True
