"""Request rate limits: a sliding window per client key."""

from __future__ import annotations

import time
from collections import deque


class RateLimiter:
    """At most `limit` requests per `window_s` per key (a sliding window)."""

    def __init__(self, limit: int, window_s: float = 60.0) -> None:
        self.limit = limit
        self.window_s = window_s
        self._hits: dict[str, deque[float]] = {}

    def check(self, key: str) -> float:
        """Record a request; returns 0, or the seconds to wait when over the limit (not recorded)."""
        now = time.monotonic()
        hits = self._hits.setdefault(key, deque())
        while hits and hits[0] <= now - self.window_s:
            hits.popleft()
        if len(hits) >= self.limit:
            return max(0.0, hits[0] + self.window_s - now)
        hits.append(now)
        return 0.0
