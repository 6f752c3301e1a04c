"""One Host/Origin policy in front of every route and channel (http_compat/origins.py).

With no token set (the default `make run`), a page in the user's browser must not be able to
drive Atelier: not by a cross-origin request (`Origin: http://evil.com`, `Sec-Fetch-Site:
cross-site`, a `text/plain` POST that needs no CORS preflight), nor by DNS rebinding (`Host:
attacker.example:PORT`). Each case is sent by a real client to a real server on loopback, on every
route family of `ROUTES` (REST, docs, OpenAPI, WebSocket, SSE, socket.io, /mcp, /health); adding
a route family is one line there. Same-origin and header-less requests (curl, SDK clients) pass;
ATELIER_ALLOWED_ORIGINS and ATELIER_ALLOWED_HOSTS let named pages and names in.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import httpx2
import pytest
import socketio
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from core.errors import InvalidInput
from core.models import Run
from core.settings import Settings
from tests.http_served import MCP_INIT, Served, atelier_http

pytestmark = pytest.mark.anyio

SMALL = {"prompt": "paper lanterns", "width": 64, "height": 64, "steps": 2, "seed": 1}
MCP_HEADERS = {"Accept": "application/json, text/event-stream"}


@dataclass(frozen=True)
class Target:
    """One route: `{run}` / `{seq}` in its path are filled with a fresh finished run's id / seq."""

    family: str  # whose error envelope it answers in: a contract's name, "mcp" or "atelier"
    path: str
    method: str = "GET"
    body: Any = None
    websocket: bool = False

    def __str__(self) -> str:
        return f"{'WS' if self.websocket else self.method} {self.path}"


ROUTES = [
    Target("adgen", "/adgen/runs"),
    Target("adgen", "/adgen/runs/{run}", "DELETE"),
    Target("adgen", "/adgen/generate", "POST", SMALL),
    Target("adgen", "/adgen/docs"),
    Target("adgen", "/adgen/openapi.json"),
    Target("comfygen", "/comfygen/generate/{run}"),
    Target("comfygen", "/comfygen/generate", "POST", SMALL),
    Target("comfygen", "/comfygen/docs"),
    Target("comfygen", "/comfygen/openapi.json"),
    Target("comfygen", "/comfygen/ws/progress/{run}", websocket=True),
    Target("pod", "/pod/api/jobs"),
    Target("pod", "/pod/api/jobs/cleanup", "POST", {"maxAge": 0}),
    Target("pod", "/pod/docs"),
    Target("pod", "/pod/openapi.json"),
    Target("pod", "/pod/socket.io/?EIO=4&transport=polling"),
    Target("isengard", "/isengard/api/generation"),
    Target("isengard", "/isengard/api/generation/gen-{run}/stream"),
    Target("isengard", "/isengard/docs"),
    Target("isengard", "/isengard/openapi.json"),
    Target("desktop", "/desktop/api/history"),
    Target("desktop", "/desktop/api/history/{seq}", "DELETE"),
    Target("desktop", "/desktop/api/settings", "PUT", {"defaultSteps": 21}),
    Target("desktop", "/desktop/docs"),
    Target("desktop", "/desktop/openapi.json"),
    Target("desktop", "/desktop/ws/generation", websocket=True),
    Target("mcp", "/mcp", "POST", MCP_INIT),
    Target("atelier", "/health"),
    Target("atelier", "/shop/"),
    Target("atelier", "/shop/api/products"),
]
# With --root-contract pod: the contract at the root, beside /mcp.
ROOT_ROUTES = [
    Target("pod", "/api/jobs"),
    Target("pod", "/api/jobs/cleanup", "POST", {"maxAge": 0}),
    Target("pod", "/health"),
    Target("pod", "/docs"),
    Target("pod", "/openapi.json"),
    Target("pod", "/socket.io/?EIO=4&transport=polling"),
    Target("mcp", "/mcp", "POST", MCP_INIT),
]

EVIL = "http://evil.com"
ORIGIN_HINT = "ATELIER_ALLOWED_ORIGINS"
HOST_HINT = "ATELIER_ALLOWED_HOSTS"


