"""Publisher calls per product: how many HTTP requests Atelier makes to Printify and Shopify to
create and publish one product (a benchmark, not a test).

Runs the engine on a fresh data directory against the fake Printify and Shopify servers
(`tests/fakes/`, real HTTP on loopback), makes N designs x (tshirt, hoodie) and publishes them
everywhere, then prints each platform's requests per product, by kind, and the wall time. The
reference is the fewest calls each protocol allows for the same work (Printify: a catalog read
per type, an upload per print file, a create, a publish; Shopify: a staged-upload request, one
upload per file, a productSet, a status update), so the ratio says what Atelier adds (finding
products before creating them, durability's price).

  python bench/pod_publish_calls.py [--designs 5]
"""

from __future__ import annotations

import argparse
import base64
import collections
import io
import sys
import tempfile
import time
from pathlib import Path

import anyio

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.engine import Engine
from core.settings import Settings
from tests.fakes.printify import FakePrintify, serve_printify
from tests.fakes.shopify import FakeShopify, serve_fake

TYPES = ["tshirt", "hoodie"]


def design(seed: int) -> str:
    from PIL import Image

    image = Image.new("RGB", (1024, 1024), (20 + seed * 30 % 200, 90, 160))
    out = io.BytesIO()
    image.save(out, "PNG")
    return "data:image/png;base64," + base64.b64encode(out.getvalue()).decode()


async def main(designs: int) -> None:
    printify, shopify = FakePrintify(token="t"), FakeShopify(access_tokens=("s",))
    async with serve_printify(printify) as printify_url, serve_fake(shopify) as shopify_url:
        with tempfile.TemporaryDirectory() as home:
            settings = Settings.from_env(
                {
                    "ATELIER_ENABLED_PLATFORMS": "printify,shopify",
                    "ATELIER_PRINTIFY_URL": printify_url,
                    "ATELIER_PRINTIFY_TOKEN": "t",
                    "ATELIER_PRINTIFY_SHOP_ID": str(next(iter(printify.shops))),
                    "ATELIER_SHOPIFY_STORE": shopify.store,
                    "ATELIER_SHOPIFY_URL": shopify_url,
                    "ATELIER_SHOPIFY_ACCESS_TOKEN": "s",
                },
                home=Path(home),
                local_step_ms=0,
            )
            async with Engine.open(settings) as engine:
                started = time.perf_counter()
                run = await engine.products.submit(
                    {
                        "designs": [{"source": design(i)} for i in range(designs)],
                        "product_types": TYPES,
                        "publish": True,
                    }
                )
                done = await engine.wait(run.id, timeout_s=600)
                took = time.perf_counter() - started
    assert done.result is not None and not done.result["errors"], done.result
    products = designs * len(TYPES)
    mockups = sum(len(engine.products.catalog.get(t).colours) for t in TYPES) * designs
    print(
        f"{designs} designs x {TYPES} = {products} products, published on Printify and Shopify in {took:.1f} s"
    )
    printify_kinds = collections.Counter(f"{r.method} {r.path.split('/')[-1]}" for r in printify.requests)
    shopify_kinds = collections.Counter(op or path.rsplit("/", 1)[-1] for _, path, op, _ in shopify.requests)
    printify_floor = len(TYPES) + products * 3  # catalog per type; upload, create, publish per product
    shopify_floor = (
        products * 3 + products + mockups
    )  # staged request, productSet, update; an upload per file
    for name, kinds, total, floor in (
        ("printify", printify_kinds, len(printify.requests), printify_floor),
        ("shopify", shopify_kinds, len(shopify.requests), shopify_floor),
    ):
        print(
            f"{name:8} {total / products:5.1f} requests/product (fewest possible {floor / products:4.1f}; x{total / floor:.2f})"
        )
        for kind, count in sorted(kinds.items(), key=lambda item: -item[1]):
            print(f"           {count / products:5.2f}  {kind}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--designs", type=int, default=5)
    anyio.run(main, parser.parse_args().designs)
