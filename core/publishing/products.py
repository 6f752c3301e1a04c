"""Print-on-demand as callers see it (`engine.products`): queue products and publish runs, read
products, and the platforms they are listed on.

Submitting checks the queueing terms and the kind's request (`core.publishing.products_kind`,
`core.publishing.publish_kind`), then ends in the engine's one accept path (`core.kinds.Accept`),
which records, publishes and queues the run like any other. The catalog of product types and
the publishers (one per platform) are held here; the engine closes the publishers when it stops.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from core import batches
from core.errors import InvalidInput, ProductNotFound
from core.kinds import Accept, Queueing, RunHandler, one, same_inputs
from core.ledger import ProductLedger
from core.models import Priority, Run, RunKind
from core.publishing import Publisher
from core.publishing.catalog import Catalog
from core.publishing.models import PRODUCT_ID_RE, Product
from core.publishing.products_kind import ProductsKind
from core.publishing.publish_kind import PublishKind
from core.publishing.runs import Publishing
from core.settings import Settings

MAX_PAGE = 200


class Products:
    """Products, their runs and their platforms; `handlers` are the two run kinds the engine executes."""

    def __init__(self, publishing: Publishing, ledger: ProductLedger, accept: Accept) -> None:
        self._publishing = publishing
        self._settings: Settings = publishing.settings
        self._ledger = ledger
        self._accept = accept
        self._products = ProductsKind(publishing)
        self._publish = PublishKind(publishing)
        self.handlers: dict[RunKind, RunHandler] = {
            RunKind.POD: self._products,
            RunKind.PUBLISH: self._publish,
        }

    @property
    def catalog(self) -> Catalog:
        """The product types products can be made as."""
        return self._publishing.catalog

    @property
    def publishers(self) -> Mapping[str, Publisher]:
        """One publisher per platform, configured or not."""
        return self._publishing.publishers

    # -- submit -------------------------------------------------------------------------------

    async def submit(
        self,
        request: Mapping[str, Any],
        *,
        priority: str | Priority = Priority.NORMAL,
        idempotency_key: str | None = None,
        max_attempts: int | None = None,
        meta: Mapping[str, Any] | None = None,
    ) -> Run:
        """Queue a run that makes products from designs and lists them (see `core.publishing.products_kind`).

        `request`: `designs` (each `{prompt, ...}` to generate or `{source}` to use as is),
        `product_types`, `platforms` (default ATELIER_ENABLED_PLATFORMS), `publish` (default
        false: drafts), and optionally `title`, `description`, `price_cents`, `composed_from`.
        """
        queueing = self._queueing(priority, idempotency_key, max_attempts, meta)
        inputs = await self._products.validate(request)
        return await self._accept(
            queueing,
            lambda: one(self._products.new_run(inputs, queueing)),
            log=f"queued: {len(inputs['designs'])} design(s) as {', '.join(inputs['product_types'])} "
            f"on {', '.join(inputs['platforms'])}" + (" (publish)" if inputs["publish"] else " (drafts)"),
            same_request=lambda existing: same_inputs(existing, inputs),
        )

    async def submit_batch(
        self,
        requests: Sequence[Mapping[str, Any]],
        *,
        priority: str | Priority = Priority.NORMAL,
        idempotency_key: str | None = None,
        max_attempts: int | None = None,
        meta: Mapping[str, Any] | None = None,
        item_meta: Sequence[Mapping[str, Any] | None] | None = None,
    ) -> Run:
        """Queue one products run per request (as `submit` takes it) under a parent `batch` run,
        all or nothing, as `Engine.submit_batch` does for image runs."""
        queueing = self._queueing(priority, idempotency_key, max_attempts, meta)
        batches.check_items(requests, item_meta)
        return await self._accept(
            queueing,
            lambda: self._products.new_batch(requests, item_meta, queueing),
            log=f"queued as part of a batch of products ({queueing.priority.value} priority)",
        )

    async def submit_publish(
        self,
        product_ids: Sequence[str],
        platforms: Sequence[str] | None = None,
        *,
        action: str = "publish",
        priority: str | Priority = Priority.NORMAL,
        idempotency_key: str | None = None,
        meta: Mapping[str, Any] | None = None,
    ) -> Run:
        """Queue a run that publishes (or unpublishes) products on platforms, durably."""
        queueing = self._queueing(priority, idempotency_key, None, meta)
        inputs = await self._publish.validate(product_ids, platforms, action)
        return await self._accept(
            queueing,
            lambda: one(self._publish.new_run(inputs, queueing)),
            log=f"queued: {action} {len(inputs['product_ids'])} product(s) on {', '.join(inputs['platforms'])}",
            same_request=lambda existing: same_inputs(existing, inputs),
        )

    def _queueing(
        self,
        priority: str | Priority,
        idempotency_key: str | None,
        max_attempts: int | None,
        meta: Mapping[str, Any] | None,
    ) -> Queueing:
        # A products or publish run's time limit is the kind's own (ATELIER_PRODUCTS_TIMEOUT_S).
        return Queueing.check(
            priority, idempotency_key, max_attempts, None, meta, default_attempts=self._settings.max_attempts
        )

    # -- products and platforms ---------------------------------------------------------------

    async def get(self, product_id: str) -> Product:
        """The product as recorded now. Raises `ProductNotFound`."""
        if not isinstance(product_id, str) or not PRODUCT_ID_RE.fullmatch(product_id):
            raise InvalidInput(
                "product_id", f"is not a product id (prod- and 12 of 0-9 a-z; got {product_id!r:.40})"
            )
        product = await self._ledger.get_product(product_id)
        if product is None:
            raise ProductNotFound(product_id)
        return product

    async def list(
        self, *, status: str | None = None, type: str | None = None, limit: int = 50, offset: int = 0
    ) -> list[Product]:
        """A page of products, filtered by listing status and product type."""
        if not 1 <= limit <= MAX_PAGE:
            raise InvalidInput("limit", f"must be an integer in 1..{MAX_PAGE} (got {limit!r})")
        if status is not None and status not in ("draft", "published", "unpublished"):
            raise InvalidInput("status", "must be draft, published or unpublished")
        if type is not None:
            self.catalog.get(type)
        return await self._ledger.list_products(status=status, type=type, limit=limit, offset=offset)

    def check_platforms(self, platforms: Sequence[str] | None) -> list[str]:
        """The platforms asked for (default ATELIER_ENABLED_PLATFORMS), each one configured;
        `InvalidInput` naming the settings a platform lacks."""
        return self._publishing.check_platforms(platforms)

    async def platform_health(self) -> dict[str, dict[str, Any]]:
        """Each platform: configured, and answering (`ok`)."""
        return {name: await publisher.health() for name, publisher in self.publishers.items()}
