"""The SQLite ledger's products and their listings (a mixin of `SQLiteLedger`, like characters)."""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from core.publishing.models import Listing, Product, ProductFile

_PRODUCT_FIELDS = frozenset({"title", "description", "price_cents", "status"})


class SQLiteProducts:
    """`ProductLedger` for `SQLiteLedger` (see `core.ledger.ProductLedger`)."""

    _write: Callable[[Callable[[sqlite3.Connection], Any]], Awaitable[Any]]
    _rows: Callable[..., Awaitable[list[sqlite3.Row]]]

    async def insert_product(self, product: Product) -> Product:
        """Store a new product; one with the same id already stored is returned as it is."""

        def insert(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT INTO products (id, type, title, description, price_cents, design, colours, sizes, files, "
                "status, run_id, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (id) DO NOTHING",
                (
                    product.id,
                    product.type,
                    product.title,
                    product.description,
                    product.price_cents,
                    json.dumps(product.design),
                    json.dumps(product.colours),
                    json.dumps(product.sizes),
                    json.dumps([f.to_dict() for f in product.files]),
                    product.status,
                    product.run_id,
                    product.created_at,
                    product.updated_at,
                ),
            )

        await self._write(insert)
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
        unknown = set(changes) - _PRODUCT_FIELDS
        if unknown:
            raise ValueError(f"not product fields: {sorted(unknown)}")
        columns = {**changes, "updated_at": time.time()}
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

    async def _products(self, where: str, args: Sequence[Any]) -> list[Product]:
        rows = await self._rows(f"SELECT * FROM products {where}", args)
        products = {
            row["id"]: Product(
                id=row["id"],
                type=row["type"],
                title=row["title"],
                description=row["description"],
                price_cents=row["price_cents"],
                design=json.loads(row["design"]),
                colours=json.loads(row["colours"]),
                sizes=json.loads(row["sizes"]),
                files=[ProductFile(**f) for f in json.loads(row["files"])],
                status=row["status"],
                run_id=row["run_id"],
                created_at=row["created_at"],
                updated_at=row["updated_at"],
            )
            for row in rows
        }
        if products:
            marks = ", ".join("?" for _ in products)
            for row in await self._rows(
                f"SELECT * FROM listings WHERE product_id IN ({marks}) ORDER BY platform", list(products)
            ):
                products[row["product_id"]].listings.append(
                    Listing(
                        platform=row["platform"],
                        status=row["status"],
                        external_id=row["external_id"],
                        url=row["url"],
                        error=row["error"],
                        updated_at=row["updated_at"],
                    )
                )
        return list(products.values())
