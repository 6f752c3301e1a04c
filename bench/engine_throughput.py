"""Engine throughput and latency on the preview backend at 0 ms/step, 64x64 (a benchmark, not a test).

Two figures, each the median of several rounds on a fresh data directory:
  open loop   N runs submitted at once: runs/s from first submit to last completion, and the
              p50/p99 of submit-to-completed latency (which includes time spent queued);
  closed loop one run at a time: submit-to-completed latency, i.e. the engine's per-run overhead.

  python bench/engine_throughput.py [--runs 2000] [--rounds 3] [--dir PATH]

Data directories are made under --dir (default: beside the default ATELIER_HOME), because the
filesystem matters: on the machines here /tmp takes ~550 us per mkdir/open, the home disk ~30 us.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import anyio

from core.engine import Engine
from core.settings import Settings, default_home

PARAMS = {"prompt": "benchmark: a small red square", "width": 64, "height": 64, "seed": 1}


def file_create_cost(where: Path, files: int = 500) -> float:
    """Seconds per mkdir + small file write in `where`: what each run pays the filesystem."""
    with tempfile.TemporaryDirectory(prefix="atelier-fs-", dir=where) as scratch:
        started = time.perf_counter()
        for index in range(files):
            folder = Path(scratch) / str(index)
            folder.mkdir()
            (folder / "image-01.png").write_bytes(b"x" * 4096)
        return (time.perf_counter() - started) / files


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def open_loop(runs: int, where: Path) -> tuple[float, float, float]:
    with tempfile.TemporaryDirectory(prefix="atelier-bench-", dir=where) as home:
        settings = Settings.from_env({}, home=Path(home), local_step_ms=0)
        async with Engine.open(settings) as engine:
            started = time.perf_counter()
            ids = [(await engine.submit_image(PARAMS)).id for _ in range(runs)]
            done = [await engine.wait(run_id, 120) for run_id in ids]
            elapsed = time.perf_counter() - started
            assert all(r.status.value == "completed" for r in done), "a run did not complete"
            latencies = [r.finished_at - r.created_at for r in done]  # type: ignore[operator]
    return runs / elapsed, _pct(latencies, 0.5), _pct(latencies, 0.99)


async def closed_loop(runs: int, where: Path) -> tuple[float, float]:
    with tempfile.TemporaryDirectory(prefix="atelier-bench-", dir=where) as home:
        settings = Settings.from_env({}, home=Path(home), local_step_ms=0)
        async with Engine.open(settings) as engine:
            latencies = []
            for _ in range(runs):
                started = time.perf_counter()
                run = await engine.submit_image(PARAMS)
                run = await engine.wait(run.id, 60)
                latencies.append(time.perf_counter() - started)
                assert run.status.value == "completed"
    return _pct(latencies, 0.5), _pct(latencies, 0.99)


async def main(runs: int, rounds: int, where: Path) -> None:
    where.mkdir(parents=True, exist_ok=True)
    results = [await open_loop(runs, where) for _ in range(rounds)]
    closed = [await closed_loop(min(runs, 500), where) for _ in range(rounds)]
    rate = statistics.median(r[0] for r in results)
    print(f"data directories under {where}: mkdir + file write {file_create_cost(where) * 1e6:.0f} us each")
    print(f"engine open loop  ({runs} runs x {rounds} rounds, 64x64, 0 ms/step, preview backend)")
    print(
        f"  throughput        median {rate:8.0f} runs/s   (rounds: {', '.join(f'{r[0]:.0f}' for r in results)})"
    )
    print(
        f"  latency incl. queue  p50 {statistics.median(r[1] for r in results) * 1000:8.1f} ms"
        f"   p99 {statistics.median(r[2] for r in results) * 1000:8.1f} ms"
    )
    print(f"engine closed loop (one run at a time, {min(runs, 500)} runs x {rounds} rounds)")
    print(
        f"  submit->completed  p50 {statistics.median(c[0] for c in closed) * 1000:8.2f} ms"
        f"   p99 {statistics.median(c[1] for c in closed) * 1000:8.2f} ms"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--dir", type=Path, default=default_home().parent)
    options = parser.parse_args()
    anyio.run(main, options.runs, options.rounds, options.dir)
