"""Memory of the largest upscale: a 16-bit 4096x4096 PNG to 8192x8192 (a benchmark, not a test).

Starts `atelier serve` (preview backend, 0 ms/step) on a fresh data directory and reads the
server's /proc/<pid>/status around the runs:
  idle        VmRSS before any run;
  one         VmHWM (peak) and VmRSS after one such upscale;
  two at once VmHWM and VmRSS after two more submitted together.
Each is printed in MiB and as a ratio of the reference: the upscaled image's raw 8-bit RGB
pixels (8192 x 8192 x 3 bytes = 192 MiB), what any renderer must at least produce.

  python bench/upscale_memory.py

Measured on the 2-core dev box (idle server 92 MiB): before the strip-by-strip renderer, one
upscale peaked at 1375 MiB (7.2x ref) and left 783 MiB behind, two at once 2548 MiB; after it,
178 MiB (0.93x ref) leaving 94 MiB, two at once 219 MiB leaving 95 MiB.
"""

from __future__ import annotations

import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.big_images import sixteen_bit_png
from tests.procs import serve

SIDE = 4096
REFERENCE = (2 * SIDE) ** 2 * 3
MIB = 1024 * 1024


def status(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM of a process, in bytes."""
    found = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            found[name] = int(value.split()[0]) * 1024
    return found


def upscale(url: str, path: Path) -> None:
    answer = httpx.post(
        f"{url}/desktop/api/generate/upscale", json={"imagePath": str(path), "scale": 2}, timeout=300
    )
    assert answer.status_code == 200, answer.text


def line(label: str, figures: dict[str, int]) -> None:
    peak, rss = figures["VmHWM"], figures["VmRSS"]
    print(
        f"{label:12} peak {peak / MIB:7.0f} MiB ({peak / REFERENCE:4.2f}x ref)   "
        f"rss after {rss / MIB:6.0f} MiB ({rss / REFERENCE:4.2f}x ref)"
    )


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="atelier-bench-") as scratch:
        home = Path(scratch) / "home"
        (home / "inputs").mkdir(parents=True)
        source = home / "inputs" / "deep.png"
        source.write_bytes(sixteen_bit_png(SIDE))
        print(
            f"source: {source.stat().st_size / 1000:.0f} KB, 16-bit RGB {SIDE}x{SIDE} -> {2 * SIDE}x{2 * SIDE}"
        )
        print(f"reference: raw 8-bit RGB output = {REFERENCE / MIB:.0f} MiB")
        with serve(home, env={"ATELIER_LOCAL_STEP_MS": "0"}) as server:
            pid = server.process.pid
            line("idle", status(pid))
            started = time.perf_counter()
            upscale(server.url, source)
            print(f"one upscale took {time.perf_counter() - started:.1f} s")
            time.sleep(0.5)
            line("one", status(pid))
            threads = [threading.Thread(target=upscale, args=(server.url, source)) for _ in range(2)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            time.sleep(0.5)
            line("two at once", status(pid))


if __name__ == "__main__":
    main()
