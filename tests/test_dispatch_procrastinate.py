"""Dispatch across processes through procrastinate, end to end: real `atelier serve` front doors
and `atelier worker` processes on one PostgreSQL database (fresh for this module, dropped after).

A front door accepts runs (each run and its job in one transaction) and executes nothing; a
worker executes them, each exactly once (also 100 runs through two front doors and two workers);
a cancel sent to the front door stops a run on the worker; a worker killed with SIGKILL mid-run
has its run finished by another worker (its attempt counted, one set of images); a worker
stopped with SIGTERM hands its run back; a worker paused long enough to be presumed dead drops
its stale attempt when it wakes. The preview backend renders slowly (ATELIER_LOCAL_STEP_MS) so
runs are caught while they run; workers beat and give up on each other quickly
(ATELIER_WORKER_HEARTBEAT_S / _STALLED_S). The ComfyUI side is `test_dispatch_comfyui`.
"""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import suppress
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from tests.dispatch_nodes import (
    NODES,
    fresh_database,
    ledger_run,
    node_env,
    rows,
    status_of,
    submit,
    wait_for,
    worker,
)
from tests.procs import atelier_command, atelier_env, serve

pytestmark = NODES


@pytest.fixture(scope="module")
def database_url() -> Iterator[str]:
    with fresh_database() as url:
        yield url


def test_settings_refuse_procrastinate_without_a_database_and_a_hasty_stall_verdict() -> None:
    from core.errors import InvalidInput
    from core.settings import Settings

    with pytest.raises(InvalidInput, match=r"ATELIER_DISPATCH: .*needs ATELIER_DATABASE_URL"):
        Settings.from_env({"ATELIER_DISPATCH": "procrastinate"})
    with pytest.raises(InvalidInput, match=r"ATELIER_WORKER_STALLED_S: .*at least twice"):
        Settings.from_env({"ATELIER_WORKER_HEARTBEAT_S": "10", "ATELIER_WORKER_STALLED_S": "15"})
    with pytest.raises(InvalidInput, match="ATELIER_WORKER_QUEUES"):
        Settings.from_env({"ATELIER_WORKER_QUEUES": "image,gpu"})
    assert Settings.from_env({}).dispatch == "in-process"


def test_atelier_worker_needs_the_procrastinate_dispatch(tmp_path: Path) -> None:
    done = subprocess.run(
        [*atelier_command(), "worker"], env=atelier_env(tmp_path), capture_output=True, timeout=30
    )
    assert done.returncode == 2
    assert b"ATELIER_DISPATCH=procrastinate" in done.stderr


def test_a_front_door_queues_runs_and_a_worker_runs_each_exactly_once(
    tmp_path: Path, database_url: str
) -> None:
    home = tmp_path / "shared-home"  # one data directory for both: no home lock stops them
    with serve(home, env=node_env(database_url)) as front:
        run_ids = [submit(front.url, f"a lighthouse, take {i}", steps=4) for i in range(6)]
        # One job per run, deferred with it, in the image queue.
        jobs = rows(
            database_url,
            "SELECT args->>'run_id', queue_name, status FROM procrastinate_jobs WHERE args->>'run_id' = ANY(%s)",
            run_ids,
        )
        assert sorted(jobs) == sorted((run_id, "image", "todo") for run_id in run_ids)
        time.sleep(1.5)
        # The front door alone executes nothing.
        assert {status_of(front.url, r)["status"] for r in run_ids} == {"PENDING"}
        assert {ledger_run(database_url, r)[0] for r in run_ids} == {"queued"}
        health = httpx.get(f"{front.url}/health", timeout=10)
        assert health.status_code == 200, health.text
        assert health.json()["dispatch"] == {
            "executes": False,
            "mode": "procrastinate",
            "queues": {"image": {"waiting": 6, "running": 0}},
            "workers": 0,
        }

        with worker(home, database_url, tmp_path / "worker.log") as process:
            wait_for(lambda: {status_of(front.url, r)["status"] for r in run_ids} == {"COMPLETED"}, 25, 0.3)
            assert process.poll() is None
            # One procrastinate worker per queue of the `atelier worker`: image, training, publishing.
            assert httpx.get(f"{front.url}/health", timeout=10).json()["dispatch"]["workers"] == 3
            for run_id in run_ids:
                assert ledger_run(database_url, run_id) == ("completed", 1, 4)
                started = rows(
                    database_url,
                    "SELECT COUNT(*) FROM run_logs WHERE run_id = %s AND message = 'started'",
                    run_id,
                )
                assert started == [(1,)]
                [artifact] = status_of(front.url, run_id)["artifacts"]
                # The front door serves the image the worker wrote (they share the data directory).
                image = httpx.get(f"{front.url}{artifact['url']}", timeout=10)
                assert image.status_code == 200 and image.headers["content-type"] == "image/png"
            finished = rows(
                database_url,
                "SELECT status, COUNT(*) FROM procrastinate_jobs WHERE args->>'run_id' = ANY(%s) GROUP BY status",
                run_ids,
            )
            assert finished == [("succeeded", len(run_ids))]
        assert (tmp_path / "worker.log").read_text().count("Starting job atelier.execute_run") == 6


