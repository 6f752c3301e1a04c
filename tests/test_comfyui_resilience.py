"""The ComfyUI pool when things go wrong: cancels, dead servers, dropped sockets, Atelier restarts.

Real engines (SQLite ledger on a temp home) against fake ComfyUI 0.3.64 servers on loopback.
Every check is on what a user or the GPU server would see: the run's final status, its
attempts, `get_status`, and the requests each fake received (a cancel must reach ComfyUI, a
collected prompt must not be POSTed twice).
"""

from __future__ import annotations

import itertools
import json
import socket
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client

from core.engine import Engine
from core.models import Run, RunStatus
from core.settings import Settings
from mcp_server.server import build_mcp
from tests.fakes.comfyui import FakeComfyUI, FakeServer, serve_fake
from tests.test_comfyui_backend import FOX, OCEAN, SMALL, finished, posted_prompts, until_servers_up
from tests.test_mcp_tools import ok

pytestmark = pytest.mark.anyio


def settings_for(home: Path, *urls: str, **overrides: Any) -> Settings:
    return Settings.from_env(
        {},
        home=home,
        backend="comfyui",
        comfyui_urls=",".join(urls),
        retry_backoff_s=0.01,
        **overrides,
    )


@asynccontextmanager
async def serving(*fakes: FakeComfyUI) -> AsyncIterator[list[FakeServer]]:
    async with AsyncExitStack() as stack:
        yield [await stack.enter_async_context(serve_fake(fake)) for fake in fakes]


async def until(condition: Any, what: str, within: float = 10) -> None:
    """Wait for `condition()` to hold (fails the test, naming `what`, instead of hanging)."""
    with anyio.move_on_after(within):
        while not condition():
            await anyio.sleep(0.01)
    assert condition(), f"gave up after {within} s waiting for {what}"


async def until_status(engine: Engine, run_id: str, status: RunStatus, within: float = 10) -> Run:
    with anyio.fail_after(within):
        while (run := await engine.get_run(run_id)).status is not status:
            await anyio.sleep(0.01)
    return run


async def server_rows(engine: Engine) -> list[dict[str, Any]]:
    return (await engine.status())["backends"]["comfyui"]["servers"]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def handle_prompt_id(run: Run) -> str:
    assert run.backend_handle, f"run {run.id} recorded no ComfyUI prompt"
    return json.loads(run.backend_handle)["prompt_id"]


# --- cancel ---------------------------------------------------------------------------------


async def test_cancelling_a_queued_run_deletes_it_from_comfyuis_queue(tmp_path: Path) -> None:
    fake = FakeComfyUI(prompt_seconds=3.0)
    async with serving(fake) as [server]:
        config = settings_for(tmp_path / "home", server.url, comfyui_queue_depth=2)
        async with Engine.open(config) as engine:
            await until_servers_up(engine, 1)
            first = await engine.submit_image({"prompt": FOX, "seed": 1, **SMALL})
            second = await engine.submit_image({"prompt": OCEAN, "seed": 2, **SMALL})
            await until(
                lambda: fake.running_prompt_id is not None and len(fake.pending_prompt_ids) == 1,
                "one prompt running and the next one waiting in ComfyUI's queue",
            )
            waiting = fake.pending_prompt_ids[0]
            queued_run = await engine.get_run(second.id)
            assert handle_prompt_id(queued_run) == waiting

            cancelled = await engine.cancel(second.id)
            final = await finished(engine, cancelled.id)
            assert final.status is RunStatus.CANCELLED
            await until(lambda: fake.pending_prompt_ids == [], "the cancelled prompt leaves ComfyUI's queue")
            assert {"delete": [waiting]} in fake.requests_to("POST", "/queue")
            assert waiting not in fake.history, "a prompt cancelled while queued never ran"
            # The running one is untouched.
            assert fake.running_prompt_id == handle_prompt_id(await engine.get_run(first.id))
            await engine.cancel(first.id)


async def test_cancelling_a_running_run_interrupts_it_on_comfyui(tmp_path: Path) -> None:
    fake = FakeComfyUI(prompt_seconds=5.0)
    async with serving(fake) as [server], Engine.open(settings_for(tmp_path / "home", server.url)) as engine:
        await until_servers_up(engine, 1)
        run = await engine.submit_image({"prompt": FOX, "seed": 1, **SMALL})
        await until(lambda: fake.running_prompt_id is not None, "the prompt starts on ComfyUI")
        prompt_id = fake.running_prompt_id

        await engine.cancel(run.id)
        final = await finished(engine, run.id)
        assert final.status is RunStatus.CANCELLED
        assert final.artifacts == []
        await until(
            lambda: {"prompt_id": prompt_id} in fake.requests_to("POST", "/interrupt"),
            "Atelier interrupts the prompt on ComfyUI",
        )
        await until(lambda: fake.running_prompt_id is None, "ComfyUI stops the interrupted prompt")
        await until(lambda: prompt_id in fake.history, "ComfyUI records the interruption")
        messages = [name for name, _ in fake.history[prompt_id]["status"]["messages"]]
        assert "execution_interrupted" in messages
        # Long before the five seconds of GPU time it would have taken.
        assert (await engine.get_run(run.id)).status is RunStatus.CANCELLED


