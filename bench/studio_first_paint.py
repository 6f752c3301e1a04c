"""The studio's first paint with 10,000 runs in the ledger (a benchmark, not a test).

Issue 14: "the page stays responsive with 10,000 runs in the ledger (first paint of the gallery
under one second on this machine)". A data directory is filled with 10,000 finished runs (ten
real runs made by the preview renderer, then copies of them written straight into the ledger,
as `bench/ledger_scale.py` fills its 100,000), `atelier serve` is started on it on a loopback
port, and headless Chromium (Debian's, through Playwright's `executable_path`) opens `/` in a
fresh browser context each time (no cache: every load is a first visit) and reads the paint
timings of the Performance API.

The reference, measured in the same run and interleaved with it: the same page as a static
file. The gallery's HTML as Atelier served it, its stylesheet, scripts and thumbnails are
copied into a folder and served by Python's own static file server (`python -m http.server`)
on another loopback port, so the reference paints exactly what the studio paints, with no
ledger, no template and no engine behind it. The ratio is what Atelier adds.

  python bench/studio_first_paint.py [--runs 10000] [--loads 9] [--screenshot docs/studio.png]

Prints, for the gallery and the reference, the median over `--loads` of first paint,
first contentful paint and the HTML's time to first byte, and the ratio of the two first
contentful paints. Exits 1 when the gallery's median first contentful paint is 1 s or more.
`--screenshot` also saves the gallery at 1200x800 (the README's picture), in 256 colours, dithered.
"""

from __future__ import annotations

import argparse
import re
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import anyio
import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.ledger_scale import fill
from core.engine import Engine
from core.settings import Settings
from tests.browser import CHROMIUM, LAUNCH_ARGS
from tests.procs import free_port, serve

GOAL_MS = 1000.0
STATIC = Path(__file__).resolve().parents[1] / "http_compat" / "studio" / "static"
PROMPTS = [
    "a lighthouse on a basalt cliff at dusk, long exposure, teal and orange",
    "a red fox in fresh snow, morning light, shallow depth of field",
    "an isometric cosy reading nook with plants, soft pastel colours",
    "a koi pond seen from above, ink and watercolour",
    "a retro-futurist city skyline at night, neon reflections on wet streets",
    "a bowl of ramen, studio food photography, steam rising",
    "a hot-air balloon over lavender fields, golden hour",
    "a portrait of an astronaut cat, oil painting, baroque frame",
    "mountain lake with pine trees, misty morning, 35mm film",
    "a paper-cut illustration of a whale swimming through clouds",
]
# The paint entries once first-contentful-paint is there, and the navigation's own timings.
PAINT_TIMINGS = """() => new Promise(resolve => {
  const read = () => {
    const paints = Object.fromEntries(performance.getEntriesByType("paint").map(e => [e.name, e.startTime]));
    const nav = performance.getEntriesByType("navigation")[0];
    return { ...paints, ttfb: nav.responseStart - nav.requestStart, bytes: nav.transferSize };
  };
  const now = read();
  if (now["first-contentful-paint"] !== undefined) return resolve(now);
  new PerformanceObserver(() => {
    const later = read();
    if (later["first-contentful-paint"] !== undefined) resolve(later);
  }).observe({ type: "paint", buffered: true });
})"""


# --- the data -------------------------------------------------------------------------------


async def fill_home(home: Path, runs: int) -> None:
    """Ten real runs (their images on disk), then `runs - 10` copies of them in the ledger; the
    copies' files are the originals' (same storage keys), so every card has its image."""
    settings = Settings.from_env({}, home=home, local_step_ms=0)
    async with Engine.open(settings) as engine:
        made = [
            await engine.submit_image({"prompt": prompt, "seed": 100 + i, "width": 256, "height": 256})
            for i, prompt in enumerate(PROMPTS)
        ]
        for run in made:
            await engine.wait(run.id, 60)
    conn = sqlite3.connect(settings.ledger_path)
    conn.row_factory = sqlite3.Row
    rows = [dict(r) for r in conn.execute("SELECT * FROM runs ORDER BY seq")]
    artifacts = [dict(r) for r in conn.execute("SELECT * FROM artifacts")]
    conn.close()
    assert all(r["status"] == "completed" for r in rows), [r["status"] for r in rows]
    # The copies are older than the originals, so the gallery opens on the ten real ones.
    await fill(settings.ledger_path, runs - len(rows), (rows, artifacts))


def mirror(base: str, folder: Path) -> int:
    """Copy the gallery as served (HTML, static files, thumbnails) into `folder`; its HTML size."""
    html = httpx.get(f"{base}/", timeout=30).text
    (folder / "index.html").write_text(html)
    shutil.copytree(STATIC, folder / "static")
    for src in sorted(set(re.findall(r'<img[^>]+src="([^"]+)"', html))):
        path = src.replace("&amp;", "&").split("?", 1)[0]
        if not path.startswith("/"):
            continue
        answer = httpx.get(base + src.replace("&amp;", "&"), timeout=30)
        if answer.status_code == 200:
            target = folder / path.lstrip("/")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(answer.content)
    return len(html.encode())


