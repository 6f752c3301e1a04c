"""Starting real `atelier` processes for end-to-end tests, on loopback and a temp data directory."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

import httpx


def atelier_command() -> list[str]:
    """The installed console script, as a user runs it (falls back to the module)."""
    script = Path(sys.executable).parent / "atelier"
    if script.exists():
        return [str(script)]
    found = shutil.which("atelier")
    return [found] if found else [sys.executable, "-m", "mcp_server.cli"]


def atelier_env(home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ATELIER_")}
    env.update(ATELIER_HOME=str(home), **extra)
    return env


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def serve(
    home: Path, *, port: int | None = None, env: Mapping[str, str] | None = None, args: Sequence[str] = ()
) -> Iterator[Server]:
    """`atelier serve` (with `args`) on a free loopback port; stopped (terminated) when the block ends."""
    port = port or free_port()
    process = subprocess.Popen(
        [*atelier_command(), "serve", "--port", str(port), *args],
        env=atelier_env(home, **dict(env or {})),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    server = Server(process, f"http://127.0.0.1:{port}")
    try:
        server.wait_healthy()
        yield server
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
        if process.stdout:
            process.stdout.close()


class Server:
    def __init__(self, process: subprocess.Popen[bytes], url: str) -> None:
        self.process = process
        self.url = url

    def wait_healthy(self, timeout: float = 60.0) -> None:
        # A bound on start-up, not a speed check: with the suite on 4 processes over 2 cores, a
        # cold `atelier serve` took up to ~25 s to import and answer.
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                output = self.process.stdout.read().decode() if self.process.stdout else ""
                raise RuntimeError(f"atelier serve exited with {self.process.returncode}:\n{output}")
            try:
                if httpx.get(f"{self.url}/health", timeout=1.0).status_code in (200, 401, 503):
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        raise TimeoutError(f"atelier serve did not answer /health within {timeout} s")

    def kill_hard(self) -> None:
        """kill -9: no shutdown code runs, as in a crash."""
        self.process.kill()
        self.process.wait(10)
