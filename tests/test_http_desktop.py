"""The Desktop studio contract (../shared/contracts/desktop.md) at /desktop, walked with the document's
own requests.

A real uvicorn server on loopback over a real engine (preview renderer); every response is checked
against the shapes, status codes and error codes the document gives, images by their PNG bytes,
progress by what a WebSocket client receives.
"""

from __future__ import annotations

import base64
import io
import json
import re
from pathlib import Path
from typing import Any

import anyio
import pytest
from PIL import Image
from websockets.asyncio.client import ClientConnection, connect

from tests.http_served import Served, atelier_http

pytestmark = pytest.mark.anyio

# The document's example request for POST /api/generate/text-to-image.
EXAMPLE = {
    "prompt": "A beautiful sunset over mountains",
    "negativePrompt": "blurry, low quality",
    "width": 512,
    "height": 512,
    "steps": 25,
    "cfgScale": 7.5,
    "seed": 42,
}
SMALL = {"width": 64, "height": 64, "steps": 2}
STAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")
GENERATE = "/desktop/api/generate/text-to-image"
TRANSFORM = "/desktop/api/generate/image-to-image"
UPSCALE = "/desktop/api/generate/upscale"


async def text_to_image(served: Served, **fields: Any) -> dict[str, Any]:
    response = await served.http.post(GENERATE, json={**EXAMPLE, **SMALL, **fields})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["success"] is True
    return body["data"]


async def png_size(served: Served, url: str) -> tuple[int, int]:
    response = await served.http.get(url)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/png"
    return Image.open(io.BytesIO(response.content)).size


def assert_error(response: Any, status: int, code: str, mentions: str = "") -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["success"] is False and body["code"] == code, body
    assert isinstance(body["error"], str) and mentions in body["error"], body
    assert set(body) <= {"success", "error", "code", "details"}
    return body


def global_listeners(served: Served) -> int:
    """How many subscriptions to every run's events the engine holds (the socket's cleanup)."""
    return served.engine.events.listeners(None)


async def until(check: Any, within: float = 5.0) -> None:
    with anyio.fail_after(within):
        while not check():
            await anyio.sleep(0.02)


async def next_message(socket: ClientConnection) -> dict[str, Any]:
    with anyio.fail_after(10):
        return json.loads(await socket.recv())


def png_bytes(size: tuple[int, int]) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, (200, 90, 40)).save(buffer, format="PNG")
    return buffer.getvalue()


# --- the document's examples ----------------------------------------------------------------


async def test_health(tmp_path: Path) -> None:
    async with atelier_http(tmp_path) as served:
        response = await served.http.get("/desktop/health")
        assert response.status_code == 200
        assert response.json() == {"status": "ok", "version": "0.1.0"}


async def test_text_to_image_example_answers_200_with_the_image(tmp_path: Path) -> None:
    async with atelier_http(tmp_path) as served:
        response = await served.http.post(GENERATE, json=EXAMPLE)
        assert response.status_code == 200, response.text
        body = response.json()
        assert set(body) == {"success", "data"} and body["success"] is True
        data = body["data"]
        assert set(data) == {"id", "prompt", "filePath", "url", "seed", "created_at"}
        assert isinstance(data["id"], int) and data["id"] >= 1
        assert (data["prompt"], data["seed"]) == (EXAMPLE["prompt"], 42)
        assert STAMP.match(data["created_at"])
        assert re.fullmatch(rf"/generated/{data['id']}/[A-Za-z0-9_.-]+\.png", data["filePath"])
        assert data["url"] == f"{served.url}/desktop{data['filePath']}"
        assert str(served.settings.home) not in json.dumps(body)  # no server paths

        assert await png_size(served, data["url"]) == (512, 512)
        by_path = await served.http.get(f"/desktop{data['filePath']}")
        assert by_path.content == (await served.http.get(data["url"])).content


async def test_the_curl_examples(tmp_path: Path) -> None:
    async with atelier_http(tmp_path) as served:
        assert (await served.http.get("/desktop/health")).json()["status"] == "ok"

        response = await served.http.post(
            GENERATE, json={"prompt": "A beautiful sunset", "width": 512, "height": 512}
        )
        assert response.status_code == 200, response.text
        made = response.json()["data"]
        assert made["id"] == 1 and made["prompt"] == "A beautiful sunset"

        history = (await served.http.get("/desktop/api/history")).json()
        assert history["success"] is True and history["total"] == 1
        assert [row["id"] for row in history["data"]] == [1]

        one = (await served.http.get("/desktop/api/history/1")).json()
        assert one["success"] is True and one["data"]["id"] == 1

        deleted = await served.http.delete("/desktop/api/history/1")
        assert deleted.status_code == 200
        assert deleted.json() == {"success": True, "message": "Generation deleted"}


