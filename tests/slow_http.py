"""A real HTTP server on loopback that answers at a trickle: headers at once, then one body byte
every `interval` seconds, for ever (until the client hangs up or the block ends).

It runs in threads, so both async tests and tests that drive a subprocess can point a source
URL at it.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@dataclass
class Trickle:
    url: str  # http://127.0.0.1:PORT/slow.png
    requests: threading.Semaphore = field(default_factory=lambda: threading.Semaphore(0))
    closed: threading.Semaphore = field(default_factory=lambda: threading.Semaphore(0))


@contextmanager
def trickling_server(interval: float = 1.0) -> Iterator[Trickle]:
    """Serve the trickle; `requests` is released once per request received, `closed` once per
    connection the client gave up on."""
    stop = threading.Event()
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.1)
    trickle = Trickle(f"http://127.0.0.1:{listener.getsockname()[1]}/slow.png")

    def answer(conn: socket.socket) -> None:
        with conn:
            received = b""
            while b"\r\n\r\n" not in received:
                chunk = conn.recv(4096)
                if not chunk:
                    return
                received += chunk
            trickle.requests.release()
            body = PNG_SIGNATURE + b"\0" * 1_000_000
            try:
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: image/png\r\nContent-Length: 1000008\r\n\r\n")
                for byte in body:
                    if stop.wait(interval):
                        return
                    conn.sendall(bytes((byte,)))
            except OSError:
                trickle.closed.release()

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=answer, args=(conn,), daemon=True).start()

    acceptor = threading.Thread(target=accept, daemon=True)
    acceptor.start()
    try:
        yield trickle
    finally:
        stop.set()
        acceptor.join(5)
        listener.close()
