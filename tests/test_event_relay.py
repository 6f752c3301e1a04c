"""Events across nodes through PostgreSQL LISTEN/NOTIFY: two engines in one process, each with its
own relay on the same channel of a real PostgreSQL server (see `tests/relay_nodes.py`).

What node B's subscribers see (its EventBus, `wait`, its health report) of runs node A executes
is what an MCP client, a WebSocket or an SSE stream on B is given (`test_event_relay_doors.py`
checks two of those end to end).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import anyio
import pytest

from core import factory
from core.backends import Progress
from core.engine import Engine
from core.events import Event, Subscription
from core.models import RunStatus
from core.relay import MAX_PAYLOAD_BYTES, NoRelay, Outbox, RelayMessage
from core.settings import Settings
from tests.scripted_backend import wait_until

pytestmark = pytest.mark.anyio

psycopg = pytest.importorskip("psycopg")
from core.relay_postgres import PostgresRelay  # noqa: E402 - needs psycopg
from tests.relay_nodes import WAIT, new_channel, node_settings, reachable_database, two_nodes  # noqa: E402

# What a payload may say: who sent it, which run, what happened, how far it is. Nothing else.
PAYLOAD_FIELDS = {"v", "node", "seq", "run", "kind", "status", "step", "max_steps", "message"} | {
    "loss",
    "eta_s",
}


@pytest.fixture(scope="module")
def database_url() -> str:
    return reachable_database()


@pytest.fixture
def channel() -> str:
    return new_channel()


def image(prompt: str, steps: int) -> dict[str, Any]:
    return {"prompt": prompt, "width": 64, "height": 64, "steps": steps}


async def until_final(subscription: Subscription, run_id: str, quiet_after_s: float = 0.5) -> list[Event]:
    """The run's events, up to its final state and then for `quiet_after_s` more (to see that
    nothing comes twice)."""
    events: list[Event] = []
    with anyio.fail_after(WAIT):
        while not any(e.kind == "run" and e.run is not None and e.run.status.is_final for e in events):
            event = await subscription.get()
            if event.run_id == run_id:
                events.append(event)
    with anyio.move_on_after(quiet_after_s):
        while True:
            event = await subscription.get()
            if event.run_id == run_id:
                events.append(event)
    return events


async def test_progress_and_final_state_of_a_run_on_node_a_reach_node_b(
    database_url: str, channel: str, tmp_path: Path
) -> None:
    async with two_nodes(node_settings(tmp_path, step_ms=20), database_url, channel) as (a, b):
        with b.events.subscribe(None) as on_b:
            run = await a.submit_image(image("a lighthouse", steps=20))
            events = await until_final(on_b, run.id)

        steps = [e.progress.step for e in events if e.kind == "progress" and e.progress]
        assert steps == sorted(steps) and len(steps) >= 3, steps
        assert steps[-1] == 20  # the last step always goes out
        changes = [e.run for e in events if e.kind == "run"]
        assert all(r is not None for r in changes)
        # The run as the ledger has it: the whole snapshot, images and all, as on node A.
        final = changes[-1]
        assert final is not None and final.status is RunStatus.COMPLETED
        assert final.artifacts and final == await a.get_run(run.id)
        # Nothing after the final state: its events came once.
        assert events[-1].kind == "run"


async def test_each_node_sees_each_event_once_and_nothing_heard_is_sent_again(
    database_url: str, channel: str, tmp_path: Path
) -> None:
    async with two_nodes(node_settings(tmp_path, step_ms=5), database_url, channel) as (a, b):
        with a.events.subscribe(None) as on_a, b.events.subscribe(None) as on_b:
            run = await a.submit_image(image("a harbour", steps=10))
            seen_on_a = await until_final(on_a, run.id)
            seen_on_b = await until_final(on_b, run.id)

        # queued, running, completed: three changes, each once on each node (A does not hear its
        # own NOTIFY back; B does not echo what it heard).
        assert [e.run.status for e in seen_on_a if e.kind == "run" and e.run] == [
            RunStatus.QUEUED,
            RunStatus.RUNNING,
            RunStatus.COMPLETED,
        ]
        assert len([e for e in seen_on_b if e.kind == "run"]) == 3
        health_a, health_b = (await a.status())["relay"], (await b.status())["relay"]
        assert health_a["received"] == 0 and health_b["sent"] == 0
        assert health_b["received"] == health_a["sent"] > 0


async def test_fast_progress_is_throttled_and_its_last_step_still_arrives(
    database_url: str, channel: str, tmp_path: Path
) -> None:
    async with two_nodes(node_settings(tmp_path, step_ms=0), database_url, channel) as (a, b):
        with b.events.subscribe(None) as on_b:
            run = await a.submit_image(image("a storm", steps=150))
            events = await until_final(on_b, run.id)

        steps = [e.progress.step for e in events if e.kind == "progress" and e.progress]
        assert steps[-1] == 150
        assert len(steps) <= 10, steps  # 150 steps at 0 ms/step, at most ~10 a second per run
        assert (await a.status())["relay"]["sent"] <= 15


async def test_wait_on_the_node_that_does_not_execute_the_run_follows_its_progress(
    database_url: str, channel: str, tmp_path: Path
) -> None:
    """Without a relay, node B would read the ledger, where progress lands once a second."""
    async with two_nodes(node_settings(tmp_path, step_ms=25), database_url, channel) as (a, b):
        run = await a.submit_image(image("a windmill", steps=24))
        reported: list[int] = []
        started = time.monotonic()
        done = await b.wait(run.id, WAIT, on_progress=lambda _run, p: reported.append(p.step))
        assert done.status is RunStatus.COMPLETED and done.artifacts
        assert time.monotonic() - started < 3.0
        assert len(set(reported)) >= 3 and reported[-1] == 24, reported


async def test_a_waiter_on_a_node_that_hears_nothing_still_sees_the_run_finish(
    database_url: str, channel: str, tmp_path: Path
) -> None:
    """Node A sends nothing (no relay): the waiter on B finds the end in the ledger."""
    settings = node_settings(tmp_path, step_ms=5)
    relay_b = PostgresRelay(database_url, channel=channel)
    async with (
        Engine.open(settings) as a,
        Engine.open(settings, role="client", relay=relay_b) as b,
    ):
        await wait_until(lambda: relay_b.health()["up"], WAIT, "B's relay up")
        run = await a.submit_image(image("a quiet lake", steps=5))
        done = await b.wait(run.id, WAIT)
        assert done.status is RunStatus.COMPLETED


async def backend_pids(url: str, application_name: str) -> list[int]:
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as admin:
        cursor = await admin.execute(
            "SELECT pid FROM pg_stat_activity WHERE application_name = %s", (application_name,)
        )
        return [pid for (pid,) in await cursor.fetchall()]


async def terminate(url: str, application_name: str) -> None:
    """Kill the server side of the relay's connection, as a database restart or a network cut does."""
    pids = await backend_pids(url, application_name)
    assert len(pids) == 1, pids
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as admin:
        await admin.execute("SELECT pg_terminate_backend(%s)", (pids[0],))


