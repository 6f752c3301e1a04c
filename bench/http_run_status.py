"""Run-status GETs under concurrent load: `atelier serve` (one uvicorn worker) on loopback.

Starts `atelier serve` on a fresh data directory, makes one run through /adgen, then drives
GET /adgen/runs/{id} (and the same run's status in the other contracts) with N connections for
D seconds per round, and prints requests/s and latency percentiles; the figure quoted is the
median over the rounds. The load comes from `wrk` when it is installed (Debian package wrk,
a C client that leaves the CPU to the server) and otherwise from a Python asyncio client,
which competes with the server for the same cores, so its figures are lower bounds.

  python bench/http_run_status.py [--connections 64] [--seconds 10] [--rounds 3]
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


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(home: Path, port: int) -> subprocess.Popen[bytes]:
    script = Path(sys.executable).parent / "atelier"
    command = [str(script)] if script.exists() else [sys.executable, "-m", "mcp_server.cli"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("ATELIER_")}
    env.update(ATELIER_HOME=str(home), ATELIER_LOG_LEVEL="warning")
    process = subprocess.Popen(
        [*command, "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return process
        except httpx.TransportError:
            time.sleep(0.05)
    process.kill()
    raise SystemExit("atelier serve did not start")


def make_run(base: str) -> tuple[str, int]:
    run_id = httpx.post(
        f"{base}/adgen/generate", json={"prompt": "benchmark", "width": 64, "height": 64}
    ).json()["run_id"]
    detail = httpx.post(f"{base}/adgen/finalize/{run_id}", timeout=60).json()
    assert detail["status"] == "COMPLETED", detail
    seq = httpx.get(f"{base}/desktop/api/history", params={"limit": 1}).json()["data"][0]["id"]
    return run_id, seq


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
    if "Non-2xx" in output or "Socket errors" in output:
        print("   wrk reported errors:\n" + output, file=sys.stderr)
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


def main(connections: int, seconds: int, rounds: int) -> None:
    use_wrk = shutil.which("wrk") is not None
    measure = wrk_round if use_wrk else python_round
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory(dir="/var/tmp" if Path("/var/tmp").is_dir() else None) as home:
        server = start_server(Path(home), port)
        try:
            run_id, seq = make_run(base)
            targets = {
                "adgen    GET /adgen/runs/{id}": f"{base}/adgen/runs/{run_id}",
                "comfygen GET /comfygen/generate/{id}": f"{base}/comfygen/generate/{run_id}",
                "pod      GET /pod/api/jobs/{id}": f"{base}/pod/api/jobs/job_{run_id}",
                "isengard GET /isengard/api/generation/{id}": f"{base}/isengard/api/generation/gen-{run_id}",
                "desktop  GET /desktop/api/history/{id}": f"{base}/desktop/api/history/{seq}",
            }
            client = "wrk -t2" if use_wrk else "Python asyncio client (shares the CPU: lower bound)"
            print(f"run-status GETs: {connections} connections, {seconds} s x {rounds} rounds, {client}")
            print(f"server: atelier serve, one uvicorn worker, {os.cpu_count()} cores\n")
            for name, url in targets.items():
                assert httpx.get(url).status_code == 200, url
                results = [measure(url, connections, seconds) for _ in range(rounds)]
                rates = [rate for rate, _ in results]
                p50 = statistics.median(lat["p50"] for _, lat in results)
                p99 = statistics.median(lat["p99"] for _, lat in results)
                print(
                    f"{name:45s} {statistics.median(rates):8.0f} req/s (rounds {', '.join(f'{r:.0f}' for r in rates)})"
                    f"   p50 {p50:6.2f} ms   p99 {p99:6.2f} ms"
                )
        finally:
            server.terminate()
            server.wait(10)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    main(args.connections, args.seconds, args.rounds)
