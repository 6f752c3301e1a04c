"""A run's status GET, on every contract, shows the run as it is now.

Those answers are kept and sent again while what they show is unchanged (http_compat.answers);
these tests change a run that every contract has just answered for (twice, so the second answer
may have been a kept one) and look at it again: retried, deleted, deleted by another process,
and running, its progress moving.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import anyio
import pytest

from core.models import RunStatus
from tests.http_served import Served, atelier_http
from tests.procs import atelier_command, atelier_env
from tests.scripted_backend import ScriptedBackend

pytestmark = pytest.mark.anyio

SMALL = {"width": 64, "height": 64, "steps": 2}
DOORS = ("adgen", "comfygen", "pod", "isengard", "desktop")
# Each contract's word for a run that failed, runs again, and completed.
WORDS = {
    "adgen": ("FAILED", "RUNNING", "COMPLETED"),
    "comfygen": ("failed", "running", "completed"),
    "pod": ("failed", "running", "completed"),
    "isengard": ("failed", "running", "completed"),
    "desktop": ("failed", "generating", "completed"),
}


async def status_path(served: Served, door: str, run_id: str) -> str:
    if door == "desktop":
        return f"/desktop/api/history/{(await served.engine.get_run(run_id)).seq}"
    return {
        "adgen": f"/adgen/runs/{run_id}",
        "comfygen": f"/comfygen/generate/{run_id}",
        "pod": f"/pod/api/jobs/job_{run_id}",
        "isengard": f"/isengard/api/generation/gen-{run_id}",
    }[door]


def status_of(door: str, body: dict[str, Any]) -> str:
    return body["data"]["status"] if door == "desktop" else body["status"]


async def statuses(served: Served, paths: dict[str, str]) -> dict[str, str]:
    """Each contract's status word for the run, asked twice (the second answer may be a kept one)."""
    seen = {}
    for door, path in paths.items():
        first = await served.http.get(path)
        again = await served.http.get(path)
        assert first.status_code == again.status_code == 200, (door, first.text)
        assert first.json() == again.json(), door
        seen[door] = status_of(door, again.json())
    return seen


async def submit(served: Served, prompt: str) -> str:
    response = await served.http.post("/adgen/generate", json={"prompt": prompt, **SMALL})
    assert response.status_code == 200, response.text
    return response.json()["run_id"]


async def test_a_failed_run_retried_shows_running_then_completed_on_every_contract(tmp_path: Path) -> None:
    backend = ScriptedBackend()
    backend.fail("a fox", times=1, retryable=False)
    async with atelier_http(tmp_path, backends={"local": backend}) as served:
        run_id = await submit(served, "a fox")
        assert (await served.finished(run_id)).status is RunStatus.FAILED
        paths = {door: await status_path(served, door, run_id) for door in DOORS}
        assert await statuses(served, paths) == {door: words[0] for door, words in WORDS.items()}

        backend.hold("a fox")
        await served.engine.retry(run_id)
        await backend.wait_started("a fox", times=2)
        assert await statuses(served, paths) == {door: words[1] for door, words in WORDS.items()}

        backend.release("a fox")
        assert (await served.finished(run_id)).status is RunStatus.COMPLETED
        assert await statuses(served, paths) == {door: words[2] for door, words in WORDS.items()}
        files = (await served.http.get(paths["adgen"])).json()["artifacts"]
        assert [f["filename"] for f in files] == ["image-01.png"]


async def test_a_deleted_run_is_not_found_on_every_contract(tmp_path: Path) -> None:
    async with atelier_http(tmp_path) as served:
        run_id = await submit(served, "a heron")
        await served.finished(run_id)
        paths = {door: await status_path(served, door, run_id) for door in DOORS}
        assert set((await statuses(served, paths)).values()) == {"COMPLETED", "completed"}

        assert (await served.http.delete(f"/adgen/runs/{run_id}")).status_code == 204
        for door, path in paths.items():
            assert (await served.http.get(path)).status_code == 404, door


async def test_a_run_deleted_by_another_process_is_not_found_on_every_contract(tmp_path: Path) -> None:
    async with atelier_http(tmp_path) as served:
        run_id = await submit(served, "a crane")
        await served.finished(run_id)
        paths = {door: await status_path(served, door, run_id) for door in DOORS}
        assert set((await statuses(served, paths)).values()) == {"COMPLETED", "completed"}

        # `atelier runs delete` on the same data directory: the server hears nothing of it.
        deleted = await anyio.to_thread.run_sync(
            lambda: subprocess.run(
                [*atelier_command(), "runs", "delete", run_id],
                env=atelier_env(served.settings.home),
                capture_output=True,
                text=True,
                timeout=60,
            )
        )
        assert deleted.returncode == 0, deleted.stderr
        for door, path in paths.items():
            assert (await served.http.get(path)).status_code == 404, door


async def test_a_finished_runs_links_follow_the_host_each_request_names(tmp_path: Path) -> None:
    async with atelier_http(tmp_path) as served:
        run_id = await submit(served, "an owl")
        await served.finished(run_id)
        port = served.url.rsplit(":", 1)[1]
        for host in (f"127.0.0.1:{port}", f"localhost:{port}", f"127.0.0.1:{port}"):
            job = (await served.http.get(f"/pod/api/jobs/job_{run_id}", headers={"Host": host})).json()
            [image] = job["result"]["generatedImages"]
            assert image["url"].startswith(f"http://{host}/pod/api/files/"), host


async def test_a_running_runs_progress_moves_on_every_contract_that_shows_it(tmp_path: Path) -> None:
    async with atelier_http(tmp_path, local_step_ms=100) as served:
        response = await served.http.post(
            "/adgen/generate", json={"prompt": "a slow heron", **SMALL, "steps": 12}
        )
        run_id = response.json()["run_id"]
        doors = ("adgen", "comfygen", "pod", "isengard")  # desktop's detail has no progress
        paths = {door: await status_path(served, door, run_id) for door in doors}
        seen: dict[str, set[float]] = {door: set() for door in doors}
        with anyio.fail_after(30):
            while (run := await served.engine.get_run(run_id)).status is not RunStatus.COMPLETED:
                for door, path in paths.items():
                    body = (await served.http.get(path)).json()
                    if status_of(door, body) in ("RUNNING", "running"):
                        seen[door].add(body["progress"])
                await anyio.sleep(0.02)
        assert run.status is RunStatus.COMPLETED
        assert all(len(values) >= 2 for values in seen.values()), seen
