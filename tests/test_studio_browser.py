"""The studio as a person uses it, in a real headless Chromium: the gallery follows runs live
(a new card, its progress bar moving, its thumbnail arriving, all without a reload), the form
refuses bad input next to the field and makes a run, and a run's page cancels, retries, makes
the same again with another seed, downloads the ZIP, upscales an image used as source, and
deletes a run after a confirmation.

The preview renderer is slowed down (`local_step_ms`) so runs are seen running. Screenshots
of the gallery and of a run page are saved to `test-artifacts/studio/` (ignored by git;
`ATELIER_TEST_ARTIFACTS` names another folder).
"""

from __future__ import annotations

import io
import os
import zipfile
from pathlib import Path

import pytest
from playwright.async_api import Page, expect

from core.models import RunStatus
from tests.browser import chromium_page, needs_browser
from tests.http_served import Served, atelier_http

pytestmark = [pytest.mark.anyio, needs_browser]

SCREENSHOTS = (
    Path(os.environ.get("ATELIER_TEST_ARTIFACTS") or Path(__file__).parents[1] / "test-artifacts") / "studio"
)
STEP_MS = 40  # the preview renderer's time per step: 50 steps take 2 s, 150 steps 6 s
# Records every value the progress bar of the card `id` shows, as the page changes it.
WATCH_PROGRESS = """
id => {
  window.seen = [];
  new MutationObserver(() => {
    const bar = document.querySelector(`li.card[data-run="${id}"] progress`);
    if (bar && window.seen.at(-1) !== bar.value) window.seen.push(bar.value);
  }).observe(document.getElementById('gallery'), {subtree: true, childList: true, attributes: true});
}
"""


async def fill_and_generate(page: Page, served: Served, prompt: str, steps: int) -> str:
    """Fill the generate form, submit it, and return the id of the run it opens."""
    await page.goto(f"{served.url}/generate")
    await page.fill("#prompt", prompt)
    await page.fill("#width", "256")
    await page.fill("#height", "256")
    await page.fill("#steps", str(steps))
    async with page.expect_navigation(url="**/runs/*"):
        await page.click("#generate-submit")
    return page.url.rsplit("/", 1)[1]


async def status_of(page: Page) -> str:
    return (await page.text_content("#run-status") or "").strip()


