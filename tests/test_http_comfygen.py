"""The ComfyUI generation server contract (../shared/contracts/comfygen.md) at /comfygen.

A real uvicorn server on loopback over a real engine (preview renderer), walked with the
document's own example requests: submit (202), poll until completed like its Python client,
fetch the image, follow progress over the WebSocket, plus the errors a client can meet.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import anyio
import pytest
from PIL import Image
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from core.models import RunStatus
from tests.http_served import Served, atelier_http

pytestmark = pytest.mark.anyio

# The document's cURL example body for POST /generate.
CURL_EXAMPLE = {
    "prompt": "a sunset over mountains",
    "negative_prompt": "blurry",
    "workflow": "flux-dev.json",
    "width": 1024,
    "height": 1024,
    "steps": 20,
    "cfg": 7.0,
    "seed": 42,
}
# The document's Python example body.
PYTHON_EXAMPLE = {"prompt": "a sunset over mountains", "width": 1024, "height": 1024, "steps": 20, "cfg": 7.0}
SMALL = {"prompt": "a sunset over mountains", "width": 64, "height": 64, "steps": 2}
STATUS_KEYS = {"id", "status", "progress", "image_url", "error", "image_urls"}
MESSAGE_KEYS = {"job_id", "status", "progress", "step", "max_steps", "message", "image_url", "error"}
UNKNOWN = "0" * 26


async def submit(served: Served, body: dict[str, Any]) -> str:
    response = await served.http.post("/comfygen/generate", json=body)
    assert response.status_code == 202, response.text
    return response.json()["id"]


async def poll_until_final(served: Served, job_id: str, within: float = 20) -> dict[str, Any]:
    """What the document's Python client does, without its 2-second sleep."""
    with anyio.fail_after(within):
        while True:
            status = (await served.http.get(f"/comfygen/generate/{job_id}")).json()
            assert 0.0 <= status["progress"] <= 1.0
            if status["status"] in ("completed", "failed"):
                return status
            await anyio.sleep(0.02)


async def receive_all(url: str) -> tuple[list[dict[str, Any]], int | None]:
    """Every message until the server closes the socket, and the close code."""
    messages = []
    with anyio.fail_after(20):
        async with connect(url) as ws:
            try:
                while True:
                    messages.append(json.loads(await ws.recv()))
            except ConnectionClosed:
                pass
            return messages, ws.close_code


def watchers(served: Served, run_id: str) -> int:
    """Event subscriptions open on one run: a watch that ended leaves none."""
    return served.engine.events.listeners(run_id)


async def test_health_is_healthy_with_the_preview_renderer(tmp_path: Path) -> None:
    async with atelier_http(tmp_path) as served:
        response = await served.http.get("/comfygen/health")
        assert response.status_code == 200
        assert response.json() == {"status": "healthy", "comfyui_available": True, "version": "0.1.0"}


async def test_health_is_degraded_when_comfyui_is_down(tmp_path: Path) -> None:
    async with atelier_http(tmp_path, backend="comfyui", comfyui_urls="http://127.0.0.1:9") as served:
        response = await served.http.get("/comfygen/health")
        assert response.status_code == 200
        assert response.json() == {"status": "degraded", "comfyui_available": False, "version": "0.1.0"}


async def test_the_curl_example_is_accepted_polled_to_completion_and_its_image_served(tmp_path: Path) -> None:
    async with atelier_http(tmp_path) as served:
        response = await served.http.post("/comfygen/generate", json=CURL_EXAMPLE)
        assert response.status_code == 202
        accepted = response.json()
        assert set(accepted) == STATUS_KEYS
        assert (accepted["status"], accepted["progress"], accepted["image_url"], accepted["error"]) == (
            "queued",
            0.0,
            None,
            None,
        )
        job_id = accepted["id"]

        status = await poll_until_final(served, job_id)
        assert set(status) == STATUS_KEYS
        assert (status["id"], status["status"], status["progress"], status["error"]) == (
            job_id,
            "completed",
            1.0,
            None,
        )
        assert status["image_url"].startswith(f"{served.url}/comfygen/images/{job_id}/")
        assert status["image_urls"] == [status["image_url"]]

        image = await served.http.get(status["image_url"])
        assert image.status_code == 200 and image.headers["content-type"] == "image/png"
        assert image.content.startswith(b"\x89PNG\r\n\x1a\n")
        assert Image.open(io.BytesIO(image.content)).size == (1024, 1024)

        run = await served.engine.get_run(job_id)
        assert run.inputs["workflow"] == "flux-dev"  # "flux-dev.json" names the flux-dev workflow
        assert (run.inputs["prompt"], run.inputs["negative_prompt"]) == ("a sunset over mountains", "blurry")
        assert (run.inputs["seed"], run.inputs["steps"], run.inputs["cfg"]) == (42, 20, 7.0)
        assert run.meta == {"door": "comfygen", "workflow_file": "flux-dev.json"}


