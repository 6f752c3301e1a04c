"""MCP stdio cold start: spawn -> `initialize` answered, Atelier vs a bare one-tool mcp server.

Three servers are spawned in turn (every other round in reverse order), round after round, so
that machine noise hits them alike:
the bare server (`bare_mcp_server.py`, the reference), `atelier mcp` with its defaults, and
`atelier mcp` with every backend down (ComfyUI, Printify and Shopify configured on a port where
nothing listens). Atelier starts on a fresh data directory each time. Each time is the median
over the rounds; each ratio is the median of the rounds' own ratios (a server against the bare
one spawned next to it), so that load drifting across the run (this machine is shared) cancels
out. Beside `initialize`, the time until `tools/list` is answered is printed too (there Atelier
has imported and opened its engine), and each server's fastest spawn against the bare one's
(the figure load disturbs least), for information.

Exits non-zero when Atelier's `initialize` takes more than --goal times the bare server's
(issue 13: 1.1), or when the server with every backend down does not answer `tools/list`.

  python bench/mcp_cold_start.py [--rounds 15] [--goal 1.1]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
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
INITIALIZED = {"jsonrpc": "2.0", "method": "notifications/initialized"}
LIST_TOOLS = {"jsonrpc": "2.0", "id": 2, "method": "tools/list"}


def _send(process: subprocess.Popen[bytes], message: dict[str, object]) -> None:
    assert process.stdin
    process.stdin.write((json.dumps(message) + "\n").encode())
    process.stdin.flush()


def _answer(process: subprocess.Popen[bytes], request_id: int) -> dict[str, object]:
    assert process.stdout
    while True:
        line = process.stdout.readline()
        if not line:
            raise SystemExit(f"the server ended before answering request {request_id}")
        answer = json.loads(line)
        if answer.get("id") == request_id:
            assert "result" in answer, answer
            return answer


def time_to_answers(command: list[str], env: dict[str, str]) -> tuple[float, float, int]:
    """Seconds from spawn to `initialize` answered, to `tools/list` answered; and tools listed."""
    started = time.perf_counter()
    process = subprocess.Popen(
        command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env
    )
    try:
        _send(process, INITIALIZE)
        _answer(process, 1)
        initialized = time.perf_counter() - started
        _send(process, INITIALIZED)
        _send(process, LIST_TOOLS)
        tools = _answer(process, 2)["result"]["tools"]  # type: ignore[index]
        listed = time.perf_counter() - started
    finally:
        process.kill()
        process.wait()
    return initialized, listed, len(tools)


def atelier_command() -> list[str]:
    script = Path(sys.executable).parent / "atelier"
    return [str(script), "mcp"] if script.exists() else [sys.executable, "-m", "mcp_server.cli", "mcp"]


def closed_port() -> int:
    """A loopback port where nothing listens (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def main(rounds: int, goal: float) -> int:
    base = {k: v for k, v in os.environ.items() if not k.startswith("ATELIER_")}
    dead = f"http://127.0.0.1:{closed_port()}"
    backends_down = {
        "ATELIER_BACKEND": "comfyui",
        "ATELIER_COMFYUI_URLS": dead,
        "ATELIER_ENABLED_PLATFORMS": "printify,shopify",
        "ATELIER_PRINTIFY_TOKEN": "bench",
        "ATELIER_PRINTIFY_SHOP_ID": "1",
        "ATELIER_PRINTIFY_URL": dead,
        "ATELIER_SHOPIFY_STORE": "bench",
        "ATELIER_SHOPIFY_ACCESS_TOKEN": "bench",
        "ATELIER_SHOPIFY_URL": dead,
    }
    servers = {
        "bare mcp server, one tool": ([sys.executable, str(HERE / "bare_mcp_server.py")], None),
        "atelier mcp": (atelier_command(), {}),
        "atelier mcp, backends down": (atelier_command(), backends_down),
    }
    timings: dict[str, list[tuple[float, float, int]]] = {name: [] for name in servers}
    for round_ in range(rounds):
        # Every other round in reverse, so no server always follows the same one.
        for name, (command, extra) in list(servers.items())[:: -1 if round_ % 2 else 1]:
            if extra is None:
                timings[name].append(time_to_answers(command, base))
                continue
            with tempfile.TemporaryDirectory() as home:
                timings[name].append(time_to_answers(command, {**base, **extra, "ATELIER_HOME": home}))
    bare = timings["bare mcp server, one tool"]
    print(f"MCP stdio cold start, spawn -> answered, {rounds} interleaved rounds (medians)")
    print(f"  {'':28} {'initialize':>10} {'ratio':>6} {'tools/list':>11} {'ratio':>6}  tools")
    worst = 0.0
    for name, measured in timings.items():
        initialize = statistics.median(t[0] for t in measured)
        listed = statistics.median(t[1] for t in measured)
        ratio = statistics.median(t[0] / b[0] for t, b in zip(measured, bare, strict=True))
        listed_ratio = statistics.median(t[1] / b[1] for t, b in zip(measured, bare, strict=True))
        spread = max(t[0] for t in measured) - min(t[0] for t in measured)
        fastest = min(t[0] for t in measured) / min(b[0] for b in bare)
        if measured is not bare:
            worst = max(worst, ratio)
        print(
            f"  {name:28} {initialize * 1000:7.0f} ms  x{ratio:.2f} {listed * 1000:8.0f} ms  "
            f"x{listed_ratio:.2f}  {measured[0][2]:5}   (initialize: spread {spread * 1000:.0f} ms, "
            f"fastest x{fastest:.2f})"
        )
    if worst > goal:
        print(f"MISSED: atelier mcp answers initialize in x{worst:.2f} the bare server's time (goal x{goal})")
        return 1
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--goal", type=float, default=1.1, help="most Atelier/bare ratio of `initialize`")
    sys.exit(main(parser.parse_args().rounds, parser.parse_args().goal))
