"""A real headless Chromium for the web-page tests: Debian's, driven by Playwright's async API.

No browser is ever downloaded (`playwright install` is never run): Playwright's PyPI wheel brings
its driver, and it launches the Chromium found on PATH through `executable_path`. Tests that need
it are marked `needs_browser` and are skipped where there is none (`make test` installs it as root).

Pages are read after an explicit wait on what their script writes, in real time: no virtual-time
budget that can run out while a fetch or a WebSocket is still pending.
"""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import AsyncIterator

import pytest
from playwright.async_api import Page, async_playwright

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
needs_browser = pytest.mark.skipif(
    CHROMIUM is None, reason="Chromium is not installed (make test installs it as root)"
)

# Long enough for a slow CI machine, short enough that a page that never finishes fails the test.
PAGE_TIMEOUT_MS = 20_000

LAUNCH_ARGS = [
    "--no-sandbox",  # CI and the containers run as root, where Chromium's sandbox refuses to start
    "--disable-dev-shm-usage",  # a container's /dev/shm is often tiny: Chromium crashes when it fills
    "--disable-quic",
]


@contextlib.asynccontextmanager
async def chromium_page(*launch_args: str) -> AsyncIterator[Page]:
    """A fresh page (new browser, new profile) of a headless Chromium started with `launch_args`
    besides our defaults; the browser is closed when the block ends."""
    assert CHROMIUM is not None, "mark the test with needs_browser"
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=CHROMIUM, args=[*LAUNCH_ARGS, *launch_args], timeout=PAGE_TIMEOUT_MS
        )
        try:
            page = await browser.new_page()
            page.set_default_timeout(PAGE_TIMEOUT_MS)
            yield page
        finally:
            await browser.close()
