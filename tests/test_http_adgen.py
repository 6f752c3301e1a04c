"""The AdGen contract (../shared/contracts/adgen.md) at /adgen, walked with the document's own requests.

A real uvicorn server on loopback over a real engine (preview renderer); every response is
checked against the shapes and status codes the document gives.
"""

from __future__ import annotations

import io
import json
import re
import zipfile
from pathlib import Path

import pytest
from PIL import Image
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from core.models import RunStatus
from tests.http_served import Served, atelier_http

pytestmark = pytest.mark.anyio

# The document's example request for POST /generate.
EXAMPLE = {
    "prompt": "A futuristic sports car on a neon-lit highway",
    "negative_prompt": "blurry, old, vintage",
    "seed": 12345,
}
SMALL = {"width": 64, "height": 64, "steps": 2}
STAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+0000$")
UNKNOWN = "0" * 26


async def generate(served: Served, **fields: object) -> str:
    response = await served.http.post("/adgen/generate", json={**EXAMPLE, **SMALL, **fields})
    assert response.status_code == 200, response.text
    return response.json()["run_id"]


async def test_health_and_detailed_health(tmp_path: Path) -> None:
    async with atelier_http(tmp_path) as served:
        assert (await served.http.get("/adgen/health")).json() == {"ok": True}
        detailed = (await served.http.get("/adgen/health/detailed")).json()
        assert set(detailed) >= {"api", "timestamp", "storage", "graph", "comfy", "ok"}
        assert (detailed["api"], detailed["storage"], detailed["comfy"], detailed["ok"]) == (
            "ok",
            "ok",
            "ok",
            True,
        )
        assert isinstance(detailed["timestamp"], float)
        assert detailed["backends"] == {"local": "ok"}


async def test_detailed_health_reports_a_comfyui_outage_as_ok_false_with_200(tmp_path: Path) -> None:
    async with atelier_http(tmp_path, backend="comfyui", comfyui_urls="http://127.0.0.1:9") as served:
        response = await served.http.get("/adgen/health/detailed")
        assert response.status_code == 200
        detailed = response.json()
        assert detailed["ok"] is False
        assert detailed["comfy"].startswith("error: ") and "127.0.0.1:9" in detailed["comfy"]
        assert detailed["storage"] == "ok"


async def test_generate_then_list_detail_files_finalize_and_download(tmp_path: Path) -> None:
    async with atelier_http(tmp_path) as served:
        response = await served.http.post("/adgen/generate", json={**EXAMPLE, **SMALL})
        assert response.status_code == 200
        started = response.json()
        assert set(started) >= {"run_id", "status", "prompt_id"}
        assert started["status"] in ("PENDING", "RUNNING", "COMPLETED")
        run_id = started["run_id"]

        finalized = (await served.http.post(f"/adgen/finalize/{run_id}")).json()
        assert finalized["status"] == "COMPLETED"
        assert finalized["inputs"]["prompt"] == EXAMPLE["prompt"]
        assert finalized["inputs"]["negative_prompt"] == EXAMPLE["negative_prompt"]
        assert finalized["inputs"]["seed"] == 12345
        assert STAMP.match(finalized["created_at"]) and STAMP.match(finalized["finished_at"])
        [artifact] = finalized["artifacts"]
        assert artifact["type"] == "image"
        assert artifact["url"] == f"/adgen/runs/{run_id}/files/{artifact['filename']}"

        image = await served.http.get(artifact["url"])
        assert image.status_code == 200 and image.headers["content-type"] == "image/png"
        assert Image.open(io.BytesIO(image.content)).size == (64, 64)

        listed = (await served.http.get("/adgen/runs")).json()
        assert [run["run_id"] for run in listed] == [run_id]
        [row] = listed
        assert set(row) >= {"run_id", "prompt", "status", "created_at", "finished_at", "duration"}
        assert (row["prompt"], row["status"]) == (EXAMPLE["prompt"], "COMPLETED")
        assert isinstance(row["duration"], int) and STAMP.match(row["created_at"])

        detail = (await served.http.get(f"/adgen/runs/{run_id}")).json()
        assert detail["artifacts"] == finalized["artifacts"]

        download = await served.http.get(f"/adgen/download/{run_id}")
        assert download.status_code == 200
        assert download.headers["content-type"] == "application/zip"
        with zipfile.ZipFile(io.BytesIO(download.content)) as archive:
            assert sorted(archive.namelist()) == sorted([artifact["filename"], "run.json"])
            assert archive.read(artifact["filename"]) == image.content
            assert json.loads(archive.read("run.json"))["id"] == run_id