async def test_image_to_image_from_a_returned_file_path_then_upscale_doubles_it(tmp_path: Path) -> None:
    async with atelier_http(tmp_path) as served:
        made = await text_to_image(served, width=128, height=96)
        assert await png_size(served, made["url"]) == (128, 96)

        # The document's image-to-image example, its seedImage the filePath just returned.
        response = await served.http.post(
            TRANSFORM,
            json={
                "seedImage": made["filePath"],
                "prompt": "A futuristic cyberpunk version",
                "strength": 0.7,
                "steps": 25,
                "cfgScale": 7.5,
            },
        )
        assert response.status_code == 200, response.text
        changed = response.json()["data"]
        assert changed["id"] != made["id"] and changed["prompt"] == "A futuristic cyberpunk version"
        assert await png_size(served, changed["url"]) == (128, 96)  # keeps the source's size
        run = await served.engine.get_run_by_seq(changed["id"])
        assert run.inputs["denoise"] == 0.7 and run.inputs["source"]["width"] == 128

        # strength defaults to 0.7; the url works as seedImage too.
        by_url = await served.http.post(TRANSFORM, json={"seedImage": made["url"], "prompt": "neon"})
        assert by_url.status_code == 200, by_url.text
        assert (await served.engine.get_run_by_seq(by_url.json()["data"]["id"])).inputs["denoise"] == 0.7

        # The document's upscale example, of the image-to-image result.
        response = await served.http.post(UPSCALE, json={"imagePath": changed["filePath"], "scale": 2})
        assert response.status_code == 200, response.text
        bigger = response.json()["data"]
        assert await png_size(served, bigger["url"]) == (256, 192)
        default_scale = await served.http.post(UPSCALE, json={"imagePath": made["url"]})
        assert await png_size(served, default_scale.json()["data"]["url"]) == (256, 192)


async def test_seed_image_as_data_url_base64_or_a_file_in_an_allowed_folder(tmp_path: Path) -> None:
    async with atelier_http(tmp_path) as served:
        data = png_bytes((80, 48))
        encoded = base64.b64encode(data).decode()
        served.settings.inputs_dir.mkdir(parents=True, exist_ok=True)
        (served.settings.inputs_dir / "sketch.png").write_bytes(data)
        for seed_image in (
            f"data:image/png;base64,{encoded}",
            encoded,
            str(served.settings.inputs_dir / "sketch.png"),
        ):
            response = await served.http.post(TRANSFORM, json={"seedImage": seed_image, "prompt": "ink"})
            assert response.status_code == 200, (seed_image[:40], response.text)
            assert await png_size(served, response.json()["data"]["url"]) == (80, 48)


async def test_history_pages_newest_first_with_total_and_type(tmp_path: Path) -> None:
    async with atelier_http(tmp_path) as served:
        ids = [(await text_to_image(served, prompt=word))["id"] for word in ("one", "two", "three")]
        everything = (await served.http.get("/desktop/api/history")).json()
        assert everything["success"] is True and everything["total"] == 3
        assert [row["id"] for row in everything["data"]] == ids[::-1]
        row = everything["data"][0]
        assert set(row) >= {"id", "type", "prompt", "filePath", "created_at"}
        assert (row["type"], row["prompt"], row["status"]) == ("image", "three", "completed")
        assert row["filePath"] == f"/generated/{ids[2]}/image-01.png" and STAMP.match(row["created_at"])

        first_page = (await served.http.get("/desktop/api/history", params={"limit": 2})).json()
        assert [r["id"] for r in first_page["data"]] == [ids[2], ids[1]] and first_page["total"] == 3
        second = (await served.http.get("/desktop/api/history", params={"limit": 2, "offset": 2})).json()
        assert [r["id"] for r in second["data"]] == [ids[0]] and second["total"] == 3
        images = (await served.http.get("/desktop/api/history", params={"type": "image"})).json()
        assert [r["id"] for r in images["data"]] == ids[::-1]
        videos = (await served.http.get("/desktop/api/history", params={"type": "video"})).json()
        assert videos == {"success": True, "data": [], "total": 0}

        for params, name in (
            ({"limit": 0}, "limit"),
            ({"limit": 201}, "limit"),
            ({"limit": "ten"}, "limit"),
            ({"offset": -1}, "offset"),
            ({"type": "gif"}, "type"),
        ):
            response = await served.http.get("/desktop/api/history", params=params)
            assert_error(response, 400, "INVALID_PARAMETERS", name)