# --- servers going away ---------------------------------------------------------------------


async def test_a_server_killed_mid_run_hands_the_run_to_another_and_comes_back(tmp_path: Path) -> None:
    fakes = [FakeComfyUI(prompt_seconds=3.0), FakeComfyUI(prompt_seconds=3.0)]
    async with serving(*fakes) as servers:
        config = settings_for(tmp_path / "home", *(s.url for s in servers), comfyui_queue_depth=1)
        async with Engine.open(config) as engine:
            await until_servers_up(engine, 2)
            run = await engine.submit_image({"prompt": FOX, "seed": 1, **SMALL})
            await until(lambda: any(f.running_prompt_id for f in fakes), "the prompt starts on a server")
            index = next(i for i, f in enumerate(fakes) if f.running_prompt_id)
            doomed, doomed_server = fakes[index], servers[index]
            spare, spare_server = fakes[1 - index], servers[1 - index]
            assert handle_prompt_id(await engine.get_run(run.id)) == doomed.running_prompt_id
            spare.prompt_seconds = 0.05

            await doomed_server.stop()
            final = await finished(engine, run.id, within=20)
            assert final.status is RunStatus.COMPLETED, final.error
            assert final.attempts == 2
            assert len(final.artifacts) == 1
            assert len(posted_prompts(spare)) == 1, "the second attempt went to the server still up"
            assert handle_prompt_id(final) in spare.history

            rows = {row["url"]: row for row in await server_rows(engine)}
            assert rows[doomed_server.url]["up"] is False
            assert rows[doomed_server.url]["error"]
            assert rows[spare_server.url]["up"] is True
            status = await engine.status()
            assert status["healthy"] is True and status["backends"]["comfyui"]["servers_up"] == 1

            # Out of rotation: new work goes to the spare only.
            extra = await engine.submit_image({"prompt": OCEAN, "seed": 2, **SMALL})
            assert (await finished(engine, extra.id)).status is RunStatus.COMPLETED
            assert len(posted_prompts(spare)) == 2

            doomed.prompt_seconds = 0.05
            await doomed_server.start()
            await until_servers_up(engine, 2)
            rows = {row["url"]: row for row in await server_rows(engine)}
            assert rows[doomed_server.url]["up"] is True and rows[doomed_server.url]["error"] is None
            # Back in rotation: it takes new work again.
            before = len(posted_prompts(doomed))
            more = [await engine.submit_image({"prompt": FOX, "seed": 100 + n, **SMALL}) for n in range(4)]
            for queued in more:
                assert (await finished(engine, queued.id)).status is RunStatus.COMPLETED
            assert len(posted_prompts(doomed)) > before


async def test_a_dropped_websocket_does_not_lose_the_run(tmp_path: Path) -> None:
    fake = FakeComfyUI(prompt_seconds=1.0)
    async with serving(fake) as [server], Engine.open(settings_for(tmp_path / "home", server.url)) as engine:
        await until_servers_up(engine, 1)
        run = await engine.submit_image({"prompt": FOX, "seed": 1, **SMALL})
        await until(lambda: fake.running_prompt_id is not None, "the prompt starts")
        fake.disconnect_websockets()
        final = await finished(engine, run.id)
        assert final.status is RunStatus.COMPLETED, final.error
        assert final.attempts == 1
        assert len(posted_prompts(fake)) == 1, "the prompt was followed, not sent again"
        assert len(final.artifacts) == 1


async def test_each_server_always_has_its_next_prompt_queued(tmp_path: Path) -> None:
    fake = FakeComfyUI(prompt_seconds=0.3)
    async with serving(fake) as [server]:
        config = settings_for(tmp_path / "home", server.url, comfyui_queue_depth=2)
        async with Engine.open(config) as engine:
            await until_servers_up(engine, 1)
            runs = [await engine.submit_image({"prompt": FOX, "seed": n, **SMALL}) for n in range(5)]
            seen_waiting = False
            while not (await engine.get_run(runs[-1].id)).status.is_final:
                seen_waiting |= fake.running_prompt_id is not None and bool(fake.pending_prompt_ids)
                assert len(fake.pending_prompt_ids) <= 1, "never more than `depth` prompts on a server"
                await anyio.sleep(0.02)
            for run in runs:
                assert (await finished(engine, run.id)).status is RunStatus.COMPLETED
    assert seen_waiting, "a prompt waited in ComfyUI's queue while another ran"

    # Each prompt reached ComfyUI before the one ahead of it finished: the GPU never waited for Atelier.
    def stamp(prompt_id: str, event: str) -> int:
        messages = fake.history[prompt_id]["status"]["messages"]
        return next(data["timestamp"] for name, data in messages if name == event)

    posted = {
        r.json["prompt_id"]: r.at * 1000 for r in fake.requests if r.method == "POST" and r.path == "/prompt"
    }
    order = sorted(posted, key=lambda prompt_id: stamp(prompt_id, "execution_start"))
    assert len(order) == 5
    for ahead, following in itertools.pairwise(order):
        assert posted[following] <= stamp(ahead, "execution_success"), (
            "the GPU idled waiting for the next prompt"
        )