async def test_the_python_example_runs_without_a_workflow_and_with_a_random_seed(tmp_path: Path) -> None:
    async with atelier_http(tmp_path) as served:
        job_id = await submit(served, PYTHON_EXAMPLE)
        status = await poll_until_final(served, job_id)
        assert status["status"] == "completed", status
        image = await served.http.get(status["image_url"])
        assert Image.open(io.BytesIO(image.content)).size == (1024, 1024)
        run = await served.engine.get_run(job_id)
        assert "workflow" not in run.inputs  # the preview renderer's default: no workflow
        assert isinstance(run.inputs["seed"], int) and 0 <= run.inputs["seed"] < 2**32

        explicit_random = await submit(served, {**SMALL, "seed": -1})
        seed = (await served.engine.get_run(explicit_random)).inputs["seed"]
        assert isinstance(seed, int) and seed >= 0


async def test_loras_sampler_and_scheduler_reach_the_run(tmp_path: Path) -> None:
    async with atelier_http(tmp_path) as served:
        job_id = await submit(
            served,
            {
                **SMALL,
                "workflow": "sdxl.json",
                "loras": ["detail-tweaker:0.8", "film_grain:0.5"],
                "sampler": "dpmpp_2m",
                "scheduler": "karras",
            },
        )
        inputs = (await served.engine.get_run(job_id)).inputs
        assert inputs["workflow"] == "sdxl"
        assert inputs["loras"] == [
            {"name": "detail-tweaker", "strength": 0.8},
            {"name": "film_grain", "strength": 0.5},
        ]
        assert (inputs["sampler"], inputs["scheduler"]) == ("dpmpp_2m", "karras")
        assert (await poll_until_final(served, job_id))["status"] == "completed"

        bare_name = await submit(served, {**SMALL, "workflow": "flux-dev"})
        assert (await served.engine.get_run(bare_name)).inputs["workflow"] == "flux-dev"


async def test_an_unknown_workflow_is_422_naming_it_and_the_known_ones(tmp_path: Path) -> None:
    async with atelier_http(tmp_path) as served:
        response = await served.http.post("/comfygen/generate", json={**SMALL, "workflow": "nope.json"})
        assert response.status_code == 422
        [error] = response.json()["detail"]
        assert error["loc"] == ["body", "workflow"] and error["type"] == "value_error"
        assert "'nope.json'" in error["msg"] and "flux-dev.json" in error["msg"]
        assert "upscale.json" not in error["msg"]  # only text-to-image workflows can serve /generate
        traversal = await served.http.post(
            "/comfygen/generate", json={**SMALL, "workflow": "../../etc/passwd.json"}
        )
        assert traversal.status_code == 422
        assert await served.engine.count_runs() == 0


@pytest.mark.parametrize(
    ("body", "status", "loc", "mentions"),
    [
        (b'{"prompt": "unterminated', 400, None, "not valid JSON"),
        (b"[1, 2]", 422, ["body"], "dictionary"),
        (b'{"negative_prompt": "blurry"}', 422, ["body", "prompt"], "required"),
        (b'{"prompt": "x", "width": 7}', 422, ["body", "width"], "multiple of 8"),
        (b'{"prompt": "x", "steps": 0}', 422, ["body", "steps"], "1..150"),
        (b'{"prompt": "x", "seed": "twelve"}', 422, ["body", "seed"], "integer"),
        (b'{"prompt": 5}', 422, ["body", "prompt"], "string"),
        (b'{"prompt": "x", "loras": "detail:0.8"}', 422, ["body", "loras"], "list"),
        (b'{"prompt": "x", "loras": ["detail:9"]}', 422, ["body", "loras"], "strength"),
        (b'{"prompt": "x", "colour": "red"}', 422, ["body", "colour"], "Extra"),
    ],
)
async def test_bad_requests_get_fastapi_shaped_errors(
    tmp_path: Path, body: bytes, status: int, loc: list[str] | None, mentions: str
) -> None:
    async with atelier_http(tmp_path) as served:
        response = await served.http.post(
            "/comfygen/generate", content=body, headers={"Content-Type": "application/json"}
        )
        assert response.status_code == status, response.text
        detail = response.json()["detail"]
        if loc is None:
            assert isinstance(detail, str) and mentions in detail
        else:
            assert isinstance(detail, list) and {"loc", "msg", "type"} <= set(detail[0])
            assert detail[0]["loc"] == loc
            assert mentions in json.dumps(detail)
        assert await served.engine.count_runs() == 0


