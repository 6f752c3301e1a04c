"""Listing a product on a platform, durably: no step is lost and none is done twice.

For one product and one platform:
1. The listing is recorded as `creating` before the platform is called.
2. The platform is asked for the product it may already hold for ours (`Publisher.find`, by
   Atelier's product id, which every adapter stores with the product). Only if it has none is
   the product created, and its id is recorded the moment it exists.
3. If publishing was asked for and the listing is not yet published, it is published and
   recorded as such (with its public URL).
A retry or a restart starts again at the top and skips what the ledger (or the platform)
already has, so each platform ends with exactly one product per product of ours.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Literal

from core.ledger import ProductLedger
from core.publishing import Listed, ListedFile, Publisher
from core.publishing.catalog import ProductType
from core.publishing.models import Listing, Product

Action = Literal["draft", "publish", "unpublish"]
FilesOf = Callable[[Product], Awaitable[list[ListedFile]]]


async def list_product(
    ledger: ProductLedger,
    publisher: Publisher,
    product: Product,
    product_type: ProductType,
    files_of: FilesOf,
    action: Action,
) -> Listing:
    """Bring `product`'s listing on `publisher` to `action` (see the module docstring)."""
    platform = publisher.name
    current = product.listing(platform)
    if action == "unpublish":
        if current is None or current.external_id is None:
            return current or Listing(platform, "unpublished")
        listed = await publisher.unpublish(product, Listed(current.external_id, current.url, True))
        return await _record(
            ledger, product, Listing(platform, "unpublished", listed.external_id, listed.url)
        )
    if current is None or current.external_id is None:
        await _record(ledger, product, Listing(platform, "creating"))
        listed = await publisher.find(product)
        if listed is None:
            listed = await publisher.create(product, product_type, await files_of(product))
        status = "published" if listed.published else "draft"
        current = await _record(ledger, product, Listing(platform, status, listed.external_id, listed.url))
    if action == "publish" and current.status != "published":
        assert current.external_id is not None
        listed = await publisher.publish(product, Listed(current.external_id, current.url, False))
        current = await _record(
            ledger, product, Listing(platform, "published", listed.external_id, listed.url)
        )
    return current


async def record_failure(ledger: ProductLedger, product: Product, platform: str, error: str) -> Listing:
    """Note a platform's failure on the listing, keeping any product id it already has."""
    current = (await ledger.get_product(product.id) or product).listing(platform)
    failed = Listing(
        platform,
        "failed" if current is None or current.external_id is None else current.status,
        current.external_id if current else None,
        current.url if current else None,
        error=error,
    )
    return await _record(ledger, product, failed)


async def _record(ledger: ProductLedger, product: Product, listing: Listing) -> Listing:
    await ledger.put_listing(product.id, listing)
    return listing