async def test_runs_list_pending_and_running_runs_with_null_finish(tmp_path: Path) -> None:
    async with atelier_http(tmp_path, local_step_ms=200, local_concurrency=1) as served:
        first = await generate(served, steps=50)
        second = await generate(served, steps=50)
        listed = {run["run_id"]: run for run in (await served.http.get("/adgen/runs")).json()}
        assert list(listed) == [second, first]  # newest first
        assert listed[second]["status"] == "PENDING"
        assert listed[second]["finished_at"] is None and listed[second]["duration"] is None
        for run_id in (first, second):
            await served.http.post(f"/adgen/runs/{run_id}/cancel")


async def test_cancel_a_running_run(tmp_path: Path) -> None:
    async with atelier_http(tmp_path, local_step_ms=200) as served:
        run_id = await generate(served, steps=50)
        response = await served.http.post(f"/adgen/runs/{run_id}/cancel")
        assert response.status_code == 200
        assert response.json()["status"] == "CANCELLED"
        assert (await served.engine.get_run(run_id)).status is RunStatus.CANCELLED
        missing = await served.http.post(f"/adgen/runs/{UNKNOWN}/cancel")
        assert missing.status_code == 404 and "does not exist" in missing.json()["detail"]


async def test_delete_answers_204_then_the_run_is_gone(tmp_path: Path) -> None:
    async with atelier_http(tmp_path) as served:
        run_id = await generate(served)
        await served.http.post(f"/adgen/finalize/{run_id}")
        zip_path = served.settings.bundles_dir / f"{run_id}.zip"
        assert zip_path.exists()

        response = await served.http.delete(f"/adgen/runs/{run_id}")
        assert response.status_code == 204 and response.content == b""
        assert (await served.http.get(f"/adgen/runs/{run_id}")).status_code == 404
        assert (await served.http.get(f"/adgen/download/{run_id}")).status_code == 404
        assert not zip_path.exists()

        malformed = await served.http.delete("/adgen/runs/not-a-run-id")
        assert malformed.status_code == 400 and "not a valid run id" in malformed.json()["detail"]
        traversal = await served.http.delete("/adgen/runs/..%2F..%2Fledger.sqlite3")
        assert traversal.status_code in (400, 404) and "detail" in traversal.json()
        assert (await served.http.delete(f"/adgen/runs/{UNKNOWN}")).status_code == 404
        assert (served.settings.home / "ledger.sqlite3").exists()


async def test_download_before_the_run_has_files_is_404(tmp_path: Path) -> None:
    async with atelier_http(tmp_path, local_step_ms=200) as served:
        run_id = await generate(served, steps=50)
        response = await served.http.get(f"/adgen/download/{run_id}")
        assert response.status_code == 404 and "no files" in response.json()["detail"]
        await served.http.post(f"/adgen/runs/{run_id}/cancel")


@pytest.mark.parametrize(
    ("body", "status", "mentions"),
    [
        (b'{"prompt": "unterminated', 400, "not valid JSON"),
        (b"[1, 2]", 422, "dictionary"),
        (b'{"negative_prompt": "x"}', 422, "prompt"),
        (b'{"prompt": "x", "seed": "twelve"}', 422, "seed"),
        (b'{"prompt": "x", "width": 7}', 422, "width"),
        (b'{"prompt": "x", "colour": "red"}', 422, "colour"),
    ],
)
async def test_bad_requests_get_fastapi_shaped_errors(
    tmp_path: Path, body: bytes, status: int, mentions: str
) -> None:
    async with atelier_http(tmp_path) as served:
        response = await served.http.post(
            "/adgen/generate", content=body, headers={"Content-Type": "application/json"}
        )
        assert response.status_code == status, response.text
        assert mentions in json.dumps(response.json()["detail"])
        assert (await served.http.get("/adgen/runs")).json() == []