async def test_oversized_bodies_unknown_ids_files_and_routes(tmp_path: Path) -> None:
    async with atelier_http(tmp_path, max_input_bytes=10_000) as served:
        huge = {"prompt": "x" * (served.settings.max_request_bytes + 10)}
        response = await served.http.post("/comfygen/generate", json=huge)
        assert response.status_code == 413 and "larger than" in response.json()["detail"]

        for path in (f"/comfygen/generate/{UNKNOWN}", "/comfygen/generate/not-a-job-id"):
            missing = await served.http.get(path)
            assert missing.status_code == 404 and "not found" in missing.json()["detail"], path
        assert (await served.http.get("/comfygen/nowhere")).json() == {
            "detail": "no such endpoint: GET /comfygen/nowhere"
        }

        job_id = await submit(served, SMALL)
        await served.finished(job_id)
        for name in ("..%2F..%2Fledger.sqlite3", ".env", "image-09.png"):
            response = await served.http.get(f"/comfygen/images/{job_id}/{name}")
            assert response.status_code == 404, name
            assert "detail" in response.json()
        assert (await served.http.get(f"/comfygen/images/{UNKNOWN}/image-01.png")).status_code == 404


async def test_websocket_streams_progress_in_order_then_closes_normally(tmp_path: Path) -> None:
    async with atelier_http(tmp_path, local_step_ms=20) as served:
        job_id = await submit(served, {**SMALL, "steps": 10})
        messages, code = await receive_all(f"{served.ws_url}/comfygen/ws/progress/{job_id}")
        assert code == 1000
        assert all(set(m) == MESSAGE_KEYS and m["job_id"] == job_id for m in messages)
        progress = [m["progress"] for m in messages]
        assert progress == sorted(progress) and progress[-1] == 1.0
        assert len({p for p in progress if 0 < p < 1}) >= 3, progress
        assert [m["step"] for m in messages] == sorted(m["step"] for m in messages)
        assert all(m["status"] in ("queued", "running") for m in messages[:-1])
        assert any(m["status"] == "running" and m["max_steps"] == 10 for m in messages)
        final = messages[-1]
        assert (final["status"], final["error"]) == ("completed", None)
        polled = (await served.http.get(f"/comfygen/generate/{job_id}")).json()
        assert final["image_url"] == polled["image_url"]
        assert (await served.http.get(final["image_url"])).status_code == 200

        # A finished job: its final state, then a normal close.
        again, code = await receive_all(f"{served.ws_url}/comfygen/ws/progress/{job_id}")
        assert code == 1000 and [m["status"] for m in again] == ["completed"]


async def test_websocket_for_an_unknown_job_says_so_and_closes_4404(tmp_path: Path) -> None:
    async with atelier_http(tmp_path) as served:
        for job_id in (UNKNOWN, "not-a-job-id"):
            messages, code = await receive_all(f"{served.ws_url}/comfygen/ws/progress/{job_id}")
            assert code == 4404
            [message] = messages
            assert (message["job_id"], message["status"]) == (job_id, "failed")
            assert message["error"] == f"job {job_id} not found"


