"""Each contract's docs page, rendered by a real headless Chromium from its own openapi.json.

The page is offline (no CDN): its script fetches `openapi.json` next to it and lists every
operation. Chromium's `--dump-dom` gives the DOM after the script ran.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import anyio
import pytest

from http_compat.app import CONTRACTS
from tests.http_served import atelier_http

pytestmark = pytest.mark.anyio

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
needs_browser = pytest.mark.skipif(
    CHROMIUM is None, reason="Chromium is not installed (make test installs it as root)"
)


async def rendered_dom(url: str, profile: Path) -> str:
    assert CHROMIUM is not None
    result = await anyio.run_process(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={profile}",
            "--virtual-time-budget=10000",
            "--dump-dom",
            url,
        ],
        check=False,
    )
    assert result.returncode == 0, result.stderr.decode(errors="replace")[-2000:]
    return result.stdout.decode()


@needs_browser
@pytest.mark.parametrize("contract", CONTRACTS)
async def test_docs_page_lists_every_operation_of_the_contract(tmp_path: Path, contract: str) -> None:
    async with atelier_http(tmp_path) as served:
        document = (await served.http.get(f"/{contract}/openapi.json")).json()
        operations = [(method, path) for path, item in document["paths"].items() for method in item]
        assert operations, f"{contract} documents no endpoint"

        with anyio.fail_after(60):
            dom = await rendered_dom(f"{served.url}/{contract}/docs", tmp_path / "chromium")
        assert '<p class="error">' not in dom, re.findall(r"<p class=\"error\">[^<]*", dom)
        count = re.search(r'id="operations" data-count="(\d+)"', dom)
        assert count is not None, dom[:2000]
        assert int(count.group(1)) == len(operations)
        for method, path in operations:
            assert f'<span class="method {method}">{method}</span><span class="path">{path}</span>' in dom
        assert document["info"]["title"] in dom