async def test_a_generation_in_detail(tmp_path: Path) -> None:
    async with atelier_http(tmp_path) as served:
        made = await text_to_image(served)
        response = await served.http.get(f"/desktop/api/history/{made['id']}")
        assert response.status_code == 200
        body = response.json()
        assert body["success"] is True
        data = body["data"]
        assert (data["id"], data["type"], data["prompt"]) == (made["id"], "image", EXAMPLE["prompt"])
        assert data["negativePrompt"] == "blurry, low quality"
        assert data["parameters"] == {"width": 64, "height": 64, "steps": 2, "cfgScale": 7.5, "seed": 42}
        assert (data["filePath"], data["url"], data["created_at"]) == (
            made["filePath"],
            made["url"],
            made["created_at"],
        )
        assert data["status"] == "completed" and data["error"] is None


async def test_delete_then_the_generation_and_its_file_are_404(tmp_path: Path) -> None:
    async with atelier_http(tmp_path) as served:
        made = await text_to_image(served)
        kept = await text_to_image(served, prompt="kept")
        response = await served.http.delete(f"/desktop/api/history/{made['id']}")
        assert response.json() == {"success": True, "message": "Generation deleted"}

        gone = await served.http.get(f"/desktop/api/history/{made['id']}")
        assert gone.status_code == 404
        assert gone.json() == {"success": False, "error": "Generation not found", "code": "NOT_FOUND"}
        assert_error(await served.http.delete(f"/desktop/api/history/{made['id']}"), 404, "NOT_FOUND")
        assert_error(await served.http.get(made["url"]), 404, "NOT_FOUND")
        history = (await served.http.get("/desktop/api/history")).json()
        assert [row["id"] for row in history["data"]] == [kept["id"]] and history["total"] == 1


async def test_settings_defaults_update_persist_and_apply_to_new_generations(tmp_path: Path) -> None:
    async with atelier_http(tmp_path) as served:
        response = await served.http.get("/desktop/api/settings")
        assert response.json() == {
            "success": True,
            "data": {
                "storagePath": "./generated",
                "defaultWidth": 512,
                "defaultHeight": 512,
                "defaultSteps": 25,
                "defaultCfgScale": 7.5,
            },
        }
        # The document's example update.
        example = {"storagePath": "./custom/path", "defaultWidth": 768, "defaultHeight": 768}
        response = await served.http.put("/desktop/api/settings", json=example)
        assert response.status_code == 200, response.text
        expected = {**example, "defaultSteps": 25, "defaultCfgScale": 7.5}
        assert response.json() == {"success": True, "message": "Settings updated", "data": expected}
        partial = await served.http.put("/desktop/api/settings", json={"defaultSteps": 3})
        expected["defaultSteps"] = 3
        assert partial.json()["data"] == expected
        assert (await served.http.get("/desktop/api/settings")).json()["data"] == expected

        response = await served.http.post(GENERATE, json={"prompt": "wide open sky"})
        assert response.status_code == 200, response.text
        made = response.json()["data"]
        assert await png_size(served, made["url"]) == (768, 768)
        parameters = (await served.http.get(f"/desktop/api/history/{made['id']}")).json()["data"][
            "parameters"
        ]
        assert (parameters["steps"], parameters["cfgScale"]) == (3, 7.5)

    async with atelier_http(tmp_path) as reopened:  # a new engine and app on the same home
        assert (await reopened.http.get("/desktop/api/settings")).json()["data"] == expected