def test_a_cancel_sent_to_the_front_door_stops_the_run_on_the_worker(
    tmp_path: Path, database_url: str
) -> None:
    with (
        serve(tmp_path / "front", env=node_env(database_url)) as front,
        worker(tmp_path / "gpu-box", database_url, tmp_path / "worker.log", step_ms="150"),
    ):
        run_id = submit(front.url, "a slow harbour", steps=150)  # 22 s at 150 ms a step
        wait_for(lambda: ledger_run(database_url, run_id)[2] >= 2, 15)  # running on the worker
        answer = httpx.post(f"{front.url}/adgen/runs/{run_id}/cancel", timeout=10)
        assert answer.status_code == 200 and answer.json()["status"] == "CANCELLED", answer.text
        # The worker heard it (procrastinate's abort) and stopped the backend's work.
        wait_for(
            lambda: (
                rows(database_url, "SELECT status FROM procrastinate_jobs WHERE lock = %s", run_id)
                == [("aborted",)]
            ),
            10,
        )
        log = (tmp_path / "worker.log").read_text()
        assert f"run {run_id}: cancelled elsewhere; stopping it here" in log
        status, attempts, step = ledger_run(database_url, run_id)
        time.sleep(1.5)  # the worker writes progress every second while a run renders
        assert ledger_run(database_url, run_id) == (status, attempts, step) == ("cancelled", 1, step)
        assert step < 150
        assert not list((tmp_path / "gpu-box" / "artifacts").glob(f"**/{run_id}*"))
        # A queued run (not yet started) is simply withdrawn.
        run_ids = [submit(front.url, f"a queue of boats {i}", steps=150) for i in range(5)]
        last = run_ids[-1]  # the worker renders 2 at once, so this one waits
        httpx.post(f"{front.url}/adgen/runs/{last}/cancel", timeout=10)
        assert rows(database_url, "SELECT status FROM procrastinate_jobs WHERE lock = %s", last) == [
            ("cancelled",)
        ]
        for other in run_ids[:-1]:
            httpx.post(f"{front.url}/adgen/runs/{other}/cancel", timeout=10)