def attacks(port: int) -> dict[str, tuple[dict[str, str], int, str]]:
    """What a hostile page makes the browser send: name -> (headers, status expected, hint)."""
    rebound = f"attacker.example:{port}"
    return {
        "cross-origin page": (
            {"Origin": EVIL, "Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "cors"},
            403,
            ORIGIN_HINT,
        ),
        "Origin only": ({"Origin": EVIL}, 403, ORIGIN_HINT),
        "Sec-Fetch-Site only": (
            {"Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "no-cors"},
            403,
            ORIGIN_HINT,
        ),
        "another port of loopback": (
            {"Origin": "http://127.0.0.1:3000", "Sec-Fetch-Site": "same-site", "Sec-Fetch-Mode": "cors"},
            403,
            ORIGIN_HINT,
        ),
        "sandboxed page": ({"Origin": "null", "Sec-Fetch-Site": "cross-site"}, 403, ORIGIN_HINT),
        "foreign Host": ({"Host": "attacker.example:8000"}, 421, HOST_HINT),
        # DNS rebinding as it happens: the page's own origin, under the attacker's name.
        "DNS rebinding": (
            {"Host": rebound, "Origin": f"http://{rebound}", "Sec-Fetch-Site": "same-origin"},
            421,
            HOST_HINT,
        ),
    }


def envelope_message(family: str, body: Any) -> str:
    """The message of an error body, asserting it is in the envelope of the route's contract."""
    if family in ("adgen", "comfygen", "isengard"):
        assert set(body) == {"detail"}, body
        return body["detail"]
    if family == "pod":
        assert set(body) == {"error"}, body
        return body["error"]
    if family == "desktop":
        assert body["success"] is False and body["code"] in ("FORBIDDEN", "MISDIRECTED_REQUEST"), body
        return body["error"]
    if family == "mcp":
        assert body["jsonrpc"] == "2.0" and set(body["error"]) == {"code", "message"}, body
        return body["error"]["message"]
    assert set(body) == {"error", "message"}, body
    return body["message"]


async def finished_run(served: Served) -> Run:
    run = await served.engine.submit_image(SMALL)
    return await served.finished(run.id)


async def fill(served: Served, target: Target) -> str:
    if "{run}" not in target.path and "{seq}" not in target.path:
        return target.path
    run = await finished_run(served)
    return target.path.replace("{run}", run.id).replace("{seq}", str(run.seq))


async def ledger_state(served: Served) -> list[tuple[str, str]]:
    page = await served.engine.list_runs(limit=200)
    return [(run.id, run.status.value) for run in page.items]


async def send(served: Served, target: Target, path: str, headers: Mapping[str, str]) -> httpx.Response:
    """One plain HTTP request as a browser page (or curl) would send it."""
    extra = MCP_HEADERS if target.path == "/mcp" else {}
    return await served.http.request(target.method, path, json=target.body, headers={**extra, **headers})


async def ws_refusal(served: Served, path: str, headers: Mapping[str, str]) -> InvalidStatus:
    """The answer to a WebSocket handshake that must be refused (never accepted)."""
    headers = dict(headers)
    host = headers.pop("Host", None)
    origin = headers.pop("Origin", None)
    port = int(served.url.rsplit(":", 1)[1])
    # A foreign Host: connect to 127.0.0.1 under the other name, as a rebound browser does.
    url = f"ws://{host}{path}" if host else f"{served.ws_url}{path}"
    with pytest.raises(InvalidStatus) as refused:
        async with connect(
            url, origin=origin, additional_headers=headers, host="127.0.0.1", port=port, open_timeout=10
        ):
            pass
    return refused.value


async def assert_refused_everywhere(served: Served, targets: list[Target]) -> None:
    port = int(served.url.rsplit(":", 1)[1])
    for target in targets:
        for attack, (headers, status, hint) in attacks(port).items():
            path = await fill(served, target)
            before = await ledger_state(served)
            if target.websocket:
                refusal = ws_refusal(served, path, headers)
                response = (await refusal).response
                code, body = response.status_code, json.loads(response.body)
            else:
                answer = await send(served, target, path, headers)
                code, body = answer.status_code, answer.json()
            where = f"{target} ({attack})"
            assert code == status, where
            assert hint in envelope_message(target.family, body), where
            assert await ledger_state(served) == before, f"{where} changed the ledger"


async def assert_passes(served: Served, target: Target, headers: Mapping[str, str]) -> None:
    path = await fill(served, target)
    if target.websocket:
        origin = headers.get("Origin")
        extra = {k: v for k, v in headers.items() if k != "Origin"}
        async with connect(
            f"{served.ws_url}{path}", origin=origin, additional_headers=extra, open_timeout=10
        ):
            pass
        return
    response = await send(served, target, path, headers)
    assert response.status_code < 400, f"{target}: {response.status_code} {response.text[:300]}"


# --- refused ------------------------------------------------------------------------------


@pytest.mark.parametrize("target", ROUTES, ids=str)
async def test_cross_origin_and_foreign_host_requests_are_refused(tmp_path: Path, target: Target) -> None:
    async with atelier_http(tmp_path) as served:
        await assert_refused_everywhere(served, [target])


async def test_the_root_contract_and_mcp_beside_it_refuse_them_too(tmp_path: Path) -> None:
    async with atelier_http(tmp_path, root_contract="pod") as served:
        await assert_refused_everywhere(served, ROOT_ROUTES)


async def test_pod_cleanup_from_a_hostile_page_erases_nothing(tmp_path: Path) -> None:
    """The attack of the issue: `fetch(..., {method: "POST", mode: "no-cors", body})` needs no
    preflight and sends `text/plain`; it must not erase the finished runs."""
    async with atelier_http(tmp_path) as served:
        runs = [await finished_run(served) for _ in range(2)]
        attack = {
            "Origin": EVIL,
            "Sec-Fetch-Site": "cross-site",
            "Sec-Fetch-Mode": "no-cors",
            "Content-Type": "text/plain;charset=UTF-8",
        }
        refused = await served.http.post("/pod/api/jobs/cleanup", content=b'{"maxAge":0}', headers=attack)
        assert refused.status_code == 403
        assert ORIGIN_HINT in refused.json()["error"]
        for run in runs:
            assert (await served.http.get(f"/pod/api/jobs/job_{run.id}")).status_code == 200

        # Without a browser's headers the body is still not read as JSON unless labelled so.
        plain = await served.http.post(
            "/pod/api/jobs/cleanup", content=b'{"maxAge":0}', headers={"Content-Type": "text/plain"}
        )
        assert plain.status_code == 415 and "application/json" in plain.json()["error"]
        assert len(await ledger_state(served)) == 2

        # The same request, labelled JSON, from a client that is not a browser page: it works.
        cleaned = await served.http.post("/pod/api/jobs/cleanup", json={"maxAge": 0})
        assert cleaned.status_code == 200, cleaned.text
        assert await ledger_state(served) == []


async def test_links_to_docs_from_other_sites_open_but_forms_and_frames_do_not(tmp_path: Path) -> None:
    async with atelier_http(tmp_path) as served:
        link = {"Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "navigate", "Sec-Fetch-Dest": "document"}
        page = await served.http.get("/adgen/docs", headers=link)
        assert page.status_code == 200 and "text/html" in page.headers["content-type"]
        form = await served.http.post(
            "/pod/api/jobs/cleanup", json={"maxAge": 0}, headers={**link, "Origin": EVIL}
        )
        assert form.status_code == 403
        framed = await served.http.get("/adgen/docs", headers={**link, "Sec-Fetch-Dest": "iframe"})
        assert framed.status_code == 403


# --- allowed ------------------------------------------------------------------------------


@pytest.mark.parametrize("target", ROUTES, ids=str)
async def test_same_origin_and_header_less_requests_pass(tmp_path: Path, target: Target) -> None:
    async with atelier_http(tmp_path) as served:
        same_origin = {"Origin": served.url, "Sec-Fetch-Site": "same-origin", "Sec-Fetch-Mode": "cors"}
        await assert_passes(served, target, same_origin)
        await assert_passes(served, target, {"Origin": served.url})  # an older browser: no Sec-Fetch
        await assert_passes(served, target, {})  # curl, SDK clients
        await assert_passes(served, target, {"Host": "localhost"} if not target.websocket else {})


async def test_an_allowed_origin_calls_rest_websockets_socketio_and_mcp(tmp_path: Path) -> None:
    page = "http://localhost:3000"
    browser = {"Origin": page, "Sec-Fetch-Site": "same-site", "Sec-Fetch-Mode": "cors"}
    async with atelier_http(tmp_path, allowed_origins=page) as served:
        run = await finished_run(served)
        listed = await served.http.get("/adgen/runs", headers=browser)
        assert listed.status_code == 200 and [r["run_id"] for r in listed.json()] == [run.id]
        assert listed.headers["access-control-allow-origin"] == page

        # The preflight a page's fetch() with a JSON body makes first.
        preflight = await served.http.options(
            "/pod/api/jobs/cleanup",
            headers={
                **browser,
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "content-type",
            },
        )
        assert preflight.status_code == 200
        assert preflight.headers["access-control-allow-origin"] == page
        assert "POST" in preflight.headers["access-control-allow-methods"]
        assert "content-type" in preflight.headers["access-control-allow-headers"].lower()
        # ... and none for a page that is not on the list.
        stranger = await served.http.options(
            "/pod/api/jobs/cleanup", headers={"Origin": EVIL, "Access-Control-Request-Method": "POST"}
        )
        assert stranger.status_code == 403 and "access-control-allow-origin" not in stranger.headers
        assert (await served.http.get("/adgen/runs", headers={"Origin": EVIL})).status_code == 403

        async with connect(f"{served.ws_url}/comfygen/ws/progress/{run.id}", origin=page) as ws:
            assert '"completed"' in str(await ws.recv())

        listener = socketio.AsyncClient(reconnection=False)
        await listener.connect(served.url, socketio_path="/pod/socket.io", headers={"Origin": page})
        assert listener.connected
        await listener.disconnect()

        async with (
            httpx2.AsyncClient(headers={"Origin": page, "Sec-Fetch-Site": "same-site"}, timeout=30) as http,
            Client(streamable_http_client(f"{served.url}/mcp", http_client=http)) as client,
        ):
            assert "generate_image" in {tool.name for tool in (await client.list_tools()).tools}
        mcp_preflight = await served.http.options(
            "/mcp",
            headers={
                "Origin": page,
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "content-type,mcp-session-id,mcp-protocol-version",
            },
        )
        assert mcp_preflight.status_code == 200
        assert "mcp-session-id" in mcp_preflight.headers["access-control-allow-headers"].lower()
        mcp_answer = await served.http.post("/mcp", json=MCP_INIT, headers={**MCP_HEADERS, "Origin": page})
        assert "mcp-session-id" in mcp_answer.headers["access-control-expose-headers"].lower()


async def test_with_a_token_preflights_need_none_and_calls_still_do(tmp_path: Path) -> None:
    page = "http://localhost:3000"
    async with atelier_http(tmp_path, allowed_origins=page, api_token="s3cret-token-value") as served:
        preflight = await served.http.options(
            "/adgen/runs",
            headers={
                "Origin": page,
                "Access-Control-Request-Method": "GET",
                "Access-Control-Request-Headers": "authorization",
            },
        )
        assert preflight.status_code == 200
        assert "authorization" in preflight.headers["access-control-allow-headers"].lower()
        assert (await served.http.get("/adgen/runs", headers={"Origin": page})).status_code == 401
        authorized = {"Origin": page, "Authorization": "Bearer s3cret-token-value"}
        assert (await served.http.get("/adgen/runs", headers=authorized)).status_code == 200


async def test_a_host_in_the_allow_list_passes_and_others_do_not(tmp_path: Path) -> None:
    async with atelier_http(tmp_path, allowed_hosts="atelier.lan, studio.example:9999") as served:
        port = int(served.url.rsplit(":", 1)[1])
        assert (
            await served.http.get("/adgen/runs", headers={"Host": f"atelier.lan:{port}"})
        ).status_code == 200
        assert (await served.http.get("/health", headers={"Host": "studio.example:9999"})).status_code == 200
        assert (await served.http.get("/health", headers={"Host": "studio.example:9998"})).status_code == 421
        assert (
            await served.http.get("/health", headers={"Host": f"attacker.example:{port}"})
        ).status_code == 421
        async with connect(f"ws://atelier.lan:{port}/desktop/ws/generation", host="127.0.0.1", port=port):
            pass
        # A page served under that name is same-origin there.
        same = {"Host": f"atelier.lan:{port}", "Origin": f"http://atelier.lan:{port}"}
        assert (await served.http.get("/pod/api/jobs", headers=same)).status_code == 200


async def test_bound_to_every_interface_any_host_passes_unless_hosts_are_listed(tmp_path: Path) -> None:
    # The app is configured as if bound to 0.0.0.0 (which needs a token); the test still listens
    # on 127.0.0.1 only.
    token = {"Authorization": "Bearer s3cret-token-value"}
    async with atelier_http(tmp_path / "open", host="0.0.0.0", api_token="s3cret-token-value") as served:
        answer = await served.http.get("/health", headers={**token, "Host": "gpu-box.lan:8000"})
        assert answer.status_code == 200
        assert (await served.http.get("/health", headers={**token, "Origin": EVIL})).status_code == 403
    async with atelier_http(
        tmp_path / "listed", host="0.0.0.0", api_token="s3cret-token-value", allowed_hosts="gpu-box.lan"
    ) as served:
        assert (
            await served.http.get("/health", headers={**token, "Host": "gpu-box.lan:8000"})
        ).status_code == 200
        assert (
            await served.http.get("/health", headers={**token, "Host": "other.lan:8000"})
        ).status_code == 421


# --- JSON bodies --------------------------------------------------------------------------

JSON_ROUTES = [
    ("adgen", "POST", "/adgen/generate", SMALL),
    ("comfygen", "POST", "/comfygen/generate", SMALL),
    ("pod", "POST", "/pod/api/jobs/cleanup", {"maxAge": 0}),
    ("pod", "POST", "/pod/api/generate", {"prompt": "paper lanterns", "productTypes": ["tshirt"]}),
    (
        "isengard",
        "POST",
        "/isengard/api/generation",
        {"config": {"prompt": "lanterns", "width": 64, "height": 64}},
    ),
    (
        "desktop",
        "POST",
        "/desktop/api/generate/text-to-image",
        {"prompt": "lanterns", "width": 64, "height": 64},
    ),
    ("desktop", "PUT", "/desktop/api/settings", {"defaultSteps": 21}),
]


@pytest.mark.parametrize(("family", "method", "path", "body"), JSON_ROUTES, ids=lambda v: str(v)[:40])
async def test_bodies_not_labelled_json_are_415_and_change_nothing(
    tmp_path: Path, family: str, method: str, path: str, body: Any
) -> None:
    async with atelier_http(tmp_path) as served:
        await finished_run(served)
        before = await ledger_state(served)
        settings_before = (await served.http.get("/desktop/api/settings")).json()
        for content_type in (
            "text/plain",
            "text/plain;charset=UTF-8",
            "application/x-www-form-urlencoded",
            None,
        ):
            headers = {"Content-Type": content_type} if content_type else {}
            answer = await served.http.request(
                method, path, content=json.dumps(body).encode(), headers=headers
            )
            assert answer.status_code == 415, (content_type, answer.text)
            message = envelope_message_any(family, answer.json())
            assert "Content-Type: application/json" in message
        assert await ledger_state(served) == before
        assert (await served.http.get("/desktop/api/settings")).json() == settings_before

        for content_type in ("application/json; charset=utf-8", "application/vnd.atelier+json"):
            answer = await served.http.request(
                method, path, content=json.dumps(body).encode(), headers={"Content-Type": content_type}
            )
            assert answer.status_code < 400, (content_type, answer.text)


def envelope_message_any(family: str, body: Any) -> str:
    if family == "desktop":
        assert body["success"] is False and body["code"] == "UNSUPPORTED_MEDIA_TYPE", body
        return body["error"]
    return envelope_message(family, body)


# --- settings -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("ATELIER_ALLOWED_ORIGINS", "localhost:3000"),
        ("ATELIER_ALLOWED_ORIGINS", "http://localhost:3000/app"),
        ("ATELIER_ALLOWED_HOSTS", "http://atelier.lan"),
        ("ATELIER_ALLOWED_HOSTS", "atelier.lan/mcp"),
    ],
)
def test_a_malformed_allow_list_is_refused_at_start_naming_the_variable(variable: str, value: str) -> None:
    with pytest.raises(InvalidInput) as refused:
        Settings.from_env({variable: value})
    assert variable in str(refused.value) and repr(value) in str(refused.value)
