"""The bearer token (http_compat/security.py): the `Bearer` scheme in any case (RFC 7235), spaces
around the token tolerated; anything else is still 401 on REST, WebSockets and /mcp.
"""

from __future__ import annotations

from pathlib import Path

import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from tests.http_served import MCP_INIT, Served, atelier_http

pytestmark = pytest.mark.anyio

TOKEN = "s3cret-token-value"
# (HTTP itself strips spaces around a header value: clients may not even send them.)
ACCEPTED = [f"Bearer {TOKEN}", f"bearer {TOKEN}", f"BEARER {TOKEN}", f"Bearer   {TOKEN}", f"bEaReR\t{TOKEN}"]
REFUSED = [
    "",
    "Bearer",
    f"Bearer{TOKEN}",
    f"Bearer {TOKEN}x",
    f"Bearer {TOKEN[:-1]}",
    f"Basic {TOKEN}",
    f"Bearer {TOKEN} {TOKEN}",
    "bearer wrong",
]
MCP_PING = {"jsonrpc": "2.0", "id": 1, "method": "ping"}


async def ws_status(served: Served, authorization: str) -> int:
    """101 when the handshake is accepted, else the status it was refused with."""
    headers = {"Authorization": authorization} if authorization else {}
    try:
        async with connect(f"{served.ws_url}/desktop/ws/generation", additional_headers=headers):
            return 101
    except InvalidStatus as refused:
        return refused.response.status_code


@pytest.mark.parametrize("authorization", ACCEPTED, ids=repr)
async def test_the_scheme_is_case_insensitive_and_spaces_are_tolerated(
    tmp_path: Path, authorization: str
) -> None:
    async with atelier_http(tmp_path, api_token=TOKEN) as served:
        headers = {"Authorization": authorization}
        assert (await served.http.get("/adgen/runs", headers=headers)).status_code == 200
        assert await ws_status(served, authorization) == 101
        mcp = await served.http.post(
            "/mcp", json=MCP_INIT, headers={**headers, "Accept": "application/json, text/event-stream"}
        )
        assert mcp.status_code == 200, mcp.text


@pytest.mark.parametrize("authorization", REFUSED, ids=repr)
async def test_anything_but_the_token_is_401_on_rest_websockets_and_mcp(
    tmp_path: Path, authorization: str
) -> None:
    async with atelier_http(tmp_path, api_token=TOKEN) as served:
        headers = {"Authorization": authorization} if authorization else {}
        rest = await served.http.get("/adgen/runs", headers=headers)
        assert rest.status_code == 401 and rest.headers["www-authenticate"].startswith("Bearer")
        assert TOKEN not in rest.text
        assert await ws_status(served, authorization) == 401
        mcp = await served.http.post(
            "/mcp", json=MCP_PING, headers={**headers, "Accept": "application/json, text/event-stream"}
        )
        assert mcp.status_code == 401


async def test_an_mcp_client_sending_a_lowercase_scheme_works(tmp_path: Path) -> None:
    async with (
        atelier_http(tmp_path, api_token=TOKEN) as served,
        httpx2.AsyncClient(headers={"Authorization": f"bearer {TOKEN}"}, timeout=30) as http,
        Client(streamable_http_client(f"{served.url}/mcp", http_client=http)) as client,
    ):
        assert "generate_image" in {tool.name for tool in (await client.list_tools()).tools}


async def test_a_refusal_comes_in_the_envelope_of_the_path_s_contract(tmp_path: Path) -> None:
    async with atelier_http(tmp_path, api_token=TOKEN) as served:
        adgen = await served.http.get("/adgen/runs")
        assert adgen.status_code == 401 and "Bearer" in adgen.json()["detail"]
        desktop = (await served.http.get("/desktop/api/history")).json()
        assert desktop["success"] is False and desktop["code"] == "UNAUTHORIZED"
        pod = (await served.http.get("/pod/api/jobs")).json()
        assert "Bearer" in pod["error"]
        mcp = await served.http.post("/mcp", json={"jsonrpc": "2.0", "id": 1, "method": "ping"})
        assert mcp.status_code == 401 and "Bearer" in mcp.json()["error"]["message"]
        assert TOKEN not in adgen.text + mcp.text
