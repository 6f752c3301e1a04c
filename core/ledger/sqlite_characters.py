"""The SQLite ledger's character rows: characters, their training images and LoRA versions.

A mixin of `SQLiteLedger`, kept apart because characters are their own idea; it uses the
ledger's `_write` (one transaction, never blocking the event loop on another process's lock)
and `_rows` (WAL reads), so it shares the ledger's connections and its waiting rules.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

from core.characters.models import Character, CharacterImage, LoraVersion
from core.errors import Conflict

T = TypeVar("T")
_CHARACTER_FIELDS = frozenset({"name", "description", "trigger_word", "active_version"})


class SQLiteCharacters:
    """`CharacterLedger` for `SQLiteLedger` (see `core.ledger.CharacterLedger`)."""

    _write: Callable[[Callable[[sqlite3.Connection], Any]], Awaitable[Any]]
    _rows: Callable[..., Awaitable[list[sqlite3.Row]]]

    async def insert_character(self, character: Character) -> Character:
        def insert(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT INTO characters (id, name, name_key, description, trigger_word, active_version, "
                "created_at, updated_at) VALUES (?, ?, ?, ?, ?, NULL, ?, ?)",
                (
                    character.id,
                    character.name,
                    character.name.casefold(),
                    character.description,
                    character.trigger_word,
                    character.created_at,
                    character.updated_at,
                ),
            )

        try:
            await self._write(insert)
        except sqlite3.IntegrityError as exc:
            raise _taken(exc, character.name, character.trigger_word) from None
        return character

    async def get_character(self, character_id: str) -> Character | None:
        found = await self._characters("WHERE id = ?", (character_id,))
        return found[0] if found else None

    async def find_character_by_name(self, name: str) -> Character | None:
        found = await self._characters("WHERE name_key = ?", (name.casefold(),))
        return found[0] if found else None

    async def list_characters(self) -> list[Character]:
        return await self._characters("", ())

    async def update_character(self, character_id: str, **changes: Any) -> Character | None:
        unknown = set(changes) - _CHARACTER_FIELDS
        if unknown:
            raise ValueError(f"not character fields: {sorted(unknown)}")
        columns = dict(changes)
        if "name" in columns:
            columns["name_key"] = columns["name"].casefold()
        columns["updated_at"] = time.time()
        assignments = ", ".join(f"{column} = ?" for column in columns)

        def update(conn: sqlite3.Connection) -> int:
            cursor = conn.execute(
                f"UPDATE characters SET {assignments} WHERE id = ?", (*columns.values(), character_id)
            )
            return cursor.rowcount

        try:
            changed = await self._write(update)
        except sqlite3.IntegrityError as exc:
            raise _taken(exc, changes.get("name", ""), changes.get("trigger_word", "")) from None
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
            rows = conn.execute(
                "SELECT filename, sha256 FROM character_images WHERE character_id = ?", (character_id,)
            ).fetchall()
            names = {row[0]: row[1] for row in rows}
            by_sha = {row[1]: row[0] for row in rows}
            added: list[CharacterImage] = []
            refused: list[tuple[str, str]] = []
            for image in images:
                if image.sha256 in by_sha:
                    refused.append(
                        (
                            image.filename,
                            f"duplicate: the same image is already stored as {by_sha[image.sha256]}",
                        )
                    )
                elif image.filename in names:
                    refused.append(
                        (
                            image.filename,
                            "another image with this name is already stored; remove it first or rename this one",
                        )
                    )
                elif len(names) >= max_images:
                    refused.append(
                        (image.filename, f"the character already has the most images allowed ({max_images})")
                    )
                else:
                    conn.execute(
                        "INSERT INTO character_images (character_id, filename, sha256, size, width, height, "
                        "media_type, caption, added_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        (
                            character_id,
                            image.filename,
                            image.sha256,
                            image.size,
                            image.width,
                            image.height,
                            image.media_type,
                            image.caption,
                            image.added_at,
                        ),
                    )
                    names[image.filename] = image.sha256
                    by_sha[image.sha256] = image.filename
                    added.append(image)
            if added:
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
        return None if row is None else _image(row)

    async def add_lora_version(self, character_id: str, version: LoraVersion) -> None:
        """Record a trained LoRA and make it the active one. `Conflict` if the number is taken."""

        def add(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT INTO lora_versions (character_id, version, filename, trainer, base_model, steps, run_id, "
                "sha256, size, created_at, comfyui_name) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    character_id,
                    version.version,
                    version.filename,
                    version.trainer,
                    version.base_model,
                    version.steps,
                    version.run_id,
                    version.sha256,
                    version.size,
                    version.created_at,
                    version.comfyui_name,
                ),
            )
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

    async def _characters(self, where: str, args: Sequence[Any]) -> list[Character]:
        rows = await self._rows(f"SELECT * FROM characters {where} ORDER BY created_at, id", args)
        characters = {
            row["id"]: Character(
                id=row["id"],
                name=row["name"],
                trigger_word=row["trigger_word"],
                created_at=row["created_at"],
                updated_at=row["updated_at"],
                description=row["description"],
                active_version=row["active_version"],
            )
            for row in rows
        }
        if not characters:
            return []
        marks = ", ".join("?" for _ in characters)
        for row in await self._rows(
            f"SELECT * FROM character_images WHERE character_id IN ({marks}) ORDER BY added_at, filename",
            list(characters),
        ):
            characters[row["character_id"]].images.append(_image(row))
        for row in await self._rows(
            f"SELECT * FROM lora_versions WHERE character_id IN ({marks}) ORDER BY version", list(characters)
        ):
            characters[row["character_id"]].versions.append(
                LoraVersion(
                    version=row["version"],
                    filename=row["filename"],
                    trainer=row["trainer"],
                    base_model=row["base_model"],
                    steps=row["steps"],
                    run_id=row["run_id"],
                    sha256=row["sha256"],
                    size=row["size"],
                    created_at=row["created_at"],
                    comfyui_name=row["comfyui_name"],
                )
            )
        return list(characters.values())


def _image(row: sqlite3.Row) -> CharacterImage:
    return CharacterImage(
        filename=row["filename"],
        sha256=row["sha256"],
        size=row["size"],
        width=row["width"],
        height=row["height"],
        media_type=row["media_type"],
        caption=row["caption"],
        added_at=row["added_at"],
    )


def _taken(exc: sqlite3.IntegrityError, name: str, trigger_word: str) -> Conflict:
    if "trigger_word" in str(exc):
        return Conflict(f"the trigger word {trigger_word!r} is already another character's; choose another")
    return Conflict(f"a character named {name!r} already exists (names are unique, whatever their case)")
