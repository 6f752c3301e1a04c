"""What the print-on-demand run kinds share: the lane they run in, the engine services they use,
the platforms and the durable listing of products on them, and a run's result.

Two kinds build on it: `products` runs (kind `pod`, `core.publishing.products_kind`) make products
from designs and list them; `publish` runs (kind `publish`, `core.publishing.publish_kind`) bring
existing products' listings to published or unpublished. A platform that fails keeps the other
platforms' products: its failure is named in the result's `errors`; a failure that can pass is
retried (the whole attempt again, which skips what is done) until the last attempt, which
completes with the errors recorded.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from core.artifacts import ArtifactStore, run_key
from core.errors import BackendError, InvalidInput
from core.ledger import ProductLedger
from core.models import Artifact, Run
from core.publishing import ListedFile, Publisher
from core.publishing.catalog import Catalog
from core.publishing.listings import Action, list_product, record_failure
from core.publishing.models import Product
from core.settings import Settings

LANE = "publishing"
# The image runs a products run makes (its designs and upscales) have idempotency keys `pod:<run>:...`.
PART_KEY_PREFIX = "pod:"

SubmitImage = Callable[..., Awaitable[Run]]
WaitRun = Callable[[str, float], Awaitable[Run]]
ReadArtifact = Callable[[str, str], Awaitable[tuple[Artifact, bytes]]]
ReadSource = Callable[[str], Awaitable[tuple[bytes, str]]]


@dataclass(slots=True, frozen=True)
class RunServices:
    """What these kinds ask of the engine: image runs for designs and upscales, and their files."""

    submit_image: SubmitImage
    wait: WaitRun
    read_artifact: ReadArtifact
    read_source: ReadSource
    cancel: Callable[[str], Awaitable[Run]]
    retry: Callable[[str], Awaitable[Run]]
    delete: Callable[[str], Awaitable[Run]]
    find_by_key_prefix: Callable[[str], Awaitable[list[Run]]]


@dataclass(slots=True)
class Outcome:
    artifacts: list[Artifact] = field(default_factory=list)
    designs: list[dict[str, Any]] = field(default_factory=list)
    products: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


class Publishing:
    """Both kinds share the catalog, the platforms and the durable listing steps."""

    def __init__(
        self,
        settings: Settings,
        ledger: ProductLedger,
        store: ArtifactStore,
        catalog: Catalog,
        publishers: Mapping[str, Publisher],
        services: RunServices,
    ) -> None:
        self.settings = settings
        self.ledger = ledger
        self.store = store
        self.catalog = catalog
        self.publishers = dict(publishers)
        self.services = services

    def check_platforms(self, platforms: object) -> list[str]:
        """The platforms asked for (default: ATELIER_ENABLED_PLATFORMS), each configured."""
        if platforms is None:
            platforms = self.settings.platform_names
        if isinstance(platforms, str):
            platforms = [p for p in platforms.split(",") if p.strip()]
        if not isinstance(platforms, list | tuple):
            raise InvalidInput("platforms", "must be a list of platforms (storefront, printify, shopify)")
        names = list(dict.fromkeys(str(p).strip().lower() for p in platforms))
        for name in names:
            publisher = self.publishers.get(name)
            if publisher is None:
                raise InvalidInput(
                    "platforms", f"{name!r:.40} is not a platform (storefront, printify, shopify)"
                )
            if not publisher.configured():
                raise InvalidInput("platforms", _not_configured(name))
        return names

    async def list_all(
        self,
        products: Sequence[Product],
        platforms: Sequence[str],
        action: Action,
        outcome: Outcome,
        on_step: Callable[[], None],
    ) -> bool:
        """List every product on every platform; failures go to `outcome.errors`. True if one may pass on a retry."""
        retryable = False
        for product in products:
            product_type = self.catalog.types.get(product.type)
            for platform in platforms:
                publisher = self.publishers[platform]
                try:
                    if product_type is None:
                        raise BackendError(
                            f"product type {product.type!r} is no longer in the catalog", retryable=False
                        )
                    await list_product(self.ledger, publisher, product, product_type, self._files_of, action)
                except BackendError as exc:
                    retryable = retryable or exc.retryable
                    outcome.errors.append(f"{platform}: {product.title} ({product.type}): {exc}")
                    await record_failure(self.ledger, product, platform, str(exc))
                on_step()
        return retryable

    async def _files_of(self, product: Product) -> list[ListedFile]:
        files = []
        for item in product.files:
            data = await self.store.read(run_key(product.run_id, item.filename))
            files.append(
                ListedFile(
                    item.role,
                    item.name,
                    item.filename,
                    file_media_type(item.filename),
                    data,
                    item.width,
                    item.height,
                    item.dpi,
                )
            )
        return files


async def result_of(ledger: ProductLedger, outcome: Outcome) -> dict[str, Any]:
    """A run's result: its designs, each product with its listings, and every error by name."""
    products = []
    for product_id_ in outcome.products:
        product = await ledger.get_product(product_id_)
        if product is not None:
            products.append(
                {
                    "id": product.id,
                    "type": product.type,
                    "title": product.title,
                    "price_cents": product.price_cents,
                    "listings": [listing.to_dict() for listing in product.listings],
                }
            )
    return {"designs": outcome.designs, "products": products, "errors": outcome.errors}


def part_key(run_id: str, name: str) -> str:
    """The idempotency key of an image run a products run makes (`pod:<run>:<name>`): the same
    on every attempt, and how the run's parts are found (front doors do not list them as jobs)."""
    return f"{PART_KEY_PREFIX}{run_id}:{name}"


def _not_configured(name: str) -> str:
    needs = {
        "printify": "ATELIER_PRINTIFY_TOKEN and ATELIER_PRINTIFY_SHOP_ID",
        "shopify": "ATELIER_SHOPIFY_STORE and ATELIER_SHOPIFY_ACCESS_TOKEN (or ATELIER_SHOPIFY_CLIENT_ID and _SECRET)",
    }.get(name, "its settings")
    return f"{name} is not configured: set {needs}"


def file_media_type(filename: str) -> str:
    """The type of a file a products run makes: its mockups are JPEG, its print files PNG."""
    return "image/jpeg" if filename.endswith(".jpg") else "image/png"