async def test_invalid_settings_are_400_naming_the_field_and_change_nothing(tmp_path: Path) -> None:
    async with atelier_http(tmp_path) as served:
        before = (await served.http.get("/desktop/api/settings")).json()
        for update, name in (
            ({"theme": "dark"}, "theme"),
            ({"defaultWidth": 700}, "defaultWidth"),
            ({"defaultHeight": 7}, "defaultHeight"),
            ({"defaultSteps": 0}, "defaultSteps"),
            ({"defaultCfgScale": 31}, "defaultCfgScale"),
            ({"defaultWidth": None}, "defaultWidth"),
            ({"storagePath": ""}, "storagePath"),
            ({"storagePath": "x" * 501}, "storagePath"),
            ({"storagePath": 42}, "storagePath"),
            ({"storagePath": "s3://bucket/images"}, "storagePath"),
        ):
            response = await served.http.put("/desktop/api/settings", json=update)
            assert_error(response, 400, "INVALID_PARAMETERS", name)
        malformed = await served.http.put(
            "/desktop/api/settings",
            content=b'{"defaultWidth": ',
            headers={"Content-Type": "application/json"},
        )
        assert_error(malformed, 400, "INVALID_PARAMETERS")
        assert (await served.http.get("/desktop/api/settings")).json() == before


# --- realtime -------------------------------------------------------------------------------


async def test_websocket_sees_queued_generating_completed_for_a_generation(tmp_path: Path) -> None:
    async with atelier_http(tmp_path, local_step_ms=20) as served:
        baseline = global_listeners(served)
        async with connect(f"{served.ws_url}/desktop/ws/generation") as socket:
            await until(lambda: global_listeners(served) == baseline + 1)
            made: dict[str, Any] = {}
            messages: list[dict[str, Any]] = []

            async def generate() -> None:
                made.update(await text_to_image(served, prompt="lighthouse", steps=10))

            async with anyio.create_task_group() as tasks:
                tasks.start_soon(generate)
                while not messages or messages[-1]["status"] != "completed":
                    messages.append(await next_message(socket))

        task_id = str(made["id"])
        assert all(m["type"] == "progress" and m["taskId"] == task_id for m in messages), messages
        assert all(set(m) == {"type", "taskId", "progress", "status"} for m in messages)
        statuses = [m["status"] for m in messages]
        assert statuses[0] == "queued" and "generating" in statuses and statuses[-1] == "completed"
        assert statuses.index("generating") < statuses.index("completed")
        progress = [m["progress"] for m in messages]
        assert progress == sorted(progress) and progress[-1] == 100
        assert any(0 < p < 100 for p in progress)  # the steps in between
        await until(lambda: global_listeners(served) == baseline)


async def test_websocket_sends_active_runs_on_connect_and_a_cancel_as_failed(tmp_path: Path) -> None:
    async with atelier_http(tmp_path, local_step_ms=200) as served:
        run = await served.engine.submit_image({"prompt": "slow tide", **SMALL, "steps": 50})
        baseline = global_listeners(served)
        async with connect(f"{served.ws_url}/desktop/ws/generation") as socket:
            first = await next_message(socket)
            assert first["taskId"] == str(run.seq) and first["status"] in ("queued", "generating")
            await until(lambda: global_listeners(served) == baseline + 1)
            await served.engine.cancel(run.id)
            message = first
            while message["status"] != "failed":
                message = await next_message(socket)
            assert message["taskId"] == str(run.seq) and message["error"]
        # The client closed: its subscription is gone.
        await until(lambda: global_listeners(served) == baseline)


# --- generation that does not succeed -------------------------------------------------------


async def test_a_failed_generation_is_500_api_error(tmp_path: Path) -> None:
    async with atelier_http(tmp_path, local_step_ms=200, run_timeout_s=0.3, max_attempts=1) as served:
        response = await served.http.post(GENERATE, json={**EXAMPLE, **SMALL, "steps": 50})
        body = assert_error(response, 500, "API_ERROR", "Generation failed: ")
        assert "timed out" in body["error"]
        detail = (await served.http.get(f"/desktop/api/history/{body['details']['id']}")).json()["data"]
        assert detail["status"] == "failed" and detail["filePath"] is None and detail["url"] is None


