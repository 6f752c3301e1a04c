"""Standard input that a signal can end, for `atelier mcp`.

The MCP SDK reads stdin on a worker thread, and a blocked read cannot be cancelled: while the
host keeps the pipe open, a SIGTERM could not stop the session, so the engine could never hand
its running runs back. Here fd 0 becomes a pipe of our own, fed from the real stdin by a daemon
thread; `end()` closes that pipe's write side, the SDK reads end-of-file, and the session
returns normally. The feeding thread may stay blocked on the real stdin: it is a daemon, so it
never holds up the exit.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager


@contextmanager
def closable_stdin() -> Iterator[Callable[[], None]]:
    """Within the block fd 0 reads what the real stdin sends; call the yielded `end()` to make it
    read end-of-file at once. The real stdin is put back on the way out."""
    real = os.dup(0)
    read_end, write_end = os.pipe()
    os.dup2(read_end, 0)
    os.close(read_end)
    lock = threading.Lock()
    ended = False

    def end() -> None:
        nonlocal ended
        with lock:
            if ended:
                return
            ended = True
            # dup2 onto /dev/null closes the pipe's write side yet keeps the descriptor number
            # taken, so a late write of the feeding thread can never land in a reused descriptor.
            null = os.open(os.devnull, os.O_WRONLY)
            os.dup2(null, write_end)
            os.close(null)

    def feed() -> None:
        try:
            while chunk := os.read(real, 1 << 16):
                view = memoryview(chunk)
                while view:
                    view = view[os.write(write_end, view) :]
        except OSError:
            pass
        finally:
            end()

    threading.Thread(target=feed, name="atelier-stdin", daemon=True).start()
    try:
        yield end
    finally:
        end()
        os.dup2(real, 0)
