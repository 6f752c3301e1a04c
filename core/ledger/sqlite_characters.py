"""The SQLite ledger's character rows: characters, their training images and LoRA versions.

A mixin of `SQLiteLedger`, kept apart because characters are their own idea; it uses the
ledger's `_write` (one transaction, never blocking the event loop on another process's lock)
and `_rows` (WAL reads), so it shares the ledger's connections and its waiting rules. What a row
means and what a write refuses are shared with the PostgreSQL adapter (`core.ledger.records`).
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from core.characters.models import Character, CharacterImage, LoraVersion
from core.errors import Conflict
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


class SQLiteCharacters(CharacterReads):
    """`CharacterLedger` for `SQLiteLedger` (see `core.ledger.CharacterLedger`)."""

    _write: Callable[[Callable[[sqlite3.Connection], Any]], Awaitable[Any]]
    _rows: Callable[..., Awaitable[list[sqlite3.Row]]]

    async def insert_character(self, character: Character) -> Character:
        def insert(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT INTO characters (id, name, name_key, description, trigger_word, active_version, "
                "created_at, updated_at) VALUES (?, ?, ?, ?, ?, NULL, ?, ?)",
                character_values(character),
            )

        try:
            await self._write(insert)
        except sqlite3.IntegrityError as exc:
            raise taken(exc, character.name, character.trigger_word) from None
        return character

    async def update_character(self, character_id: str, **changes: Any) -> Character | None:
        columns = character_changes(changes, time.time())
        assignments = ", ".join(f"{column} = ?" for column in columns)

        def update(conn: sqlite3.Connection) -> int:
            cursor = conn.execute(
                f"UPDATE characters SET {assignments} WHERE id = ?", (*columns.values(), character_id)
            )
            return cursor.rowcount

        try:
            changed = await self._write(update)
        except sqlite3.IntegrityError as exc:
            raise taken(exc, changes.get("name", ""), changes.get("trigger_word", "")) from None
        return await self.get_character(character_id) if changed else None

    async def delete_character(self, character_id: str) -> bool:
        def delete(conn: sqlite3.Connection) -> int:
            return conn.execute("DELETE FROM characters WHERE id = ?", (character_id,)).rowcount

        return bool(await self._write(delete))

    async def add_character_images(
        self, character_id: str, images: Sequence[CharacterImage], max_images: int
    ) -> tuple[list[CharacterImage], list[tuple[str, str]]]:
        """Insert what fits: returns the images added and (filename, reason) for the rest."""

        def add(conn: sqlite3.Connection) -> tuple[list[CharacterImage], list[tuple[str, str]]]:
            stored = conn.execute(
                "SELECT filename, sha256 FROM character_images WHERE character_id = ?", (character_id,)
            ).fetchall()
            added, refused = images_that_fit([tuple(row) for row in stored], images, max_images)
            if added:
                conn.executemany(
                    INSERT_CHARACTER_IMAGE, [image_values(character_id, image) for image in added]
                )
                conn.execute("UPDATE characters SET updated_at = ? WHERE id = ?", (time.time(), character_id))
            return added, refused

        return await self._write(add)

    async def remove_character_image(self, character_id: str, filename: str) -> CharacterImage | None:
        def remove(conn: sqlite3.Connection) -> sqlite3.Row | None:
            row = conn.execute(
                "DELETE FROM character_images WHERE character_id = ? AND filename = ? RETURNING *",
                (character_id, filename),
            ).fetchone()
            if row is not None:
                conn.execute("UPDATE characters SET updated_at = ? WHERE id = ?", (time.time(), character_id))
            return row

        row = await self._write(remove)
        return None if row is None else image_from_row(row)

    async def add_lora_version(self, character_id: str, version: LoraVersion) -> None:
        """Record a trained LoRA and make it the active one. `Conflict` if the number is taken."""

        def add(conn: sqlite3.Connection) -> None:
            conn.execute(INSERT_LORA_VERSION, version_values(character_id, version))
            conn.execute(
                "UPDATE characters SET active_version = ?, updated_at = ? WHERE id = ?",
                (version.version, time.time(), character_id),
            )

        try:
            await self._write(add)
        except sqlite3.IntegrityError as exc:
            raise Conflict(
                f"LoRA version {version.version} of {character_id} already exists ({exc})"
            ) from None
