"""The shop as a buyer sees it, in a real headless Chromium: the grid with its mockups loaded,
a product's page, nothing unpublished, and a hostile title shown as text and never run; and the
end of the POD flow: a generate job's products on the shop.

Screenshots of the pages are saved to `test-artifacts/shop/` at the repository root (ignored by
git; `ATELIER_TEST_ARTIFACTS` names another folder), so a run leaves the shop there to look at.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import socketio

from tests.browser import chromium_page, needs_browser
from tests.http_served import atelier_http
from tests.scripted_backend import wait_until
from tests.shop_products import list_on_storefront, product_with_images

pytestmark = [pytest.mark.anyio, needs_browser]

HOSTILE = '<script>window.owned = true</script><img src=x onerror="window.owned = true">'
# True once every image the selector names has loaded and decoded (a broken one has naturalWidth 0).
ALL_DECODED = "sel => [...document.querySelectorAll(sel)].every(i => i.complete && i.naturalWidth > 0)"
SCREENSHOTS = (
    Path(os.environ.get("ATELIER_TEST_ARTIFACTS") or Path(__file__).parents[1] / "test-artifacts") / "shop"
)


async def test_buyer_sees_published_products_with_their_mockups_and_nothing_else(tmp_path: Path) -> None:
    async with atelier_http(tmp_path) as served, chromium_page() as page:
        fox = await product_with_images(served.engine, "Watercolour fox", price_cents=2499, seed=1)
        owl = await product_with_images(
            served.engine, "Night owl hoodie", type="hoodie", price_cents=4499, seed=2
        )
        draft = await product_with_images(served.engine, "Unfinished bear", seed=3)
        hostile = await product_with_images(served.engine, HOSTILE, seed=4)
        for product in (fox, owl, hostile):
            await list_on_storefront(served.engine, product)
        await list_on_storefront(served.engine, draft, "draft")
        dialogs: list[str] = []
        page.on("dialog", lambda dialog: dialogs.append(dialog.message))

        await page.goto(f"{served.url}/shop")
        await page.wait_for_load_state("load")
        titles = await page.locator(".card .title").all_text_contents()
        assert sorted(titles) == sorted(["Watercolour fox", "Night owl hoodie", HOSTILE])
        assert "Unfinished bear" not in await page.content()
        # Every mockup has arrived and decoded (a broken image has naturalWidth 0).
        widths = await page.eval_on_selector_all(
            ".card img", "imgs => imgs.map(i => i.complete && i.naturalWidth)"
        )
        assert len(widths) == 3 and all(width and width > 0 for width in widths)
        assert (
            await page.locator(".card", has_text="Watercolour fox").locator(".price").text_content()
            == "$24.99"
        )
        assert "Unisex hoodie" in (await page.locator(".card", has_text="Night owl").text_content() or "")
        # The hostile title is text on the page, and nothing of it ran.
        assert await page.evaluate("window.owned") is None
        assert dialogs == []
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        await page.screenshot(path=SCREENSHOTS / "shop.png", full_page=True)

        await page.click("text=Watercolour fox")
        await page.wait_for_url(f"**/shop/products/{fox.id}")
        await page.wait_for_load_state("load")
        assert await page.text_content("h1") == "Watercolour fox"
        mockups = await page.eval_on_selector_all(
            ".mockups img", "imgs => imgs.map(i => [i.alt, i.complete && i.naturalWidth])"
        )
        assert [alt for alt, _ in mockups] == ["Watercolour fox in white", "Watercolour fox in black"]
        assert all(width > 0 for _, width in mockups)
        assert await page.locator(".sizes li").all_text_contents() == ["S", "M", "L"]
        design = await page.eval_on_selector(".design img", "i => i.complete && i.naturalWidth")
        assert design > 0
        await page.screenshot(path=SCREENSHOTS / "product.png", full_page=True)

        await page.goto(f"{served.url}/shop/products/{hostile.id}")
        await page.wait_for_load_state("load")
        assert await page.text_content("h1") == HOSTILE
        assert await page.evaluate("window.owned") is None

        answer = await page.goto(f"{served.url}/shop/products/{draft.id}")
        assert answer is not None and answer.status == 404
        assert "Not in the shop" in (await page.text_content("h1") or "")


async def test_a_pod_job_ends_with_its_products_in_the_shop(tmp_path: Path) -> None:
    """The POD Engine's flow, as its clients drive it: a generate job over REST, followed on the
    socket.io channel until it completes, then the shop in the browser shows what it made."""
    async with atelier_http(tmp_path) as served:
        events: list[dict[str, Any]] = []
        channel = socketio.AsyncClient(reconnection=False)

        @channel.on("job:update")
        async def updated(job: dict[str, Any]) -> None:
            events.append(job)

        await channel.connect(served.url, socketio_path="/pod/socket.io", transports=["websocket"])
        try:
            submitted = await served.http.post(
                "/pod/api/generate",
                json={
                    "theme": "lighthouse",
                    "style": "bold linework",
                    "niche": "sailing",
                    "productTypes": ["tshirt", "hoodie"],
                    "autoPublish": True,
                },
            )
            assert submitted.status_code == 200, submitted.text
            job_id = submitted.json()["jobId"]
            await wait_until(
                lambda: any(e["id"] == job_id and e["status"] == "completed" for e in events),
                timeout=120,
                what="the job's completed update",
            )
        finally:
            await channel.disconnect()
        result = (await served.http.get(f"/pod/api/jobs/{job_id}")).json()["result"]
        assert result["success"] is True and result["errors"] == []
        made = {(p["platform"], p["type"], p["status"]) for p in result["products"]}
        assert made == {("storefront", "tshirt", "published"), ("storefront", "hoodie", "published")}
        titles = {p["title"] for p in result["products"]}

        async with chromium_page() as page:
            await page.goto(f"{served.url}/shop")
            await page.wait_for_load_state("load")
            assert set(await page.locator(".card .title").all_text_contents()) == titles
            # Every mockup arrives and decodes (lazy images load after the page's own load event).
            await page.wait_for_function(ALL_DECODED, arg=".card img")
            assert await page.locator(".card img").count() == 2
            SCREENSHOTS.mkdir(parents=True, exist_ok=True)
            await page.screenshot(path=SCREENSHOTS / "pod-job-shop.png", full_page=True)

            hoodie = next(p for p in result["products"] if p["type"] == "hoodie")
            await page.goto(hoodie["url"])  # the link the job's result gives
            await page.wait_for_load_state("load")
            assert await page.text_content("h1") == hoodie["title"]
            assert await page.locator(".description").count() == 0  # none was given: no empty section
            await page.wait_for_function(ALL_DECODED, arg=".mockups img")
            assert await page.locator(".mockups img").count() == 4  # one per hoodie colour
            await page.screenshot(path=SCREENSHOTS / "pod-job-product.png", full_page=True)
