"""The POD Engine contract making products: generate and custom jobs go designs -> print files and
mockups -> products -> listings on the enabled platforms (the embedded storefront by default),
over real HTTP and socket.io against a real engine (preview renderer)."""

from __future__ import annotations

import base64
import io
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from core.errors import RunNotFound
from tests.fakes.printify import FakePrintify, serve_printify
from tests.fakes.shopify import FakeShopify, serve_fake
from tests.http_served import Served, atelier_http
from tests.scripted_backend import wait_until
from tests.test_http_pod import JOB_ID, Listener, job, run_id

pytestmark = pytest.mark.anyio

KNOWN_TYPES = "hoodie, mug, poster, tshirt"


def design_base64(side: int) -> str:
    image = Image.new("RGB", (side, side), (30, 120, 200))
    image.paste((240, 200, 40), (side // 4, side // 4, 3 * side // 4, 3 * side // 4))
    out = io.BytesIO()
    image.save(out, "PNG")
    return base64.b64encode(out.getvalue()).decode()


async def submit(served: Served, path: str, body: dict[str, Any]) -> str:
    response = await served.http.post(path, json=body)
    assert response.status_code == 200, response.text
    job_id = response.json()["jobId"]
    assert JOB_ID.match(job_id)
    return job_id


async def completed(served: Served, job_id: str) -> dict[str, Any]:
    await served.finished(run_id(job_id), within=120)
    done = await job(served, job_id)
    assert done["status"] == "completed", done["error"]
    return done


async def download(served: Served, url: str) -> Image.Image:
    response = await served.http.get(url)
    assert response.status_code == 200, url
    return Image.open(io.BytesIO(response.content))


async def test_generate_tshirt_and_hoodie_published_on_the_storefront(tmp_path: Path) -> None:
    async with atelier_http(tmp_path) as served:
        listener = Listener()
        await listener.client.connect(served.url, socketio_path="/pod/socket.io", transports=["websocket"])
        try:
            job_id = await submit(
                served,
                "/pod/api/generate",
                {
                    "prompt": "A watercolour fox in the forest",
                    "productTypes": ["tshirt", "hoodie"],
                    "autoPublish": True,
                    "seed": 7,
                },
            )
            await wait_until(
                lambda: any(u["status"] == "completed" for u in listener.of("job:update", job_id)),
                timeout=120,
                what="job:update completed",
            )
            # Its `log` line is emitted just after the update: wait for it, not only the update.
            await wait_until(
                lambda: any(
                    job_id in line["message"] and "completed" in line["message"]
                    for line in listener.of("log")
                ),
                timeout=10,
                what="the completed log line",
            )
            updates = listener.of("job:update", job_id)
            assert [u["status"] for u in updates] == ["pending", "running", "completed"]
            progress = [p["progress"] for p in listener.of("job:progress", job_id)]
            assert progress == sorted(progress) and progress[-1] == 100
            # The design (and its upscales) are parts of the job: no events of their own.
            assert {u["id"] for u in listener.of("job:update")} == {job_id}
            assert {p["id"] for p in listener.of("job:progress")} == {job_id}
            lines = [line for line in listener.of("log") if job_id in line["message"]]
            assert lines[-1]["type"] == "SUCCESS"
        finally:
            await listener.client.disconnect()

        done = await completed(served, job_id)
        assert done["type"] == "generate" and done["progress"] == 100
        result = done["result"]
        assert result["success"] is True and result["errors"] == []
        assert isinstance(result["totalTime"], int) and result["totalTime"] >= 0

        [image] = result["generatedImages"]
        assert image["id"] == f"img_{run_id(job_id)}_1"
        assert image["prompt"] == "A watercolour fox in the forest"
        assert image["url"] == f"{served.url}/pod/api/files/{job_id}/design-01.png"
        assert (await download(served, image["url"])).format == "PNG"

        products = result["products"]
        assert sorted((p["platform"], p["type"], p["status"]) for p in products) == [
            ("storefront", "hoodie", "published"),
            ("storefront", "tshirt", "published"),
        ]
        for entry in products:
            assert entry["productId"] and entry["url"] and entry["title"]
            product = await served.engine.products.get(entry["atelierProductId"])
            assert product.type == entry["type"]
            [listing] = product.listings
            assert (listing.platform, listing.status) == ("storefront", "published")
            # The shop's link, absolute (a client follows it as it is).
            assert entry["url"] == f"{served.url}{listing.url}" == f"{served.url}/shop/products/{product.id}"
            # The print files and mockups are the job's files, downloadable at full print size.
            files = result["files"][product.id]
            [print_file] = [f for f in files if f["role"] == "print"]
            area = served.engine.products.catalog.get(product.type).print_areas["front"]
            with await download(served, print_file["url"]) as printed:
                assert (
                    printed.size == (area.width, area.height) == (print_file["width"], print_file["height"])
                )
                assert round(printed.info["dpi"][0]) == area.dpi == print_file["dpi"]
            mockups = [f for f in files if f["role"] == "mockup"]
            assert sorted(m["name"] for m in mockups) == sorted(
                served.engine.products.catalog.get(product.type).colours
            )
            for mockup in mockups:
                assert (await download(served, mockup["url"])).format == "JPEG"
                answer = await served.http.head(mockup["url"])
                assert answer.headers["content-type"] == "image/jpeg"

        # Both are in the shop, at the URLs the result gives.
        for entry in products:
            page = await served.http.get(entry["url"])
            assert page.status_code == 200 and "text/html" in page.headers["content-type"]
            shop = await served.http.get(f"/shop/api/products/{entry['productId']}")
            assert shop.status_code == 200

        # One job: its design and upscale runs are inside it, listed and counted nowhere else.
        assert [j["id"] for j in (await served.http.get("/pod/api/jobs")).json()] == [job_id]
        metrics = (await served.http.get("/pod/api/metrics")).json()
        assert (metrics["totalJobs"], metrics["completedJobs"]) == (1, 1)
        assert (await served.http.get(f"/pod/api/files/{job_id}/design-02.png")).status_code == 404


async def test_auto_publish_false_leaves_drafts(tmp_path: Path) -> None:
    async with atelier_http(tmp_path) as served:
        job_id = await submit(
            served,
            "/pod/api/jobs",
            {
                "type": "generate",
                "request": {
                    "theme": "mountains",
                    "style": "minimalist",
                    "niche": "hikers",
                    "productTypes": ["poster"],
                    "autoPublish": False,
                    "title": "Quiet peaks",
                    "price": 19.5,
                },
            },
        )
        result = (await completed(served, job_id))["result"]
        [entry] = result["products"]
        assert (entry["platform"], entry["type"], entry["status"], entry["title"]) == (
            "storefront",
            "poster",
            "draft",
            "Quiet peaks",
        )
        product = await served.engine.products.get(entry["atelierProductId"])
        assert product.status == "draft" and product.price_cents == 1950
        [listing] = product.listings
        assert (listing.platform, listing.status) == ("storefront", "draft")
        # A draft is not in the shop.
        assert (await served.http.get(f"/shop/api/products/{product.id}")).status_code == 404
        assert (await served.http.get("/shop/api/products")).json()["products"] == []
        # The prompt was composed from theme, style and niche, and recorded.
        [image] = result["generatedImages"]
        assert (
            "mountains" in image["prompt"] and "minimalist" in image["prompt"] and "hikers" in image["prompt"]
        )
        run = await served.engine.get_run(run_id(job_id))
        assert run.inputs["composed_from"] == {"theme": "mountains", "style": "minimalist", "niche": "hikers"}


async def test_custom_job_makes_products_from_a_given_design_and_refuses_one_too_small(
    tmp_path: Path,
) -> None:
    async with atelier_http(tmp_path) as served:
        small = design_base64(300)
        job_id = await submit(
            served,
            "/pod/api/jobs",
            {"type": "custom", "request": {"designs": [small], "productTypes": ["poster", "mug"]}},
        )
        done = await completed(served, job_id)
        assert done["type"] == "custom"
        assert done["request"]["designs"] == [f"{small[:40]}... ({len(small)} characters)"]
        result = done["result"]
        # The mug is made and published; the poster is refused, the sizes named.
        assert [(p["platform"], p["type"], p["status"]) for p in result["products"]] == [
            ("storefront", "mug", "published")
        ]
        assert result["success"] is True
        [error] = result["errors"]
        assert "poster" in error and "300x300" in error and "5400x7200" in error and "300 DPI" in error
        # The given image is the job's design, served back as it was given.
        [image] = result["generatedImages"]
        assert image["prompt"] == "" and image["url"].endswith(f"/pod/api/files/{job_id}/design-01.png")
        given = await served.http.get(image["url"])
        assert given.status_code == 200 and given.content == base64.b64decode(small)


async def test_unknown_product_type_and_unconfigured_platform_are_400(tmp_path: Path) -> None:
    async with atelier_http(tmp_path) as served:
        response = await served.http.post(
            "/pod/api/generate", json={"prompt": "a fox", "productTypes": ["cap"]}
        )
        assert response.status_code == 400
        assert response.json() == {
            "error": f"body.productTypes: 'cap' is not a product type (known: {KNOWN_TYPES})"
        }
        response = await served.http.post(
            "/pod/api/jobs",
            json={
                "type": "custom",
                "request": {"designs": [design_base64(64)], "productTypes": ["tshirt", "mug2"]},
            },
        )
        assert response.status_code == 400
        assert response.json()["error"].startswith("request.productTypes: 'mug2' is not a product type")
        response = await served.http.post(
            "/pod/api/generate/batch", json={"items": [{"prompt": "a", "productTypes": ["cap"]}]}
        )
        assert response.status_code == 400 and "items.0.productTypes: 'cap'" in response.json()["error"]
        response = await served.http.post(
            "/pod/api/jobs",
            json={"type": "custom", "request": {"designs": ["not an image"], "productTypes": ["mug"]}},
        )
        assert response.status_code == 400 and "designs[0].source: " in response.json()["error"]
        assert (await served.http.get("/pod/api/jobs")).json() == []

    async with atelier_http(tmp_path / "printify", enabled_platforms="storefront,printify") as served:
        health = (await served.http.get("/pod/health")).json()
        assert health["services"] == {
            "comfyui": True,
            "printify": False,
            "shopify": False,
            "storefront": True,
        }
        assert health["status"] == "healthy"  # not configured is not an outage
        response = await served.http.post(
            "/pod/api/generate", json={"prompt": "a fox", "productTypes": ["mug"]}
        )
        assert response.status_code == 400
        message = response.json()["error"]
        assert (
            "printify is not configured: set ATELIER_PRINTIFY_TOKEN and ATELIER_PRINTIFY_SHOP_ID" in message
        )
        assert (await served.http.get("/pod/api/jobs")).json() == []


PRINTIFY_TOKEN = "pfy-POD-SECRET-5e8a1f"


async def test_printify_and_the_storefront_and_a_platform_that_fails_keeps_the_other(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    fake = FakePrintify(token=PRINTIFY_TOKEN, shop_id=4242)
    request = {"prompt": "A fern in watercolour", "productTypes": ["tshirt"], "autoPublish": True}
    async with serve_printify(fake) as printify_url:
        platforms = {
            "enabled_platforms": "storefront,printify",
            "printify_shop_id": "4242",
            "printify_url": printify_url,
        }
        async with atelier_http(tmp_path / "a", printify_token=PRINTIFY_TOKEN, **platforms) as served:
            health = (await served.http.get("/pod/health")).json()
            assert health["services"] == {
                "comfyui": True,
                "printify": True,
                "shopify": False,
                "storefront": True,
            }
            assert health["status"] == "healthy"

            job_id = await submit(served, "/pod/api/generate", request)
            result = (await completed(served, job_id))["result"]
            assert result["errors"] == [] and result["success"] is True
            by_platform = {p["platform"]: p for p in result["products"]}
            assert set(by_platform) == {"storefront", "printify"}
            [held] = fake.shop_products()
            assert by_platform["printify"]["productId"] == str(held["id"])
            assert by_platform["printify"]["type"] == "tshirt"
            assert by_platform["printify"]["status"] == "published"

        # A wrong token: Printify answers 401. Health says printify is down (degraded, not
        # unhealthy); a job still lists on the storefront and names what failed on Printify.
        async with atelier_http(tmp_path / "b", printify_token="pfy-wrong-token", **platforms) as served:
            health = (await served.http.get("/pod/health")).json()
            assert health["services"]["printify"] is False and health["services"]["storefront"] is True
            assert health["status"] == "degraded"

            job_id = await submit(served, "/pod/api/generate", request)
            done = await completed(served, job_id)
            result = done["result"]
            assert [(p["platform"], p["type"]) for p in result["products"]] == [("storefront", "tshirt")]
            assert result["success"] is True
            [error] = result["errors"]
            assert error.startswith("printify: ") and "tshirt" in error
            assert "ATELIER_PRINTIFY_TOKEN" in error  # the setting to fix, never its value
            seen = [done, (await served.http.get("/pod/api/jobs")).json(), health]
            assert "pfy-wrong-token" not in str(seen)
        assert len(fake.shop_products()) == 1  # nothing made with the wrong token
    for record in caplog.records:
        assert PRINTIFY_TOKEN not in record.getMessage() and "pfy-wrong-token" not in record.getMessage()


async def test_cleanup_keeps_jobs_whose_products_are_published(tmp_path: Path) -> None:
    async with atelier_http(tmp_path) as served:
        design = design_base64(1200)
        published = await submit(
            served,
            "/pod/api/jobs",
            {"type": "custom", "request": {"designs": [design], "productTypes": ["mug"]}},
        )
        drafted = await submit(
            served,
            "/pod/api/generate",
            {"prompt": "A quiet harbour", "productTypes": ["mug"], "autoPublish": False},
        )
        kept = (await completed(served, published))["result"]
        gone = (await completed(served, drafted))["result"]
        design_run = (await served.engine.get_run(run_id(drafted))).result["designs"][0]["run_id"]
        # The drafted mug's design was enlarged for its print area: an upscale run, a part of the job.
        everything = (await served.engine.list_runs(limit=50)).items
        parts = [r for r in everything if (r.idempotency_key or "").startswith(f"pod:{run_id(drafted)}:")]
        assert any(r.inputs.get("operation") == "upscale" for r in parts)

        response = await served.http.post("/pod/api/jobs/cleanup", json={"maxAge": 0})
        assert response.json() == {"cleared": 1}
        assert (await served.http.get(f"/pod/api/jobs/{drafted}")).status_code == 404
        assert (await served.http.get(gone["generatedImages"][0]["url"])).status_code == 404
        with pytest.raises(RunNotFound):
            await served.engine.get_run(design_run)  # the job's design went with it
        # The published mug's job stays, with the files its listing shows.
        assert (await served.http.get(f"/pod/api/jobs/{published}")).status_code == 200
        [files] = kept["files"].values()
        for item in files:
            assert (await served.http.get(item["url"])).status_code == 200
        assert [j["id"] for j in (await served.http.get("/pod/api/jobs")).json()] == [published]
        # Nothing of the drafted job is left behind, its upscale included: only the kept job's runs.
        left = (await served.engine.list_runs(limit=50)).items
        assert left and all(
            r.id == run_id(published) or (r.idempotency_key or "").startswith(f"pod:{run_id(published)}:")
            for r in left
        )


SHOPIFY_TOKEN = "shpat_POD_SECRET_91c2"


async def test_shopify_lists_a_generate_jobs_products(tmp_path: Path) -> None:
    fake = FakeShopify(access_tokens=(SHOPIFY_TOKEN,))
    async with (
        serve_fake(fake) as shopify_url,
        atelier_http(
            tmp_path,
            enabled_platforms="storefront,shopify",
            shopify_store=fake.store,
            shopify_url=shopify_url,
            shopify_access_token=SHOPIFY_TOKEN,
        ) as served,
    ):
        health = (await served.http.get("/pod/health")).json()
        assert health["services"] == {"comfyui": True, "printify": False, "shopify": True, "storefront": True}
        job_id = await submit(
            served,
            "/pod/api/generate",
            {"prompt": "A lighthouse at night", "productTypes": ["tshirt"], "autoPublish": False},
        )
        done = await completed(served, job_id)
        by_platform = {p["platform"]: p for p in done["result"]["products"]}
        assert set(by_platform) == {"storefront", "shopify"} and done["result"]["errors"] == []
        [held] = fake.products.values()
        assert by_platform["shopify"]["productId"] == held.id
        assert by_platform["shopify"]["status"] == "draft"
        assert SHOPIFY_TOKEN not in str(done)
        # Each file was uploaded as what it is: the mockups JPEG, the print file PNG.
        uploaded = {f.filename: f.mime_type for f in fake.staged_files.values()}
        assert uploaded and all(
            mime == ("image/jpeg" if name.endswith(".jpg") else "image/png")
            for name, mime in uploaded.items()
        )
        assert any(name.endswith(".jpg") for name in uploaded) and any(
            name.endswith(".png") for name in uploaded
        )