async def test_wait_0_answers_at_once_202_with_the_generation_as_it_stands(tmp_path: Path) -> None:
    async with atelier_http(tmp_path, local_step_ms=200) as served:
        with anyio.fail_after(5):
            response = await served.http.post(
                GENERATE, params={"wait": 0}, json={**EXAMPLE, **SMALL, "steps": 10}
            )
        assert response.status_code == 202, response.text
        body = response.json()
        assert set(body) == {"success", "data"} and body["success"] is True
        data = body["data"]
        assert set(data) == {"id", "prompt", "filePath", "url", "seed", "created_at", "status"}
        assert data["status"] in ("queued", "generating")
        assert data["filePath"] is None and data["url"] is None
        assert data["prompt"] == EXAMPLE["prompt"] and data["seed"] == 42
        # The id follows it to completion, in history as on the socket.
        await served.finished((await served.engine.get_run_by_seq(data["id"])).id)
        detail = (await served.http.get(f"/desktop/api/history/{data['id']}")).json()["data"]
        assert detail["status"] == "completed"
        assert await png_size(served, detail["url"]) == (64, 64)


async def test_a_generation_still_running_at_the_deadline_is_504_and_shows_in_history(tmp_path: Path) -> None:
    async with atelier_http(tmp_path, local_step_ms=200) as served:
        response = await served.http.post(
            GENERATE, params={"wait": 1}, json={**EXAMPLE, **SMALL, "steps": 50}
        )
        body = assert_error(response, 504, "API_TIMEOUT", "within 1 s")
        run_id = body["details"]["id"]
        listed = (await served.http.get("/desktop/api/history")).json()["data"]
        assert [(row["id"], row["filePath"]) for row in listed] == [(run_id, None)]
        assert listed[0]["status"] in ("queued", "generating")
        detail = (await served.http.get(f"/desktop/api/history/{run_id}")).json()["data"]
        assert detail["url"] is None
        deleted = await served.http.delete(f"/desktop/api/history/{run_id}")  # stops it
        assert deleted.json()["success"] is True
        assert (await served.http.get("/desktop/api/history")).json()["total"] == 0


# --- bad requests ---------------------------------------------------------------------------


async def test_bad_generation_requests_are_400_with_the_document_codes(tmp_path: Path) -> None:
    async with atelier_http(tmp_path) as served:
        cases: list[tuple[bytes, str, str]] = [
            (json.dumps({**EXAMPLE, "prompt": ""}).encode(), "INVALID_PROMPT", "Prompt is required"),
            (json.dumps({**EXAMPLE, "prompt": "   "}).encode(), "INVALID_PROMPT", "Prompt is required"),
            (json.dumps({"width": 512}).encode(), "INVALID_PROMPT", "Prompt is required"),
            (json.dumps({**EXAMPLE, "prompt": "x" * 4001}).encode(), "INVALID_PROMPT", "too long"),
            (json.dumps({**EXAMPLE, "width": 7}).encode(), "INVALID_PARAMETERS", "width"),
            (json.dumps({**EXAMPLE, "height": 5000}).encode(), "INVALID_PARAMETERS", "height"),
            (json.dumps({**EXAMPLE, "steps": 0}).encode(), "INVALID_PARAMETERS", "steps"),
            (json.dumps({**EXAMPLE, "cfgScale": 31}).encode(), "INVALID_PARAMETERS", "cfgScale"),
            (json.dumps({**EXAMPLE, "seed": "forty-two"}).encode(), "INVALID_PARAMETERS", "seed"),
            (
                json.dumps({**EXAMPLE, "negativePrompt": "n" * 4001}).encode(),
                "INVALID_PARAMETERS",
                "negativePrompt",
            ),
            (json.dumps({**EXAMPLE, "cfg_scale": 7}).encode(), "INVALID_PARAMETERS", "cfg_scale"),
            (b'{"prompt": "unterminated', "INVALID_PARAMETERS", "not valid JSON"),
            (b"[1, 2]", "INVALID_PARAMETERS", ""),
        ]
        for content, code, mentions in cases:
            response = await served.http.post(
                GENERATE, content=content, headers={"Content-Type": "application/json"}
            )
            assert_error(response, 400, code, mentions)
        width = await served.http.post(GENERATE, json={**EXAMPLE, "width": 7})
        assert width.json()["details"]["errors"][0]["loc"] == ["body", "width"]
        assert (await served.http.get("/desktop/api/history")).json()["total"] == 0


