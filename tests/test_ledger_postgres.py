"""What only the PostgreSQL ledger has: migrations shared by nodes that start together, writers on
several nodes at once, a server that cannot be reached or that closed our connections, and a URL
whose password is never shown. (Everything the port promises is
checked on both adapters by the other ledger tests.)"""

from __future__ import annotations

import random
import subprocess
import sys
import time
from pathlib import Path

import anyio
import pytest

from core.errors import InvalidInput, LedgerUnavailable
from core.ledger.postgres import PostgresLedger
from core.models import RunStatus
from core.settings import Settings
from tests.ledgers import LedgerPlace, postgres_schema
from tests.procs import free_port
from tests.test_ledger import new_run
from tests.test_ledger_counts import assert_counts_match_a_scan

pytestmark = pytest.mark.anyio

OPENER = """
import sys, time, anyio
from core.ledger.postgres import PostgresLedger
from core.models import Priority, Run, RunKind, RunStatus
from core.ids import new_run_id

async def main():
    ledger = PostgresLedger.open(sys.argv[1])
    try:
        time.sleep(max(0.0, float(sys.argv[2]) - time.time()))
        run = Run(id=new_run_id(), seq=0, kind=RunKind.IMAGE, status=RunStatus.QUEUED,
                  priority=Priority.NORMAL, inputs={}, backend="local", created_at=time.time())
        await ledger.insert_run(run)
        print(await ledger.schema_version())
    finally:
        await ledger.close()

anyio.run(main)
"""


def test_nodes_starting_together_on_a_new_database_migrate_it_once() -> None:
    root = Path(__file__).resolve().parents[1]
    with postgres_schema() as url:
        start = time.time() + 1.5
        openers = [
            subprocess.Popen(
                [sys.executable, "-c", OPENER, url, str(start)],
                cwd=root,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for _ in range(6)
        ]
        for opener in openers:
            out, err = opener.communicate(timeout=60)
            assert opener.returncode == 0 and out.strip() == "1", err
        place = LedgerPlace("postgres", url=url)
        assert [row[0] for row in place.raw("SELECT version FROM schema_version")] == [1]
        assert place.raw("SELECT COUNT(*) FROM runs") == [(6,)]
        assert place.raw("SELECT SUM(n) FROM run_counts") == [(6,)]


async def test_an_unreachable_server_is_unavailable_at_once_and_its_password_never_shown() -> None:
    url = f"postgresql://atelier:s3cret-pw@127.0.0.1:{free_port()}/atelier"
    started = time.monotonic()
    ledger = PostgresLedger.open(url, timeout_s=1)  # connects nothing yet
    assert time.monotonic() - started < 0.5
    try:
        with pytest.raises(LedgerUnavailable) as caught:
            await ledger.insert_run(new_run())
        assert time.monotonic() - started < 5
        message = str(caught.value)
        assert "s3cret-pw" not in message and "atelier:***@127.0.0.1" in message, message
        assert "nothing was changed" in message
        assert ledger.where == url.replace("s3cret-pw", "***")
    finally:
        await ledger.close()


def test_the_database_url_setting_keeps_its_password_out_of_sight() -> None:
    settings = Settings.from_env({"ATELIER_DATABASE_URL": "postgresql://bob:hunter2@db.lan:5433/atelier"})
    assert "hunter2" not in repr(settings) and "hunter2" not in str(settings.model_dump())
    assert settings.database_where == "postgresql://bob:***@db.lan:5433/atelier"
    query = Settings.from_env({"ATELIER_DATABASE_URL": "postgresql://db.lan/atelier?password=hunter2"})
    assert query.database_where == "postgresql://db.lan/atelier?password=***"
    with pytest.raises(InvalidInput) as caught:
        Settings.from_env({"ATELIER_DATABASE_URL": "mysql://bob:hunter2@db.lan/atelier"})
    assert "hunter2" not in str(caught.value)
    assert Settings.from_env({}).database_url is None  # the embedded SQLite ledger by default


async def test_the_schema_is_versioned_and_json_columns_are_jsonb() -> None:
    with postgres_schema() as url:
        ledger = PostgresLedger.open(url)
        try:
            assert await ledger.schema_version() == 1
            run = await ledger.insert_run(new_run(inputs={"prompt": "a harbour", "seed": 9}))
            place = LedgerPlace("postgres", url=url)
            # An operator can query what a run was asked for.
            assert place.raw("SELECT inputs->>'prompt' FROM runs WHERE id = ?", run.id) == [("a harbour",)]
        finally:
            await ledger.close()


async def test_connections_the_server_closed_are_replaced_without_failing_a_call() -> None:
    with postgres_schema() as url:
        name = f"atelier-test-{time.monotonic_ns()}"
        ledger = PostgresLedger.open(f"{url}&application_name={name}")
        try:
            run = await ledger.insert_run(new_run())
            # An administrator (or a server restart) ends every connection the ledger holds.
            place = LedgerPlace("postgres", url=url)
            ended = place.raw(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = ?", name
            )
            assert ended and all(row[0] for row in ended)
            stored = await ledger.get_run(run.id)
            assert stored is not None and stored.id == run.id
            place.raw(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = ?", name
            )
            assert (await ledger.update_run(run.id, message="still here")).message == "still here"  # type: ignore[union-attr]
        finally:
            await ledger.close()


async def test_counts_stay_exact_under_writers_on_several_nodes_at_once() -> None:
    """Three ledgers (three nodes' pools) move the same runs at once, in every direction: no
    transaction is lost to a deadlock, and the kept counts still say what a scan says."""
    with postgres_schema() as url:
        nodes = [PostgresLedger.open(url, pool_size=4) for _ in range(3)]
        try:
            runs = await nodes[0].insert_runs([new_run() for _ in range(20)])
            ids = [run.id for run in runs]

            async def writer(node: PostgresLedger, seed: int) -> None:
                chance = random.Random(seed)
                for _ in range(60):
                    action = chance.random()
                    if action < 0.8:
                        await node.update_run(chance.choice(ids), status=chance.choice(list(RunStatus)))
                    elif action < 0.9:
                        ids.append((await node.insert_run(new_run())).id)
                    else:
                        await node.delete_run(chance.choice(ids))

            async with anyio.create_task_group() as group:
                for index, node in enumerate(nodes):
                    for lane in range(3):
                        group.start_soon(writer, node, index * 10 + lane)
            await assert_counts_match_a_scan(nodes[1], LedgerPlace("postgres", url=url))
        finally:
            for node in nodes:
                await node.close()
