"""The Host/Origin policy against a real browser: headless Chromium runs a page from another origin
(another port of 127.0.0.1: same-site, not same-origin) that tries what the issue describes.

The page's script writes what it managed to do into the DOM, which `--dump-dom` returns. The
ledger is then checked: nothing a refused page asked for happened. With the page's origin in
ATELIER_ALLOWED_ORIGINS the same script really works (CORS preflight, JSON POST, WebSocket).
DNS rebinding is played with Chromium's resolver rules: `attacker.example` resolves to 127.0.0.1.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import anyio
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse
from starlette.routing import Route

from tests.http_served import Served, atelier_http, serve_app
from tests.test_http_docs_browser import CHROMIUM, needs_browser

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


async def chromium_dom(url: str, profile: Path, *extra: str) -> str:
    assert CHROMIUM is not None
    with anyio.fail_after(60):
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
                *extra,
                "--dump-dom",
                url,
            ],
            check=False,
        )
    assert result.returncode == 0, result.stderr.decode(errors="replace")[-2000:]
    return result.stdout.decode()


async def what_the_page_did(page_url: str, profile: Path) -> dict[str, str]:
    dom = await chromium_dom(page_url, profile)
    found = re.search(r'<pre id="out">(.*?)</pre>', dom, re.S)
    assert found is not None and found.group(1) != "pending", dom[:2000]
    return json.loads(found.group(1).replace("&quot;", '"').replace("&amp;", "&"))


async def run_ids(served: Served) -> set[str]:
    return {run.id for run in (await served.engine.list_runs(limit=200)).items}


async def test_a_page_on_another_port_of_loopback_can_do_nothing(tmp_path: Path) -> None:
    atelier: dict[str, str] = {}
    async with serve_app(page_app(atelier)) as page_url, atelier_http(tmp_path) as served:
        atelier["url"] = served.url
        run = await served.engine.submit_image(SMALL)
        await served.finished(run.id)

        did = await what_the_page_did(page_url, tmp_path / "chromium")

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

        did = await what_the_page_did(page_url, tmp_path / "chromium")

        # Even an allowed page's text/plain body is not read as JSON (415): the run is still listed.
        assert did["cleanup"] == "sent"
        assert did["list"] == "200 1"
        assert did["generate"] == "200", did  # after a CORS preflight for the JSON body
        assert did["websocket"] == "open"
        assert len(await run_ids(served) - {run.id}) == 1  # the page's run


async def test_a_rebound_name_is_refused_in_the_browser(tmp_path: Path) -> None:
    async with atelier_http(tmp_path) as served:
        port = served.url.rsplit(":", 1)[1]
        dom = await chromium_dom(
            f"http://attacker.example:{port}/adgen/runs",
            tmp_path / "chromium",
            "--host-resolver-rules=MAP attacker.example 127.0.0.1",
        )
        assert "ATELIER_ALLOWED_HOSTS" in dom, dom[:2000]
        # The same browser reaching it by its own address sees the list.
        assert "ATELIER_ALLOWED_HOSTS" not in await chromium_dom(
            f"{served.url}/adgen/runs", tmp_path / "chromium"
        )