async def test_listening_survives_its_connection_being_killed_and_catches_up(
    database_url: str, channel: str, tmp_path: Path
) -> None:
    async with two_nodes(node_settings(tmp_path, step_ms=20), database_url, channel, b_backoff_s=2.0) as (
        a,
        b,
    ):
        run = await a.submit_image(image("a night train", steps=20))
        with b.events.subscribe(run.id) as follower_on_b:  # a WebSocket on B follows the run
            await terminate(database_url, f"atelier-events-listen {b.relay.node}")
            await wait_until(
                lambda: not b.relay.health()["listening"], WAIT, "B reports it stopped listening"
            )
            down = await b.status()
            assert down["relay"]["state"] == "down" and down["relay"]["last_error"]
            assert not down["healthy"]
            # The run ends while B cannot listen: its NOTIFYs are lost to B...
            assert (await a.wait(run.id, WAIT)).status is RunStatus.COMPLETED
            await wait_until(lambda: b.relay.health()["up"], WAIT, "B listening again")
            # ...and once B listens again, whoever follows the run there gets it as it is now.
            with anyio.fail_after(WAIT):
                while True:
                    event = await follower_on_b.get()
                    if event.kind == "run" and event.run and event.run.status.is_final:
                        break
            assert event.run is not None and event.run.status is RunStatus.COMPLETED
        up = await b.status()
        assert up["healthy"] and up["relay"]["state"] == "up" and up["relay"]["reconnects"] >= 1

        # And it hears new runs as before.
        with b.events.subscribe(None) as on_b:
            again = await a.submit_image(image("a morning train", steps=5))
            events = await until_final(on_b, again.id, quiet_after_s=0)
        assert events[-1].run is not None and events[-1].run.status is RunStatus.COMPLETED


async def test_sending_survives_its_connection_being_killed(
    database_url: str, channel: str, tmp_path: Path
) -> None:
    async with two_nodes(node_settings(tmp_path, step_ms=25), database_url, channel) as (a, b):
        await terminate(database_url, f"atelier-events-send {a.relay.node}")
        # A finds out on its next NOTIFY: that message is lost (counted), A reconnects, and the
        # rest of the run (its end at least) reaches B.
        with b.events.subscribe(None) as on_b:
            run = await a.submit_image(image("a ferry", steps=60))
            await wait_until(lambda: a.relay.health()["dropped"] >= 1, WAIT, "A drops what it cannot send")
            events = await until_final(on_b, run.id, quiet_after_s=0)
        assert events[-1].run is not None and events[-1].run.status is RunStatus.COMPLETED
        health = (await a.status())["relay"]
        assert health["up"] and health["reconnects"] >= 1 and health["last_error"].startswith("sending")


