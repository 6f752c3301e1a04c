"""Client-side rate limits for platform APIs: a token bucket that paces requests, and a window
that counts scarce actions (publishes) and says when the next one is allowed."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable

import anyio


class TokenBucket:
    """At most `limit` acquisitions in any `per_s` seconds, with small bursts.

    The bucket holds `burst` tokens (a twentieth of the limit, at least one) and refills at
    `(limit - burst) / per_s`, so a full burst plus a window of refills still stays within the
    limit; refills run a little slow (`margin`) so that network jitter, which can bring
    requests closer together on the server than they were sent, does not tip a window over.
    """

    def __init__(
        self,
        limit: int,
        per_s: float,
        *,
        margin: float = 0.95,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if limit < 1 or per_s <= 0:
            raise ValueError("a rate limit needs limit >= 1 and per_s > 0")
        self.limit, self.per_s = limit, per_s
        self.burst = max(1, limit // 20)
        self.refill_per_s = max(limit - self.burst, 1) / per_s * margin
        self._clock = clock
        self._tokens = float(self.burst)
        self._updated = clock()
        self._lock = anyio.Lock()

    async def acquire(self) -> None:
        """Wait until a token is free and take it (callers are served in turn)."""
        async with self._lock:
            while True:
                now = self._clock()
                self._tokens = min(self.burst, self._tokens + (now - self._updated) * self.refill_per_s)
                self._updated = now
                if self._tokens >= 1:
                    self._tokens -= 1
                    return
                await anyio.sleep((1 - self._tokens) / self.refill_per_s)


class ActionWindow:
    """At most `limit` actions in any `per_s` seconds (e.g. Printify's 200 publishes per 30 minutes)."""

    def __init__(self, limit: int, per_s: float, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.limit, self.per_s = limit, per_s
        self._clock = clock
        self._times: deque[float] = deque()

    def wait_s(self) -> float:
        """Seconds until one more action is allowed (0 when it is allowed now)."""
        now = self._clock()
        while self._times and self._times[0] <= now - self.per_s:
            self._times.popleft()
        if len(self._times) < self.limit:
            return 0.0
        return self._times[0] + self.per_s - now

    def record(self) -> None:
        """Count one action done now."""
        self._times.append(self._clock())