def test_a_killed_worker_s_run_finishes_on_another_worker_once(tmp_path: Path, database_url: str) -> None:
    logs = {name: tmp_path / f"{name}.log" for name in ("one", "two")}
    with (
        serve(tmp_path / "front", env=node_env(database_url)) as front,
        worker(tmp_path / "one", database_url, logs["one"]) as one,
        worker(tmp_path / "two", database_url, logs["two"]) as two,
    ):
        run_id = submit(front.url, "a lighthouse in a storm", steps=80)  # 4 s at 50 ms a step
        wait_for(lambda: ledger_run(database_url, run_id)[2] >= 2, 15)
        holder, other = (one, "two") if "Starting job" in logs["one"].read_text() else (two, "one")
        holder.kill()  # kill -9: no heartbeat, no hand back
        holder.wait(5)
        run = wait_for(
            lambda: (lambda s: s if s["status"] == "COMPLETED" else None)(status_of(front.url, run_id)),
            25,
            0.3,
        )
        assert ledger_run(database_url, run_id) == ("completed", 2, 80)
        assert "Starting job atelier.execute_run" in logs[other].read_text()
        messages = [
            m for (m,) in rows(database_url, "SELECT message FROM run_logs WHERE run_id = %s", run_id)
        ]
        assert "was running when its worker died; queued to run again" in messages
        assert messages.count("started") == 2
        # One set of images: the surviving worker's, recorded once.
        assert len(run["artifacts"]) == 1
        images = list((tmp_path / other / "artifacts").rglob("*.png"))
        killed = "one" if other == "two" else "two"
        assert len(images) == 1 and not list((tmp_path / killed / "artifacts").rglob("*.png"))
        # One job for the run, retried once by the sweep, then succeeded.
        assert rows(
            database_url, "SELECT status, attempts FROM procrastinate_jobs WHERE lock = %s", run_id
        ) == [("succeeded", 2)]


def test_a_worker_paused_in_the_middle_of_its_sweep_does_not_stop_the_others_sweeping(
    tmp_path: Path, database_url: str
) -> None:
    import psycopg

    # The sweep's lock, as pg_locks shows an advisory lock on one bigint key (its low 32 bits).
    held = (
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted AND objsubid = 1 "
        "AND objid::bigint = (hashtext('atelier procrastinate stalled workers')::bigint & 4294967295)"
    )
    logs = {name: tmp_path / f"{name}.log" for name in ("one", "two")}
    with (
        serve(tmp_path / "front", env=node_env(database_url)) as front,
        worker(tmp_path / "one", database_url, logs["one"]) as one,
        psycopg.connect(database_url, autocommit=True) as watching,
    ):
        run_id = submit(front.url, "a lighthouse, paused mid-sweep", steps=60)  # 3 s at 50 ms a step
        wait_for(lambda: ledger_run(database_url, run_id)[2] >= 2, 15)
        # Pause the worker while it holds the sweep's lock (it sweeps every half second; a sweep
        # takes milliseconds, so it may take a few tries to pause it inside one).
        try:
            for _ in range(200):
                wait_for(lambda: watching.execute(held).fetchone()[0], 10, 0.001)  # type: ignore[index]
                one.send_signal(signal.SIGSTOP)
                if watching.execute(held).fetchone()[0]:  # type: ignore[index]
                    break
                one.send_signal(signal.SIGCONT)
            else:
                pytest.fail("never caught the worker inside its sweep")
            with worker(tmp_path / "two", database_url, logs["two"]):
                # PostgreSQL ends the paused sweeper's session after 10 s idle in its transaction
                # (4 x stalled_s, at least 10 s), which frees the lock: the other worker sweeps,
                # finds the paused one silent and runs the run again.
                wait_for(lambda: ledger_run(database_url, run_id)[0] == "completed", 90, 0.2)
                assert not watching.execute(held).fetchone()[0]  # type: ignore[index]
        finally:
            one.send_signal(signal.SIGCONT)
        assert ledger_run(database_url, run_id)[:2] == ("completed", 2)
        assert "its worker died; queued again for another worker" in logs["two"].read_text()


