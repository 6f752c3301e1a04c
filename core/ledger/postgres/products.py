"""The PostgreSQL ledger's products and their listings (a mixin of `PostgresLedger`, like SQLite's
`core.ledger.sqlite_products`; rows to models: `core.ledger.records`)."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import psycopg

from core.ledger.records import (
    PRODUCT_COLUMNS,
    listing_from_row,
    product_changes,
    product_from_row,
    product_values,
)
from core.publishing.models import Listing, Product

Conn = psycopg.AsyncConnection[Any]


class PostgresProducts:
    """`ProductLedger` for `PostgresLedger` (see `core.ledger.ProductLedger`)."""

    _write: Callable[[Callable[[Conn], Awaitable[Any]]], Awaitable[Any]]
    _rows: Callable[..., Awaitable[list[Any]]]

    async def insert_product(self, product: Product) -> Product:
        """Store a new product; one with the same id already stored is returned as it is."""
        values = product_values(product)
        await self._write(
            lambda conn: conn.execute(
                f"INSERT INTO products ({PRODUCT_COLUMNS}) VALUES "
                "(%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT (id) DO NOTHING",
                values,
            )
        )
        stored = await self.get_product(product.id)
        assert stored is not None
        return stored

    async def get_product(self, product_id: str) -> Product | None:
        found = await self._products("WHERE id = ?", (product_id,))
        return found[0] if found else None

    async def list_products(
        self,
        *,
        status: str | None = None,
        type: str | None = None,
        run_id: str | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> list[Product]:
        """Products newest first, filtered by status, type and the run that made them."""
        clauses, args = [], []
        for column, value in (("status", status), ("type", type), ("run_id", run_id)):
            if value is not None:
                clauses.append(f"{column} = ?")
                args.append(value)
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        return await self._products(
            f"{where} ORDER BY created_at DESC, id LIMIT ? OFFSET ?", (*args, limit, offset)
        )

    async def published_on(self, platform: str, limit: int = 200, offset: int = 0) -> list[Product]:
        """Products listed and published on `platform`, newest first (the storefront's shelf)."""
        return await self._products(
            "WHERE id IN (SELECT product_id FROM listings WHERE platform = ? AND status = 'published') "
            "ORDER BY created_at DESC, id LIMIT ? OFFSET ?",
            (platform, limit, offset),
        )

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

    async def _products(self, where: str, args: Sequence[Any]) -> list[Product]:
        rows = await self._rows(f"SELECT * FROM products {where}", args, named=True)
        products = {row["id"]: product_from_row(row) for row in rows}
        if products:
            for row in await self._rows(
                "SELECT * FROM listings WHERE product_id = ANY(?) ORDER BY platform",
                (list(products),),
                named=True,
            ):
                products[row["product_id"]].listings.append(listing_from_row(row))
        return list(products.values())
