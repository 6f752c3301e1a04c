"""A scripted GenerationBackend for engine tests: the test decides when runs finish and how they fail.

It implements the same port as `core.backends.local.LocalPreviewBackend` and returns real
(tiny) PNGs, but a test can hold a run until it releases it, make the first N attempts of a
prompt raise `BackendError`, and afterwards read what the backend saw: the order runs started
in, how many ran at once, which ones were cancelled.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any

import anyio
import anyio.lowlevel

from core.backends import GenerationBackend, ImageOutput, Job, Progress, ProgressCallback
from core.backends.local import render_png
from core.errors import BackendError
from core.models import ImageSpec


async def wait_until(condition: Callable[[], bool], timeout: float = 5.0, what: str = "condition") -> None:
    """Poll `condition` until it holds; fail (rather than hang) after `timeout` seconds."""
    try:
        with anyio.fail_after(timeout):
            while not condition():
                await anyio.sleep(0.005)
    except TimeoutError:
        raise AssertionError(f"timed out after {timeout:g} s waiting for {what}") from None


class ScriptedBackend(GenerationBackend):
    """A backend whose behaviour each test scripts per prompt.

    - `hold(prompt)` / `hold_all=True`: the run waits, after reporting its steps, until
      `release(prompt)` / `release_all()`.
    - `fail(prompt, times, retryable=...)`: the first `times` attempts of that prompt raise
      `BackendError`.
    - `cleanup_s`: on cancellation, spend this long (shielded) cleaning up before re-raising,
      as a remote backend does when it tells its server to stop.
    """

    name = "local"

    def __init__(
        self,
        *,
        concurrency: int = 1,
        hold: Iterable[str] = (),
        hold_all: bool = False,
        cleanup_s: float = 0.0,
        output_bytes: int = 0,
    ) -> None:
        self.concurrency = concurrency
        self.cleanup_s = cleanup_s
        self.output_bytes = output_bytes
        self.started: list[str] = []  # prompts, in the order attempts started
        self.start_times: list[tuple[str, float]] = []
        self.finished: list[str] = []
        self.cancelled: list[str] = []
        self.attempts: Counter[str] = Counter()
        self.running = 0
        self.max_running = 0
        self.health_calls = 0
        self._hold_all = hold_all
        self._held: set[str] = set(hold)
        self._released: set[str] = set()
        self._gates: dict[str, anyio.Event] = {}
        self._failures: dict[str, tuple[int, bool, str]] = {}

    # -- scripting ----------------------------------------------------------------------------

    def hold(self, *prompts: str) -> None:
        self._held.update(prompts)
        self._released.difference_update(prompts)

    def release(self, *prompts: str) -> None:
        for prompt in prompts:
            self._released.add(prompt)
            gate = self._gates.pop(prompt, None)
            if gate is not None:
                gate.set()

    def release_all(self) -> None:
        self._hold_all = False
        self._held.clear()
        for gate in self._gates.values():
            gate.set()
        self._gates.clear()

    def fail(self, prompt: str, times: int, *, retryable: bool = True, message: str = "") -> None:
        """Make the first `times` attempts of `prompt` raise `BackendError`."""
        self._failures[prompt] = (times, retryable, message or f"scripted failure of {prompt!r}")

    def is_held(self, prompt: str) -> bool:
        return prompt not in self._released and (self._hold_all or prompt in self._held)

    # -- observing ----------------------------------------------------------------------------

    async def wait_started(self, prompt: str, times: int = 1, timeout: float = 5.0) -> None:
        await wait_until(
            lambda: self.attempts[prompt] >= times, timeout, f"{prompt!r} to start {times} time(s)"
        )

    async def wait_cancelled(self, prompt: str, timeout: float = 5.0) -> None:
        await wait_until(lambda: prompt in self.cancelled, timeout, f"{prompt!r} to be cancelled")

    # -- the GenerationBackend port -------------------------------------------------------------

    async def run(self, job: Job, on_progress: ProgressCallback) -> list[ImageOutput]:
        spec = job.spec
        prompt = spec.prompt
        self.started.append(prompt)
        self.start_times.append((prompt, time.monotonic()))
        self.attempts[prompt] += 1
        attempt = self.attempts[prompt]
        self.running += 1
        self.max_running = max(self.max_running, self.running)
        try:
            for step in range(1, spec.steps + 1):
                await anyio.lowlevel.checkpoint()
                on_progress(Progress(step=step, max_steps=spec.steps, message="scripted"))
            if self.is_held(prompt):
                gate = self._gates.setdefault(prompt, anyio.Event())
                await gate.wait()
            failure = self._failures.get(prompt)
            if failure is not None and attempt <= failure[0]:
                raise BackendError(f"{failure[2]} (attempt {attempt})", retryable=failure[1])
            outputs = [self._output(spec, index) for index in range(spec.count)]
            self.finished.append(prompt)
            return outputs
        except anyio.get_cancelled_exc_class():
            self.cancelled.append(prompt)
            if self.cleanup_s:
                with anyio.CancelScope(shield=True):
                    await anyio.sleep(self.cleanup_s)
            raise
        finally:
            self.running -= 1

    async def health(self) -> dict[str, Any]:
        self.health_calls += 1
        return {"up": True, "kind": "scripted", "concurrency": self.concurrency}

    def _output(self, spec: ImageSpec, index: int) -> ImageOutput:
        seed = (spec.seed + index) % 2**32
        data = render_png(spec.prompt, spec.negative_prompt, seed, spec.width, spec.height)
        if self.output_bytes:
            # Pad past the store's inline-write threshold (bytes after IEND are ignored by readers).
            data += bytes(max(0, self.output_bytes - len(data)))
        return ImageOutput(
            data=data, media_type="image/png", width=spec.width, height=spec.height, extension="png"
        )
