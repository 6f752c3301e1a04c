"""Dispatch through procrastinate on ComfyUI, end to end: a fake ComfyUI server (in a thread of the
test) and real `atelier serve` / `atelier worker` processes on a fresh PostgreSQL database. A worker
killed while ComfyUI renders its prompt: another worker collects that prompt (it is not POSTed
again); a cancel sent to the front door interrupts the prompt the worker is following."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.dispatch_nodes import (
    NODES,
    comfyui_env,
    fake_comfyui,
    fresh_database,
    ledger_run,
    node_env,
    rows,
    status_of,
    submit,
    wait_for,
    worker,
)
from tests.procs import serve

pytestmark = NODES


@pytest.fixture(scope="module")
def database_url() -> Iterator[str]:
    with fresh_database() as url:
        yield url


def handle_of(url: str, run_id: str) -> str | None:
    [(handle,)] = rows(url, "SELECT backend_handle FROM runs WHERE id = %s", run_id)
    return handle


def test_on_comfyui_a_killed_worker_s_prompt_is_collected_not_posted_again(
    tmp_path: Path, database_url: str
) -> None:
    logs = {name: tmp_path / f"{name}.log" for name in ("one", "two")}
    with fake_comfyui(prompt_seconds=4.0) as (fake, comfyui):
        env = comfyui_env(comfyui)
        with (
            serve(tmp_path / "front", env=node_env(database_url, **env)) as front,
            worker(tmp_path / "one", database_url, logs["one"], **env) as one,
            worker(tmp_path / "two", database_url, logs["two"], **env) as two,
        ):
            run_id = submit(front.url, "a lighthouse on a GPU", steps=8)
            wait_for(lambda: handle_of(database_url, run_id), 15)  # the prompt is with ComfyUI
            holder, other = (one, "two") if "Starting job" in logs["one"].read_text() else (two, "one")
            holder.kill()
            holder.wait(5)
            run = wait_for(
                lambda: (lambda s: s if s["status"] == "COMPLETED" else None)(status_of(front.url, run_id)),
                25,
                0.3,
            )
            assert len(fake.requests_to("POST", "/prompt")) == 1  # collected, not rendered twice
            assert len(run["artifacts"]) == 1
            messages = [
                m for (m,) in rows(database_url, "SELECT message FROM run_logs WHERE run_id = %s", run_id)
            ]
            assert "was running on comfyui when its worker died; reconciling with it" in messages
            assert "reconnecting to its backend" in messages
            assert "Starting job atelier.execute_run" in logs[other].read_text()
            # The attempt goes on where the prompt is: it is not counted again.
            assert ledger_run(database_url, run_id)[:2] == ("completed", 1)


def test_on_comfyui_a_cancel_at_the_front_door_interrupts_the_worker_s_prompt(
    tmp_path: Path, database_url: str
) -> None:
    with fake_comfyui(prompt_seconds=20.0) as (fake, comfyui):
        env = comfyui_env(comfyui)
        with (
            serve(tmp_path / "front", env=node_env(database_url, **env)) as front,
            worker(tmp_path / "gpu-box", database_url, tmp_path / "worker.log", **env),
        ):
            run_id = submit(front.url, "a long render", steps=8)
            # The front door never speaks to ComfyUI (the worker does), and is healthy without it.
            health = httpx.get(f"{front.url}/health", timeout=10)
            assert health.status_code == 200 and "comfyui" not in health.json()["backends"], health.text
            wait_for(lambda: fake.running_prompt_id is not None, 15)
            answer = httpx.post(f"{front.url}/adgen/runs/{run_id}/cancel", timeout=10)
            assert answer.status_code == 200 and answer.json()["status"] == "CANCELLED", answer.text
            wait_for(lambda: fake.requests_to("POST", "/interrupt"), 10)
            wait_for(lambda: fake.running_prompt_id is None, 10)
            assert ledger_run(database_url, run_id)[0] == "cancelled"