def test_a_paused_worker_presumed_dead_drops_its_attempt_when_it_wakes(
    tmp_path: Path, database_url: str
) -> None:
    logs = {name: tmp_path / f"{name}.log" for name in ("one", "two")}
    with (
        serve(tmp_path / "front", env=node_env(database_url)) as front,
        worker(tmp_path / "one", database_url, logs["one"]) as one,
    ):
        run_id = submit(front.url, "a lighthouse, paused", steps=60)  # 3 s at 50 ms a step
        wait_for(lambda: ledger_run(database_url, run_id)[2] >= 2, 15)
        one.send_signal(signal.SIGSTOP)  # alive, but silent: presumed dead after 2 s
        try:
            with worker(tmp_path / "two", database_url, logs["two"]):
                # The sweep presumes it dead after 2 s, then the run starts over (3 s): under a loaded
                # CI machine a starting worker takes a good part of the rest.
                wait_for(lambda: ledger_run(database_url, run_id)[0] == "completed", 60, 0.2)
                one.send_signal(signal.SIGCONT)
                # The first worker finishes its (stale) attempt: it must not record it.
                wait_for(lambda: "another worker has taken it over" in logs["one"].read_text(), 10)
        finally:
            one.send_signal(signal.SIGCONT)
        assert ledger_run(database_url, run_id) == ("completed", 2, 60)
        messages = [
            m for (m,) in rows(database_url, "SELECT message FROM run_logs WHERE run_id = %s", run_id)
        ]
        assert sum(m.startswith("completed") for m in messages) == 1
        assert not list((tmp_path / "one" / "artifacts").rglob("*.png"))
        assert len(list((tmp_path / "two" / "artifacts").rglob("*.png"))) == 1
        # The paused worker is taken back into service: it runs the next run.
        following = submit(front.url, "a lighthouse, after", steps=2)
        wait_for(lambda: ledger_run(database_url, following)[0] == "completed", 20, 0.2)


def test_a_worker_stopped_cleanly_hands_its_run_to_another(tmp_path: Path, database_url: str) -> None:
    logs = {name: tmp_path / f"{name}.log" for name in ("one", "two")}
    with (
        serve(tmp_path / "front", env=node_env(database_url)) as front,
        worker(tmp_path / "one", database_url, logs["one"]) as one,
    ):
        run_id = submit(front.url, "a lighthouse at noon", steps=60)  # 3 s at 50 ms a step
        wait_for(lambda: ledger_run(database_url, run_id)[2] >= 2, 15)
        one.terminate()  # SIGTERM: the run goes back to the queue, this attempt not counted
        assert one.wait(15) == 143
        assert ledger_run(database_url, run_id)[:2] == ("queued", 0)
        with worker(tmp_path / "two", database_url, logs["two"]):
            wait_for(lambda: status_of(front.url, run_id)["status"] == "COMPLETED", 20, 0.3)
        assert ledger_run(database_url, run_id) == ("completed", 1, 60)
        assert rows(
            database_url,
            "SELECT status FROM procrastinate_jobs WHERE lock = %s ORDER BY id",
            run_id,
        )[-1] == ("succeeded",)


def test_two_front_doors_and_two_workers_run_every_run_exactly_once(
    tmp_path: Path, database_url: str
) -> None:
    logs = {name: tmp_path / f"{name}.log" for name in ("one", "two")}
    fast = node_env(database_url, ATELIER_LOCAL_STEP_MS="0")
    with (
        serve(tmp_path / "a", env=fast) as door_a,
        serve(tmp_path / "b", env=fast) as door_b,
        worker(tmp_path / "one", database_url, logs["one"], step_ms="0"),
        worker(tmp_path / "two", database_url, logs["two"], step_ms="0"),
    ):
        run_ids = [submit((door_a, door_b)[i % 2].url, f"a harbour, take {i}", steps=2) for i in range(100)]

        def finished() -> bool:
            [(done,)] = rows(
                database_url, "SELECT COUNT(*) FROM runs WHERE id = ANY(%s) AND status = 'completed'", run_ids
            )
            return done == len(run_ids)

        wait_for(finished, 25, 0.3)
        assert rows(
            database_url,
            "SELECT COUNT(*), MIN(attempts), MAX(attempts) FROM runs WHERE id = ANY(%s)",
            run_ids,
        ) == [(100, 1, 1)]
        started = rows(
            database_url,
            "SELECT run_id, COUNT(*) FROM run_logs WHERE run_id = ANY(%s) AND message = 'started' GROUP BY run_id",
            run_ids,
        )
        assert len(started) == 100 and {n for _, n in started} == {1}
        assert rows(
            database_url,
            "SELECT status, COUNT(*) FROM procrastinate_jobs WHERE lock = ANY(%s) GROUP BY status",
            run_ids,
        ) == [("succeeded", 100)]
        taken = [logs[name].read_text().count("Starting job atelier.execute_run") for name in ("one", "two")]
        assert sum(taken) == 100 and min(taken) > 0, taken
        images = [len(list((tmp_path / name / "artifacts").rglob("*.png"))) for name in ("one", "two")]
        assert images == taken


