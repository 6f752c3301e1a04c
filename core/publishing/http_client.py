"""An HTTP client a platform makes at its first request, not when the server starts.

Making an `httpx.AsyncClient` loads the system's CA bundle (40-100 ms here), and every start of
`atelier mcp` or `atelier serve` would pay that for Printify and Shopify even when neither is
configured: start-up waits on no platform, not even on its TLS set-up.
"""

from __future__ import annotations

import httpx


class LazyClient:
    """The client given, or one made on first use (and closed by `aclose`, only if made here)."""

    def __init__(self, given: httpx.AsyncClient | None = None) -> None:
        self._client = given
        self._owned = given is None

    def get(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=httpx.Timeout(60.0, connect=10.0))
        return self._client

    async def aclose(self) -> None:
        if self._owned and self._client is not None:
            client, self._client = self._client, None
            await client.aclose()
