"""The reads both ledger adapters run with the same SQL: runs, characters and products.

Kept apart from the adapters because these statements mean the same on SQLite and PostgreSQL
(written with `?`, which the PostgreSQL adapter turns into its placeholder) and their rows map to
models the same way (`core.ledger.sqlite_rows`, `core.ledger.records`): one copy, so the two
ledgers cannot drift. Each adapter supplies `_rows(sql, args, named=False)` (rows by position, or
by column name when `named`) and keeps what it does its own way: writes and transactions,
SQLite's cached mean durations and its purge scan on a worker thread.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Collection, Sequence
from typing import Any

from core.characters.models import Character
from core.ledger.records import (
    character_from_row,
    image_from_row,
    listing_from_row,
    product_from_row,
    version_from_row,
)
from core.ledger.sqlite_queries import (
    RUN_BY_ID,
    RUN_BY_SEQ,
    count_filters,
    decode_cursor,
    encode_cursor,
    page_query,
    run_filters,
)
from core.ledger.sqlite_rows import (
    ARTIFACT_COLUMNS,
    RUN_COLUMNS,
    artifact_from_row,
    run_from_row,
    run_with_artifacts,
)
from core.models import Artifact, LogEntry, Page, Priority, Run, RunKind, RunStatus
from core.publishing.models import Product


def marks(values: Collection[Any]) -> str:
    """`?, ?, ...`: one placeholder per value."""
    return ", ".join("?" for _ in values)


class RunReads:
    """The `Ledger` port's run reads (see `core.ledger.Ledger`)."""

    _rows: Callable[..., Awaitable[list[Any]]]
    # Whether a filtered list page limits each of its arms (see `sqlite_queries.page_query`).
    _limit_arms = False

    async def _one(self, sql: str, args: Sequence[Any] = ()) -> Any:
        rows = await self._rows(sql, args)
        return rows[0] if rows else None

    async def get_run(self, run_id: str) -> Run | None:
        return run_with_artifacts(await self._rows(RUN_BY_ID, (run_id,)))

    async def get_run_by_seq(self, seq: int) -> Run | None:
        return run_with_artifacts(await self._rows(RUN_BY_SEQ, (seq,)))

    async def find_by_idempotency_key(self, key: str) -> Run | None:
        row = await self._one(f"SELECT {RUN_COLUMNS} FROM runs WHERE idempotency_key = ?", (key,))
        return (await self._with_artifacts([run_from_row(row)]))[0] if row else None

    async def find_by_key_prefix(self, prefix: str, limit: int = 1000) -> list[Run]:
        # A range over the key's unique index: every key that starts with `prefix` sorts between
        # `prefix` and `prefix` + the highest character (bytewise: PostgreSQL's key is COLLATE "C").
        rows = await self._rows(
            f"SELECT {RUN_COLUMNS} FROM runs WHERE idempotency_key >= ? AND idempotency_key < ? "
            "ORDER BY seq LIMIT ?",
            (prefix, prefix + "\U0010ffff", limit),
        )
        return await self._with_artifacts([run_from_row(row) for row in rows])

    async def list_runs(
        self,
        *,
        statuses: Collection[RunStatus] | None = None,
        kinds: Collection[RunKind] | None = None,
        parent_id: str | None = None,
        top_level: bool = False,
        limit: int = 50,
        cursor: str | None = None,
        offset: int = 0,
    ) -> Page:
        after = None if not cursor else decode_cursor(cursor)
        arm_limit = limit + 1 + offset if self._limit_arms else None
        sql, args = page_query(statuses, kinds, parent_id, top_level, after, arm_limit=arm_limit)
        rows = await self._rows(f"{sql} ORDER BY seq DESC LIMIT ? OFFSET ?", (*args, limit + 1, offset))
        runs = await self._with_artifacts([run_from_row(r) for r in rows[:limit]])
        next_cursor = encode_cursor(runs[-1].seq) if len(rows) > limit else None
        return Page(items=runs, next_cursor=next_cursor)

    async def count_runs(
        self,
        *,
        statuses: Collection[RunStatus] | None = None,
        kinds: Collection[RunKind] | None = None,
        parent_id: str | None = None,
        top_level: bool = False,
    ) -> int:
        if parent_id is not None:  # one batch's children: a range of runs_by_parent
            clause, args = run_filters(statuses, kinds, parent_id, top_level)
            return int((await self._one(f"SELECT COUNT(*) FROM runs {clause}", args))[0])
        # A sum over the few rows of run_counts, kept by triggers in the transaction of every change.
        clause, args = count_filters(statuses, kinds, top_level)
        return int((await self._one(f"SELECT COALESCE(SUM(n), 0) FROM run_counts {clause}", args))[0])

    async def count_by_status(
        self, *, kinds: Collection[RunKind] | None = None, top_level: bool = False
    ) -> dict[str, int]:
        where, args = count_filters(None, kinds, top_level)
        rows = await self._rows(f"SELECT status, SUM(n) FROM run_counts {where} GROUP BY status", args)
        counts = {s.value: 0 for s in RunStatus}
        counts.update({r[0]: int(r[1]) for r in rows})
        return counts

    async def get_document(self, key: str) -> Any:
        row = await self._one("SELECT value FROM documents WHERE key = ?", (key,))
        return None if row is None else json.loads(row[0])

    async def logs(self, run_id: str, limit: int = 1000) -> list[LogEntry]:
        rows = await self._rows(
            "SELECT at, level, message FROM run_logs WHERE run_id = ? ORDER BY id LIMIT ?", (run_id, limit)
        )
        return [LogEntry(at=r[0], level=r[1], message=r[2]) for r in rows]

    async def runs_in(self, statuses: Collection[RunStatus]) -> list[Run]:
        rows = await self._rows(
            f"SELECT {RUN_COLUMNS} FROM runs WHERE status IN ({marks(statuses)}) ORDER BY seq",
            [s.value for s in statuses],
        )
        return [run_from_row(r) for r in rows]

    async def statuses_of(self, run_ids: Collection[str]) -> dict[str, RunStatus]:
        if not run_ids:
            return {}
        rows = await self._rows(f"SELECT id, status FROM runs WHERE id IN ({marks(run_ids)})", list(run_ids))
        return {r[0]: RunStatus(r[1]) for r in rows}

    async def queued_refs(self) -> list[tuple[str, str, Priority, int]]:
        rows = await self._rows(
            "SELECT id, backend, priority, seq FROM runs WHERE status = 'queued' ORDER BY seq"
        )
        return [(r[0], r[1], Priority(r[2]), r[3]) for r in rows]

    async def _updated(
        self, row: Sequence[Any], artifacts: Sequence[Artifact], replace_artifacts: bool
    ) -> Run:
        """The run an update returned (`row`), with its files."""
        run = run_from_row(row)
        if (
            replace_artifacts
            or run.status in (RunStatus.QUEUED, RunStatus.RUNNING)
            or (artifacts and run.status is RunStatus.COMPLETED)
        ):
            # Just written, or none recorded yet (files are recorded when a run completes).
            run.artifacts = list(artifacts)
            return run
        return (await self._with_artifacts([run]))[0]

    async def _with_artifacts(self, runs: list[Run]) -> list[Run]:
        if not runs:
            return runs
        by_id = {run.id: run for run in runs}
        rows = await self._rows(
            f"SELECT {ARTIFACT_COLUMNS} FROM artifacts WHERE run_id IN ({marks(by_id)}) ORDER BY run_id, filename",
            list(by_id),
        )
        for row in rows:
            by_id[row[0]].artifacts.append(artifact_from_row(row))
        return runs


