"""The PostgreSQL ledger's character rows (a mixin of `PostgresLedger`, like SQLite's
`core.ledger.sqlite_characters`; rows to models and the refusals: `core.ledger.records`).

Writers on other machines may add images to the same character at once: `add_character_images`
locks the character's row first, so the cap and the duplicate checks see every image stored.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import psycopg
from psycopg.rows import dict_row

from core.characters.models import Character, CharacterImage, LoraVersion
from core.errors import Conflict
from core.ledger.postgres.connections import pg
from core.ledger.records import (
    INSERT_CHARACTER_IMAGE,
    INSERT_LORA_VERSION,
    character_changes,
    character_values,
    image_from_row,
    image_values,
    images_that_fit,
    taken,
    version_values,
)
from core.ledger.shared_reads import CharacterReads

Conn = psycopg.AsyncConnection[Any]
_INSERT_CHARACTER_IMAGE = pg(INSERT_CHARACTER_IMAGE)
_INSERT_LORA_VERSION = pg(INSERT_LORA_VERSION)


class PostgresCharacters(CharacterReads):
    """`CharacterLedger` for `PostgresLedger` (see `core.ledger.CharacterLedger`)."""

    _write: Callable[[Callable[[Conn], Awaitable[Any]]], Awaitable[Any]]
    _rows: Callable[..., Awaitable[list[Any]]]

    async def insert_character(self, character: Character) -> Character:
        values = character_values(character)
        try:
            await self._write(
                lambda conn: conn.execute(
                    "INSERT INTO characters (id, name, name_key, description, trigger_word, active_version, "
                    "created_at, updated_at) VALUES (%s, %s, %s, %s, %s, NULL, %s, %s)",
                    values,
                )
            )
        except psycopg.errors.UniqueViolation as exc:
            raise taken(exc, character.name, character.trigger_word) from None
        return character

    async def update_character(self, character_id: str, **changes: Any) -> Character | None:
        columns = character_changes(changes, time.time())
        assignments = ", ".join(f"{column} = %s" for column in columns)
        args = (*columns.values(), character_id)

        async def update(conn: Conn) -> int:
            cursor = await conn.execute(f"UPDATE characters SET {assignments} WHERE id = %s", args)
            return cursor.rowcount

        try:
            changed = await self._write(update)
        except psycopg.errors.UniqueViolation as exc:
            raise taken(exc, changes.get("name", ""), changes.get("trigger_word", "")) from None
        return await self.get_character(character_id) if changed else None

    async def delete_character(self, character_id: str) -> bool:
        async def delete(conn: Conn) -> int:
            return (await conn.execute("DELETE FROM characters WHERE id = %s", (character_id,))).rowcount

        return bool(await self._write(delete))

    async def add_character_images(
        self, character_id: str, images: Sequence[CharacterImage], max_images: int
    ) -> tuple[list[CharacterImage], list[tuple[str, str]]]:
        """Insert what fits: returns the images added and (filename, reason) for the rest."""

        async def add(conn: Conn) -> tuple[list[CharacterImage], list[tuple[str, str]]]:
            # Another node adding images to this character waits here until we commit.
            await conn.execute("SELECT 1 FROM characters WHERE id = %s FOR UPDATE", (character_id,))
            stored = await (
                await conn.execute(
                    "SELECT filename, sha256 FROM character_images WHERE character_id = %s", (character_id,)
                )
            ).fetchall()
            added, refused = images_that_fit([tuple(row) for row in stored], images, max_images)
            if added:
                async with conn.cursor() as cursor:
                    await cursor.executemany(
                        _INSERT_CHARACTER_IMAGE, [image_values(character_id, image) for image in added]
                    )
                await conn.execute(
                    "UPDATE characters SET updated_at = %s WHERE id = %s", (time.time(), character_id)
                )
            return added, refused

        return await self._write(add)

    async def remove_character_image(self, character_id: str, filename: str) -> CharacterImage | None:
        async def remove(conn: Conn) -> Any:
            async with conn.cursor(row_factory=dict_row) as cursor:
                await cursor.execute(
                    "DELETE FROM character_images WHERE character_id = %s AND filename = %s RETURNING *",
                    (character_id, filename),
                )
                row = await cursor.fetchone()
            if row is not None:
                await conn.execute(
                    "UPDATE characters SET updated_at = %s WHERE id = %s", (time.time(), character_id)
                )
            return row

        row = await self._write(remove)
        return None if row is None else image_from_row(row)

    async def add_lora_version(self, character_id: str, version: LoraVersion) -> None:
        """Record a trained LoRA and make it the active one. `Conflict` if the number is taken."""

        async def add(conn: Conn) -> None:
            await conn.execute(_INSERT_LORA_VERSION, version_values(character_id, version))
            await conn.execute(
                "UPDATE characters SET active_version = %s, updated_at = %s WHERE id = %s",
                (version.version, time.time(), character_id),
            )

        try:
            await self._write(add)
        except psycopg.IntegrityError as exc:
            raise Conflict(
                f"LoRA version {version.version} of {character_id} already exists ({_first_line(exc)})"
            ) from None


def _first_line(exc: Exception) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__
