"""First paint of the studio's gallery with 10,000 runs in the ledger (a benchmark, not a test).

Issue 14: "the page stays responsive with 10,000 runs in the ledger (first paint of the gallery
under one second on this machine)". Two data directories are filled as bench/ledger_scale.py
fills them (copies of ten real runs: a batch of 2, completed, failed and cancelled images), one
with 100 runs and one with 10,000, their images kept so the thumbnails are real; Atelier serves
each on loopback (uvicorn), and Debian's headless Chromium opens `/` on them in turn, each time
in a fresh browser context (no cache, no cookies), reading from the Performance API:
  html            the gallery's HTML answered (navigation responseEnd), in ms;
  first paint     first-contentful-paint, in ms;
  thumbnails      every thumbnail in view (1280 x 720) loaded and decoded, in ms.
Each visit's figures are its own; a row shows the median of `--rounds` visits per size (after
one visit each that is not counted: it makes the thumbnails, which are made once) and the ratio
of the 10,000-run median to the 100-run one, measured in the same run.

  python bench/studio_gallery.py [--runs 10000] [--rounds 7]

Measured on the 2-core dev box (shared with other workers' test runs), 7 visits each: first
paint 256 ms at 100 runs and 252 ms at 10,000 (ratio 0.98); the HTML 23-62 ms; the thumbnails
in view loaded 375-436 ms after the navigation began.

Exits 1 when first paint at the larger size is over 1,000 ms or its ratio to the smaller is
over 1.5 (a gallery page costs what its 48 cards cost, not what the ledger holds).
"""

from __future__ import annotations

import argparse
import logging
import shutil
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

import anyio

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from ledger_scale import fill, runs_made_in

from core.engine import Engine
from core.settings import Settings
from http_compat.app import build_app
from tests.browser import CHROMIUM, LAUNCH_ARGS
from tests.http_served import serve_app

FIRST_PAINT_GOAL_MS = 1000.0
RATIO_GOAL = 1.5
SMALL = 100
MEASURE = """
async () => {
  // The thumbnails in view (the others load lazily, as the gallery is scrolled).
  const thumbs = [...document.querySelectorAll('li.card img')]
    .filter(i => i.getBoundingClientRect().top < innerHeight);
  await Promise.all(thumbs.map(i => i.complete ? null : new Promise(r => { i.onload = i.onerror = r; })));
  const nav = performance.getEntriesByType('navigation')[0];
  // The paint is reported a frame after it happens: wait for it.
  const paint = await new Promise(resolve => new PerformanceObserver((list, observer) => {
    const entry = list.getEntriesByName('first-contentful-paint')[0];
    if (entry) { observer.disconnect(); resolve(entry); }
  }).observe({type: 'paint', buffered: true}));
  return {html: nav.responseEnd, paint: paint.startTime, thumbs: performance.now(),
          cards: document.querySelectorAll('li.card').length, images: thumbs.length,
          decoded: thumbs.filter(i => i.naturalWidth > 0).length};
}
"""


async def visit(browser: Any, url: str) -> dict[str, float]:
    context = await browser.new_context()
    try:
        page = await context.new_page()
        await page.goto(url, wait_until="load")
        return await page.evaluate(MEASURE)
    finally:
        await context.close()


async def main(large: int, rounds: int) -> int:
    from playwright.async_api import async_playwright

    if CHROMIUM is None:
        print("Chromium is not installed (make browser)", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="atelier-bench-studio-") as where:
        root = Path(where)
        rows = await runs_made_in(root / "template", side=512)
        sizes = {}
        for runs in (SMALL, large):
            home = root / f"home-{runs}"
            home.mkdir()
            shutil.copytree(root / "template" / "artifacts", home / "artifacts")
            await fill(home / "ledger.sqlite3", runs, rows)
            sizes[runs] = home
        figures: dict[int, list[dict[str, float]]] = {runs: [] for runs in sizes}
        settings = {runs: Settings.from_env({}, home=home) for runs, home in sizes.items()}
        async with (
            Engine.open(settings[SMALL]) as small_engine,
            Engine.open(settings[large]) as large_engine,
            serve_app(build_app(small_engine, settings[SMALL])) as small_url,
            serve_app(build_app(large_engine, settings[large])) as large_url,
            async_playwright() as playwright,
        ):
            browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=LAUNCH_ARGS)
            urls = {SMALL: small_url + "/", large: large_url + "/"}
            for url in urls.values():
                await visit(browser, url)  # makes the first page's thumbnails
            for _ in range(rounds):
                for runs, url in urls.items():
                    figures[runs].append(await visit(browser, url))
            await browser.close()
    return report(figures, SMALL, large)


def report(figures: dict[int, list[dict[str, float]]], small: int, large: int) -> int:
    print(f"studio gallery, median of {len(figures[large])} visits (ms)")
    print(f"{'':16}{small:>10,} runs{large:>10,} runs{'ratio':>9}")
    medians = {}
    for key, label in (("html", "html"), ("paint", "first paint"), ("thumbs", "thumbnails")):
        a = statistics.median(v[key] for v in figures[small])
        b = statistics.median(v[key] for v in figures[large])
        medians[key] = (a, b)
        print(f"{label:16}{a:>15.0f}{b:>15.0f}{b / a:>9.2f}")
    shown = figures[large][-1]
    print(
        f"on the first page: {shown['cards']:.0f} cards; in view {shown['images']:.0f} thumbnails, "
        f"{shown['decoded']:.0f} of them decoded"
    )
    small_paint, large_paint = medians["paint"]
    missed = []
    if large_paint > FIRST_PAINT_GOAL_MS:
        missed.append(f"first paint {large_paint:.0f} ms > {FIRST_PAINT_GOAL_MS:.0f} ms")
    if large_paint / small_paint > RATIO_GOAL:
        missed.append(f"first paint ratio {large_paint / small_paint:.2f} > {RATIO_GOAL}")
    if shown["decoded"] != shown["images"] or shown["images"] == 0:
        missed.append("some thumbnails did not load")
    for line in missed:
        print("MISSED:", line)
    return 1 if missed else 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    logging.getLogger("mcp").setLevel(logging.WARNING)  # the SDK's INFO lines per session
    sys.exit(anyio.run(main, args.runs, args.rounds))