class CharacterReads:
    """The `CharacterLedger` port's reads (see `core.ledger.CharacterLedger`)."""

    _rows: Callable[..., Awaitable[list[Any]]]

    async def get_character(self, character_id: str) -> Character | None:
        found = await self._characters("WHERE id = ?", (character_id,))
        return found[0] if found else None

    async def find_character_by_name(self, name: str) -> Character | None:
        found = await self._characters("WHERE name_key = ?", (name.casefold(),))
        return found[0] if found else None

    async def list_characters(self) -> list[Character]:
        return await self._characters("", ())

    async def _characters(self, where: str, args: Sequence[Any]) -> list[Character]:
        rows = await self._rows(f"SELECT * FROM characters {where} ORDER BY created_at, id", args, named=True)
        characters = {row["id"]: character_from_row(row) for row in rows}
        if not characters:
            return []
        ids = list(characters)
        for row in await self._rows(
            f"SELECT * FROM character_images WHERE character_id IN ({marks(ids)}) ORDER BY added_at, filename",
            ids,
            named=True,
        ):
            characters[row["character_id"]].images.append(image_from_row(row))
        for row in await self._rows(
            f"SELECT * FROM lora_versions WHERE character_id IN ({marks(ids)}) ORDER BY version",
            ids,
            named=True,
        ):
            characters[row["character_id"]].versions.append(version_from_row(row))
        return list(characters.values())


class ProductReads:
    """The `ProductLedger` port's reads (see `core.ledger.ProductLedger`)."""

    _rows: Callable[..., Awaitable[list[Any]]]

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

    async def _products(self, where: str, args: Sequence[Any]) -> list[Product]:
        rows = await self._rows(f"SELECT * FROM products {where}", args, named=True)
        products = {row["id"]: product_from_row(row) for row in rows}
        if products:
            ids = list(products)
            for row in await self._rows(
                f"SELECT * FROM listings WHERE product_id IN ({marks(ids)}) ORDER BY platform",
                ids,
                named=True,
            ):
                products[row["product_id"]].listings.append(listing_from_row(row))
        return list(products.values())
