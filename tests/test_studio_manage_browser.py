"""The studio's characters, products and status pages as a person uses them, in a real headless
Chromium: create a character (a bad trigger word shown next to its field first), give it images
by file input and by drag-and-drop (a refused file shown with its reason), train it and watch
step and loss move and the loss chart drawn, then delete it after confirming; open a product,
see its mockups and publish it to the storefront after confirming; the status page shows the
preview renderer and refreshes itself.

Screenshots go to `test-artifacts/studio/` (ATELIER_TEST_ARTIFACTS names another folder).
"""

from __future__ import annotations

import base64
import os
from pathlib import Path

import pytest

from tests.browser import chromium_page, needs_browser
from tests.character_images import photo
from tests.http_served import atelier_http
from tests.shop_products import product_with_images

pytestmark = [pytest.mark.anyio, needs_browser]

SCREENSHOTS = (
    Path(os.environ.get("ATELIER_TEST_ARTIFACTS") or Path(__file__).parents[1] / "test-artifacts") / "studio"
)
ALL_DECODED = "sel => [...document.querySelectorAll(sel)].every(i => i.complete && i.naturalWidth > 0)"
# A DataTransfer holding one PNG, as a file dragged from the desktop brings it.
DROPPED = """([name, b64]) => {
  const bytes = Uint8Array.from(atob(b64), c => c.charCodeAt(0));
  const transfer = new DataTransfer();
  transfer.items.add(new File([bytes], name, { type: "image/png" }));
  return transfer;
}"""
POINTS = "() => document.getElementById('loss-line').getAttribute('points').split(' ').filter(Boolean).length"


async def test_a_character_is_created_given_images_trained_with_its_loss_drawn_and_deleted(
    tmp_path: Path,
) -> None:
    good = [tmp_path / "mara-1.png", tmp_path / "mara-2.png"]
    for seed, path in enumerate(good):
        path.write_bytes(photo(seed))
    note = tmp_path / "notes.txt"
    note.write_text("not a picture of Mara")

    async with (
        atelier_http(tmp_path, preview_train_step_ms=20) as served,
        chromium_page() as page,
    ):
        await page.goto(f"{served.url}/characters")
        await page.fill("#name", "Mara Quinn")
        await page.fill("#trigger_word", "Mara Quinn!")
        await page.click("text=Create character")
        error = page.locator("#trigger_word-error")
        await error.wait_for(state="visible")
        assert "a-z, 0-9 and _" in (await error.text_content() or "")
        assert await page.get_attribute("#trigger_word", "aria-invalid") == "true"

        await page.fill("#trigger_word", "maraq")
        await page.click("text=Create character")
        await page.wait_for_url("**/characters/char-*")
        assert await page.text_content("h1") == "Mara Quinn"

        # Two images and a text file through the file input: the text file is refused, with why.
        await page.set_input_files("#files", [*good, note])
        await page.click("#upload button[type=submit]")
        await page.wait_for_function("() => document.getElementById('image-count').textContent === '2'")
        refused = await page.locator("#refused li").all_text_contents()
        assert refused == ["notes.txt: the file is text, not an image; upload PNG, JPEG or WebP"]

        # A third dropped onto the zone.
        transfer = await page.evaluate_handle(DROPPED, ["dropped.png", base64.b64encode(photo(7)).decode()])
        await page.dispatch_event("#upload", "drop", {"dataTransfer": transfer})
        await page.wait_for_function("() => document.getElementById('image-count').textContent === '3'")
        await page.wait_for_function(ALL_DECODED, arg="#images img")
        assert await page.locator("#images img").count() == 3
        # One taken out again.
        await page.click('button[aria-label="Remove mara-2.png"]')
        await page.wait_for_function("() => document.getElementById('image-count').textContent === '2'")
        assert await page.locator("#images span").all_text_contents() == ["mara-1.png", "dropped.png"]

        # Train: step and loss move live, and the chart is drawn from them.
        await page.fill("#param-steps", "100")
        await page.click("#train-button")
        await page.locator("#training").wait_for(state="visible")
        await page.wait_for_function(f"{POINTS} >= 3")
        first_step = await page.text_content("#training-step")
        loss = await page.text_content("#training-loss")
        assert loss is not None and float(loss) > 0
        await page.wait_for_function(f"{POINTS} >= 5")
        assert await page.text_content("#training-step") != first_step
        assert await page.is_disabled("#train-button")
        await page.wait_for_selector('#versions tr[data-version="1"]')
        assert await page.text_content("#lora-state") == "v1 active"
        assert "active" in (await page.text_content('#versions tr[data-version="1"]') or "")
        assert await page.text_content("#training-status") == "completed"
        assert await page.is_hidden("#cancel-training")
        assert "completed" in (await page.text_content("#training-runs") or "")
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        await page.screenshot(path=SCREENSHOTS / "characters.png", full_page=True)

        # The list shows it with its images and its LoRA.
        await page.click("text=Characters >> nth=0")
        await page.wait_for_url(f"{served.url}/characters")
        row = page.locator("#characters tbody tr")
        assert [c.strip() for c in await row.locator("td").all_text_contents()] == [
            "Mara Quinn",
            "maraq",
            "2",
            "v1 active",
        ]
        await page.screenshot(path=SCREENSHOTS / "characters-list.png", full_page=True)

        # Delete, after confirming in the dialog.
        await page.click("text=Mara Quinn")
        # The page's script must have run (at "load") before its button does anything.
        await page.wait_for_url("**/characters/char-*")
        await page.click("#delete")
        await page.locator("#delete-dialog").wait_for(state="visible")
        await page.click("#delete-confirm")
        await page.wait_for_url(f"{served.url}/characters")
        assert await served.engine.characters.list() == []
        assert "Mara Quinn" not in await page.content()


