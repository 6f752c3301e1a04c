"""The PostgreSQL ledger's products and their listings (a mixin of `PostgresLedger`, like SQLite's
`core.ledger.sqlite_products`; rows to models: `core.ledger.records`)."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

import psycopg

from core.ledger.postgres.connections import pg
from core.ledger.records import (
    INSERT_PRODUCT,
    product_changes,
    product_values,
)
from core.ledger.shared_reads import ProductReads
from core.publishing.models import Listing, Product

Conn = psycopg.AsyncConnection[Any]
_INSERT_PRODUCT = pg(INSERT_PRODUCT)


class PostgresProducts(ProductReads):
    """`ProductLedger` for `PostgresLedger` (see `core.ledger.ProductLedger`)."""

    _write: Callable[[Callable[[Conn], Awaitable[Any]]], Awaitable[Any]]
    _rows: Callable[..., Awaitable[list[Any]]]

    async def insert_product(self, product: Product) -> Product:
        """Store a new product; one with the same id already stored is returned as it is."""
        values = product_values(product)
        await self._write(lambda conn: conn.execute(_INSERT_PRODUCT, values))
        stored = await self.get_product(product.id)
        assert stored is not None
        return stored

    async def update_product(self, product_id: str, **changes: Any) -> Product | None:
        columns = product_changes(changes, time.time())
        assignments = ", ".join(f"{column} = %s" for column in columns)
        args = (*columns.values(), product_id)

        async def update(conn: Conn) -> int:
            return (await conn.execute(f"UPDATE products SET {assignments} WHERE id = %s", args)).rowcount

        return await self.get_product(product_id) if await self._write(update) else None

    async def delete_product(self, product_id: str) -> bool:
        async def delete(conn: Conn) -> int:
            return (await conn.execute("DELETE FROM products WHERE id = %s", (product_id,))).rowcount

        return bool(await self._write(delete))

    async def put_listing(self, product_id: str, listing: Listing) -> None:
        """Record a product's listing on a platform (replacing what was recorded for it)."""
        args = (
            product_id,
            listing.platform,
            listing.status,
            listing.external_id,
            listing.url,
            listing.error,
            time.time(),
        )
        await self._write(
            lambda conn: conn.execute(
                "INSERT INTO listings (product_id, platform, status, external_id, url, error, updated_at) "
                "VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT (product_id, platform) DO UPDATE SET "
                "status = excluded.status, external_id = excluded.external_id, url = excluded.url, "
                "error = excluded.error, updated_at = excluded.updated_at",
                args,
            )
        )