async def test_bad_seed_images_and_upscale_requests_are_400_naming_the_field(tmp_path: Path) -> None:
    async with atelier_http(tmp_path) as served:
        made = await text_to_image(served)
        for seed_image in (
            "path/to/image.jpg",  # the document's placeholder: not a file Atelier may read
            "/etc/passwd",
            "http://example.com/cat.png",
            "/generated/999/image-01.png",
            f"/generated/{made['id']}/image-09.png",
            f"/generated/{made['id']}/../../ledger.sqlite3",
            "data:image/png;base64,AAAA",
            "a sunset, please",
        ):
            response = await served.http.post(TRANSFORM, json={"seedImage": seed_image, "prompt": "x"})
            body = assert_error(response, 400, "INVALID_PARAMETERS", "seedImage")
            assert body["details"]["field"] == "seedImage", seed_image
            assert str(served.settings.home) not in body["error"]  # no server paths
            assert str(served.settings.home.resolve()) not in body["error"]
        for request, name, code in (
            ({"prompt": "x"}, "seedImage", "INVALID_PARAMETERS"),
            ({"seedImage": made["filePath"]}, "Prompt is required", "INVALID_PROMPT"),
            (
                {"seedImage": made["filePath"], "prompt": "x", "strength": 1.5},
                "strength",
                "INVALID_PARAMETERS",
            ),
        ):
            assert_error(await served.http.post(TRANSFORM, json=request), 400, code, name)
        for request, name in (
            ({"scale": 2}, "imagePath"),
            ({"imagePath": made["filePath"], "scale": 9}, "scale"),
            ({"imagePath": made["filePath"], "scale": 2.5}, "scale"),
            ({"imagePath": "../../ledger.sqlite3"}, "imagePath"),
        ):
            assert_error(await served.http.post(UPSCALE, json=request), 400, "INVALID_PARAMETERS", name)
        assert (await served.http.get("/desktop/api/history")).json()["total"] == 1


async def test_source_paths_are_relative_to_the_inputs_folder_and_odd_ones_are_400(tmp_path: Path) -> None:
    async with atelier_http(tmp_path) as served:
        inputs = served.settings.inputs_dir
        (inputs / "harbour").mkdir(parents=True)
        Image.new("RGB", (40, 24), (20, 90, 200)).save(inputs / "harbour" / "dusk.png")
        upscaled = await served.http.post(UPSCALE, json={"imagePath": "harbour/dusk.png", "scale": 2})
        assert upscaled.status_code == 200, upscaled.text
        assert await png_size(served, upscaled.json()["data"]["url"]) == (80, 48)
        for path, said in (
            ("harbour/dusk\0.png", "NUL byte"),
            ("~nosuchuser/x.png", "home folder of 'nosuchuser'"),
            ("../harbour/dusk.png", "outside the folders tools may read: ATELIER_HOME/inputs"),
        ):
            response = await served.http.post(TRANSFORM, json={"seedImage": path, "prompt": "ink"})
            body = assert_error(response, 400, "INVALID_PARAMETERS", said)
            assert body["error"].startswith("seedImage: "), body
            assert body["details"]["field"] == "seedImage"
            assert str(served.settings.home.resolve()) not in body["error"]  # no server paths
        assert (await served.http.get("/desktop/api/history")).json()["total"] == 1


async def test_ids_unknown_is_404_and_non_integer_is_400(tmp_path: Path) -> None:
    async with atelier_http(tmp_path) as served:
        for method in ("GET", "DELETE"):
            unknown = await served.http.request(method, "/desktop/api/history/42")
            assert unknown.status_code == 404
            assert unknown.json() == {"success": False, "error": "Generation not found", "code": "NOT_FOUND"}
            for bad in ("abc", "1.5", "0", "-3", "01abc"):
                response = await served.http.request(method, f"/desktop/api/history/{bad}")
                assert_error(response, 400, "INVALID_PARAMETERS", "id")


async def test_the_file_route_refuses_traversal_and_reports_a_lost_file(tmp_path: Path) -> None:
    async with atelier_http(tmp_path) as served:
        made = await text_to_image(served)
        for path in (
            f"/desktop/generated/{made['id']}/..%2F..%2Fledger.sqlite3",
            f"/desktop/generated/{made['id']}/.env",
            f"/desktop/generated/{made['id']}/image-09.png",
            "/desktop/generated/abc/image-01.png",
            "/desktop/generated/999/image-01.png",
            "/desktop/generated/..%2F..%2F/ledger.sqlite3",
        ):
            response = await served.http.get(path)
            assert_error(response, 404, "NOT_FOUND")
        assert (served.settings.home / "ledger.sqlite3").exists()

        run = await served.engine.get_run_by_seq(made["id"])
        stored = served.engine.artifact_path(run.artifacts[0])
        assert stored is not None
        stored.unlink()
        assert_error(await served.http.get(made["url"]), 500, "STORAGE_ERROR")