# --- measuring ------------------------------------------------------------------------------


async def measure(
    urls: dict[str, str], loads: int, screenshot: Path | None
) -> dict[str, list[dict[str, float]]]:
    from playwright.async_api import async_playwright

    found: dict[str, list[dict[str, float]]] = {name: [] for name in urls}
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=LAUNCH_ARGS)
        try:
            for round_ in range(loads + 1):  # the first round warms the servers and is not counted
                for name, url in urls.items():
                    context = await browser.new_context(viewport={"width": 1280, "height": 800})
                    page = await context.new_page()
                    await page.goto(url, wait_until="load")
                    timings = await page.evaluate(PAINT_TIMINGS)
                    await context.close()
                    if round_:
                        found[name].append(timings)
            if screenshot is not None:
                context = await browser.new_context(viewport={"width": 1200, "height": 800})
                page = await context.new_page()
                await page.goto(urls["gallery"], wait_until="load")
                await page.wait_for_function(
                    "() => [...document.querySelectorAll('img')].every(i => i.complete)", timeout=20_000
                )
                await page.screenshot(path=str(screenshot))
                await context.close()
                shrink(screenshot)
        finally:
            await browser.close()
    return found


def shrink(path: Path) -> None:
    """Re-encode a screenshot with a palette of 256 colours, dithered: under half the bytes for
    the README, and gradients stay smooth (a palette alone bands them)."""
    from PIL import Image

    with Image.open(path) as image:
        rgb = image.convert("RGB")
    palette = rgb.quantize(colors=256, method=Image.Quantize.FASTOCTREE)
    rgb.quantize(palette=palette, dither=Image.Dither.FLOYDSTEINBERG).save(path, optimize=True)


def median(samples: list[dict[str, float]], key: str) -> float:
    return statistics.median(s.get(key, float("nan")) for s in samples)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=10_000)
    parser.add_argument("--loads", type=int, default=9)
    parser.add_argument("--screenshot", type=Path, default=None, help="save the gallery at 1200x800 here")
    args = parser.parse_args()
    if CHROMIUM is None:
        print("Chromium is not installed (make browser installs it)", file=sys.stderr)
        return 2

    with tempfile.TemporaryDirectory(prefix="atelier-first-paint-") as where:
        home, reference = Path(where) / "home", Path(where) / "reference"
        reference.mkdir()
        started = time.perf_counter()
        anyio.run(fill_home, home, args.runs)
        print(f"ledger of {args.runs:,} runs made in {time.perf_counter() - started:.1f} s")
        with serve(home) as atelier:
            size = mirror(atelier.url, reference)
            port = free_port()
            static = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "http.server",
                    str(port),
                    "--bind",
                    "127.0.0.1",
                    "--directory",
                    str(reference),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            try:
                deadline = time.monotonic() + 10
                while True:
                    try:
                        httpx.get(f"http://127.0.0.1:{port}/", timeout=1)
                        break
                    except httpx.TransportError:
                        if time.monotonic() > deadline:
                            raise
                        time.sleep(0.05)
                urls = {"gallery": f"{atelier.url}/", "reference": f"http://127.0.0.1:{port}/"}
                found = anyio.run(measure, urls, args.loads, args.screenshot)
            finally:
                static.terminate()
                static.wait(10)

    print(f"gallery HTML {size:,} bytes; median of {args.loads} cold loads each (ms):")
    print(f"{'':12} {'first paint':>12} {'first contentful':>17} {'HTML first byte':>16}")
    for name, samples in found.items():
        print(
            f"{name:12} {median(samples, 'first-paint'):12.0f} "
            f"{median(samples, 'first-contentful-paint'):17.0f} {median(samples, 'ttfb'):16.1f}"
        )
    fcp = median(found["gallery"], "first-contentful-paint")
    ratio = fcp / median(found["reference"], "first-contentful-paint")
    print(f"gallery / static reference (first contentful paint): {ratio:.2f}x")
    if args.screenshot is not None:
        print(f"screenshot: {args.screenshot} ({args.screenshot.stat().st_size:,} bytes)")
    if not fcp < GOAL_MS:
        print(f"MISSED: the gallery's first contentful paint is {fcp:.0f} ms; the goal is < {GOAL_MS:.0f} ms")
        return 1
    print(f"ok: first contentful paint {fcp:.0f} ms < {GOAL_MS:.0f} ms with {args.runs:,} runs in the ledger")
    return 0


if __name__ == "__main__":
    sys.exit(main())