def test_a_front_door_told_to_execute_runs_runs_itself(tmp_path: Path, database_url: str) -> None:
    with serve(tmp_path / "node", env=node_env(database_url), args=["--execute"]) as node:
        run_id = submit(node.url, "a lighthouse, at home", steps=4)
        wait_for(lambda: status_of(node.url, run_id)["status"] == "COMPLETED", 20, 0.3)
        assert ledger_run(database_url, run_id) == ("completed", 1, 4)
        assert httpx.get(f"{node.url}/health", timeout=10).json()["dispatch"]["executes"] is True


# -- accepting: a run and its job are recorded together, or neither is --


@pytest.mark.anyio
async def test_a_run_is_recorded_with_its_job_or_not_at_all(tmp_path: Path, database_url: str) -> None:
    from core.engine import Engine
    from core.errors import Conflict, LedgerUnavailable
    from core.settings import Settings

    settings = Settings.from_env(node_env(database_url), home=tmp_path / "front")
    small = {"width": 64, "height": 64, "steps": 2}
    async with Engine.open(settings) as engine:
        run = await engine.submit_image({"prompt": "a first lighthouse", **small}, priority="high")
        [job] = rows(
            database_url,
            "SELECT queue_name, priority, status FROM procrastinate_jobs WHERE lock = %s",
            run.id,
        )
        assert job == ("image", run.priority.rank, "todo")

        # The queue cannot take the job: the run is not recorded either.
        rows(database_url, "ALTER TABLE procrastinate_jobs RENAME TO procrastinate_jobs_away")
        try:
            with pytest.raises(LedgerUnavailable, match=r"procrastinate_jobs.* nothing was recorded"):
                await engine.submit_image({"prompt": "a lighthouse with nowhere to go", **small})
        finally:
            rows(database_url, "ALTER TABLE procrastinate_jobs_away RENAME TO procrastinate_jobs")
        assert rows(
            database_url, "SELECT COUNT(*) FROM runs WHERE inputs::text LIKE %s", "%nowhere to go%"
        ) == [(0,)]

        # Two requests racing with one idempotency key: one run, one job (the loser's is rolled back).
        async def same_request() -> None:
            with suppress(Conflict):  # a concurrent request with the key may be told to look again
                await engine.submit_image(
                    {"prompt": "a raced lighthouse", "seed": 3, **small}, idempotency_key="k-1"
                )

        async with anyio.create_task_group() as group:
            for _ in range(4):
                group.start_soon(same_request)
        [(raced,)] = rows(database_url, "SELECT id FROM runs WHERE idempotency_key = 'k-1'")
        assert rows(database_url, "SELECT COUNT(*) FROM procrastinate_jobs WHERE lock = %s", raced) == [(1,)]
        # Nothing runs on a node that only accepts.
        await anyio.sleep(1)
        assert (await engine.get_run(run.id)).status.value == "queued"
        for queued in (run.id, raced):
            await engine.cancel(queued)
        assert rows(database_url, "SELECT status FROM procrastinate_jobs WHERE lock = %s", run.id) == [
            ("cancelled",)
        ]


