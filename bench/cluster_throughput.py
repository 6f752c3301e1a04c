"""Runs per second through PostgreSQL with 1, 2 and 4 `atelier worker` processes (a benchmark, not a test).

Each round has a fresh database, N `atelier worker` processes (real ones, each with a data
directory of its own, the preview renderer at ATELIER_LOCAL_STEP_MS=0, their default
concurrency) and one front door: an engine in this process with ATELIER_DISPATCH=procrastinate
that accepts and executes nothing, as `atelier serve` does without --execute. The engine API is
used, not HTTP, so the figure is the cluster's (accepting a run = its row and its job in one
transaction; workers taking jobs, rendering, recording), not an HTTP client's, and matches the
reference below. R preview runs (64x64) are submitted one after another, and two rates printed:

  open      submitted while the workers run: R over the time from the first submit to the latest
            `finished_at` in the ledger (workers and bench share one clock). The front door's
            acceptance (each run and its job in one transaction) is part of it; its own rate is
            printed beside it.
  drained   the R runs queued first, then the workers started (together): R over the time from
            the ledger's first `started_at` to its latest `finished_at`: what the workers take
            and finish, without the front door.

and for each, the scaling (N workers vs 1).

References in the same run: one commit's cost on this PostgreSQL (a one-row INSERT, one after
another, in a fresh database: each write of a run pays at least that), and the single-box
engine (SQLite, in-process dispatch) on the same R runs submitted the same way
(bench/engine_throughput.py's open loop), its data directory in the same place. The machine is
shared: the load averages are printed with the figures. The workers, PostgreSQL and this
process share its cores, so more workers than cores measure contention too.

Exactly once, checked after every cluster round: each run completed with attempts 1, one
image, one procrastinate job (succeeded). Exits 1 if a run fails or any of that is not so;
there is no goal figure.

  python bench/cluster_throughput.py [--runs 300] [--rounds 2] [--workers 1,2,4] [--quick]
                                     [--dir PATH] [--database-url URL] [--no-synchronous-commit]

--no-synchronous-commit makes the bench's databases return from a commit before its WAL is on
disk: a reference for how much of a run's cost is the database's disk flushes (not a setting to
run a ledger with).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import anyio

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.cluster_nodes import (
    admin_url,
    commit_cost,
    exactly_once,
    explain,
    fresh_database,
    front_door_settings,
    load,
    until_finished,
    workers,
)
from bench.engine_throughput import PARAMS, open_loop
from core.engine import Engine
from core.settings import default_home


@dataclass
class Round:
    open_s: float  # runs/s, submitted while the workers run: first submit to last finish
    drain_s: float  # runs/s, all queued before the workers start: first start to last finish
    accepted_s: float  # runs/s accepted by the front door
    wrong: list[str]


async def submit_all(url: str, home: Path, runs: int) -> tuple[list[str], float, float]:
    """(run ids, when the first was submitted (epoch), runs accepted per second), through a front door."""
    async with Engine.open(front_door_settings(url, home)) as front:
        started_wall, started = time.time(), time.perf_counter()
        ids = [(await front.submit_image(PARAMS)).id for _ in range(runs)]
        return ids, started_wall, runs / (time.perf_counter() - started)


async def open_loop_round(url: str, home: Path, runs: int) -> tuple[list[str], float, float]:
    ids, started, accepted = await submit_all(url, home, runs)
    _, last_finished = await until_finished(url, runs, timeout_s=60 + runs * 0.1)
    return ids, runs / (last_finished - started), accepted


async def drained(url: str, runs: int) -> float:
    first_started, last_finished = await until_finished(url, runs, timeout_s=60 + runs * 0.1)
    return runs / (last_finished - first_started)


def cluster_round(admin: str, where: Path, count: int, runs: int, synchronous_commit: bool) -> Round:
    with tempfile.TemporaryDirectory(prefix="atelier-cluster-", dir=where) as scratch:
        home = Path(scratch)
        with fresh_database(admin, synchronous_commit) as url:
            with workers(url, home / "open", [{} for _ in range(count)]) as logs:
                ids, open_s, accepted = anyio.run(open_loop_round, url, home / "front", runs)
            # Read once the workers have stopped: a job is marked succeeded just after its run ends.
            wrong = exactly_once(url, ids)
        with fresh_database(admin, synchronous_commit) as url:
            ids, _, _ = anyio.run(submit_all, url, home / "front-drain", runs)
            with workers(url, home / "drain", [{} for _ in range(count)]) as more_logs:
                drain_s = anyio.run(drained, url, runs)
            wrong += exactly_once(url, ids)
        if wrong:
            explain(logs + more_logs, wrong)
        return Round(open_s, drain_s, accepted, wrong)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=300, help="runs per round")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--workers", default="1,2,4", help="worker counts, comma-separated")
    parser.add_argument("--quick", action="store_true", help="100 runs, one round: a check")
    parser.add_argument("--dir", type=Path, default=default_home().parent, help="where data directories go")
    parser.add_argument("--database-url", default=None, help="a server where databases may be created")
    parser.add_argument(
        "--no-synchronous-commit",
        action="store_true",
        help="the bench's databases with synchronous_commit off: what the commits' disk flushes cost",
    )
    options = parser.parse_args()
    if options.quick:
        options.runs, options.rounds = 100, 1
    counts = [int(n) for n in options.workers.split(",")]
    admin = admin_url(options.database_url)
    options.dir.mkdir(parents=True, exist_ok=True)
    print(f"load before: {load()} (1/5/15 min averages)")
    print(
        f"reference: one commit (a one-row INSERT) on this PostgreSQL "
        f"{commit_cost(admin, not options.no_synchronous_commit) * 1000:.2f} ms"
        f"{' (synchronous_commit off)' if options.no_synchronous_commit else ''}"
    )

    reference: list[float] = []
    cluster: dict[int, list[Round]] = {count: [] for count in counts}
    try:
        for _ in range(options.rounds):  # interleaved, so a burst of load elsewhere spreads over all
            reference.append(anyio.run(open_loop, options.runs, options.dir).runs_s)
            for count in counts:
                cluster[count].append(
                    cluster_round(admin, options.dir, count, options.runs, not options.no_synchronous_commit)
                )
    except Exception as exc:
        print(f"error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1

    single = statistics.median(reference)
    print(
        f"single box (SQLite, in-process): median {single:6.0f} runs/s "
        f"(rounds: {', '.join(f'{r:.0f}' for r in reference)})"
    )
    print(
        f"cluster (PostgreSQL{' with synchronous_commit off' if options.no_synchronous_commit else ''} + procrastinate, {options.runs} preview runs at 0 ms/step, 64x64, one front door; "
        f"open: submitted while the workers run, first submit to last finish; drained: all queued "
        f"first, first start to last finish)"
    )
    base = {
        key: statistics.median(getattr(r, key) for r in cluster[counts[0]]) for key in ("open_s", "drain_s")
    }
    failed = False
    for count in counts:
        rounds = cluster[count]
        rate = {key: statistics.median(getattr(r, key) for r in rounds) for key in ("open_s", "drain_s")}
        wrong = [problem for r in rounds for problem in r.wrong]
        failed = failed or bool(wrong)
        print(
            f"  {count} worker{'s' if count > 1 else ' '}  "
            f"open {rate['open_s']:5.0f} runs/s (x{rate['open_s'] / base['open_s']:.2f}, "
            f"{rate['open_s'] / single:.2f} of the single box; rounds "
            f"{', '.join(f'{r.open_s:.0f}' for r in rounds)}; front door accepted "
            f"{statistics.median(r.accepted_s for r in rounds):.0f} runs/s)  "
            f"drained {rate['drain_s']:5.0f} runs/s (x{rate['drain_s'] / base['drain_s']:.2f}; rounds "
            f"{', '.join(f'{r.drain_s:.0f}' for r in rounds)})  "
            f"exactly once: {'yes' if not wrong else f'NO ({len(wrong)})'}"
        )
        for problem in wrong[:10]:
            print(f"    {problem}")
    print(f"load after: {load()}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