async def test_a_product_is_published_after_confirming_and_status_shows_the_preview_renderer(
    tmp_path: Path,
) -> None:
    async with atelier_http(tmp_path) as served, chromium_page() as page:
        await page.set_viewport_size({"width": 1200, "height": 900})
        product = await product_with_images(served.engine, "Watercolour fox", price_cents=2499)

        await page.goto(f"{served.url}/products")
        await page.click("text=Watercolour fox")
        await page.wait_for_url(f"**/products/{product.id}")
        await page.wait_for_function(ALL_DECODED, arg="main img")
        alts = await page.eval_on_selector_all(".mockups img", "imgs => imgs.map(i => i.alt)")
        assert alts == ["Watercolour fox in white", "Watercolour fox in black"]
        # Print files are listed with their size (full size: opened, not shown in the page).
        cells = await page.locator("table.print-files tbody td").all_text_contents()
        assert cells == ["front", "256×256", "300", "print-front.png"]
        assert "Not listed anywhere yet." in (await page.text_content("#listings") or "")

        # No platform ticked: said next to the platforms, and nothing is asked.
        await page.uncheck('input[name="platforms"][value="storefront"]')
        await page.click("#publish-button")
        await page.locator("#platforms-error").wait_for(state="visible")
        assert await page.text_content("#platforms-error") == "Choose at least one platform."
        assert not await page.locator("#publish-dialog").is_visible()
        await page.check('input[name="platforms"][value="storefront"]')

        # Nothing is published until the dialog is confirmed.
        await page.click("#publish-button")
        dialog = page.locator("#publish-dialog")
        await dialog.wait_for(state="visible")
        assert "$24.99" in (await dialog.text_content() or "")
        assert await page.text_content("#publish-dialog-platforms") == "storefront"
        await page.click("text=Not now")
        assert (await served.engine.products.get(product.id)).listings == []

        await page.click("#publish-button")
        await page.click("#publish-confirm")
        row = page.locator('#listings tr[data-platform="storefront"]')
        await row.wait_for()
        assert "published" in (await row.text_content() or "")
        assert await row.locator("a").get_attribute("href") == f"/shop/products/{product.id}"
        assert await page.text_content("#product-status") == "published"
        assert await page.text_content("#publish-status") == "Published on storefront."
        await page.screenshot(path=SCREENSHOTS / "product.png", full_page=True)

        await page.goto(f"{served.url}/status")
        preview = page.locator('tr[data-backend="local"]')
        assert "preview renderer" in (await preview.text_content() or "")
        assert await preview.locator(".badge").text_content() == "up"
        assert "ok" in (await page.text_content('tr[data-platform="storefront"]') or "")
        # The panel refreshes itself: a run finished meanwhile is counted without a reload.
        before = int(await page.text_content("#last-minute") or "0")
        run = await served.engine.submit_image({"prompt": "a fox", "width": 64, "height": 64})
        await served.finished(run.id)
        await page.wait_for_function(
            f"() => Number(document.getElementById('last-minute').textContent) > {before}"
        )
        await page.screenshot(path=SCREENSHOTS / "status.png", full_page=True)