async def test_a_day_in_the_studio(tmp_path: Path) -> None:
    async with atelier_http(tmp_path, local_step_ms=STEP_MS) as served, chromium_page() as gallery:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        browser = gallery.context.browser
        assert browser is not None
        page = await browser.new_page()  # a second tab, where the runs are made
        page.set_default_timeout(20_000)

        # The gallery, empty, keeps its page while runs are made elsewhere.
        await gallery.goto(f"{served.url}/")
        await expect(gallery.locator("#gallery-empty")).to_be_visible()
        await gallery.wait_for_function("() => document.body.dataset.live === 'on'")
        await gallery.evaluate("window.notReloaded = true")

        # The form refuses a bad width next to the width field, and keeps what was typed.
        await page.goto(f"{served.url}/generate")
        await page.fill("#prompt", "a lighthouse at dusk")
        await page.fill("#width", "100")
        await page.click("#generate-submit")
        await expect(page.locator("#width-error")).to_contain_text("multiple of 8")
        assert await page.get_attribute("#width", "aria-invalid") == "true"
        assert await page.input_value("#prompt") == "a lighthouse at dusk"

        # A run made from the form appears in the gallery, its bar moves, its thumbnail arrives.
        first = await fill_and_generate(page, served, "a lighthouse at dusk", steps=50)
        card = gallery.locator(f'li.card[data-run="{first}"]')
        await expect(card).to_be_visible()
        await gallery.evaluate(WATCH_PROGRESS, first)
        await expect(card.locator("img")).to_be_visible(timeout=15_000)
        await gallery.wait_for_function(
            f"() => document.querySelector('li.card[data-run=\"{first}\"] img').naturalWidth > 0"
        )
        seen = await gallery.evaluate("window.seen")
        assert len({value for value in seen if 0 < value < 1}) >= 2, seen  # it moved, step by step
        await expect(card.locator(".status")).to_have_text("completed")
        assert await gallery.evaluate("window.notReloaded") is True

        # Its page shows the image full size, its inputs, its door and its log.
        await gallery.click(f'li.card[data-run="{first}"] a')
        await gallery.wait_for_url(f"**/runs/{first}")
        await gallery.wait_for_function("() => document.querySelector('.images img').naturalWidth === 256")
        facts = await gallery.text_content(".columns")
        assert "a lighthouse at dusk" in facts and "256 × 256" in facts and "the studio" in facts
        assert "completed" in (await gallery.text_content("#run-log") or "")

        # The ZIP holds the image and run.json.
        async with gallery.expect_download() as download_info:
            await gallery.click("text=Download ZIP")
        download = await download_info.value
        archive = zipfile.ZipFile(io.BytesIO(Path(await download.path()).read_bytes()))
        assert sorted(archive.namelist()) == ["image-01.png", "run.json"]
        await gallery.screenshot(path=SCREENSHOTS / "run.png", full_page=True)

        # Same again, another seed: a new run with the same prompt.
        async with gallery.expect_navigation(url="**/runs/*"):
            await gallery.click("button[data-action=again]")
        again = gallery.url.rsplit("/", 1)[1]
        assert again != first
        made = await served.finished(again)
        original = await served.engine.get_run(first)
        assert made.inputs["prompt"] == original.inputs["prompt"]
        assert made.inputs["seed"] != original.inputs["seed"]

        # Use the image as source for an upscale: the form comes prefilled, the result is 2x.
        await gallery.goto(f"{served.url}/runs/{first}")
        await gallery.click("text=Upscale")
        await gallery.wait_for_url(lambda url: "/generate?" in url)
        assert await gallery.is_checked("input[name=operation][value=upscale]")
        assert await gallery.input_value("#source") == f"atelier://runs/{first}/images/image-01.png"
        await expect(gallery.locator("#width")).to_be_hidden()  # the size comes from the source
        async with gallery.expect_navigation(url="**/runs/*"):
            await gallery.click("#generate-submit")
        upscaled = await served.finished(gallery.url.rsplit("/", 1)[1])
        assert upscaled.inputs["operation"] == "upscale"
        assert (upscaled.artifacts[0].width, upscaled.artifacts[0].height) == (512, 512)
        # The page follows the run to its end by itself.
        await expect(gallery.locator("#run-status")).to_have_text("completed")
        await gallery.wait_for_function("() => document.querySelector('.images img')?.naturalWidth === 512")

        # A slow run: cancelled while it runs, retried, then deleted after the confirmation.
        slow = await fill_and_generate(page, served, "a very slow cathedral", steps=150)
        await expect(page.locator("#run-status")).to_have_text("running", timeout=10_000)
        await page.click("button[data-action=cancel]")
        await expect(page.locator("#run-status")).to_have_text("cancelled")
        assert (await served.engine.get_run(slow)).status is RunStatus.CANCELLED
        await page.click("button[data-action=retry]")
        await expect(page.locator("#run-status")).not_to_have_text("cancelled")
        assert (await served.engine.get_run(slow)).status in (RunStatus.QUEUED, RunStatus.RUNNING)
        await page.click("button[data-action=delete]")
        dialog = page.locator("#confirm-delete")
        await expect(dialog).to_be_visible()
        await dialog.locator("button[value=cancel]").click()  # "Keep it": nothing happens
        await expect(dialog).to_be_hidden()
        assert (await served.engine.get_run(slow)).id == slow
        await page.click("button[data-action=delete]")
        async with page.expect_navigation(url=f"{served.url}/"):
            await dialog.locator("button[value=delete]").click()
        assert await page.locator(f'li.card[data-run="{slow}"]').count() == 0

        await gallery.goto(f"{served.url}/")
        await expect(gallery.locator("li.card")).to_have_count(3)
        await gallery.wait_for_function(
            "() => [...document.querySelectorAll('li.card img')].every(i => i.complete && i.naturalWidth > 0)"
        )
        await gallery.screenshot(path=SCREENSHOTS / "gallery.png", full_page=True)
