"""A disk that refuses a run's images fails or retries that run, never the server.

Two ways in: a storage adapter that refuses writes (through the artifact port, as a full disk
would), and a real `atelier serve` process whose artifacts folder it may not write to.
"""

from __future__ import annotations

import errno
import os
import shutil
import stat
import subprocess
import time
from pathlib import Path

import anyio
import httpx
import pytest

from core.artifacts.filesystem import FilesystemStore
from core.engine import Engine
from core.models import RunStatus
from core.settings import Settings
from http_compat.app import build_app
from tests.http_served import serve_app
from tests.procs import Server, atelier_command, atelier_env, free_port

pytestmark = pytest.mark.anyio


class RefusingStore(FilesystemStore):
    """The filesystem store, refusing writes with ENOSPC while `refusing` is set (a full disk)."""

    def __init__(self, root: Path, *, refusals: int | None = None) -> None:
        super().__init__(root)
        self.refusals = refusals  # None: refuse until told otherwise
        self.refused = 0

    @property
    def refusing(self) -> bool:
        return self.refusals is None or self.refused < self.refusals

    async def put(self, key: str, data: bytes) -> None:
        if self.refusing:
            self.refused += 1
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), key)
        await super().put(key, data)


def params(prompt: str, **extra: object) -> dict[str, object]:
    return {"prompt": prompt, "width": 64, "height": 64, "steps": 2, **extra}


async def test_a_refused_save_is_retried_and_then_completes(settings: Settings) -> None:
    store = RefusingStore(settings.artifacts_dir, refusals=1)
    async with Engine.open(settings, store=store) as engine:
        run = await engine.submit_image(params("a lighthouse"))
        done = await engine.wait(run.id, 20)
        assert done.status is RunStatus.COMPLETED, done.error
        assert done.attempts == 2
        log = [entry.message for entry in await engine.logs(run.id)]
        assert any("No space left on device" in line and "retrying" in line for line in log), log
        assert [a.filename for a in done.artifacts] == ["image-01.png"]
        # A later save worked: the storage is reported healthy again.
        status = await engine.status()
        assert status["storage"]["ok"] is True
        assert status["healthy"] is True


async def test_a_disk_that_keeps_refusing_fails_the_run_and_the_engine_keeps_serving(
    settings: Settings,
) -> None:
    store = RefusingStore(settings.artifacts_dir)
    async with Engine.open(settings, store=store) as engine:
        run = await engine.submit_image(params("a harbour"), max_attempts=2)
        failed = await engine.wait(run.id, 20)
        assert failed.status is RunStatus.FAILED
        assert failed.attempts == 2
        assert "storage error" in (failed.error or "") and "No space left on device" in (failed.error or "")
        assert failed.artifacts == []
        assert not (settings.artifacts_dir / "runs" / run.id).exists()  # no half-saved files

        status = await engine.status()
        assert status["healthy"] is False
        assert status["storage"]["ok"] is False
        assert "No space left on device" in status["storage"]["last_error"]

        # The disk has room again: the same engine saves the next run and the retried one.
        store.refusals = 0
        later = await engine.wait((await engine.submit_image(params("a pier"))).id, 20)
        assert later.status is RunStatus.COMPLETED
        retried = await engine.wait((await engine.retry(run.id)).id, 20)
        assert retried.status is RunStatus.COMPLETED
        assert (await engine.status())["storage"]["ok"] is True


async def test_health_answers_throughout_while_saves_fail(settings: Settings) -> None:
    store = RefusingStore(settings.artifacts_dir)
    async with (
        Engine.open(settings, store=store) as engine,
        serve_app(build_app(engine, settings)) as url,
        httpx.AsyncClient(base_url=url, timeout=5) as http,
    ):
        created = await http.post(
            "/adgen/generate", json={"prompt": "a quay", "width": 64, "height": 64, "steps": 2}
        )
        assert created.status_code in (200, 201, 202), created.text
        run_id = created.json()["run_id"]
        answers = []
        with anyio.fail_after(20):
            while True:
                health = await http.get("/health")
                answers.append(health.status_code)
                run = await engine.get_run(run_id)
                if run.status.is_final:
                    break
                await anyio.sleep(0.02)
        assert run.status is RunStatus.FAILED
        health = await http.get("/health")
        assert health.status_code == 503
        body = health.json()
        assert body["status"] == "degraded"
        assert body["storage"]["ok"] is False
        assert "No space left on device" in body["storage"]["last_error"]
        assert set(answers) <= {200, 503}
        # The contracts' own health routes say so too, each in its words.
        detailed = (await http.get("/adgen/health/detailed")).json()
        assert detailed["ok"] is False and "No space left on device" in detailed["storage"]
        pod = await http.get("/pod/health")
        assert pod.status_code == 503 and pod.json()["status"] == "unhealthy"


def _unwritable(folder: Path) -> list[str]:
    """Make `folder` read-only for the server, and return the command prefix that makes that
    stick: root ignores permission bits, so a root test drops the capability that lets it."""
    folder.mkdir(parents=True, exist_ok=True)
    folder.chmod(stat.S_IRUSR | stat.S_IXUSR | stat.S_IRGRP | stat.S_IXGRP | stat.S_IROTH | stat.S_IXOTH)
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("running as root without setpriv: cannot make a folder unwritable to the server")
    return [setpriv, "--bounding-set=-dac_override,-dac_read_search"]


def test_a_read_only_artifacts_folder_fails_runs_not_the_server(tmp_path: Path) -> None:
    home = tmp_path / "home"
    artifacts = home / "artifacts"
    prefix = _unwritable(artifacts)
    port = free_port()
    process = subprocess.Popen(
        [*prefix, *atelier_command(), "serve", "--port", str(port)],
        env=atelier_env(home, ATELIER_RETRY_BACKOFF_S="0.05", ATELIER_LOCAL_STEP_MS="0"),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    server = Server(process, f"http://127.0.0.1:{port}")
    try:
        server.wait_healthy()
        with httpx.Client(base_url=server.url, timeout=5) as http:
            assert http.get("/health").json()["storage"]["ok"] is False  # the probe sees it at once
            run_id = http.post(
                "/adgen/generate", json={"prompt": "a dune", "width": 64, "height": 64, "steps": 2}
            ).json()["run_id"]
            deadline = time.monotonic() + 30
            while True:
                started = time.monotonic()
                health = http.get("/health")
                assert time.monotonic() - started < 2
                assert health.status_code == 503
                run = http.get(f"/adgen/runs/{run_id}").json()
                if run["status"] in ("FAILED", "COMPLETED") or time.monotonic() > deadline:
                    break
                time.sleep(0.05)
            assert run["status"] == "FAILED", run
            assert "Permission denied" in str(run), run
            assert process.poll() is None

            # Writable again: the same server completes the retried run.
            artifacts.chmod(0o755)
            retried = http.post(f"/pod/api/jobs/job_{run_id}/retry")
            assert retried.status_code == 200, retried.text
            deadline = time.monotonic() + 30
            while http.get(f"/adgen/runs/{run_id}").json()["status"] != "COMPLETED":
                assert time.monotonic() < deadline, http.get(f"/adgen/runs/{run_id}").json()
                time.sleep(0.05)
            assert http.get("/health").status_code == 200
    finally:
        if process.poll() is None:
            process.terminate()
            process.wait(10)
        if process.stdout:
            process.stdout.close()