async def test_oversized_body_is_413_and_unknown_routes_and_files_are_404(tmp_path: Path) -> None:
    async with atelier_http(tmp_path, max_input_bytes=10_000) as served:
        huge = {"prompt": "x" * (served.settings.max_request_bytes + 10)}
        response = await served.http.post("/adgen/generate", json=huge)
        assert response.status_code == 413 and "larger than" in response.json()["detail"]

        async def chunks():  # no Content-Length: the cap still holds
            for _ in range(40):
                yield b"x" * 50_000

        streamed = await served.http.post("/adgen/generate", content=chunks())
        assert streamed.status_code == 413

        assert (await served.http.get("/adgen/nowhere")).json() == {
            "detail": "no such endpoint: GET /adgen/nowhere"
        }
        run_id = await generate(served)
        await served.finished(run_id)
        for name in ("..%2F..%2Fledger.sqlite3", ".env", "image-09.png"):
            response = await served.http.get(f"/adgen/runs/{run_id}/files/{name}")
            assert response.status_code == 404, name
            assert "detail" in response.json()


async def test_a_run_made_over_mcp_is_listed_and_one_made_here_is_seen_by_mcp(tmp_path: Path) -> None:
    from mcp import Client

    async with atelier_http(tmp_path) as served, Client(f"{served.url}/mcp") as client:
        made = await client.call_tool("generate_image", {"prompt": "harbour at dawn", **SMALL, "seed": 3})
        mcp_run = made.structured_content["run_id"]
        listed = (await served.http.get("/adgen/runs")).json()
        assert [run["run_id"] for run in listed] == [mcp_run]
        assert listed[0]["prompt"] == "harbour at dawn"


async def test_openapi_lists_every_documented_endpoint(tmp_path: Path) -> None:
    async with atelier_http(tmp_path) as served:
        document = (await served.http.get("/adgen/openapi.json")).json()
        assert document["openapi"].startswith("3.")
        operations = {(method.upper(), path) for path, item in document["paths"].items() for method in item}
        assert operations >= {
            ("GET", "/health"),
            ("GET", "/health/detailed"),
            ("POST", "/generate"),
            ("GET", "/runs"),
            ("GET", "/runs/{run_id}"),
            ("POST", "/finalize/{run_id}"),
            ("POST", "/runs/{run_id}/cancel"),
            ("DELETE", "/runs/{run_id}"),
            ("GET", "/download/{run_id}"),
        }
        docs = await served.http.get("/adgen/docs")
        assert docs.status_code == 200 and "text/html" in docs.headers["content-type"]


async def test_root_contract_serves_adgen_at_the_root_beside_mcp(tmp_path: Path) -> None:
    async with atelier_http(tmp_path, root_contract="adgen") as served:
        assert (await served.http.get("/health")).json() == {"ok": True}
        run_id = await generate(served)
        assert (await served.http.get(f"/runs/{run_id}")).json()["run_id"] == run_id
        assert (await served.http.get("/adgen/health")).json() == {"ok": True}
        mcp = await served.http.post(
            "/mcp",
            json={"jsonrpc": "2.0", "id": 1, "method": "ping"},
            headers={"Accept": "application/json, text/event-stream"},
        )
        assert mcp.status_code != 404


async def test_with_a_token_every_route_needs_it(tmp_path: Path) -> None:
    async with atelier_http(tmp_path, api_token="s3cret-token-value") as served:
        assert (await served.http.get("/adgen/health")).status_code == 401
        authorized = {"Authorization": "Bearer s3cret-token-value"}
        assert (await served.http.get("/adgen/health", headers=authorized)).json() == {"ok": True}
        wrong = await served.http.get("/adgen/runs", headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401 and "s3cret" not in wrong.text
        mcp = await served.http.post("/mcp", json={"jsonrpc": "2.0", "id": 1, "method": "ping"})
        assert mcp.status_code == 401

        # The realtime channels too: a WebSocket handshake without the token is refused.
        with pytest.raises(InvalidStatus) as refused:
            async with connect(f"{served.ws_url}/desktop/ws/generation"):
                pass
        assert refused.value.response.status_code == 401
        headers = {"Authorization": "Bearer s3cret-token-value"}
        async with connect(f"{served.ws_url}/desktop/ws/generation", additional_headers=headers) as ws:
            assert ws.state.name == "OPEN"


async def test_a_path_no_route_can_match_still_gets_the_contracts_envelope(tmp_path: Path) -> None:
    async with atelier_http(tmp_path) as served:
        for prefix, key in (("adgen", "detail"), ("desktop", "error"), ("pod", "error")):
            response = await served.http.get(f"/{prefix}/runs/a%0Ab")  # a newline matches no route
            assert response.status_code == 404
            assert response.headers["content-type"] == "application/json"
            assert key in response.json()
        elsewhere = await served.http.get("/nowhere%0A")
        assert elsewhere.status_code == 404 and elsewhere.json()["error"] == "not_found"