async def test_a_client_leaving_the_websocket_ends_its_watch(tmp_path: Path) -> None:
    async with atelier_http(tmp_path, local_step_ms=200, local_concurrency=1) as served:
        first = await submit(served, {**SMALL, "steps": 50})
        waiting = await submit(served, {**SMALL, "steps": 50})  # queued: no events while it waits
        assert watchers(served, waiting) == 0
        async with connect(f"{served.ws_url}/comfygen/ws/progress/{waiting}") as ws:
            assert json.loads(await ws.recv())["status"] == "queued"
            assert watchers(served, waiting) == 1
        with anyio.fail_after(5):
            while watchers(served, waiting) > 0:
                await anyio.sleep(0.01)
        for job_id in (first, waiting):
            await served.http.post(f"/comfygen/generate/{job_id}/cancel")


async def test_cancel_extension_shows_the_job_failed_with_error_cancelled(tmp_path: Path) -> None:
    async with atelier_http(tmp_path, local_step_ms=200) as served:
        job_id = await submit(served, {**SMALL, "steps": 50})
        response = await served.http.post(f"/comfygen/generate/{job_id}/cancel")
        assert response.status_code == 200
        cancelled = response.json()
        assert (cancelled["id"], cancelled["status"], cancelled["error"], cancelled["image_url"]) == (
            job_id,
            "failed",
            "cancelled",
            None,
        )
        assert (await served.engine.get_run(job_id)).status is RunStatus.CANCELLED
        assert (await served.http.get(f"/comfygen/generate/{job_id}")).json() == cancelled

        messages, code = await receive_all(f"{served.ws_url}/comfygen/ws/progress/{job_id}")
        assert code == 1000
        assert [(m["status"], m["error"]) for m in messages] == [("failed", "cancelled")]

        missing = await served.http.post(f"/comfygen/generate/{UNKNOWN}/cancel")
        assert missing.status_code == 404 and "not found" in missing.json()["detail"]


async def test_a_failed_job_reports_its_error(tmp_path: Path) -> None:
    async with atelier_http(tmp_path, local_step_ms=50) as served:
        run = await served.engine.submit_image({**SMALL, "steps": 20}, timeout_s=0.05, max_attempts=1)
        status = await poll_until_final(served, run.id)
        assert (status["status"], status["image_url"]) == ("failed", None)
        assert "timed out" in status["error"]


async def test_runs_made_through_other_doors_are_visible(tmp_path: Path) -> None:
    async with atelier_http(tmp_path) as served:
        made = await served.http.post("/adgen/generate", json={**SMALL, "seed": 7})
        adgen_run = made.json()["run_id"]
        engine_run = (await served.engine.submit_image({**SMALL, "seed": 8})).id
        for job_id in (adgen_run, engine_run):
            status = await poll_until_final(served, job_id)
            assert (status["id"], status["status"]) == (job_id, "completed")
            image = await served.http.get(status["image_url"])
            assert Image.open(io.BytesIO(image.content)).size == (64, 64)

        batch = await served.engine.submit_batch([{**SMALL, "seed": 1}, {**SMALL, "seed": 2}])
        status = await poll_until_final(served, batch.id)
        assert status["status"] == "completed" and len(status["image_urls"]) == 2
        for url in status["image_urls"]:
            assert (await served.http.get(url)).headers["content-type"] == "image/png"


async def test_openapi_lists_every_endpoint(tmp_path: Path) -> None:
    async with atelier_http(tmp_path) as served:
        document = (await served.http.get("/comfygen/openapi.json")).json()
        assert document["openapi"].startswith("3.")
        operations = {(method.upper(), path) for path, item in document["paths"].items() for method in item}
        assert operations >= {
            ("POST", "/generate"),
            ("GET", "/generate/{id}"),
            ("GET", "/health"),
            ("GET", "/ws/progress/{id}"),
            ("POST", "/generate/{id}/cancel"),
            ("GET", "/images/{id}/{filename}"),
        }
        assert "202" in document["paths"]["/generate"]["post"]["responses"]
        docs = await served.http.get("/comfygen/docs")
        assert docs.status_code == 200 and "text/html" in docs.headers["content-type"]


async def test_every_bad_field_is_listed_in_the_422_detail(tmp_path: Path) -> None:
    async with atelier_http(tmp_path) as served:
        answer = await served.http.post(
            "/comfygen/generate", json={"prompt": "a fox", "width": 100, "height": 64, "steps": 0}
        )
        assert answer.status_code == 422
        fields = [item["loc"][-1] for item in answer.json()["detail"]]
        assert fields == ["width", "steps"]
        assert await served.engine.count_runs() == 0
