"""Methods a path does not take, on a real server: a 405 in the contract's envelope whose `Allow`
names every method the path documents (found by the fuzz pass), WebSocket paths included.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.http_served import atelier_http

pytestmark = pytest.mark.anyio


def allowed(response: object) -> set[str]:
    return {method.strip() for method in response.headers["allow"].split(",")}  # type: ignore[attr-defined]


async def test_a_405_names_every_method_the_path_takes(tmp_path: Path) -> None:
    run_id = "01jfk5m8n2p3q4r5s6t7v8w9xy"
    # (contract, documented path, a concrete path, the key of the contract's error message)
    cases = [
        ("adgen", "/runs/{run_id}", f"/runs/{run_id}", "detail"),
        ("pod", "/api/jobs", "/api/jobs", "error"),
        ("isengard", "/api/generation", "/api/generation", "detail"),
        ("desktop", "/api/history/{id}", "/api/history/1", "error"),
    ]
    async with atelier_http(tmp_path) as served:
        for contract, template, path, key in cases:
            document = (await served.http.get(f"/{contract}/openapi.json")).json()
            documented = {method.upper() for method in document["paths"][template]}
            assert len(documented) > 1, (contract, template)
            response = await served.http.request("OPTIONS", f"/{contract}{path}")
            assert response.status_code == 405, response.text
            assert allowed(response) - {"HEAD"} == documented, (contract, path, response.headers["allow"])
            assert "OPTIONS is not allowed" in response.json()[key]


async def test_plain_http_on_a_websocket_path(tmp_path: Path) -> None:
    async with atelier_http(tmp_path) as served:
        for path in ("/desktop/ws/generation", "/comfygen/ws/progress/01jfk5m8n2p3q4r5s6t7v8w9xy"):
            plain = await served.http.get(path)
            assert plain.status_code == 404, plain.text
            assert "only speaks WebSocket" in plain.text
            other = await served.http.request("TRACE", path)
            assert other.status_code == 405, other.text
            assert allowed(other) == {"GET", "HEAD"}