# --- start-up and restarts ------------------------------------------------------------------


async def stop_atelier_mid_prompt(home: Path, server: FakeServer, fake: FakeComfyUI) -> tuple[Run, str]:
    """Start Atelier on `home`, submit a run, and stop Atelier once its prompt runs on ComfyUI."""
    async with Engine.open(settings_for(home, server.url)) as engine:
        await until_servers_up(engine, 1)
        run = await engine.submit_image({"prompt": FOX, "seed": 1, **SMALL})
        await until(lambda: fake.running_prompt_id is not None, "the prompt starts")
        return run, str(fake.running_prompt_id)


async def test_start_up_with_every_server_down_answers_and_runs_once_one_appears(tmp_path: Path) -> None:
    port = free_port()
    config = settings_for(tmp_path / "home", f"http://127.0.0.1:{port}")
    async with Engine.open(config) as engine, Client(build_mcp(engine)) as client:
        tools = {tool.name for tool in (await client.list_tools()).tools}
        assert {"generate_image", "get_status", "list_models"} <= tools
        status = await ok(client, "get_status")
        comfyui = status["backends"]["comfyui"]
        assert status["healthy"] is False
        assert comfyui["up"] is False and comfyui["servers_up"] == 0
        assert f"127.0.0.1:{port}" in comfyui["error"]

        run = await engine.submit_image({"prompt": FOX, "seed": 1, **SMALL})
        await anyio.sleep(0.5)
        waiting = await engine.get_run(run.id)
        assert waiting.status is RunStatus.QUEUED, "the run waits for a server instead of failing"
        assert waiting.attempts == 0

        fake = FakeComfyUI()
        async with serve_fake(fake, port=port):
            final = await finished(engine, run.id, within=20)
            assert final.status is RunStatus.COMPLETED, final.error
            assert final.attempts == 1
            assert len(posted_prompts(fake)) == 1
            status = await ok(client, "get_status")
            assert status["healthy"] is True


async def test_after_a_restart_a_prompt_finished_on_comfyui_is_collected_not_rerun(tmp_path: Path) -> None:
    fake = FakeComfyUI(prompt_seconds=1.5)
    home = tmp_path / "home"
    async with serving(fake) as [server]:
        run, prompt_id = await stop_atelier_mid_prompt(home, server, fake)
        # Atelier is down; ComfyUI finishes the prompt on its own.
        await until(lambda: prompt_id in fake.history, "ComfyUI finishes the prompt", within=10)
        assert fake.running_prompt_id is None

        async with Engine.open(settings_for(home, server.url)) as engine:
            final = await finished(engine, run.id)
            assert final.status is RunStatus.COMPLETED, final.error
            assert final.attempts == 1, "collecting is not another attempt"
            assert len(final.artifacts) == 1
            assert len(posted_prompts(fake)) == 1, "nothing was sent to ComfyUI again"
            _, data = await engine.read_artifact(run.id, final.artifacts[0].filename)
            [saved] = [
                fake.files.read_file(image["type"], image["subfolder"], image["filename"])
                for output in fake.history[prompt_id]["outputs"].values()
                for image in output.get("images", [])
            ]
            assert data == saved


async def test_after_a_restart_a_prompt_still_running_on_comfyui_is_followed(tmp_path: Path) -> None:
    fake = FakeComfyUI(prompt_seconds=3.0)
    home = tmp_path / "home"
    async with serving(fake) as [server]:
        run, prompt_id = await stop_atelier_mid_prompt(home, server, fake)
        assert fake.running_prompt_id == prompt_id, "stopping Atelier leaves the prompt running"

        async with Engine.open(settings_for(home, server.url)) as engine:
            final = await finished(engine, run.id)
            assert final.status is RunStatus.COMPLETED, final.error
            assert final.attempts == 1
            assert len(posted_prompts(fake)) == 1
            assert prompt_id in fake.history
            assert len(final.artifacts) == 1


async def test_after_a_restart_a_prompt_comfyui_forgot_is_run_again(tmp_path: Path) -> None:
    fake = FakeComfyUI(prompt_seconds=3.0)
    home = tmp_path / "home"
    async with serving(fake) as [server]:
        run, first_prompt = await stop_atelier_mid_prompt(home, server, fake)
        # ComfyUI restarts too: its queue and history are gone.
        await server.stop()
        fake.prompt_seconds = 0.05
        await server.start(fresh=True)
        assert fake.history == {}

        async with Engine.open(settings_for(home, server.url)) as engine:
            final = await finished(engine, run.id, within=20)
            assert final.status is RunStatus.COMPLETED, final.error
            assert len(final.artifacts) == 1
            bodies = posted_prompts(fake)
            assert len(bodies) == 2, "the forgotten prompt was sent again"
            second_prompt = handle_prompt_id(final)
            assert second_prompt != first_prompt
            assert second_prompt in fake.history
