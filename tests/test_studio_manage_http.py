"""The studio's characters, products and status routes over HTTP: bad input is refused field by
field (the page shows each message next to its input), ids and file names that name nothing are
404s, and with a token nothing answers without a session."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.character_images import photo
from tests.fakes.comfyui import FakeComfyUI, serve_fake
from tests.http_served import atelier_http
from tests.shop_products import product_with_images
from tests.test_comfyui_backend import until_servers_up

pytestmark = pytest.mark.anyio


def fields(answer: httpx.Response) -> dict[str, str]:
    body: dict[str, Any] = answer.json()
    assert set(body) >= {"error", "message", "field", "problems"}, body
    return {p["field"]: p["message"] for p in body["problems"]}


async def test_character_forms_name_the_fields_at_fault_and_unknown_ids_are_404(tmp_path: Path) -> None:
    async with atelier_http(tmp_path) as served:
        http = served.http
        answer = await http.post("/api/characters", json={"name": "  ", "trigger_word": "Mara Q"})
        assert answer.status_code == 422
        assert "1..80 printable characters" in fields(answer)["name"]
        answer = await http.post("/api/characters", json={"name": "Mara", "trigger_word": "Mara Q"})
        assert answer.status_code == 422
        assert "a-z, 0-9 and _" in fields(answer)["trigger_word"]
        answer = await http.post("/api/characters", json={"name": "Mara", "age": 3})
        assert answer.status_code == 422 and "age" in fields(answer)
        answer = await http.post("/api/characters", json=["Mara"])
        assert answer.status_code == 400 and "JSON object" in answer.json()["message"]

        made = await http.post("/api/characters", json={"name": "Mara"})
        assert made.status_code == 201, made.text
        character = made.json()
        assert character["trigger_word"] == "mara_person" and character["lora"] == "not trained"
        again = await http.post("/api/characters", json={"name": "MARA"})
        assert again.status_code == 409 and "already exists" in fields(again)["name"]
        taken = await http.post("/api/characters", json={"name": "Other", "trigger_word": "mara_person"})
        assert taken.status_code == 409 and "trigger_word" in fields(taken)

        base = f"/api/characters/{character['id']}"
        # Training needs images first; bad parameters are each named.
        answer = await http.post(f"{base}/train", json={"params": {}})
        assert answer.status_code == 422 and "No training images" in fields(answer)["character"]
        files = [
            ("files", ("mara.png", photo(1), "image/png")),
            ("files", ("tiny.png", photo(2, size=64), "image/png")),
        ]
        uploaded = await http.post(f"{base}/images", files=files)
        assert uploaded.status_code == 200
        assert uploaded.json()["added"] == ["mara.png"]
        assert uploaded.json()["refused"] == [
            {
                "filename": "tiny.png",
                "reason": "the image is 64x64; training images need at least 256 pixels on each side",
            }
        ]
        answer = await http.post(f"{base}/images", files={"note": (None, "no file")})
        assert answer.status_code == 400 and "no files" in answer.json()["message"]
        answer = await http.post(f"{base}/train", json={"params": {"steps": 0, "resolution": "big"}})
        assert answer.status_code == 422
        assert set(fields(answer)) == {"steps", "resolution"}
        answer = await http.post(f"{base}/active", json={"version": 3})
        assert answer.status_code == 422 and "has no LoRA v3" in answer.json()["message"]
        # A training can be cancelled from the page; then there is none to cancel.
        started = await http.post(f"{base}/train", json={"params": {"steps": 20000}})
        assert started.status_code == 201
        cancelled = await http.post(f"{base}/training/cancel")
        assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
        assert (await http.post(f"{base}/training/cancel")).status_code == 409
        assert (await http.delete(f"{base}/images/mara.png")).status_code == 204
        shown = (await http.get(base)).json()
        assert shown["image_count"] == 0
        assert [(run["status"], run["max_steps"]) for run in shown["training"]] == [("cancelled", 20000)]
        uploaded = await http.post(f"{base}/images", files=files[:1])
        assert uploaded.json()["added"] == ["mara.png"]

        for path in (
            "/api/characters/char-000000000000",  # well formed, unknown
            "/api/characters/mara",  # a name is not an id in a path
            f"/characters/{character['id']}/images/nope.png",
            f"/characters/{character['id']}/images/..secret",
        ):
            answer = await http.get(path)
            assert answer.status_code == 404, path
        page = await http.get("/characters/char-000000000000")
        assert page.status_code == 404 and "No such character" in page.text
        assert (await http.delete("/api/characters/char-000000000000")).status_code == 404
        assert (await http.delete(f"{base}/images/other.png")).status_code == 404
        assert (await http.get(f"/characters/{character['id']}/images/mara.png")).status_code == 200


async def test_publishing_needs_confirmation_and_named_platforms(tmp_path: Path) -> None:
    async with atelier_http(tmp_path) as served:
        http = served.http
        product = await product_with_images(served.engine)
        url = f"/api/products/{product.id}/publish"

        answer = await http.post(url, json={"platforms": ["storefront"]})
        assert answer.status_code == 422 and "confirm it first" in fields(answer)["confirm"]
        answer = await http.post(url, json={"platforms": [], "confirm": True})
        assert answer.status_code == 422 and "choose at least one" in fields(answer)["platforms"]
        answer = await http.post(url, json={"platforms": ["printify"], "confirm": True})
        assert answer.status_code == 422 and "ATELIER_PRINTIFY_TOKEN" in fields(answer)["platforms"]
        answer = await http.post(url, json={"platforms": ["etsy"], "confirm": True})
        assert answer.status_code == 422 and "not a platform" in fields(answer)["platforms"]
        answer = await http.post(url, json={"platforms": ["storefront"], "action": "sell"})
        assert answer.status_code == 422 and "action" in fields(answer)
        assert (await served.engine.products.get(product.id)).listings == []

        for path in (
            "/api/products/prod-000000000000",
            "/api/products/prod-%2e%2e",
            f"/products/{product.id}/files/image-01.png",  # a run's name: not one the product serves
            f"/products/{product.id}/files/..mockup-white.png",
            "/products/prod-000000000000/files/mockup-white.png",
        ):
            assert (await http.get(path)).status_code == 404, path
        assert (await http.get(f"/products/{product.id}/files/mockup-white.png")).status_code == 200
        page = await http.get("/products/not-a-product")
        assert page.status_code == 404 and "No such product" in page.text

        answer = await http.post(url, json={"platforms": ["storefront"], "confirm": True})
        assert answer.status_code == 201 and answer.json()["kind"] == "publish"
        await served.finished(answer.json()["id"])
        listings = (await http.get(f"/api/products/{product.id}")).json()["listings"]
        assert [(x["platform"], x["status"]) for x in listings] == [("storefront", "published")]
        # Unpublishing sells nothing: no confirmation needed.
        answer = await http.post(url, json={"platforms": ["storefront"], "action": "unpublish"})
        assert answer.status_code == 201
        await served.finished(answer.json()["id"])
        assert (await served.engine.products.get(product.id)).listing("storefront").status == "unpublished"  # type: ignore[union-attr]


async def test_status_reports_the_preview_renderer_and_counts_finished_runs(tmp_path: Path) -> None:
    async with atelier_http(tmp_path) as served:
        run = await served.engine.submit_image({"prompt": "a fox", "width": 64, "height": 64})
        await served.finished(run.id)
        report = (await served.http.get("/api/status")).json()
        assert report["healthy"] is True
        assert [(b["name"], b["kind"], b["up"]) for b in report["backends"]] == [("local", "preview", True)]
        assert report["throughput"]["completed_last_minute"] == 1
        assert report["throughput"]["completed_last_hour"] == 1
        assert report["runs"]["completed"] == 1
        platforms = {p["name"]: p for p in report["platforms"]}
        assert platforms["storefront"]["ok"] is True
        assert platforms["shopify"]["configured"] is False
        panel = await served.http.get("/status/panel")
        assert panel.status_code == 200 and 'data-backend="local"' in panel.text


async def test_with_a_token_nothing_answers_without_a_session(tmp_path: Path) -> None:
    async with atelier_http(tmp_path, api_token="s3cret-token-for-tests") as served:
        for path in ("/api/status", "/studio/api/status", "/api/characters/char-000000000000"):
            answer = await served.http.get(path)
            assert answer.status_code == 401, path
            assert answer.headers["content-type"].startswith("application/json")
        for path in ("/status", "/characters", "/products", "/status/panel"):
            answer = await served.http.get(path)
            assert answer.status_code == 401 and "Log in" in answer.text, path
            assert "local" not in answer.text and "Throughput" not in answer.text
        answer = await served.http.post("/api/characters", json={"name": "Mara"})
        assert answer.status_code == 401
        assert await served.engine.characters.list() == []
        headers = {"Authorization": "Bearer s3cret-token-for-tests"}
        assert (await served.http.get("/api/status", headers=headers)).status_code == 200


async def test_status_shows_each_comfyui_server_up_or_down_with_its_vram(tmp_path: Path) -> None:
    fake = FakeComfyUI(vram_total=24 * 2**30, vram_free=18 * 2**30, device_name="cuda:0 NVIDIA RTX 4090")
    async with serve_fake(fake) as server:
        urls = f"{server.url},http://127.0.0.1:9"  # the second answers nothing
        async with atelier_http(tmp_path, backend="comfyui", comfyui_urls=urls) as served:
            await until_servers_up(served.engine, 1)
            report = (await served.http.get("/api/status")).json()
            comfyui = next(b for b in report["backends"] if b["name"] == "comfyui")
            assert comfyui["up"] is True
            up, down = comfyui["servers"]
            assert (up["url"], up["up"], up["vram"]) == (server.url, True, "18.0 of 24.0 GiB free")
            assert up["device"] == "cuda:0 NVIDIA RTX 4090"
            assert (down["url"], down["up"]) == ("http://127.0.0.1:9", False) and down["error"]
            panel = (await served.http.get("/status/panel")).text
            assert "18.0 of 24.0 GiB free" in panel and "http://127.0.0.1:9" in panel
