"""Keep-busy on a pool of (fake) ComfyUI servers, and progress latency to MCP (a benchmark, not a test).

Starts N fake ComfyUI servers (`tests/fakes/comfyui.py`, separate processes on loopback), each
taking `--prompt-ms` of simulated GPU time per prompt and running one prompt at a time like
the real thing. Then:

  makespan    R runs (distinct seeds, so ComfyUI's cache never answers) submitted at once; the
              time from the first submit to the last completion, over the ideal R x t / N.
              1.00 means no server ever waited for Atelier.
  progress    runs made one at a time through an in-process MCP client (generate_image,
              waiting): for each ComfyUI `progress` event, the time from its WebSocket frame
              reaching Atelier to the MCP progress notification reaching the client.

  python bench/comfyui_keep_busy.py [--servers 4] [--runs 200] [--prompt-ms 200] [--rounds 3]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import anyio
import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.backends.comfyui.client import ComfyUIServer
from core.engine import Engine
from core.models import RunStatus
from core.settings import Settings
from tests.procs import free_port


@contextmanager
def fake_servers(count: int, prompt_ms: float) -> Iterator[list[str]]:
    ports = [free_port() for _ in range(count)]
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.fakes.comfyui",
                "--port",
                str(port),
                "--prompt-seconds",
                str(prompt_ms / 1000),
            ],
            cwd=Path(__file__).resolve().parents[1],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for port in ports
    ]
    urls = [f"http://127.0.0.1:{port}" for port in ports]
    try:
        deadline = time.monotonic() + 20
        for url in urls:
            while True:
                try:
                    httpx.get(f"{url}/system_stats", timeout=1).raise_for_status()
                    break
                except httpx.HTTPError:
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"fake ComfyUI at {url} did not start") from None
                    time.sleep(0.05)
        yield urls
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(10)


def settings_for(home: Path, urls: list[str]) -> Settings:
    return Settings.from_env(
        {},
        home=home,
        backend="comfyui",
        comfyui_urls=",".join(urls),
        retry_backoff_s=0.05,
        log_level="warning",
    )


async def wait_until_up(engine: Engine, servers: int) -> None:
    with anyio.fail_after(20):
        while (await engine.status())["backends"]["comfyui"]["servers_up"] < servers:
            await anyio.sleep(0.05)


async def makespan_round(home: Path, urls: list[str], runs: int, seed_base: int) -> tuple[float, int]:
    async with Engine.open(settings_for(home, urls)) as engine:
        await wait_until_up(engine, len(urls))

        started = time.perf_counter()
        ids = []
        for index in range(runs):
            run = await engine.submit_image(
                {
                    "prompt": "keep-busy benchmark",
                    "seed": seed_base + index,
                    "steps": 20,
                    "width": 64,
                    "height": 64,
                }
            )
            ids.append(run.id)

        async def follow(run_id: str) -> None:
            run = await engine.wait(run_id, 600)
            assert run.status is RunStatus.COMPLETED, (run.status, run.error)

        async with anyio.create_task_group() as group:
            for run_id in ids:
                group.start_soon(follow, run_id)
        elapsed = time.perf_counter() - started
        retried = (await engine.status())["metrics"]["retried"]
        return elapsed, retried


async def fake_capacity(urls: list[str], runs: int, seed_base: int) -> float:
    """The same prompts posted straight to the fakes, no Atelier: what the fakes themselves manage."""
    import json
    import uuid

    template = json.loads(
        (Path(__file__).resolve().parents[1] / "core/backends/comfyui/workflows/sd15.json").read_text()
    )
    async with httpx.AsyncClient(timeout=30) as http:
        started = time.perf_counter()
        for index in range(runs):
            graph = json.loads(json.dumps(template))
            sampler = next(node for node in graph.values() if node["class_type"] == "KSampler")
            latent = next(node for node in graph.values() if node["class_type"] == "EmptyLatentImage")
            sampler["inputs"].update(seed=seed_base + index, steps=20)
            latent["inputs"].update(width=64, height=64)
            body = {"prompt": graph, "client_id": "bench", "prompt_id": str(uuid.uuid4())}
            (await http.post(f"{urls[index % len(urls)]}/prompt", json=body)).raise_for_status()
        for url in urls:
            while True:
                queue = (await http.get(f"{url}/queue")).json()
                if not queue["queue_running"] and not queue["queue_pending"]:
                    break
                await anyio.sleep(0.005)
        return time.perf_counter() - started


async def progress_latency(home: Path, urls: list[str], runs: int) -> list[float]:
    from mcp import Client

    from mcp_server.server import build_mcp

    arrivals: dict[int, float] = {}
    original = ComfyUIServer._dispatch

    def timed_dispatch(self: ComfyUIServer, message: dict) -> None:
        if message.get("type") == "progress":
            arrivals[int(message["data"]["value"])] = time.perf_counter()
        original(self, message)

    ComfyUIServer._dispatch = timed_dispatch  # type: ignore[method-assign]
    latencies: list[float] = []
    try:
        async with Engine.open(settings_for(home, urls[:1])) as engine:
            await wait_until_up(engine, 1)
            async with Client(build_mcp(engine)) as client:
                for index in range(runs):
                    arrivals.clear()
                    seen: list[tuple[int, float]] = []

                    async def on_progress(
                        progress: float, total: float | None, message: str | None, seen: list = seen
                    ) -> None:
                        now = time.perf_counter()
                        if message and message.startswith("step "):
                            seen.append((int(message.split()[1].split("/")[0]), now))

                    result = await client.call_tool(
                        "generate_image",
                        {
                            "prompt": "progress latency",
                            "seed": 10_000 + index,
                            "steps": 20,
                            "width": 64,
                            "height": 64,
                            "wait_seconds": 60,
                        },
                        progress_callback=on_progress,
                    )
                    assert not result.is_error
                    latencies += [now - arrivals[step] for step, now in seen if step in arrivals]
    finally:
        ComfyUIServer._dispatch = original  # type: ignore[method-assign]
    return latencies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--servers", type=int, default=4)
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--prompt-ms", type=float, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--latency-runs", type=int, default=20)
    args = parser.parse_args()

    ideal = args.runs * args.prompt_ms / 1000 / args.servers
    with (
        fake_servers(args.servers, args.prompt_ms) as urls,
        tempfile.TemporaryDirectory(dir="/var/tmp") as scratch,
    ):
        baseline = [
            anyio.run(fake_capacity, urls, args.runs, 900_000 + r * 100_000) / ideal
            for r in range(args.rounds)
        ]
        print(
            f"the fakes alone (prompts posted straight to them): median {statistics.median(baseline):.4f} x ideal"
        )
        ratios = []
        for round_ in range(args.rounds):
            elapsed, retried = anyio.run(
                makespan_round, Path(scratch) / f"r{round_}", urls, args.runs, round_ * 100_000
            )
            ratios.append(elapsed / ideal)
            print(
                f"round {round_ + 1}: makespan {elapsed:.3f} s, ideal {ideal:.3f} s, ratio {elapsed / ideal:.4f}, retries {retried}"
            )
        print(
            f"makespan / ideal: median {statistics.median(ratios):.4f} over {args.rounds} rounds "
            f"({args.servers} servers x {args.prompt_ms:g} ms, {args.runs} runs); "
            f"Atelier's share, over the fakes alone: {statistics.median(ratios) / statistics.median(baseline):.4f}"
        )

        latencies = sorted(anyio.run(progress_latency, Path(scratch) / "latency", urls, args.latency_runs))
        if latencies:
            p50 = statistics.median(latencies) * 1000
            p99 = latencies[int(0.99 * (len(latencies) - 1))] * 1000
            print(
                f"progress event -> MCP notification: p50 {p50:.2f} ms, p99 {p99:.2f} ms over {len(latencies)} events"
            )


if __name__ == "__main__":
    main()
