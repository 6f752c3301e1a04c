"""Run-status GETs against the framework's floor: `atelier serve` next to a hello-world Starlette app
served with the same uvicorn settings and event loop (bench/hello_starlette.py), in one run.

Starts both on loopback (Atelier on a fresh data directory, the preview renderer at 4 s a step),
makes a finished run and a running run through /adgen, then drives, with N connections for D
seconds each, each contract's GET of the finished run and of the running one, each right after
the hello-world app (the machine may be shared: its speed changes within seconds, so a ratio is
only fair between measurements taken side by side), for a few rounds. Prints requests/s, p50/p99
latency and each GET's ratio to the hello-world measurement before it (the median over the
rounds), and exits non-zero when a finished run's GET is below 0.5x or a running run's below
0.35x (issue 13, goal 2).

The load comes from `wrk` (Debian package wrk; `make wrk` installs it where it can), a C client
that leaves the CPU to the servers; without it, from a Python asyncio client, which competes
with the servers for the same cores (its figures are lower bounds and noisier).

  python bench/http_run_status.py [--connections 64] [--seconds 3] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
# Goals of issue 13: a status GET's requests/s as a fraction of the hello-world app's.
FINISHED, RUNNING = 0.5, 0.35
STEP_MS = 4000
IMAGE = {"prompt": "benchmark", "width": 64, "height": 64}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start(command: list[str], env: dict[str, str], port: int, what: str) -> subprocess.Popen[bytes]:
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return process
        except httpx.TransportError:
            time.sleep(0.05)
    process.kill()
    raise SystemExit(f"{what} did not start")


def start_atelier(home: Path, port: int) -> subprocess.Popen[bytes]:
    script = Path(sys.executable).parent / "atelier"
    command = [str(script)] if script.exists() else [sys.executable, "-m", "mcp_server.cli"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("ATELIER_")}
    env.update(ATELIER_HOME=str(home), ATELIER_LOCAL_STEP_MS=str(STEP_MS))
    return start([*command, "serve", "--port", str(port)], env, port, "atelier serve")


def start_hello(port: int) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ATELIER_")}
    env["PYTHONPATH"] = str(ROOT)
    script = ROOT / "bench" / "hello_starlette.py"
    return start([sys.executable, str(script), str(port)], env, port, "the hello-world app")


def make_runs(base: str) -> tuple[tuple[str, int], tuple[str, int]]:
    """A finished run and a running one (150 steps of 4 s: it runs for the whole benchmark)."""
    finished = httpx.post(f"{base}/adgen/generate", json={**IMAGE, "steps": 1}).json()["run_id"]
    detail = httpx.post(f"{base}/adgen/finalize/{finished}", timeout=60).json()
    assert detail["status"] == "COMPLETED", detail
    running = httpx.post(f"{base}/adgen/generate", json={**IMAGE, "steps": 150}).json()["run_id"]
    deadline = time.monotonic() + 30
    while httpx.get(f"{base}/adgen/runs/{running}").json()["status"] != "RUNNING":
        assert time.monotonic() < deadline, "the second run never started"
        time.sleep(0.05)
    # The desktop contract's ids are ledger sequence numbers: newest first, the running run's is higher.
    history = httpx.get(f"{base}/desktop/api/history", params={"limit": 2}).json()["data"]
    running_seq, finished_seq = (row["id"] for row in history)
    return (finished, finished_seq), (running, running_seq)


def targets(base: str, run_id: str, seq: int) -> dict[str, str]:
    return {
        "adgen    GET /adgen/runs/{id}": f"{base}/adgen/runs/{run_id}",
        "comfygen GET /comfygen/generate/{id}": f"{base}/comfygen/generate/{run_id}",
        "pod      GET /pod/api/jobs/{id}": f"{base}/pod/api/jobs/job_{run_id}",
        "isengard GET /isengard/api/generation/{id}": f"{base}/isengard/api/generation/gen-{run_id}",
        "desktop  GET /desktop/api/history/{id}": f"{base}/desktop/api/history/{seq}",
    }


def wrk_round(url: str, connections: int, seconds: int) -> tuple[float, dict[str, float]]:
    output = subprocess.run(
        ["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "--latency", url],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))  # type: ignore[union-attr]
    latencies = {}
    for percent in ("50", "90", "99"):
        match = re.search(rf"^\s+{percent}%\s+([\d.]+)(us|ms|s)\s*$", output, re.MULTILINE)
        assert match, output
        value, unit = float(match.group(1)), match.group(2)
        latencies[f"p{percent}"] = value / 1000 if unit == "us" else value * 1000 if unit == "s" else value
    for line in output.splitlines():
        if "Non-2xx" in line or "Socket errors" in line:
            print(f"   wrk, {url}: {line.strip()}", file=sys.stderr)
    return rate, latencies


def python_round(url: str, connections: int, seconds: int) -> tuple[float, dict[str, float]]:
    async def load() -> tuple[int, list[float]]:
        latencies: list[float] = []
        deadline = time.perf_counter() + seconds
        limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
        async with httpx.AsyncClient(limits=limits, timeout=30) as client:

            async def worker() -> None:
                while time.perf_counter() < deadline:
                    started = time.perf_counter()
                    response = await client.get(url)
                    latencies.append((time.perf_counter() - started) * 1000)
                    assert response.status_code == 200, response.status_code

            await asyncio.gather(*(worker() for _ in range(connections)))
        return len(latencies), latencies

    started = time.perf_counter()
    count, latencies = asyncio.run(load())
    elapsed = time.perf_counter() - started
    latencies.sort()

    def at(fraction: float) -> float:
        return latencies[min(len(latencies) - 1, int(fraction * len(latencies)))]

    return count / elapsed, {"p50": at(0.50), "p90": at(0.90), "p99": at(0.99)}


def main(connections: int, seconds: int, rounds: int) -> int:
    use_wrk = shutil.which("wrk") is not None
    measure = wrk_round if use_wrk else python_round
    hello_port, port = free_port(), free_port()
    base = f"http://127.0.0.1:{port}"
    floor_url = f"http://127.0.0.1:{hello_port}/"
    with tempfile.TemporaryDirectory(dir="/var/tmp" if Path("/var/tmp").is_dir() else None) as home:
        hello = start_hello(hello_port)
        server = start_atelier(Path(home), port)
        try:
            (finished, finished_seq), (running, running_seq) = make_runs(base)
            plan = {
                f"{name} finished": (url, FINISHED)
                for name, url in targets(base, finished, finished_seq).items()
            }
            plan |= {
                f"{name} running": (url, RUNNING) for name, url in targets(base, running, running_seq).items()
            }
            for url in [floor_url, *(url for url, _ in plan.values())]:
                assert httpx.get(url).status_code == 200, url
            client = "wrk -t2" if use_wrk else "Python asyncio client (shares the CPU: lower bound)"
            print(
                f"status GETs vs a hello-world Starlette app (GET /): {connections} connections, "
                f"{seconds} s each, {rounds} rounds, {client}; each GET measured right after the "
                "hello-world app, its ratio to that measurement"
            )
            print(f"servers: one uvicorn worker each, same settings and event loop, {os.cpu_count()} cores\n")
            # Each GET right after the floor: a machine shared with other work changes speed within a
            # round, so a ratio is only fair between measurements taken side by side.
            results: dict[str, list[tuple[float, dict[str, float], float]]] = {name: [] for name in plan}
            for _ in range(rounds):
                for name, (url, _) in plan.items():
                    floor, _ = measure(floor_url, connections, seconds)
                    rate, latencies = measure(url, connections, seconds)
                    results[name].append((rate, latencies, floor))
            still_running = httpx.get(f"{base}/adgen/runs/{running}").json()["status"]
            assert still_running == "RUNNING", f"the running run ended during the benchmark ({still_running})"
        finally:
            for process in (server, hello):
                process.terminate()
                process.wait(10)
    floors = [floor for rows in results.values() for _, _, floor in rows]
    print(
        f"{'hello-world Starlette GET / (the floor)':54s} {statistics.median(floors):7.0f} req/s "
        f"(min {min(floors):.0f}, max {max(floors):.0f})"
    )
    missed = []
    for name, (_, goal) in plan.items():
        rows = results[name]
        ratios = [rate / floor for rate, _, floor in rows]
        ratio = statistics.median(ratios)
        rate = statistics.median(rate for rate, _, _ in rows)
        p50 = statistics.median(lat["p50"] for _, lat, _ in rows)
        p99 = statistics.median(lat["p99"] for _, lat, _ in rows)
        verdict = "" if ratio >= goal else "  MISSED"
        print(
            f"{name:54s} {rate:7.0f} req/s   p50 {p50:6.2f} ms   p99 {p99:6.2f} ms   "
            f"{ratio:4.2f}x (rounds {', '.join(f'{r:.2f}' for r in ratios)}; goal >= {goal}x){verdict}"
        )
        if ratio < goal:
            missed.append(name)
    if missed:
        print(f"\nbelow the goal: {', '.join(missed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--seconds", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    sys.exit(main(args.connections, args.seconds, args.rounds))