async def test_payloads_carry_progress_and_status_never_inputs(
    database_url: str, channel: str, tmp_path: Path
) -> None:
    payloads: list[str] = []
    async with (
        await psycopg.AsyncConnection.connect(database_url, autocommit=True) as eavesdropper,
        two_nodes(node_settings(tmp_path, step_ms=5), database_url, channel) as (a, _b),
    ):
        await eavesdropper.execute(f"LISTEN {channel}")
        run = await a.submit_image(
            {**image("a secret lighthouse", steps=8), "negative_prompt": "blurry fog", "seed": 424242}
        )
        assert (await a.wait(run.id, WAIT)).status is RunStatus.COMPLETED
        with anyio.fail_after(WAIT):
            async for notify in eavesdropper.notifies():
                payloads.append(notify.payload)
                if '"status":"completed"' in notify.payload and '"kind":"run"' in notify.payload:
                    break

    assert payloads
    for payload in payloads:
        assert len(payload.encode()) < 8000
        fields = json.loads(payload)
        assert set(fields) <= PAYLOAD_FIELDS, payload
        assert fields["run"] == run.id and fields["node"] == a.relay.node
        for secret in ("secret", "lighthouse", "blurry", "fog", "424242"):
            assert secret not in payload


async def test_the_outbox_keeps_a_runs_latest_step_for_its_turn_and_sends_the_last_at_once() -> None:
    outbox = Outbox(per_s=10)
    for step in range(1, 100):
        outbox.put(RelayMessage.of_progress("n", step, "r" * 26, Progress(step, 200)))
    first = await outbox.get(0)
    assert first is not None and first.step == 1
    assert await outbox.get(0) is None  # 2..99 wait for the run's turn; only the latest is kept
    started = time.monotonic()
    held = await outbox.get(1.0)
    assert held is not None and held.step == 99 and 0.05 <= time.monotonic() - started <= 0.5
    outbox.put(RelayMessage.of_progress("n", 100, "r" * 26, Progress(150, 200)))
    outbox.put(RelayMessage.of_progress("n", 101, "r" * 26, Progress(200, 200)))  # the last step
    last = await outbox.get(0)
    assert last is not None and last.step == 200  # at once, the one it replaced dropped
    outbox.accepting = False  # the connection is down: dropped and counted, never kept
    outbox.put(RelayMessage("n", 102, "r" * 26, "deleted"))
    assert await outbox.get(0) is None and outbox.dropped == 1


def test_a_long_message_is_shortened_to_fit_a_notify() -> None:
    progress = Progress(3, 10, "x" * 20_000 + "é" * 5000, loss=0.25, eta_s=float("nan"))
    payload = RelayMessage.of_progress("node1", 7, "0" * 26, progress).encode()
    assert len(payload.encode()) <= MAX_PAYLOAD_BYTES
    heard = RelayMessage.decode(payload)
    assert heard is not None and (heard.step, heard.max_steps, heard.loss, heard.eta_s) == (3, 10, 0.25, None)
    assert RelayMessage.decode('{"v": 1, "kind": "run", "node": "x"}') is None  # not ours: ignored
    assert RelayMessage.decode("hello") is None


async def test_start_up_never_waits_for_the_database_and_health_says_the_relay_is_down(
    tmp_path: Path,
) -> None:
    """Nothing listens on port 1: the engine opens and runs at once; the password never shows."""
    url = "postgresql://atelier:hunter2@127.0.0.1:1/atelier"
    settings = Settings.from_env({"ATELIER_DATABASE_URL": url}, home=tmp_path / "home", local_step_ms=0)
    assert isinstance(factory.make_relay(settings), PostgresRelay)
    assert isinstance(factory.make_relay(node_settings(tmp_path, 0)), NoRelay)
    started = time.monotonic()
    async with Engine.open(node_settings(tmp_path, 0), relay=PostgresRelay(url)) as engine:
        run = await engine.submit_image(image("an island", steps=4))
        assert (await engine.wait(run.id, WAIT)).status is RunStatus.COMPLETED
        assert time.monotonic() - started < 3.0
        await wait_until(lambda: engine.relay.health()["last_error"] is not None, WAIT, "a connect failure")
        status = await engine.status()
    assert not status["healthy"] and status["relay"]["state"] == "down"
    assert status["relay"]["dropped"] >= 1
    assert "hunter2" not in json.dumps(status)


async def test_a_single_box_has_no_relay_and_stays_healthy(tmp_path: Path) -> None:
    async with Engine.open(node_settings(tmp_path, 0)) as engine:
        status = await engine.status()
    assert status["relay"] == {"enabled": False} and status["healthy"]
