"""Products for the storefront tests, made before the publishing run kinds exist: a real run of
the preview renderer makes the images (stored as that run's artifacts by the engine itself), and
a product whose design, print file and mockups are those images is stored in the ledger.
"""

from __future__ import annotations

import time

import anyio

from core.engine import Engine
from core.models import RunStatus
from core.publishing.models import Listing, Product, ProductFile, new_product_id
from core.publishing.storefront import PLATFORM, product_path

COLOURS = ["white", "black"]
SIZES = ["S", "M", "L"]


async def product_with_images(
    engine: Engine,
    title: str = "Watercolour fox",
    *,
    type: str = "tshirt",
    price_cents: int = 2499,
    description: str = "A fox in the woods, in watercolour.",
    seed: int = 1,
) -> Product:
    """A stored product (status draft, no listing) whose files are a completed preview run's
    three images: image-01 the design and print file, image-02 and -03 the white and black mockups."""
    run = await engine.submit_image(
        {"prompt": f"a fox, {title}", "seed": seed, "count": 3, "width": 256, "height": 256}
    )
    with anyio.fail_after(30):
        run = await engine.wait(run.id, 25)
    assert run.status is RunStatus.COMPLETED, run.error
    images = {a.filename: a for a in run.artifacts}
    design = images["image-01.png"]
    files = [
        ProductFile(
            "print",
            "front",
            run.id,
            design.filename,
            design.width or 256,
            design.height or 256,
            300,
            design.sha256,
        )
    ]
    for colour, filename in zip(COLOURS, ["image-02.png", "image-03.png"], strict=True):
        mockup = images[filename]
        files.append(
            ProductFile(
                "mockup",
                colour,
                run.id,
                filename,
                mockup.width or 256,
                mockup.height or 256,
                None,
                mockup.sha256,
            )
        )
    now = time.time()
    return await engine.ledger.insert_product(
        Product(
            id=new_product_id(),
            type=type,
            title=title,
            description=description,
            price_cents=price_cents,
            design={
                "run_id": run.id,
                "filename": design.filename,
                "sha256": design.sha256,
                "prompt": "a fox",
            },
            colours=COLOURS,
            sizes=SIZES,
            files=files,
            status="draft",
            run_id=run.id,
            created_at=now,
            updated_at=now,
        )
    )


async def list_on_storefront(engine: Engine, product: Product, status: str = "published") -> None:
    """Record the product's storefront listing as the durable listing layer would."""
    await engine.ledger.put_listing(
        product.id,
        Listing(PLATFORM, status, external_id=product.id, url=product_path(product.id)),  # type: ignore[arg-type]
    )