async def test_oversized_body_unknown_route_and_wrong_method_use_the_envelope(tmp_path: Path) -> None:
    async with atelier_http(tmp_path, max_input_bytes=10_000) as served:
        huge = {"prompt": "x" * (served.settings.max_request_bytes + 10)}
        assert_error(await served.http.post(GENERATE, json=huge), 413, "PAYLOAD_TOO_LARGE", "larger than")
        assert_error(await served.http.get("/desktop/api/nowhere"), 404, "NOT_FOUND", "no such endpoint")
        assert_error(await served.http.patch("/desktop/api/settings", json={}), 405, "METHOD_NOT_ALLOWED")


# --- across doors ---------------------------------------------------------------------------


async def test_runs_made_over_the_engine_or_another_door_show_in_history(tmp_path: Path) -> None:
    async with atelier_http(tmp_path) as served:
        direct = await served.engine.submit_image({"prompt": "harbour at dawn", **SMALL, "seed": 3})
        await served.finished(direct.id)
        adgen = await served.http.post(
            "/adgen/generate", json={"prompt": "a red kite", "negative_prompt": "rain", "seed": 9, **SMALL}
        )
        adgen_run = await served.finished(adgen.json()["run_id"])

        history = (await served.http.get("/desktop/api/history")).json()
        assert history["total"] == 2
        assert [(row["id"], row["prompt"], row["type"]) for row in history["data"]] == [
            (adgen_run.seq, "a red kite", "image"),
            (direct.seq, "harbour at dawn", "image"),
        ]
        detail = (await served.http.get(f"/desktop/api/history/{adgen_run.seq}")).json()["data"]
        assert detail["negativePrompt"] == "rain" and detail["parameters"]["seed"] == 9
        assert await png_size(served, detail["url"]) == (64, 64)
        # Its image can feed this contract's upscale by the filePath shown here.
        response = await served.http.post(UPSCALE, json={"imagePath": detail["filePath"], "scale": 3})
        assert await png_size(served, response.json()["data"]["url"]) == (192, 192)


async def test_openapi_lists_every_endpoint(tmp_path: Path) -> None:
    async with atelier_http(tmp_path) as served:
        document = (await served.http.get("/desktop/openapi.json")).json()
        operations = {(method.upper(), path) for path, item in document["paths"].items() for method in item}
        assert operations >= {
            ("GET", "/health"),
            ("POST", "/api/generate/text-to-image"),
            ("POST", "/api/generate/image-to-image"),
            ("POST", "/api/generate/upscale"),
            ("GET", "/api/history"),
            ("GET", "/api/history/{id}"),
            ("DELETE", "/api/history/{id}"),
            ("GET", "/api/settings"),
            ("PUT", "/api/settings"),
            ("GET", "/ws/generation"),
            ("GET", "/generated/{id}/{filename}"),
        }
        schemas = document["components"]["schemas"]
        assert "prompt" in schemas["TextToImageRequest"]["required"]
        docs = await served.http.get("/desktop/docs")
        assert docs.status_code == 200 and "text/html" in docs.headers["content-type"]


async def test_as_the_root_contract_the_document_urls_work_at_the_root(tmp_path: Path) -> None:
    async with atelier_http(tmp_path, root_contract="desktop") as served:
        assert (await served.http.get("/health")).json() == {"status": "ok", "version": "0.1.0"}
        response = await served.http.post("/api/generate/text-to-image", json={"prompt": "dunes", **SMALL})
        made = response.json()["data"]
        assert made["url"] == f"{served.url}{made['filePath']}"
        assert await png_size(served, made["url"]) == (64, 64)
        upscaled = await served.http.post("/api/generate/upscale", json={"imagePath": made["url"]})
        assert await png_size(served, upscaled.json()["data"]["url"]) == (128, 128)


async def test_every_bad_field_is_named_in_one_message(tmp_path: Path) -> None:
    async with atelier_http(tmp_path) as served:
        answer = await served.http.post(
            "/desktop/api/generate/text-to-image", json={"prompt": "a fox", "width": 100, "steps": 0}
        )
        assert answer.status_code == 400
        message = answer.json()["error"]
        assert "width: " in message and "multiple of 8" in message
        assert "steps: " in message
        assert await served.engine.count_runs() == 0
