"""Print-on-demand: product types, print-ready files, mockups, and publishing them.

`core.publishing.catalog` is what can be made (product types, print areas, platform mappings);
`core.publishing.models` what a product is. The `Publisher` port below is what a platform does;
its adapters are `storefront` (the embedded shop, default), `printify` (REST v1) and `shopify`
(Admin GraphQL). `core.publishing.products` is what callers ask (`engine.products`): products
and publish runs, products, platforms.

Publishing is durable (see `core.publishing.listings`): a listing is recorded as `creating`
before a platform is called and with the platform's product id the moment it exists. A
retried or restarted publication first asks the platform for the product it may already have
made for this product (`find`, by Atelier's product id, which every adapter stores with the
product: a tag, a SKU, a handle), so no platform ever holds two products for one of ours.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from core.publishing.catalog import ProductType
from core.publishing.models import Product


@dataclass(slots=True, frozen=True)
class ListedFile:
    """A file a platform receives: a print file (`role` print, `name` its print area) or a mockup
    (`role` mockup, `name` its colour), with its bytes and a public URL when Atelier has one."""

    role: str
    name: str
    filename: str
    media_type: str
    data: bytes
    width: int
    height: int
    dpi: int | None = None


@dataclass(slots=True, frozen=True)
class Listed:
    """A product as a platform holds it."""

    external_id: str
    url: str | None = None
    published: bool = False


class Publisher(Protocol):
    """One platform products are listed on."""

    # "storefront", "printify" or "shopify": the key of `ENABLED_PLATFORMS` and of listings.
    name: str

    def configured(self) -> bool:
        """Whether its settings (tokens, shop) are there; an unconfigured platform is refused."""
        ...

    async def health(self) -> dict[str, Any]:
        """`{"ok": bool, ...}`: configured and answering (never raises)."""
        ...

    async def find(self, product: Product) -> Listed | None:
        """The product this platform already holds for `product` (by Atelier's id), if any."""
        ...

    async def create(self, product: Product, product_type: ProductType, files: list[ListedFile]) -> Listed:
        """Create it as a draft (not visible to buyers), with its print files and mockups."""
        ...

    async def publish(self, product: Product, listed: Listed) -> Listed:
        """Make it visible to buyers; the answer carries its public URL."""
        ...

    async def unpublish(self, product: Product, listed: Listed) -> Listed: ...

    async def aclose(self) -> None: ...
