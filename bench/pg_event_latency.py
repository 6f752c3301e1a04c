"""Cross-node progress latency through PostgreSQL LISTEN/NOTIFY (a benchmark, not a test).

Two engines in this process, as two nodes of a cluster: node A owns a temp data directory and
executes preview runs; node B is a client of the same ledger that executes nothing, each with
its own `PostgresRelay` on a channel of its own. A's renderer notes the moment it reports each
step; B's bus subscriber notes the moment it takes that step's event. The latency is the
difference: A's engine publishing it, its outbox, the NOTIFY through the server, B's listening
connection, B's bus and B's subscriber waking up (one clock: one process). Steps are
`--step-ms` apart (default 150 ms, slower than the relay's 10 progress messages a second per
run), so every step goes out at once and none waits for the throttle.

  python bench/pg_event_latency.py [--samples 200] [--step-ms 150] [--database-url URL]

The database: --database-url, else ATELIER_DATABASE_URL, else ATELIER_TEST_DATABASE_URL, else
postgresql://root@127.0.0.1:5432/test. Exits non-zero only on errors (no goal figure).
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

import anyio

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.backends import ImageOutput, Job, Progress, ProgressCallback
from core.backends.local import LocalPreviewBackend
from core.engine import Engine
from core.relay_postgres import PostgresRelay
from core.settings import Settings

STEPS_PER_RUN = 50


class TimedPreview(LocalPreviewBackend):
    """The preview renderer, noting when it reports each step (the start of the latency)."""

    def __init__(self, **options: object) -> None:
        super().__init__(**options)  # type: ignore[arg-type]
        self.reported: dict[tuple[str, int], float] = {}

    async def run(self, job: Job, on_progress: ProgressCallback) -> list[ImageOutput]:
        def timed(progress: Progress) -> None:
            self.reported[(job.run_id, progress.step)] = time.perf_counter()
            on_progress(progress)

        return await super().run(job, timed)


async def measure(url: str, samples: int, step_ms: float, home: Path) -> list[float]:
    settings = Settings.from_env({}, home=home, local_step_ms=step_ms)
    channel = f"atelier_bench_{uuid.uuid4().hex[:12]}"
    backend = TimedPreview(step_ms=step_ms, concurrency=settings.local_concurrency)
    relay_a, relay_b = PostgresRelay(url, channel=channel), PostgresRelay(url, channel=channel)
    latencies: list[float] = []
    async with (
        Engine.open(settings, backends={"local": backend}, relay=relay_a) as a,
        Engine.open(settings, role="client", relay=relay_b) as b,
    ):
        with anyio.fail_after(10):
            while not (relay_a.health()["up"] and relay_b.health()["up"]):
                if relay_a.health()["last_error"] or relay_b.health()["last_error"]:
                    raise RuntimeError(f"the relay cannot connect: {relay_a.health()['last_error']}")
                await anyio.sleep(0.01)
        runs = math.ceil(samples / STEPS_PER_RUN)
        timeout = runs * STEPS_PER_RUN * step_ms / 1000 + 30
        with b.events.subscribe(None) as on_b, anyio.fail_after(timeout):
            ids = {
                (
                    await a.submit_image(
                        {"prompt": f"bench {i}", "width": 64, "height": 64, "steps": STEPS_PER_RUN}
                    )
                ).id
                for i in range(runs)
            }
            unfinished = set(ids)
            while unfinished:
                event = await on_b.get()
                taken = time.perf_counter()
                if event.kind == "progress" and event.progress is not None and event.run_id in ids:
                    reported = backend.reported.get((event.run_id, event.progress.step))
                    if reported is not None:
                        latencies.append(taken - reported)
                elif event.kind == "run" and event.run is not None and event.run.status.is_final:
                    if event.run.status.value != "completed":
                        raise RuntimeError(f"run {event.run_id} {event.run.status.value}: {event.run.error}")
                    unfinished.discard(event.run_id)
        health_a, health_b = relay_a.health(), relay_b.health()
    print(
        f"node A sent {health_a['sent']} messages (dropped {health_a['dropped']}); "
        f"node B received {health_b['received']} (dropped {health_b['dropped']})"
    )
    expected = runs * STEPS_PER_RUN
    if len(latencies) < expected:
        print(f"note: {expected - len(latencies)} of {expected} steps never reached node B's bus")
    return latencies


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--samples", type=int, default=200, help="progress steps to time (runs of 50 steps)")
    parser.add_argument("--step-ms", type=float, default=150.0, help="time between a run's steps")
    parser.add_argument("--database-url", default=None)
    options = parser.parse_args()
    url = (
        options.database_url
        or os.environ.get("ATELIER_DATABASE_URL")
        or os.environ.get("ATELIER_TEST_DATABASE_URL")
        or "postgresql://root@127.0.0.1:5432/test"
    )
    with tempfile.TemporaryDirectory(prefix="atelier-bench-") as where:
        try:
            latencies = anyio.run(measure, url, options.samples, options.step_ms, Path(where) / "home")
        except Exception as exc:
            print(f"error: {type(exc).__name__}: {exc}", file=sys.stderr)
            return 1
    if not latencies:
        print("error: no progress event reached node B", file=sys.stderr)
        return 1
    ordered = sorted(latencies)
    p99 = ordered[min(len(ordered) - 1, math.ceil(0.99 * len(ordered)) - 1)]
    print(
        f"cross-node progress latency over {len(ordered)} steps ({options.step_ms:g} ms apart): "
        f"p50 {statistics.median(ordered) * 1000:.2f} ms, p99 {p99 * 1000:.2f} ms, "
        f"max {ordered[-1] * 1000:.2f} ms"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
