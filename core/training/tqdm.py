"""ai-toolkit's console output read as training progress: tqdm's carriage-return updates and its log lines.

ai-toolkit draws one tqdm bar on stderr, redrawn with `\\r` after every step, e.g.
`my_lora:  26%|██▌       | 26/100 [00:01<00:03, 19.74it/s, lr: 1.0e-04 loss: 1.467e-01]`
(description = the job's name, postfix = learning rate and loss). Its other output is plain
lines. `TrainerOutput` is fed the raw bytes as they arrive, in chunks of any size, and gives
back a `Progress` only when the step changes (a redraw of the same step is not news), keeps a
bounded tail of lines for an error message (the bar counts as one line, its latest state), and
keeps a few lines for the run's log: resume notices, errors and one progress line per tenth of
the run, never one per update. It does no I/O, so it can be tested and benchmarked alone.
"""

from __future__ import annotations

import re
from collections import deque

from core.backends import Progress

# Lines end with either; tqdm's redraws only ever with "\r".
_LINE_END = re.compile(rb"[\r\n]")
# "| 26/100 [00:01<00:03, 19.74it/s, lr: 1.0e-04 loss: 1.467e-01]": the counts, elapsed<remaining,
# rate and postfix. tqdm's bar (between the two "|") never holds "|" or "/", even in ascii mode.
_BAR = re.compile(rb"\|\s*(\d+)/(\d+)\s*\[[^<\]]*<([^,\]]*)(?:,\s*([^,\]]*))?(?:,\s*([^\]]*))?\]")
_LOSS = re.compile(rb"loss: ([-+0-9.eE]+|nan|inf)")
_LR = re.compile(rb"lr: ([-+0-9.eE]+)")
_RESUMED = re.compile(r"Found step (\d+) in metadata")
_OOM_MARKERS = ("CUDA out of memory", "OutOfMemoryError")
# Lines that belong in the run's log as they come (besides the progress milestones).
_NOTABLE = ("RESUMING FROM", "Found step", "Error running job", "Job stopped", *_OOM_MARKERS)


class TrainerOutput:
    """ai-toolkit's output parsed incrementally (see the module docstring)."""

    def __init__(self, *, tail_lines: int = 20, milestones: int = 10) -> None:
        self.resumed_from_step: int | None = None
        self.out_of_memory = False
        self.last: Progress | None = None
        self._partial = b""
        self._read_partial: bytes | None = None
        self._tail: deque[str] = deque(maxlen=tail_lines)
        # The bar's latest redraw, kept as bytes (decoded only if the tail is read) until a plain
        # line follows it, so a thousand redraws take one line of the tail.
        self._bar_line: bytes | None = None
        self._log: list[str] = []
        self._milestones = milestones
        self._next_milestone = 0

    def feed(self, chunk: bytes) -> list[Progress]:
        """The progress updates (new steps) in `chunk`, which may start or end mid-line."""
        parts = _LINE_END.split(self._partial + chunk)
        self._partial = parts.pop()
        updates: list[Progress] = []
        # The first part may be the bar already read while it was the partial line (below).
        if parts and self._read_partial is not None and parts[0] == self._read_partial:
            parts[0] = b""
        self._read_partial = None
        for part in parts:
            if part:
                self._line(part, updates)
        # tqdm ends a redraw with no line end (the next one starts with "\r"): a whole bar waiting
        # in the partial line is the latest state, news now rather than one redraw late.
        partial = self._partial
        if b"%|" in partial and partial.rstrip().endswith(b"]"):
            match = _BAR.search(partial)
            if match:
                self._read_partial = partial
                self._bar_line = partial
                if self.last is None or int(match[1]) != self.last.step:
                    updates.append(self._progress(int(match[1]), int(match[2]), match))
        return updates

    def finish(self) -> list[Progress]:
        """The updates in what is left once the output has ended (a last line with no line end)."""
        updates: list[Progress] = []
        if self._partial:
            self._line(self._partial, updates)
            self._partial = b""
        return updates

    def take_log(self) -> list[str]:
        """The lines for the run's log since the last call."""
        lines, self._log = self._log, []
        return lines

    def tail(self) -> list[str]:
        """The last lines of output, the progress bar as its latest state."""
        lines = list(self._tail)
        if self._bar_line is not None:
            lines.append(_text(self._bar_line))
        return lines[-(self._tail.maxlen or 1) :]

    def _line(self, line: bytes, updates: list[Progress]) -> None:
        # A cheap test first: most of a training's output is bar redraws.
        if b"%|" in line:
            match = _BAR.search(line)
            if match:
                self._bar_line = line
                step = int(match[1])
                if self.last is None or step != self.last.step:
                    updates.append(self._progress(step, int(match[2]), match))
                return
        text = _text(line)
        if not text.strip():
            return
        if self._bar_line is not None:
            self._tail.append(_text(self._bar_line))
            self._bar_line = None
        self._tail.append(text)
        if any(marker in text for marker in _OOM_MARKERS):
            self.out_of_memory = True
        resumed = _RESUMED.search(text)
        if resumed:
            self.resumed_from_step = int(resumed[1])
        if any(marker in text for marker in _NOTABLE):
            self._log.append(text.strip())

    def _progress(self, step: int, total: int, match: re.Match[bytes]) -> Progress:
        postfix = match[5] or b""
        loss_match = _LOSS.search(postfix)
        lr_match = _LR.search(postfix)
        loss = float(loss_match[1]) if loss_match else None
        parts = [f"step {step}/{total}"]
        if loss is not None:
            parts.append(f"loss {loss:.4g}")
        if lr_match:
            parts.append(f"lr {lr_match[1].decode()}")
        rate = (match[4] or b"").strip().decode(errors="replace")
        if rate and not rate.startswith("?"):
            parts.append(rate)
        progress = Progress(step, total, ", ".join(parts), loss=loss, eta_s=_seconds(match[3]))
        self.last = progress
        if total and step >= self._next_milestone:
            self._log.append(progress.message)
            every = max(1, total // self._milestones)
            self._next_milestone = (step // every + 1) * every
        return progress


def _text(line: bytes) -> str:
    return line.decode("utf-8", errors="replace").rstrip()


def _seconds(interval: bytes) -> float | None:
    """tqdm's "MM:SS" or "H:MM:SS" in seconds; None for "?" (not known yet)."""
    try:
        fields = [int(field) for field in interval.strip().split(b":")]
    except ValueError:
        return None
    seconds = 0
    for field in fields:
        seconds = seconds * 60 + field
    return float(seconds)
