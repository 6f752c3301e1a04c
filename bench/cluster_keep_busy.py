"""Keep-busy across a cluster: 2 `atelier worker` x 2 fake ComfyUI servers each (a benchmark, not a test).

Four fake ComfyUI servers (`tests/fakes/comfyui.py`, separate processes on loopback, one prompt
at a time, `--prompt-ms` of simulated GPU time each, as in bench/comfyui_keep_busy.py). Each round
has a fresh PostgreSQL database, two `atelier worker` processes (ATELIER_DISPATCH=procrastinate,
each a GPU box of its own: its own data directory and two of the servers in ATELIER_COMFYUI_URLS,
its default concurrency) and one front door: an engine in this process that accepts and executes
nothing (as `atelier serve` without --execute). R runs (distinct seeds, so ComfyUI's cache never
answers) are submitted one after another through it; the makespan is the time from the first
submit to the latest `finished_at` in the ledger, over the ideal R x t / 4. 1.00 means no server
ever waited for Atelier. The time the front door took to accept the runs is printed beside it
(each run and its job are one transaction: while they are accepted, servers may wait for work).

References in the same run, on the same four servers: the fakes alone (the prompts posted straight
to them) and the single box (one engine, SQLite, in-process dispatch, all four servers:
bench/comfyui_keep_busy.py's makespan round). Each run is checked to have run exactly once
(completed, attempts 1, one image, one procrastinate job); the script exits 1 if not, or if a run
fails. There is no goal figure. The load averages are printed: the machine is shared.

  python bench/cluster_keep_busy.py [--runs 200] [--prompt-ms 200] [--rounds 2] [--quick]
                                    [--database-url URL]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import anyio

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.cluster_nodes import (
    admin_url,
    exactly_once,
    explain,
    fresh_database,
    front_door_settings,
    load,
    until_finished,
    workers,
)
from bench.comfyui_keep_busy import fake_capacity, fake_servers, makespan_round
from core.engine import Engine

WORKERS, SERVERS_EACH = 2, 2


def comfyui_env(urls: list[str]) -> dict[str, str]:
    return {
        "ATELIER_BACKEND": "comfyui",
        "ATELIER_COMFYUI_URLS": ",".join(urls),
        "ATELIER_RETRY_BACKOFF_S": "0.05",
    }


async def submit_and_finish(
    url: str, home: Path, urls: list[str], runs: int, seed_base: int
) -> tuple[list[str], float, float]:
    """(run ids, seconds from the first submit to the last, and to the ledger's last finish),
    through a front door."""
    async with Engine.open(front_door_settings(url, home, **comfyui_env(urls))) as front:
        started = time.time()
        ids = []
        for index in range(runs):
            params = {
                "prompt": "keep-busy benchmark",
                "seed": seed_base + index,
                "steps": 20,
                "width": 64,
                "height": 64,
            }
            ids.append((await front.submit_image(params)).id)
        submitted = time.time() - started
    _, last_finished = await until_finished(url, runs, timeout_s=120 + runs)
    return ids, submitted, last_finished - started


def cluster_round(
    admin: str, scratch: Path, urls: list[str], runs: int, seed_base: int
) -> tuple[float, float, list[str]]:
    boxes = [comfyui_env(urls[i * SERVERS_EACH : (i + 1) * SERVERS_EACH]) for i in range(WORKERS)]
    with fresh_database(admin) as url:
        with workers(url, scratch / "workers", boxes, step_ms="0") as logs:
            ids, submitted, elapsed = anyio.run(
                submit_and_finish, url, scratch / "front", urls, runs, seed_base
            )
        # Read once the workers have stopped: a job is marked succeeded just after its run ends.
        wrong = exactly_once(url, ids)
    if wrong:
        explain(logs, wrong)
    return submitted, elapsed, wrong


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--prompt-ms", type=float, default=200)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="40 runs, one round: a check")
    parser.add_argument("--database-url", default=None, help="a server where databases may be created")
    options = parser.parse_args()
    if options.quick:
        options.runs, options.rounds = 40, 1
    servers = WORKERS * SERVERS_EACH
    ideal = options.runs * options.prompt_ms / 1000 / servers
    admin = admin_url(options.database_url)
    print(f"load before: {load()} (1/5/15 min averages)")
    alone, single, cluster, wrong = [], [], [], []
    try:
        with (
            fake_servers(servers, options.prompt_ms) as urls,
            tempfile.TemporaryDirectory(dir="/var/tmp") as scratch,
        ):
            for round_ in range(options.rounds):  # interleaved: a burst of load elsewhere spreads over all
                seeds = (round_ + 1) * 1_000_000
                alone.append(anyio.run(fake_capacity, urls, options.runs, seeds) / ideal)
                elapsed, _ = anyio.run(
                    makespan_round, Path(scratch) / f"single-{round_}", urls, options.runs, seeds + 300_000
                )
                single.append(elapsed / ideal)
                submitted, elapsed, problems = cluster_round(
                    admin, Path(scratch) / f"cluster-{round_}", urls, options.runs, seeds + 600_000
                )
                cluster.append(elapsed / ideal)
                wrong += problems
                print(
                    f"round {round_ + 1}: makespan / ideal ({ideal:.2f} s): fakes alone {alone[-1]:.4f}, "
                    f"single box {single[-1]:.4f}, cluster {cluster[-1]:.4f} (its front door took {submitted:.2f} s "
                    f"to accept the {options.runs} runs)"
                )
    except Exception as exc:
        print(f"error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    print(
        f"makespan / ideal, median of {options.rounds} ({options.runs} runs, {servers} servers x "
        f"{options.prompt_ms:g} ms): cluster ({WORKERS} workers x {SERVERS_EACH} servers, PostgreSQL) "
        f"{statistics.median(cluster):.4f}; single box (one engine, SQLite, {servers} servers) "
        f"{statistics.median(single):.4f}; the fakes alone {statistics.median(alone):.4f}  "
        f"exactly once: {'yes' if not wrong else f'NO ({len(wrong)})'}"
    )
    for problem in wrong[:10]:
        print(f"  {problem}")
    print(f"load after: {load()}")
    return 1 if wrong else 0


if __name__ == "__main__":
    sys.exit(main())
