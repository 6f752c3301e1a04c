"""The Host/Origin policy against a real browser: headless Chromium runs a page from another origin
(another port of 127.0.0.1: same-site, not same-origin) that tries what the issue describes.

The page's script writes what it managed to do into `<pre id="out">`; the test waits until it
has (Playwright), then reads it. The ledger is then checked: nothing a refused page asked for
happened. With the page's origin in ATELIER_ALLOWED_ORIGINS the same script really works (CORS
preflight, JSON POST, WebSocket). DNS rebinding is played with Chromium's resolver rules:
`attacker.example` resolves to 127.0.0.1.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse
from starlette.routing import Route

from tests.browser import chromium_page, needs_browser
from tests.http_served import Served, atelier_http, serve_app

pytestmark = [pytest.mark.anyio, needs_browser]

SMALL = {"prompt": "paper lanterns", "width": 64, "height": 64, "steps": 2, "seed": 1}

# What a hostile (or a configured) page does; `ATELIER` and `SMALL` are defined when it is served.
SCRIPT = """
const out = {};
async function attempt(name, action) {
  try { out[name] = await action(); } catch (error) { out[name] = "blocked: " + error.name; }
}
function socket(url) {
  return new Promise((resolve) => {
    const ws = new WebSocket(url);
    ws.onopen = () => { ws.close(); resolve("open"); };
    ws.onerror = () => resolve("refused");
  });
}
async function main() {
  await attempt("cleanup", async () => {
    await fetch(ATELIER + "/pod/api/jobs/cleanup", {method: "POST", mode: "no-cors", body: '{"maxAge":0}'});
    return "sent";
  });
  await attempt("list", async () => {
    const response = await fetch(ATELIER + "/adgen/runs");
    return response.status + " " + (await response.json()).length;
  });
  await attempt("generate", async () => {
    const response = await fetch(ATELIER + "/adgen/generate", {
      method: "POST", headers: {"Content-Type": "application/json"}, body: JSON.stringify(SMALL),
    });
    return String(response.status);
  });
  await attempt("websocket", () => socket(ATELIER.replace("http", "ws") + "/desktop/ws/generation"));
  document.getElementById("out").textContent = JSON.stringify(out);
}
main();
"""


def page_app(atelier: dict[str, str]) -> Starlette:
    async def page(request: Request) -> HTMLResponse:
        script = f"const ATELIER = {json.dumps(atelier['url'])}; const SMALL = {json.dumps(SMALL)};" + SCRIPT
        return HTMLResponse(f'<html><body><pre id="out">pending</pre><script>{script}</script></body></html>')

    return Starlette(routes=[Route("/", page)])


async def what_the_page_did(page_url: str) -> dict[str, str]:
    async with chromium_page() as page:
        await page.goto(page_url)
        await page.wait_for_function("document.getElementById('out').textContent !== 'pending'")
        out = await page.text_content("#out")
    assert out is not None
    return json.loads(out)


async def run_ids(served: Served) -> set[str]:
    return {run.id for run in (await served.engine.list_runs(limit=200)).items}


async def test_a_page_on_another_port_of_loopback_can_do_nothing(tmp_path: Path) -> None:
    atelier: dict[str, str] = {}
    async with serve_app(page_app(atelier)) as page_url, atelier_http(tmp_path) as served:
        atelier["url"] = served.url
        run = await served.engine.submit_image(SMALL)
        await served.finished(run.id)

        did = await what_the_page_did(page_url)

        assert did["cleanup"] == "sent"  # the browser sent it (no-cors needs no preflight) ...
        assert await run_ids(served) == {run.id}  # ... and nothing was erased
        assert did["list"].startswith("blocked")
        assert did["generate"].startswith("blocked")
        assert did["websocket"] == "refused"
        assert await run_ids(served) == {run.id}


async def test_a_page_whose_origin_is_allowed_calls_the_api_and_the_websocket(tmp_path: Path) -> None:
    atelier: dict[str, str] = {}
    async with (
        serve_app(page_app(atelier)) as page_url,
        atelier_http(tmp_path, allowed_origins=page_url) as served,
    ):
        atelier["url"] = served.url
        run = await served.engine.submit_image(SMALL)
        await served.finished(run.id)

        did = await what_the_page_did(page_url)

        # Even an allowed page's text/plain body is not read as JSON (415): the run is still listed.
        assert did["cleanup"] == "sent"
        assert did["list"] == "200 1"
        assert did["generate"] == "200", did  # after a CORS preflight for the JSON body
        assert did["websocket"] == "open"
        assert len(await run_ids(served) - {run.id}) == 1  # the page's run


async def test_a_rebound_name_is_refused_in_the_browser(tmp_path: Path) -> None:
    async with (
        atelier_http(tmp_path) as served,
        chromium_page("--host-resolver-rules=MAP attacker.example 127.0.0.1") as page,
    ):
        port = served.url.rsplit(":", 1)[1]
        rebound = await page.goto(f"http://attacker.example:{port}/adgen/runs")
        assert rebound is not None and rebound.status == 421
        assert "ATELIER_ALLOWED_HOSTS" in await page.content()
        # The same browser reaching it by its own address sees the list.
        own = await page.goto(f"{served.url}/adgen/runs")
        assert own is not None and own.status == 200
        assert "ATELIER_ALLOWED_HOSTS" not in await page.content()
        assert await own.json() == []