@pytest.mark.anyio
async def test_a_node_warns_when_the_queue_s_schema_is_another_procrastinate_s(
    tmp_path: Path, database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    from importlib.metadata import version

    from core.engine import Engine
    from core.settings import Settings

    settings = Settings.from_env(node_env(database_url))
    small = {"prompt": "a lighthouse", "width": 64, "height": 64, "steps": 2}
    async with Engine.open(settings.model_copy(update={"home": tmp_path / "a"})) as engine:
        await engine.cancel((await engine.submit_image(small)).id)
    made_by = "SELECT obj_description('procrastinate_jobs'::regclass, 'pg_class')"
    assert rows(database_url, made_by) == [(f"procrastinate {version('procrastinate')}",)]
    assert "made by" not in caplog.text

    rows(database_url, "COMMENT ON TABLE procrastinate_jobs IS 'procrastinate 3.9.0'")
    try:
        async with Engine.open(settings.model_copy(update={"home": tmp_path / "b"})) as engine:
            await engine.cancel((await engine.submit_image(small)).id)
    finally:
        rows(
            database_url, f"COMMENT ON TABLE procrastinate_jobs IS 'procrastinate {version('procrastinate')}'"
        )
    assert "the task queue's schema was made by procrastinate 3.9.0" in caplog.text


def test_training_runs_in_the_training_queue_on_the_worker_and_a_cancel_stops_it(
    tmp_path: Path, database_url: str
) -> None:
    from tests.character_images import photo

    home = (
        tmp_path / "shared-home"
    )  # the character's images, uploaded at the front door, trained on by the worker
    env = node_env(database_url, ATELIER_PREVIEW_TRAIN_STEP_MS="20")
    with serve(home, env=env) as front:
        api = f"{front.url}/isengard/api"
        mara = httpx.post(f"{api}/characters", json={"name": "Mara"}, timeout=10).json()
        files = [("files", (f"mara-{i}.png", photo(i), "image/png")) for i in range(4)]
        uploaded = httpx.post(f"{api}/characters/{mara['id']}/images", files=files, timeout=30)
        assert uploaded.status_code == 201, uploaded.text

        def train(steps: int) -> str:
            body = {"character_id": mara["id"], "config": {"method": "lora", "steps": steps}}
            answer = httpx.post(f"{api}/training", json=body, timeout=10)
            assert answer.status_code == 201, answer.text
            return answer.json()["id"]

        def training(job_id: str) -> dict[str, Any]:
            return httpx.get(f"{api}/training/{job_id}", timeout=10).json()

        first = train(100)  # 2 s at 20 ms a step
        run_id = first.split("-", 1)[1]
        assert rows(
            database_url, "SELECT queue_name, status FROM procrastinate_jobs WHERE lock = %s", run_id
        ) == [("training", "todo")]
        with worker(
            home,
            database_url,
            tmp_path / "worker.log",
            "--queues",
            "training",
            ATELIER_PREVIEW_TRAIN_STEP_MS="20",
        ):
            wait_for(lambda: training(first)["status"] == "completed", 25, 0.3)
            assert httpx.get(f"{api}/characters/{mara['id']}", timeout=10).json()["lora_path"]

            second = train(1000)  # 20 s
            wait_for(lambda: training(second)["current_step"] >= 5, 15, 0.2)
            cancelled = httpx.post(f"{api}/training/{second}/cancel", timeout=10)
            assert cancelled.status_code == 200, cancelled.text
            second_run = second.split("-", 1)[1]
            wait_for(
                lambda: (
                    rows(database_url, "SELECT status FROM procrastinate_jobs WHERE lock = %s", second_run)
                    == [("aborted",)]
                ),
                10,
            )
            step = training(second)["current_step"]
            time.sleep(1.5)
            assert training(second)["status"] == "cancelled" and training(second)["current_step"] == step
        assert "Starting worker on queues training" in (tmp_path / "worker.log").read_text()


def test_a_queued_run_whose_job_was_lost_is_deferred_again_by_a_worker(
    tmp_path: Path, database_url: str
) -> None:
    with serve(tmp_path / "front", env=node_env(database_url)) as front:
        run_id = submit(front.url, "a lighthouse without a ticket", steps=2)
        rows(database_url, "DELETE FROM procrastinate_jobs WHERE lock = %s", run_id)
        with worker(tmp_path / "one", database_url, tmp_path / "worker.log"):
            wait_for(lambda: ledger_run(database_url, run_id)[0] == "completed", 20, 0.3)
        assert f"queued runs without a job, deferred again: {run_id}" in (tmp_path / "worker.log").read_text()
        assert rows(database_url, "SELECT status FROM procrastinate_jobs WHERE lock = %s", run_id) == [
            ("succeeded",)
        ]
