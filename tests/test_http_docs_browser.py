"""Each contract's docs page, rendered by a real headless Chromium from its own openapi.json.

The page is offline (no CDN): its script fetches `openapi.json` next to it and lists every
operation, then sets `data-count` on the list (or writes a `<p class="error">`). The test waits
for either (Playwright) and reads the rendered page.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from http_compat.app import CONTRACTS
from tests.browser import chromium_page, needs_browser
from tests.http_served import atelier_http

pytestmark = [pytest.mark.anyio, needs_browser]


@pytest.mark.parametrize("contract", CONTRACTS)
async def test_docs_page_lists_every_operation_of_the_contract(tmp_path: Path, contract: str) -> None:
    async with atelier_http(tmp_path) as served, chromium_page() as page:
        document = (await served.http.get(f"/{contract}/openapi.json")).json()
        operations = [(method, path) for path, item in document["paths"].items() for method in item]
        assert operations, f"{contract} documents no endpoint"

        await page.goto(f"{served.url}/{contract}/docs")
        await page.wait_for_selector("#operations[data-count], p.error", state="attached")
        assert await page.locator("p.error").all_text_contents() == []
        assert await page.get_attribute("#operations", "data-count") == str(len(operations))
        listed = await page.eval_on_selector_all(
            "details.op > summary",
            "summaries => summaries.map(s => [s.querySelector('.method').textContent,"
            " s.querySelector('.path').textContent])",
        )
        assert sorted(map(tuple, listed)) == sorted(operations)
        dom = await page.content()
        for method, path in operations:
            assert f'<span class="method {method}">{method}</span><span class="path">{path}</span>' in dom
        assert document["info"]["title"] in (await page.text_content("#title") or "")
