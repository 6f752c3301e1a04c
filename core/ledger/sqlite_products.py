"""The SQLite ledger's products and their listings (a mixin of `SQLiteLedger`, like characters;
rows to models: `core.ledger.records`, shared with the PostgreSQL adapter)."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Awaitable, Callable
from typing import Any

from core.ledger.records import (
    INSERT_PRODUCT,
    product_changes,
    product_values,
)
from core.ledger.shared_reads import ProductReads
from core.publishing.models import Listing, Product


class SQLiteProducts(ProductReads):
    """`ProductLedger` for `SQLiteLedger` (see `core.ledger.ProductLedger`)."""

    _write: Callable[[Callable[[sqlite3.Connection], Any]], Awaitable[Any]]
    _rows: Callable[..., Awaitable[list[sqlite3.Row]]]

    async def insert_product(self, product: Product) -> Product:
        """Store a new product; one with the same id already stored is returned as it is."""
        values = product_values(product)
        await self._write(lambda conn: conn.execute(INSERT_PRODUCT, values))
        stored = await self.get_product(product.id)
        assert stored is not None
        return stored

    async def update_product(self, product_id: str, **changes: Any) -> Product | None:
        columns = product_changes(changes, time.time())
        assignments = ", ".join(f"{column} = ?" for column in columns)

        def update(conn: sqlite3.Connection) -> int:
            return conn.execute(
                f"UPDATE products SET {assignments} WHERE id = ?", (*columns.values(), product_id)
            ).rowcount

        return await self.get_product(product_id) if await self._write(update) else None

    async def delete_product(self, product_id: str) -> bool:
        return bool(
            await self._write(
                lambda conn: conn.execute("DELETE FROM products WHERE id = ?", (product_id,)).rowcount
            )
        )

    async def put_listing(self, product_id: str, listing: Listing) -> None:
        """Record a product's listing on a platform (replacing what was recorded for it)."""

        def put(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT INTO listings (product_id, platform, status, external_id, url, error, updated_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (product_id, platform) DO UPDATE SET "
                "status = excluded.status, external_id = excluded.external_id, url = excluded.url, "
                "error = excluded.error, updated_at = excluded.updated_at",
                (
                    product_id,
                    listing.platform,
                    listing.status,
                    listing.external_id,
                    listing.url,
                    listing.error,
                    time.time(),
                ),
            )

        await self._write(put)
