"""Characters' and products' rows to models, and the rules their writes share: for both adapters.

Kept apart from the SQLite and PostgreSQL adapters because a row of these tables means the same
in either (both read JSON columns back as JSON text, and both give rows by column name), and
because what a write refuses (a duplicate training image, a taken name) must read the same
whichever database a studio runs on. The adapters keep only their SQL and their transactions.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from core.characters.models import Character, CharacterImage, LoraVersion
from core.errors import Conflict
from core.publishing.models import Listing, Product, ProductFile

Row = Mapping[str, Any]
CHARACTER_FIELDS = frozenset({"name", "description", "trigger_word", "active_version"})
PRODUCT_FIELDS = frozenset({"title", "description", "price_cents", "status"})
CHARACTER_IMAGE_COLUMNS = "character_id, filename, sha256, size, width, height, media_type, caption, added_at"
LORA_VERSION_COLUMNS = (
    "character_id, version, filename, trainer, base_model, steps, run_id, sha256, size, created_at, "
    "comfyui_name"
)
PRODUCT_COLUMNS = (
    "id, type, title, description, price_cents, design, colours, sizes, files, status, run_id, "
    "created_at, updated_at"
)


def insert_into(table: str, columns: str) -> str:
    """An INSERT of one row of `table`'s `columns` (as written in a `..._COLUMNS` string), one
    SQLite placeholder a column (`core.ledger.postgres.connections.pg` makes it psycopg's)."""
    marks = ", ".join("?" for _ in columns.split(","))
    return f"INSERT INTO {table} ({columns}) VALUES ({marks})"


INSERT_CHARACTER_IMAGE = insert_into("character_images", CHARACTER_IMAGE_COLUMNS)
INSERT_LORA_VERSION = insert_into("lora_versions", LORA_VERSION_COLUMNS)
# A product already stored under its id is left as it is.
INSERT_PRODUCT = insert_into("products", PRODUCT_COLUMNS) + " ON CONFLICT (id) DO NOTHING"


def character_changes(changes: Mapping[str, Any], now: float) -> dict[str, Any]:
    """The columns `update_character` writes for `changes` (`ValueError` names unknown fields)."""
    unknown = set(changes) - CHARACTER_FIELDS
    if unknown:
        raise ValueError(f"not character fields: {sorted(unknown)}")
    columns = dict(changes)
    if "name" in columns:
        columns["name_key"] = columns["name"].casefold()
    columns["updated_at"] = now
    return columns


def product_changes(changes: Mapping[str, Any], now: float) -> dict[str, Any]:
    """The columns `update_product` writes for `changes` (`ValueError` names unknown fields)."""
    unknown = set(changes) - PRODUCT_FIELDS
    if unknown:
        raise ValueError(f"not product fields: {sorted(unknown)}")
    return {**changes, "updated_at": now}


def character_values(character: Character) -> tuple[Any, ...]:
    """(id, name, name_key, description, trigger_word, created_at, updated_at) of a new character."""
    return (
        character.id,
        character.name,
        character.name.casefold(),
        character.description,
        character.trigger_word,
        character.created_at,
        character.updated_at,
    )


def image_values(character_id: str, image: CharacterImage) -> tuple[Any, ...]:
    """A training image's row, in `CHARACTER_IMAGE_COLUMNS`' order."""
    return (
        character_id,
        image.filename,
        image.sha256,
        image.size,
        image.width,
        image.height,
        image.media_type,
        image.caption,
        image.added_at,
    )


def version_values(character_id: str, version: LoraVersion) -> tuple[Any, ...]:
    """A LoRA version's row, in `LORA_VERSION_COLUMNS`' order."""
    return (
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
    )


def product_values(product: Product) -> tuple[Any, ...]:
    """A new product's row, in `PRODUCT_COLUMNS`' order (its lists and design as JSON text)."""
    return (
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
    )


def images_that_fit(
    stored: Sequence[tuple[str, str]], images: Sequence[CharacterImage], max_images: int
) -> tuple[list[CharacterImage], list[tuple[str, str]]]:
    """Of `images`, those a character holding `stored` ((filename, sha256) pairs) can take, in
    order, and (filename, reason) for the others: no duplicate content or name, at most `max_images`."""
    names = {filename: sha for filename, sha in stored}
    by_sha = {sha: filename for filename, sha in stored}
    added: list[CharacterImage] = []
    refused: list[tuple[str, str]] = []
    for image in images:
        if image.sha256 in by_sha:
            refused.append(
                (image.filename, f"duplicate: the same image is already stored as {by_sha[image.sha256]}")
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
            names[image.filename] = image.sha256
            by_sha[image.sha256] = image.filename
            added.append(image)
    return added, refused


def taken(error: Exception, name: str, trigger_word: str) -> Conflict:
    """The `Conflict` a character's unique name or trigger word violated (`error`) is heard as."""
    if "trigger_word" in str(error):
        return Conflict(f"the trigger word {trigger_word!r} is already another character's; choose another")
    return Conflict(f"a character named {name!r} already exists (names are unique, whatever their case)")


def character_from_row(row: Row) -> Character:
    """A character (without its images and versions) from a row of `characters`."""
    return Character(
        id=row["id"],
        name=row["name"],
        trigger_word=row["trigger_word"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        description=row["description"],
        active_version=row["active_version"],
    )


def image_from_row(row: Row) -> CharacterImage:
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


def version_from_row(row: Row) -> LoraVersion:
    return LoraVersion(
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


def product_from_row(row: Row) -> Product:
    """A product (without its listings) from a row of `products`."""
    return Product(
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


def listing_from_row(row: Row) -> Listing:
    return Listing(
        platform=row["platform"],
        status=row["status"],
        external_id=row["external_id"],
        url=row["url"],
        error=row["error"],
        updated_at=row["updated_at"],
    )
