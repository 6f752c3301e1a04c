"""Throughput of the ai-toolkit progress parser (a benchmark, not a test).

A captured-style stream of 100,000 tqdm redraws (each `\\r` + bar + padding, in the fake
ai-toolkit's exact format, itself ai-toolkit's) with a `Saving at step N` line every 250
steps, fed to `core.training.tqdm.TrainerOutput`:
  64 KiB chunks     as the adapter reads a busy pipe;
  one redraw/chunk  as a pipe delivers a trainer writing slower than it is read (the usual case);
and, over the same bytes, two references measured in the same run:
  re.finditer       a bare `re.finditer(rb"[\\r\\n]")` over the stream (only finding line ends);
  bytes.split       `stream.split(b"\\r")` (the cheapest possible line split).
Each is the best of 5, in redraws (lines) per second, with its ratio to `re.finditer`.

  python bench/aitoolkit_progress.py

Measured on the 2-core dev box (busy with other test runs): re.finditer 2.3-2.6 M lines/s; the
parser 0.21-0.25 M redraws/s in 64 KiB chunks (9-12x the reference's time) and 0.15-0.21 M in
one-redraw chunks (12-16x). Every redraw here is a new step, each one a `Progress`; ai-toolkit
draws at most a few hundred steps a second, so the parser has over 1,000x headroom.
"""

from __future__ import annotations

import re
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.training.tqdm import TrainerOutput
from tests.fakes.aitoolkit import bar_line

UPDATES = 100_000
RUNS = 5


def captured_stream() -> tuple[bytes, list[bytes]]:
    """The whole stream, and the same bytes as the writes the trainer made (one per redraw)."""
    writes = []
    longest = 0
    for step in range(UPDATES + 1):
        loss = 0.4 * (1 - step / UPDATES) + 0.05
        postfix = f"lr: 1.0e-04 loss: {loss:.3e}" if step else ""
        line = bar_line("mara-v1", step, UPDATES, step * 0.8, step, postfix)
        writes.append(("\r" + line + " " * max(longest - len(line), 0)).encode())
        longest = max(longest, len(line))
        if step and step % 250 == 0:
            writes.append(
                f"\nSaving at step {step}\nSaved to /work/output/mara-v1_{step:09d}.safetensors\n".encode()
            )
    return b"".join(writes), writes


def best_times(cases: dict[str, Callable[[], int]]) -> dict[str, tuple[float, int]]:
    """Each case's best time of RUNS, the cases interleaved so a busy machine slows them alike."""
    times: dict[str, list[float]] = {label: [] for label in cases}
    counts: dict[str, int] = {}
    for _ in range(RUNS):
        for label, run in cases.items():
            began = time.perf_counter()
            counts[label] = run()
            times[label].append(time.perf_counter() - began)
    return {label: (min(times[label]), counts[label]) for label in cases}


def parse(chunks: list[bytes]) -> int:
    output = TrainerOutput()
    updates = 0
    for chunk in chunks:
        updates += len(output.feed(chunk))
    return updates + len(output.finish())


def main() -> None:
    stream, writes = captured_stream()
    big_chunks = [stream[i : i + 65536] for i in range(0, len(stream), 65536)]
    line_end = re.compile(rb"[\r\n]")
    lines = stream.count(b"\r") + stream.count(b"\n")
    print(
        f"stream: {len(stream) / 1e6:.1f} MB, {UPDATES:,} redraws, {lines:,} line ends, {len(writes):,} writes"
    )
    cases = {
        "re.finditer (reference)": lambda: sum(1 for _ in line_end.finditer(stream)),
        "bytes.split": lambda: len(stream.split(b"\r")),
        "parser, 64 KiB chunks": lambda: parse(big_chunks),
        "parser, one redraw/chunk": lambda: parse(writes),
    }
    results = best_times(cases)
    reference = results["re.finditer (reference)"][0]
    for label, (seconds, count) in results.items():
        print(
            f"{label:26} {lines / seconds / 1e6:6.2f} M lines/s  {len(stream) / seconds / 1e6:7.1f} MB/s  "
            f"{seconds / reference:5.2f}x ref time   (count {count:,})"
        )


if __name__ == "__main__":
    main()
