"""The engine facade, as every front door uses it: submit, schedule, retry, cancel, recover.

Runs go through the real SQLite ledger and filesystem store on a temp home; the backend is
`ScriptedBackend` (which the test drives) except where the real preview renderer matters.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import time
import zipfile
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import pytest
from PIL import Image

from core.artifacts import run_prefix
from core.engine import Engine
from core.errors import BackendError, Conflict, HomeLocked, InvalidInput, RunNotFound
from core.models import Run, RunStatus
from core.settings import Settings
from tests.ledgers import LedgerPlace
from tests.scripted_backend import ScriptedBackend, wait_until

pytestmark = pytest.mark.anyio

WAIT = 5.0  # generous bound for anything that should take milliseconds
UNKNOWN_ID = "0" * 26  # well-formed, never issued


def image(prompt: str, **fields: Any) -> dict[str, Any]:
    """Small, fast request parameters."""
    return {"prompt": prompt, "width": 64, "height": 64, "steps": 3, **fields}


@asynccontextmanager
async def scripted(
    settings: Settings, **backend_options: Any
) -> AsyncIterator[tuple[Engine, ScriptedBackend]]:
    backend = ScriptedBackend(**backend_options)
    async with Engine.open(settings, backends={"local": backend}) as engine:
        yield engine, backend


async def finished(engine: Engine, run_id: str, timeout: float = WAIT) -> Run:
    run = await engine.wait(run_id, timeout_s=timeout)
    assert run.status.is_final, f"run {run_id} still {run.status.value} after {timeout} s"
    return run


def run_dir(settings: Settings, run_id: str) -> Path:
    return settings.artifacts_dir / run_prefix(run_id)


def files_in(settings: Settings, run_id: str) -> list[str]:
    folder = run_dir(settings, run_id)
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


async def all_runs(engine: Engine) -> list[Run]:
    return (await engine.list_runs(limit=200)).items


# --- submit and outputs ---------------------------------------------------------------------


async def test_submitted_run_completes_with_count_images_recorded_and_on_disk(settings: Settings) -> None:
    async with scripted(settings) as (engine, _):
        queued = await engine.submit_image(image("three foxes", count=3, width=96, height=64))
        assert queued.status is RunStatus.QUEUED

        run = await finished(engine, queued.id)

        assert run.status is RunStatus.COMPLETED
        assert run.attempts == 1
        assert run.error is None
        assert [a.filename for a in run.artifacts] == ["image-01.png", "image-02.png", "image-03.png"]
        root = settings.artifacts_dir.resolve()
        for artifact in run.artifacts:
            path = engine.artifact_path(artifact)
            assert path is not None and path.is_file()
            assert path.resolve().is_relative_to(root)
            data = path.read_bytes()
            assert artifact.size == len(data)
            assert artifact.sha256 == hashlib.sha256(data).hexdigest()
            assert (artifact.width, artifact.height) == (96, 64)
            assert artifact.media_type == "image/png"
            assert Image.open(io.BytesIO(data)).size == (96, 64)
            recorded, read = await engine.read_artifact(run.id, artifact.filename)
            assert recorded == artifact and read == data
        assert files_in(settings, run.id) == ["image-01.png", "image-02.png", "image-03.png"]


async def test_omitted_seed_is_chosen_at_random_and_recorded(settings: Settings) -> None:
    async with scripted(settings) as (engine, _):
        first = await engine.submit_image(image("no seed given"))
        second = await engine.submit_image(image("no seed given"))
        for run in (first, second):
            assert isinstance(run.inputs["seed"], int)
            assert 0 <= run.inputs["seed"] < 2**32
            assert (await engine.get_run(run.id)).inputs["seed"] == run.inputs["seed"]
        assert first.inputs["seed"] != second.inputs["seed"]


async def test_same_explicit_seed_and_inputs_give_identical_images_on_the_local_backend(
    engine: Engine,
) -> None:
    request = image("a red fox in a snowy forest", seed=1234, count=2)
    first = await finished(engine, (await engine.submit_image(request)).id)
    again = await finished(engine, (await engine.submit_image(request)).id)
    other = await finished(engine, (await engine.submit_image({**request, "seed": 1235})).id)

    assert first.status is again.status is other.status is RunStatus.COMPLETED
    assert [a.sha256 for a in first.artifacts] == [a.sha256 for a in again.artifacts]
    assert [a.sha256 for a in first.artifacts] != [a.sha256 for a in other.artifacts]
    for artifact in again.artifacts:
        _, data = await engine.read_artifact(again.id, artifact.filename)
        assert hashlib.sha256(data).hexdigest() == artifact.sha256


# --- validation -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("params", "options", "field", "rule"),
    [
        ({"prompt": ""}, {}, "prompt", "1..4000"),
        ({"prompt": "   \n\t"}, {}, "prompt", "1..4000"),
        ({"prompt": "x" * 4001}, {}, "prompt", "1..4000"),
        ({"prompt": "ok", "width": 100}, {}, "width", "64..4096"),
        ({"prompt": "ok", "width": 63}, {}, "width", "64..4096"),
        ({"prompt": "ok", "width": 4104}, {}, "width", "64..4096"),
        ({"prompt": "ok", "height": 4104}, {}, "height", "64..4096"),
        ({"prompt": "ok", "steps": 0}, {}, "steps", "1..150"),
        ({"prompt": "ok", "steps": 151}, {}, "steps", "1..150"),
        ({"prompt": "ok", "count": 0}, {}, "count", "1..16"),
        ({"prompt": "ok", "count": 17}, {}, "count", "1..16"),
        ({"prompt": "ok", "seed": -1}, {}, "seed", "0..4294967295"),
        ({"prompt": "ok"}, {"priority": "asap"}, "priority", "low, normal, high, urgent"),
        ({"prompt": "ok", "style": "noir"}, {}, "style", "not a known parameter"),
        ({"prompt": "ok"}, {"max_attempts": 0}, "max_attempts", "1..20"),
        ({"prompt": "ok"}, {"timeout_s": 0}, "timeout_s", "(0, 86400]"),
        ({"prompt": "ok"}, {"idempotency_key": "has space"}, "idempotency_key", "1..255"),
    ],
)
async def test_invalid_request_names_the_field_and_its_range_and_records_nothing(
    settings: Settings, params: dict[str, Any], options: dict[str, Any], field: str, rule: str
) -> None:
    async with scripted(settings) as (engine, backend):
        with pytest.raises(InvalidInput) as caught:
            await engine.submit_image(params, **options)

        assert caught.value.field == field
        assert str(caught.value).startswith(f"{field}:")
        assert rule in str(caught.value)
        assert await all_runs(engine) == []
        assert (await engine.status())["runs"]["queued"] == 0
        assert backend.started == []


async def test_a_backend_without_named_workflows_lists_none_and_refuses_a_name(settings: Settings) -> None:
    async with scripted(settings) as (engine, backend):
        assert engine.images.list_workflows() == {"workflows": [], "problems": []}
        with pytest.raises(InvalidInput) as caught:
            await engine.submit_image(image("fox", workflow="sd15"))
        assert caught.value.field == "workflow"
        assert "runs no named workflows" in str(caught.value)

        run = await finished(engine, (await engine.submit_image(image("fox"))).id)
        assert run.status is RunStatus.COMPLETED
        assert "workflow" not in run.inputs
        assert backend.started == ["fox"]


async def test_overlong_prompt_is_reported_by_length_not_echoed(settings: Settings) -> None:
    async with scripted(settings) as (engine, _):
        with pytest.raises(InvalidInput) as caught:
            await engine.submit_image({"prompt": "y" * 4001})
        assert "4001 characters" in str(caught.value)
        assert "yyyyyyyyyy" not in str(caught.value)


# --- scheduling -----------------------------------------------------------------------------


async def test_higher_priority_starts_first_and_equal_priorities_start_in_submission_order(
    settings: Settings,
) -> None:
    async with scripted(settings, concurrency=1, hold=["blocker"]) as (engine, backend):
        blocker = await engine.submit_image(image("blocker"))
        await backend.wait_started("blocker")
        submitted = [
            await engine.submit_image(image(prompt), priority=priority)
            for prompt, priority in [
                ("low", "low"),
                ("normal-1", "normal"),
                ("high", "high"),
                ("urgent", "URGENT"),
                ("normal-2", "normal"),
            ]
        ]
        assert backend.started == ["blocker"]

        backend.release("blocker")
        for run in [blocker, *submitted]:
            assert (await finished(engine, run.id)).status is RunStatus.COMPLETED

        assert backend.started == ["blocker", "urgent", "high", "normal-1", "normal-2", "low"]
        assert backend.max_running == 1


async def test_no_more_runs_execute_at_once_than_the_backend_concurrency(settings: Settings) -> None:
    async with scripted(settings, concurrency=2, hold_all=True) as (engine, backend):
        runs = [await engine.submit_image(image(f"run {i}")) for i in range(6)]
        await wait_until(lambda: len(backend.started) == 2, WAIT, "two runs to start")
        await anyio.sleep(0.05)  # a third would have started by now if the limit leaked
        assert backend.running == 2
        statuses = [(await engine.get_run(r.id)).status for r in runs]
        assert statuses.count(RunStatus.RUNNING) == 2
        assert statuses.count(RunStatus.QUEUED) == 4

        backend.release_all()
        for run in runs:
            assert (await finished(engine, run.id)).status is RunStatus.COMPLETED
        assert backend.max_running == 2
        assert sorted(backend.started) == sorted(f"run {i}" for i in range(6))


async def test_run_exceeding_its_timeout_fails_with_timed_out(settings: Settings) -> None:
    async with scripted(settings, hold=["slow"]) as (engine, backend):
        run = await engine.submit_image(image("slow"), timeout_s=0.2, max_attempts=1)
        done = await finished(engine, run.id)

        assert done.status is RunStatus.FAILED
        assert "timed out" in (done.error or "")
        assert done.attempts == 1
        assert done.artifacts == []
        assert backend.cancelled == ["slow"]  # the backend was stopped, not left running


# --- retries --------------------------------------------------------------------------------


async def test_retryable_failures_are_retried_with_backoff_until_success(settings: Settings) -> None:
    backoff = settings.model_copy(update={"retry_backoff_s": 0.1})
    async with scripted(backoff) as (engine, backend):
        backend.fail("flaky", 2, retryable=True, message="connection reset")
        run = await engine.submit_image(image("flaky"), max_attempts=3)
        done = await finished(engine, run.id)

        assert done.status is RunStatus.COMPLETED
        assert done.attempts == 3
        assert len(done.artifacts) == 1
        assert backend.attempts["flaky"] == 3
        times = [t for prompt, t in backend.start_times if prompt == "flaky"]
        # Backoff 0.1 s then 0.2 s: the attempts cannot have followed each other at once.
        assert times[1] - times[0] >= 0.08
        assert times[2] - times[1] >= 0.16
        messages = [entry.message for entry in await engine.logs(run.id)]
        failures = [m for m in messages if "failed" in m]
        assert len(failures) == 2
        assert "attempt 1/3" in failures[0] and "connection reset" in failures[0]
        assert "attempt 2/3" in failures[1]
        assert "completed with 1 image(s)" in messages[-1]


async def test_non_retryable_failure_fails_at_once(settings: Settings) -> None:
    async with scripted(settings) as (engine, backend):
        backend.fail("bad checkpoint", 5, retryable=False, message="checkpoint missing")
        run = await engine.submit_image(image("bad checkpoint"), max_attempts=5)
        done = await finished(engine, run.id)

        assert done.status is RunStatus.FAILED
        assert done.attempts == 1
        assert "checkpoint missing" in (done.error or "")
        assert backend.attempts["bad checkpoint"] == 1
        assert any("not retried" in e.message for e in await engine.logs(run.id))


async def test_retryable_failures_beyond_max_attempts_fail_the_run(settings: Settings) -> None:
    async with scripted(settings) as (engine, backend):
        backend.fail("always down", 10, retryable=True, message="server down")
        run = await engine.submit_image(image("always down"), max_attempts=2)
        done = await finished(engine, run.id)

        assert done.status is RunStatus.FAILED
        assert done.attempts == 2
        assert "server down" in (done.error or "")
        assert backend.attempts["always down"] == 2
        assert done.artifacts == []


# --- cancel ---------------------------------------------------------------------------------


async def test_cancel_queued_run_never_starts_it(settings: Settings) -> None:
    async with scripted(settings, concurrency=1, hold=["blocker"]) as (engine, backend):
        blocker = await engine.submit_image(image("blocker"))
        await backend.wait_started("blocker")
        queued = await engine.submit_image(image("never"))

        cancelled = await engine.cancel(queued.id)
        assert cancelled.status is RunStatus.CANCELLED

        backend.release("blocker")
        await finished(engine, blocker.id)
        later = await finished(engine, (await engine.submit_image(image("later"))).id)
        assert later.status is RunStatus.COMPLETED
        assert backend.started == ["blocker", "later"]
        assert (await engine.get_run(queued.id)).status is RunStatus.CANCELLED


async def test_cancel_running_run_stops_the_backend_and_the_next_run_starts(settings: Settings) -> None:
    async with scripted(settings, concurrency=1, hold=["long"]) as (engine, backend):
        running = await engine.submit_image(image("long", count=2))
        await backend.wait_started("long")
        queued = await engine.submit_image(image("next"))

        cancelled = await engine.cancel(running.id)
        assert cancelled.status is RunStatus.CANCELLED
        await backend.wait_cancelled("long")

        after = await finished(engine, queued.id)
        assert after.status is RunStatus.COMPLETED
        run = await engine.get_run(running.id)
        assert run.status is RunStatus.CANCELLED
        assert run.artifacts == []
        assert files_in(settings, running.id) == []
        assert backend.finished == ["next"]


async def test_cancel_of_a_completed_run_leaves_it_completed(settings: Settings) -> None:
    async with scripted(settings) as (engine, _):
        run = await finished(engine, (await engine.submit_image(image("done"))).id)
        again = await engine.cancel(run.id)
        assert again.status is RunStatus.COMPLETED
        assert (await engine.get_run(run.id)).status is RunStatus.COMPLETED
        assert len((await engine.get_run(run.id)).artifacts) == 1
        assert files_in(settings, run.id) == ["image-01.png"]


async def run_becomes(engine: Engine, run_id: str, condition: Callable[[Run], bool]) -> Run:
    """Poll the run until `condition` holds; fail after WAIT seconds."""
    with anyio.fail_after(WAIT):
        while not condition(run := await engine.get_run(run_id)):
            await anyio.sleep(0.005)
    return run


async def idle(engine: Engine) -> None:
    """Wait until no run is executing (every attempt has finished unwinding)."""
    with anyio.fail_after(WAIT):
        while (await engine.status())["queue"]["running"]:
            await anyio.sleep(0.01)


async def test_cancel_while_outputs_are_being_saved_leaves_no_files(settings: Settings) -> None:
    async with scripted(settings, output_bytes=1_000_000) as (engine, _):
        run = await engine.submit_image(image("large outputs", count=16))
        with anyio.fail_after(WAIT):
            while not files_in(settings, run.id):
                await anyio.sleep(0)

        cancelled = await engine.cancel(run.id)
        assert cancelled.status is RunStatus.CANCELLED
        await idle(engine)

        after = await engine.get_run(run.id)
        assert after.status is RunStatus.CANCELLED
        assert after.artifacts == []
        assert files_in(settings, run.id) == []


async def test_cancel_during_retry_backoff_stops_further_attempts(settings: Settings) -> None:
    backoff = settings.model_copy(update={"retry_backoff_s": 0.2})
    async with scripted(backoff) as (engine, backend):
        backend.fail("backing off", 5, retryable=True)
        run = await engine.submit_image(image("backing off"), max_attempts=5)
        waiting = await run_becomes(engine, run.id, lambda r: r.error is not None)
        assert waiting.status is RunStatus.QUEUED
        assert "retrying in 0.2 s" in waiting.message

        cancelled = await engine.cancel(run.id)
        assert cancelled.status is RunStatus.CANCELLED
        await anyio.sleep(0.4)  # past the backoff: a retry would have started by now

        assert backend.attempts["backing off"] == 1
        after = await engine.get_run(run.id)
        assert after.status is RunStatus.CANCELLED
        assert after.attempts == 1


# --- retry ----------------------------------------------------------------------------------


async def test_retry_of_a_failed_run_queues_it_again_and_it_completes(settings: Settings) -> None:
    async with scripted(settings) as (engine, backend):
        backend.fail("once", 1, retryable=False)
        failed = await finished(engine, (await engine.submit_image(image("once", count=2))).id)
        assert failed.status is RunStatus.FAILED

        queued = await engine.retry(failed.id)
        assert queued.status is RunStatus.QUEUED
        assert queued.attempts == 0
        assert queued.error is None

        done = await finished(engine, failed.id)
        assert done.status is RunStatus.COMPLETED
        assert done.attempts == 1
        assert len(done.artifacts) == 2


async def test_retry_of_a_cancelled_run_queues_it_again_and_it_completes(settings: Settings) -> None:
    async with scripted(settings, hold=["stopped"]) as (engine, backend):
        run = await engine.submit_image(image("stopped"))
        await backend.wait_started("stopped")
        await engine.cancel(run.id)
        await backend.wait_cancelled("stopped")
        backend.release("stopped")

        queued = await engine.retry(run.id)
        assert queued.status is RunStatus.QUEUED
        done = await finished(engine, run.id)
        assert done.status is RunStatus.COMPLETED
        assert len(done.artifacts) == 1


async def test_retry_of_a_completed_run_is_a_conflict(settings: Settings) -> None:
    async with scripted(settings) as (engine, _):
        run = await finished(engine, (await engine.submit_image(image("fine"))).id)
        with pytest.raises(Conflict):
            await engine.retry(run.id)
        assert (await engine.get_run(run.id)).status is RunStatus.COMPLETED


async def test_cancel_then_retry_of_a_running_run_can_be_cancelled_again(settings: Settings) -> None:
    # A remote backend takes a moment to stop (it tells its server); meanwhile the retried
    # run starts in a second slot. Cancelling it again must still stop the backend.
    async with scripted(settings, concurrency=2, hold=["twice"], cleanup_s=0.1) as (engine, backend):
        run = await engine.submit_image(image("twice"))
        await backend.wait_started("twice")
        await engine.cancel(run.id)
        await engine.retry(run.id)
        await backend.wait_started("twice", times=2)
        await backend.wait_cancelled("twice")
        await anyio.sleep(0.2)  # the first attempt has finished stopping

        await engine.cancel(run.id)

        await wait_until(
            lambda: backend.cancelled.count("twice") == 2 and backend.running == 0,
            0.5,
            "the retried attempt to be stopped",
        )
        assert (await engine.get_run(run.id)).status is RunStatus.CANCELLED


# --- delete ---------------------------------------------------------------------------------


async def test_delete_removes_the_run_its_log_and_its_files(settings: Settings) -> None:
    async with scripted(settings) as (engine, _):
        run = await finished(engine, (await engine.submit_image(image("doomed", count=2))).id)
        await engine.bundle(run.id)
        assert files_in(settings, run.id) == ["image-01.png", "image-02.png"]
        assert (settings.bundles_dir / f"{run.id}.zip").exists()

        deleted = await engine.delete(run.id)

        assert deleted.id == run.id
        with pytest.raises(RunNotFound):
            await engine.get_run(run.id)
        with pytest.raises(RunNotFound):
            await engine.logs(run.id)
        assert await engine.ledger.logs(run.id) == []
        assert not run_dir(settings, run.id).exists()
        assert not (settings.bundles_dir / f"{run.id}.zip").exists()
        assert await all_runs(engine) == []


async def test_delete_of_a_running_run_stops_it_first(settings: Settings) -> None:
    async with scripted(settings, concurrency=1, hold=["running"]) as (engine, backend):
        run = await engine.submit_image(image("running"))
        await backend.wait_started("running")
        queued = await engine.submit_image(image("after"))

        deleted = await engine.delete(run.id)

        assert deleted.status is RunStatus.CANCELLED
        await backend.wait_cancelled("running")
        with pytest.raises(RunNotFound):
            await engine.get_run(run.id)
        assert (await finished(engine, queued.id)).status is RunStatus.COMPLETED
        assert not run_dir(settings, run.id).exists()
        assert backend.finished == ["after"]


# --- idempotency ----------------------------------------------------------------------------


async def test_same_idempotency_key_and_parameters_return_the_same_run(settings: Settings) -> None:
    async with scripted(settings) as (engine, _):
        first = await engine.submit_image(image("once only", seed=7), idempotency_key="req-1")
        again = await engine.submit_image(image("once only", seed=7), idempotency_key="req-1")
        # Defaults spelled out and the seed left out still describe the same request.
        implied = await engine.submit_image(image("once only", cfg=7.0), idempotency_key="req-1")

        assert again.id == first.id == implied.id
        assert [r.id for r in await all_runs(engine)] == [first.id]
        assert (await finished(engine, first.id)).status is RunStatus.COMPLETED
        after = await engine.submit_image(image("once only"), idempotency_key="req-1")
        assert after.id == first.id


async def test_same_idempotency_key_without_a_seed_matches_the_random_seed(settings: Settings) -> None:
    async with scripted(settings) as (engine, _):
        first = await engine.submit_image(image("random seed"), idempotency_key="req-2")
        again = await engine.submit_image(image("random seed"), idempotency_key="req-2")
        assert again.id == first.id
        assert len(await all_runs(engine)) == 1


async def test_same_idempotency_key_with_different_parameters_is_a_conflict(settings: Settings) -> None:
    async with scripted(settings) as (engine, _):
        first = await engine.submit_image(image("original", seed=1), idempotency_key="req-3")
        with pytest.raises(Conflict) as caught:
            await engine.submit_image(image("different", seed=1), idempotency_key="req-3")
        assert "req-3" in str(caught.value)
        with pytest.raises(Conflict):
            await engine.submit_image(image("original", seed=2), idempotency_key="req-3")
        assert [r.id for r in await all_runs(engine)] == [first.id]


# --- list -----------------------------------------------------------------------------------


async def test_list_runs_is_newest_first_and_filters_by_status_and_kind(settings: Settings) -> None:
    async with scripted(settings, hold=["held"]) as (engine, backend):
        backend.fail("broken", 1, retryable=False)
        done = await finished(engine, (await engine.submit_image(image("ok"))).id)
        broken = await finished(engine, (await engine.submit_image(image("broken"))).id)
        held = await engine.submit_image(image("held"))
        await backend.wait_started("held")
        queued = await engine.submit_image(image("waiting"))

        everything = await engine.list_runs()
        assert [r.id for r in everything.items] == [queued.id, held.id, broken.id, done.id]
        assert everything.next_cursor is None

        assert [r.id for r in (await engine.list_runs(status="completed")).items] == [done.id]
        assert [r.id for r in (await engine.list_runs(status="FAILED")).items] == [broken.id]
        active = await engine.list_runs(status="queued,running")
        assert [r.id for r in active.items] == [queued.id, held.id]
        assert [r.id for r in (await engine.list_runs(status=["completed", "failed"])).items] == [
            broken.id,
            done.id,
        ]
        assert len((await engine.list_runs(kind="image")).items) == 4
        assert (await engine.list_runs(kind="batch")).items == []


async def test_list_runs_cursor_pages_cover_every_run_exactly_once(settings: Settings) -> None:
    async with scripted(settings, hold_all=True) as (engine, _):
        submitted = [(await engine.submit_image(image(f"page {i}"))).id for i in range(7)]
        seen: list[str] = []
        cursor = None
        pages = 0
        while True:
            page = await engine.list_runs(limit=3, cursor=cursor)
            seen += [r.id for r in page.items]
            pages += 1
            if pages == 1:
                await engine.submit_image(image("submitted while paging"))
            if page.next_cursor is None:
                break
            cursor = page.next_cursor
        assert pages == 3
        assert seen == list(reversed(submitted))


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"status": "done"}, "status"),
        ({"status": ["queued", "bogus"]}, "status"),
        ({"kind": "video"}, "kind"),
        ({"limit": 0}, "limit"),
        ({"limit": 201}, "limit"),
        ({"cursor": "not-a-cursor"}, "cursor"),
        ({"cursor": base64.urlsafe_b64encode(b"seq:abc").decode()}, "cursor"),
        ({"parent_id": "../x"}, "parent_id"),
    ],
)
async def test_list_runs_rejects_bad_filters_and_cursors(
    settings: Settings, options: dict[str, Any], field: str
) -> None:
    async with scripted(settings) as (engine, _):
        await engine.submit_image(image("something"))
        with pytest.raises(InvalidInput) as caught:
            await engine.list_runs(**options)
        assert caught.value.field == field


async def test_list_runs_rejects_a_cursor_with_an_out_of_range_position(settings: Settings) -> None:
    async with scripted(settings) as (engine, _):
        await engine.submit_image(image("something"))
        cursor = base64.urlsafe_b64encode(b"seq:99999999999999999999").decode().rstrip("=")
        with pytest.raises(InvalidInput):
            await engine.list_runs(cursor=cursor)


# --- run ids --------------------------------------------------------------------------------


@pytest.mark.parametrize("bad_id", ["../etc/passwd", "", "0" * 27, "0" * 25, "0" * 25 + "A", "0" * 25 + "u"])
@pytest.mark.parametrize("action", ["get_run", "cancel", "delete", "retry", "logs", "bundle"])
async def test_malformed_run_ids_are_invalid_input(settings: Settings, bad_id: str, action: str) -> None:
    async with scripted(settings) as (engine, _):
        with pytest.raises(InvalidInput) as caught:
            await getattr(engine, action)(bad_id)
        assert caught.value.field == "run_id"


@pytest.mark.parametrize("action", ["get_run", "cancel", "delete", "retry", "logs", "bundle"])
async def test_unknown_run_id_is_run_not_found(settings: Settings, action: str) -> None:
    async with scripted(settings) as (engine, _):
        with pytest.raises(RunNotFound):
            await getattr(engine, action)(UNKNOWN_ID)


# --- wait and events ------------------------------------------------------------------------


async def test_wait_returns_the_completed_run(settings: Settings) -> None:
    async with scripted(settings) as (engine, _):
        run = await engine.submit_image(image("wait for me", count=2))
        with anyio.fail_after(WAIT):
            done = await engine.wait(run.id, timeout_s=WAIT)
        assert done.status is RunStatus.COMPLETED
        assert len(done.artifacts) == 2


async def test_wait_with_a_short_timeout_returns_the_run_unfinished(settings: Settings) -> None:
    async with scripted(settings, concurrency=1, hold=["held"]) as (engine, backend):
        running = await engine.submit_image(image("held"))
        await backend.wait_started("held")
        queued = await engine.submit_image(image("behind"))

        started = time.monotonic()
        with anyio.fail_after(WAIT):
            still_running = await engine.wait(running.id, timeout_s=0.1)
            still_queued = await engine.wait(queued.id, timeout_s=0.1)
        assert time.monotonic() - started >= 0.15
        assert still_running.status is RunStatus.RUNNING
        assert still_queued.status is RunStatus.QUEUED


async def test_wait_reports_progress_in_increasing_steps(settings: Settings) -> None:
    async with scripted(settings, concurrency=1, hold=["blocker"]) as (engine, backend):
        await engine.submit_image(image("blocker"))
        await backend.wait_started("blocker")
        run = await engine.submit_image(image("progress", steps=5))
        steps: list[int] = []
        result: list[Run] = []

        async def waiter() -> None:
            result.append(
                await engine.wait(run.id, timeout_s=WAIT, on_progress=lambda r, p: steps.append(p.step))
            )

        async with anyio.create_task_group() as group:
            group.start_soon(waiter)
            await wait_until(lambda: engine.events.wants(run.id), WAIT, "the waiter to subscribe")
            backend.release("blocker")

        assert result[0].status is RunStatus.COMPLETED
        assert steps == [1, 2, 3, 4, 5]


async def test_subscriber_sees_queued_running_completed_in_order(settings: Settings) -> None:
    async with scripted(settings) as (engine, _):
        with engine.events.subscribe() as events:
            run = await engine.submit_image(image("watched"))
            seen: list[RunStatus] = []
            progress = 0
            with anyio.fail_after(WAIT):
                async for event in events:
                    assert event.run_id == run.id
                    if event.kind == "progress":
                        progress += 1
                    elif event.kind == "run":
                        assert event.run is not None
                        seen.append(event.run.status)
                        if event.run.status.is_final:
                            break
        assert seen == [RunStatus.QUEUED, RunStatus.RUNNING, RunStatus.COMPLETED]
        assert progress == 3


# --- bundle and status ----------------------------------------------------------------------


async def test_bundle_zips_the_images_and_the_run_record(settings: Settings) -> None:
    async with scripted(settings) as (engine, _):
        run = await finished(engine, (await engine.submit_image(image("bundle me", count=2, seed=42))).id)

        bundle = await engine.bundle(run.id)

        assert bundle.files == ["image-01.png", "image-02.png", "run.json"]
        assert bundle.size == bundle.path.stat().st_size
        with zipfile.ZipFile(bundle.path) as archive:
            assert sorted(archive.namelist()) == ["image-01.png", "image-02.png", "run.json"]
            for artifact in run.artifacts:
                _, data = await engine.read_artifact(run.id, artifact.filename)
                assert archive.read(artifact.filename) == data
            manifest = json.loads(archive.read("run.json"))
        assert manifest["id"] == run.id
        assert manifest["status"] == "completed"
        assert manifest["inputs"] == run.inputs
        assert manifest["inputs"]["seed"] == 42
        assert [a["sha256"] for a in manifest["artifacts"]] == [a.sha256 for a in run.artifacts]


async def test_bundle_of_a_run_without_outputs_is_a_conflict(settings: Settings) -> None:
    async with scripted(settings, hold=["pending"]) as (engine, _):
        run = await engine.submit_image(image("pending"))
        with pytest.raises(Conflict):
            await engine.bundle(run.id)
        assert not (settings.bundles_dir / f"{run.id}.zip").exists()


async def test_status_reports_backend_health_counts_and_metrics(settings: Settings) -> None:
    async with scripted(settings, concurrency=1, hold=["held"]) as (engine, backend):
        backend.fail("broken", 1, retryable=False)
        await finished(engine, (await engine.submit_image(image("ok 1"))).id)
        await finished(engine, (await engine.submit_image(image("ok 2"))).id)
        await finished(engine, (await engine.submit_image(image("broken"))).id)
        await engine.submit_image(image("held"))
        await backend.wait_started("held")
        await engine.submit_image(image("queued"))

        status = await engine.status()

        assert status["healthy"] is True
        local = status["backends"]["local"]
        assert local["up"] is True
        assert (local["running"], local["queued"], local["slots"]) == (1, 1, 1)
        assert status["runs"] == {"queued": 1, "running": 1, "completed": 2, "failed": 1, "cancelled": 0}
        metrics = status["metrics"]
        assert metrics["submitted"] == 5
        assert metrics["completed"] == 2
        assert metrics["failed"] == 1
        assert metrics["completed_last_minute"] == 2
        assert metrics["latency_p50_s"] is not None and metrics["latency_p50_s"] >= 0


async def test_status_reports_a_failing_health_check_as_down(settings: Settings) -> None:
    class Down(ScriptedBackend):
        async def health(self) -> dict[str, object]:
            raise BackendError("connection refused")

    async with Engine.open(settings, backends={"local": Down()}) as engine:
        status = await engine.status()
    assert status["healthy"] is False
    assert status["backends"]["local"]["up"] is False
    assert "connection refused" in status["backends"]["local"]["error"]


# --- restart and recovery -------------------------------------------------------------------


def crashed_while_running(place: LedgerPlace, run_id: str, attempts: int = 1) -> None:
    """The ledger as a process killed mid-run leaves it: the run still `running`, its attempt spent."""
    place.raw("UPDATE runs SET status = 'running', attempts = ? WHERE id = ?", attempts, run_id)


def ledger_statuses(place: LedgerPlace) -> dict[str, tuple[str, int]]:
    return {row[0]: (row[1], row[2]) for row in place.raw("SELECT id, status, attempts FROM runs")}


async def test_restart_runs_again_what_was_running_and_queued(
    settings: Settings, ledger_place: LedgerPlace
) -> None:
    settings = ledger_place.settings(settings)
    first_backend = ScriptedBackend(concurrency=1, hold_all=True)
    async with Engine.open(settings, backends={"local": first_backend}) as engine:
        interrupted = await engine.submit_image(image("interrupted", count=2))
        await first_backend.wait_started("interrupted")
        waiting = [
            await engine.submit_image(image("waiting 1", count=1)),
            await engine.submit_image(image("waiting 2", count=3), priority="high"),
        ]
    # A clean stop hands the running run back, its attempt not spent.
    assert ledger_statuses(ledger_place) == {
        interrupted.id: ("queued", 0),
        waiting[0].id: ("queued", 0),
        waiting[1].id: ("queued", 0),
    }
    # A crash (kill -9, as test_crash_recovery does for real) would have left it running.
    crashed_while_running(ledger_place, interrupted.id)
    # A crash in the middle of writing the first attempt's files left some behind.
    folder = run_dir(settings, interrupted.id)
    folder.mkdir(parents=True)
    (folder / "image-01.png").write_bytes(b"half written")
    (folder / "image-05.png").write_bytes(b"from another attempt")

    second_backend = ScriptedBackend(concurrency=1)
    async with Engine.open(settings, backends={"local": second_backend}) as engine:
        runs = [await finished(engine, r.id) for r in (interrupted, *waiting)]

        for run, count in zip(runs, (2, 1, 3), strict=True):
            assert run.status is RunStatus.COMPLETED, run.error
            names = [f"image-{i:02d}.png" for i in range(1, count + 1)]
            assert [a.filename for a in run.artifacts] == names
            assert files_in(settings, run.id) == names
            for artifact in run.artifacts:
                _, data = await engine.read_artifact(run.id, artifact.filename)
                assert hashlib.sha256(data).hexdigest() == artifact.sha256
        assert runs[0].attempts == 2
        assert [r.attempts for r in runs[1:]] == [1, 1]
        assert sorted(second_backend.started) == ["interrupted", "waiting 1", "waiting 2"]
        assert any("queued to run again" in e.message for e in await engine.logs(interrupted.id))


async def test_restart_fails_a_run_interrupted_on_its_last_attempt(
    settings: Settings, ledger_place: LedgerPlace
) -> None:
    settings = ledger_place.settings(settings)
    first_backend = ScriptedBackend(hold_all=True)
    async with Engine.open(settings, backends={"local": first_backend}) as engine:
        run = await engine.submit_image(image("last chance"), max_attempts=1)
        await first_backend.wait_started("last chance")
    assert ledger_statuses(ledger_place) == {run.id: ("queued", 0)}
    crashed_while_running(ledger_place, run.id)

    second_backend = ScriptedBackend()
    async with Engine.open(settings, backends={"local": second_backend}) as engine:
        failed = await engine.get_run(run.id)
        assert failed.status is RunStatus.FAILED
        assert "interrupted by a restart" in (failed.error or "")
        assert "1/1" in (failed.error or "")
        assert failed.finished_at is not None
        await anyio.sleep(0.05)
        assert second_backend.started == []


# --- one owner per home ---------------------------------------------------------------------


async def test_second_engine_on_the_same_home_is_refused(settings: Settings) -> None:
    async with scripted(settings) as (engine, _):
        assert engine.is_owner
        with pytest.raises(HomeLocked):
            async with Engine.open(settings, backends={"local": ScriptedBackend()}):
                pass
    # Once the first has closed, the home is free again.
    async with scripted(settings) as (engine, _):
        assert engine.is_owner


async def test_shared_engine_submits_to_the_owner_and_can_cancel_its_runs(settings: Settings) -> None:
    async with scripted(settings, concurrency=2, hold=["held by owner"]) as (owner, owner_backend):
        client_backend = ScriptedBackend()
        async with Engine.open(settings, backends={"local": client_backend}, role="shared") as client:
            assert owner.is_owner and not client.is_owner

            # The owner looks at the ledger about once a second; allow for a few.
            run = await client.submit_image(image("from the client", count=2))
            held = await client.submit_image(image("held by owner"))
            with anyio.fail_after(WAIT):
                done = await client.wait(run.id, timeout_s=WAIT)
            assert done.status is RunStatus.COMPLETED
            assert len(done.artifacts) == 2
            assert owner_backend.finished == ["from the client"]

            await owner_backend.wait_started("held by owner", timeout=WAIT)
            assert (await client.get_run(held.id)).status is RunStatus.RUNNING
            cancelled = await client.cancel(held.id)
            assert cancelled.status is RunStatus.CANCELLED
            await owner_backend.wait_cancelled("held by owner", timeout=WAIT)
            assert (await owner.get_run(held.id)).status is RunStatus.CANCELLED
            assert client_backend.started == []


async def test_client_engine_only_queues_and_the_owner_runs_its_runs(settings: Settings) -> None:
    client_backend = ScriptedBackend()
    async with Engine.open(settings, backends={"local": client_backend}, role="client") as client:
        assert not client.is_owner
        run = await client.submit_image(image("queued by a client"))
        still = await client.wait(run.id, timeout_s=0.1)
        assert still.status is RunStatus.QUEUED
        assert client_backend.started == []

        async with scripted(settings) as (owner, owner_backend):
            assert owner.is_owner
            with anyio.fail_after(WAIT):
                done = await client.wait(run.id, timeout_s=WAIT)
            assert done.status is RunStatus.COMPLETED
            assert owner_backend.finished == ["queued by a client"]
        assert client_backend.started == []


async def test_shared_engine_takes_over_the_runs_when_the_owner_exits(settings: Settings) -> None:
    owner_backend = ScriptedBackend(hold_all=True)
    owner_may_exit = anyio.Event()

    async def run_owner(*, task_status: anyio.abc.TaskStatus[Engine]) -> None:
        async with Engine.open(settings, backends={"local": owner_backend}) as owner:
            task_status.started(owner)
            await owner_may_exit.wait()

    async with anyio.create_task_group() as group:
        owner = await group.start(run_owner)
        interrupted = await owner.submit_image(image("interrupted"))
        await owner_backend.wait_started("interrupted")
        waiting = await owner.submit_image(image("waiting"))

        successor_backend = ScriptedBackend()
        async with Engine.open(settings, backends={"local": successor_backend}, role="shared") as successor:
            assert not successor.is_owner
            owner_may_exit.set()
            with anyio.fail_after(WAIT):
                first = await successor.wait(interrupted.id, timeout_s=WAIT)
                second = await successor.wait(waiting.id, timeout_s=WAIT)
            assert successor.is_owner
            assert (first.status, second.status) == (RunStatus.COMPLETED, RunStatus.COMPLETED)
            # The owner handed its running run back as it exited: that attempt was not spent.
            assert first.attempts == 1
            assert sorted(successor_backend.finished) == ["interrupted", "waiting"]


# --- batches, cleanup, integer ids ----------------------------------------------------------


async def test_batch_runs_each_item_as_a_child_and_completes_when_all_have(settings: Settings) -> None:
    async with scripted(settings, concurrency=2, hold=["b"]) as (engine, backend):
        parent = await engine.submit_batch(
            [image("a"), image("b", count=2)], priority="high", meta={"source": "test"}
        )
        assert (parent.kind.value, parent.status, parent.meta) == (
            "batch",
            RunStatus.QUEUED,
            {"source": "test"},
        )
        children = (await engine.list_runs(parent_id=parent.id)).items
        assert sorted(c.inputs["prompt"] for c in children) == ["a", "b"]
        assert {c.priority.value for c in children} == {"high"}

        await backend.wait_started("b")
        a = next(c for c in children if c.inputs["prompt"] == "a")
        await finished(engine, a.id)
        await wait_until_status(engine, parent.id, RunStatus.RUNNING)
        # a is done; b reports its steps and waits to finish (the parent follows within a refresh).
        with anyio.fail_after(WAIT):
            while (halfway := await engine.get_run(parent.id)).progress < 0.5:
                await anyio.sleep(0.01)
        assert halfway.message == "1 of 2 done"

        backend.release("b")
        done = await finished(engine, parent.id)
        assert done.status is RunStatus.COMPLETED and done.progress == 1.0
        assert done.result is not None and done.result["completed"] == 2
        assert sorted(done.result["runs"]) == sorted(c.id for c in children)
        top = [r.id for r in (await engine.list_runs(top_level=True)).items]
        assert top == [parent.id]
        assert await engine.count_runs(top_level=True) == 1
        assert await engine.count_runs() == 3


async def wait_until_status(engine: Engine, run_id: str, status: RunStatus) -> Run:
    with anyio.fail_after(WAIT):
        while (run := await engine.get_run(run_id)).status is not status:
            await anyio.sleep(0.005)
    return run


async def test_batch_with_one_invalid_item_records_nothing_and_names_the_item(settings: Settings) -> None:
    async with scripted(settings) as (engine, _):
        with pytest.raises(InvalidInput) as caught:
            await engine.submit_batch([image("fine"), image("bad", width=7)])
        assert caught.value.field == "items[1].width"
        assert await engine.count_runs() == 0
        with pytest.raises(InvalidInput, match="at least one"):
            await engine.submit_batch([])


async def test_a_failed_item_fails_the_batch_and_retrying_the_batch_reruns_only_it(
    settings: Settings,
) -> None:
    async with scripted(settings) as (engine, backend):
        backend.fail("broken", times=1, retryable=False)
        parent = await engine.submit_batch([image("fine"), image("broken")])
        failed = await finished(engine, parent.id)
        assert failed.status is RunStatus.FAILED
        assert failed.error is not None and "1 of 2 failed" in failed.error and "broken" in failed.error

        again = await engine.retry(parent.id)
        assert again.status in (RunStatus.QUEUED, RunStatus.RUNNING)
        done = await finished(engine, parent.id)
        assert done.status is RunStatus.COMPLETED
        assert backend.attempts == {"fine": 1, "broken": 2}


async def test_cancelling_a_batch_cancels_its_unfinished_items(settings: Settings) -> None:
    async with scripted(settings, concurrency=1, hold=["first"]) as (engine, backend):
        parent = await engine.submit_batch([image("first"), image("second"), image("third")])
        await backend.wait_started("first")
        cancelled = await engine.cancel(parent.id)
        assert cancelled.status is RunStatus.CANCELLED
        await backend.wait_cancelled("first")
        children = (await engine.list_runs(parent_id=parent.id)).items
        assert {c.status for c in children} == {RunStatus.CANCELLED}
        assert backend.started == ["first"]


async def test_a_batch_interrupted_by_a_restart_finishes_after_it(
    settings: Settings, ledger_place: LedgerPlace
) -> None:
    settings = ledger_place.settings(settings)
    async with scripted(settings, concurrency=1, hold_all=True) as (engine, backend):
        parent = await engine.submit_batch([image("one"), image("two")])
        await backend.wait_started("one")
    async with scripted(settings, concurrency=1) as (engine, backend):
        done = await finished(engine, parent.id)
        assert done.status is RunStatus.COMPLETED
        assert sorted(backend.finished) == ["one", "two"]


async def test_purge_deletes_finished_runs_older_than_the_age_given(settings: Settings) -> None:
    async with scripted(settings, hold=["active"]) as (engine, backend):
        old = await finished(engine, (await engine.submit_image(image("old"))).id)
        batch = await finished(engine, (await engine.submit_batch([image("x"), image("y")])).id)
        active = await engine.submit_image(image("active"))
        await backend.wait_started("active")
        assert await engine.purge(older_than_s=3600) == []
        await anyio.sleep(0.05)
        removed = await engine.purge(older_than_s=0.01)
        assert sorted(removed) == sorted([old.id, batch.id])
        assert [r.id for r in (await engine.list_runs()).items] == [active.id]
        assert files_in(settings, old.id) == []
        with pytest.raises(InvalidInput):
            await engine.purge(older_than_s=1, statuses=["running"])
        backend.release_all()


async def test_runs_can_be_found_by_seq_and_paged_by_offset(settings: Settings) -> None:
    async with scripted(settings) as (engine, _):
        runs = [await engine.submit_image(image(f"n{n}")) for n in range(5)]
        assert (await engine.get_run_by_seq(runs[2].seq)).id == runs[2].id
        with pytest.raises(RunNotFound):
            await engine.get_run_by_seq(10_000)
        with pytest.raises(InvalidInput):
            await engine.get_run_by_seq(0)
        page = await engine.list_runs(limit=2, offset=1)
        assert [r.id for r in page.items] == [runs[3].id, runs[2].id]
        assert await engine.count_runs(status="queued,running,completed") == 5
