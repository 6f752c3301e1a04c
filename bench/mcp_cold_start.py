"""MCP stdio cold start: spawn -> `initialize` answered, Atelier vs a bare one-tool mcp server.

Each figure is the median of --rounds spawns, the two servers interleaved so that machine
noise hits both alike. Atelier starts on a fresh data directory each time.

  python bench/mcp_cold_start.py [--rounds 9]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
INITIALIZE = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {
        "protocolVersion": "2025-06-18",
        "capabilities": {},
        "clientInfo": {"name": "cold-start-bench", "version": "1"},
    },
}


def time_to_initialize(command: list[str], env: dict[str, str]) -> float:
    started = time.perf_counter()
    process = subprocess.Popen(
        command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env
    )
    assert process.stdin and process.stdout
    process.stdin.write((json.dumps(INITIALIZE) + "\n").encode())
    process.stdin.flush()
    line = process.stdout.readline()
    elapsed = time.perf_counter() - started
    process.kill()
    process.wait()
    answer = json.loads(line)
    assert answer.get("id") == 1 and "result" in answer, answer
    return elapsed


def atelier_command() -> list[str]:
    script = Path(sys.executable).parent / "atelier"
    return [str(script), "mcp"] if script.exists() else [sys.executable, "-m", "mcp_server.cli", "mcp"]


def main(rounds: int) -> None:
    bare, atelier = [], []
    for _ in range(rounds):
        bare.append(time_to_initialize([sys.executable, str(HERE / "bare_mcp_server.py")], dict(os.environ)))
        with tempfile.TemporaryDirectory() as home:
            env = {**os.environ, "ATELIER_HOME": home}
            atelier.append(time_to_initialize(atelier_command(), env))
    b, a = statistics.median(bare), statistics.median(atelier)
    print(f"MCP stdio cold start, spawn -> initialize answered, median of {rounds}")
    print(f"  bare mcp server, one tool  {b * 1000:7.0f} ms")
    print(f"  atelier mcp                {a * 1000:7.0f} ms   (+{(a - b) * 1000:.0f} ms, x{a / b:.2f})")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=9)
    main(parser.parse_args().rounds)
