"""The embedded storefront: the default platform, a shop served by Atelier itself at `/shop`.

Mapping onto the `Publisher` port:
- Products already live in Atelier's ledger, so this platform holds nothing of its own: its
  state is the product's `storefront` listing row. The product's external id is Atelier's
  product id, and `find` is a ledger read (a product with a recorded storefront listing is
  found; nothing is ever created twice because there is nothing to create).
- `create` records the listing as `draft` (not shown), `publish` as `published` (shown on
  `/shop`), `unpublish` as `unpublished` (hidden again, its page 404). The adapter writes the row
  itself so that "published" means visible the moment `publish` returns; the durable listing
  layer recording the same row after it changes nothing.
- URLs are relative: `/shop/products/<product id>`. The ledger outlives any one way of reaching
  Atelier (another port, a reverse proxy, a LAN name when bound to 0.0.0.0), and only the door a
  request came through knows the name its client used: the HTTP side makes them absolute with
  the request's base URL (`absolute_url`); callers without a request can use `served_base_url`
  (the `atelier serve` address from settings).
"""

from __future__ import annotations

from typing import Any

from core.errors import BackendError
from core.ledger import ProductLedger
from core.publishing import Listed, ListedFile
from core.publishing.catalog import ProductType
from core.publishing.models import Listing, ListingStatus, Product
from core.settings import Settings

PLATFORM = "storefront"
SHOP_PATH = "/shop"


def product_path(product_id: str) -> str:
    """The storefront page of a product, relative to wherever Atelier is served."""
    return f"{SHOP_PATH}/products/{product_id}"


def absolute_url(url: str, base_url: str) -> str:
    """A storefront URL (`/shop/...`) made absolute under `base_url` (`http://host:port`, no
    trailing slash); a URL that is already absolute is returned as it is."""
    if not url.startswith("/"):
        return url
    return base_url.rstrip("/") + url


def served_base_url(settings: Settings) -> str:
    """Where `atelier serve` listens by these settings, as a browser on this machine reaches it
    (a wildcard bind address is reached through loopback)."""
    host = settings.host
    if host in ("0.0.0.0", "", "::"):
        host = "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{settings.port}"


class StorefrontPublisher:
    """Publishes to Atelier's own shop: a product is listed by its ledger row, nothing else."""

    name = PLATFORM

    def __init__(self, ledger: ProductLedger) -> None:
        self._ledger = ledger

    def configured(self) -> bool:
        return True  # nothing to configure: the shop is part of Atelier

    async def health(self) -> dict[str, Any]:
        return {"ok": True, "configured": True, "url": SHOP_PATH}

    async def find(self, product: Product) -> Listed | None:
        stored = await self._ledger.get_product(product.id)
        listing = stored.listing(PLATFORM) if stored is not None else None
        if listing is None or listing.external_id is None:
            return None
        return self._listed(product, listing.status == "published")

    async def create(self, product: Product, product_type: ProductType, files: list[ListedFile]) -> Listed:
        """Record it as a draft; its files are already the product's (the shop serves them from
        the runs that made them), so `files` needs no upload."""
        return await self._record(product, "draft")

    async def publish(self, product: Product, listed: Listed) -> Listed:
        return await self._record(product, "published")

    async def unpublish(self, product: Product, listed: Listed) -> Listed:
        return await self._record(product, "unpublished")

    async def aclose(self) -> None:
        return None

    async def _record(self, product: Product, status: ListingStatus) -> Listed:
        if await self._ledger.get_product(product.id) is None:
            # The shop shows ledger products only: one not stored first could never be shown.
            raise BackendError(
                f"product {product.id} is not in Atelier's ledger; store it before listing it on the storefront",
                retryable=False,
            )
        listed = self._listed(product, status == "published")
        await self._ledger.put_listing(
            product.id,
            Listing(platform=PLATFORM, status=status, external_id=listed.external_id, url=listed.url),
        )
        return listed

    @staticmethod
    def _listed(product: Product, published: bool) -> Listed:
        return Listed(external_id=product.id, url=product_path(product.id), published=published)
