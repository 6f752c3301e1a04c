"""The ledger's characters: the SQLite file's upgrade from schema 2, and on both adapters unique names
and trigger words, images without duplicates and within the cap, LoRA versions, and deletion
taking everything with it."""

from __future__ import annotations

import sqlite3
import time
from importlib import resources
from pathlib import Path

import pytest

from core.characters.models import Character, CharacterImage, LoraVersion, new_character_id
from core.errors import Conflict
from core.ledger import Ledger
from core.ledger.sqlite import SQLiteLedger
from tests.ledgers import LedgerPlace

pytestmark = pytest.mark.anyio


def character(name: str, trigger: str) -> Character:
    now = time.time()
    return Character(new_character_id(), name, trigger, now, now, "a test character")


def image(filename: str, sha: str) -> CharacterImage:
    return CharacterImage(filename, sha * 64, 1000, 512, 512, "image/png", "", time.time())


def version(number: int, run_id: str = "01jd0000000000000000000000") -> LoraVersion:
    return LoraVersion(
        number, f"mara-v{number}.safetensors", "preview", "preview-style", 100, run_id, "0" * 64, 10, 1.0
    )


async def test_a_version_2_ledger_is_upgraded_to_characters_keeping_its_runs(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite3"
    conn = sqlite3.connect(path)
    for name in ("0001_init.sql", "0002_front_doors.sql"):
        conn.executescript((resources.files("core.ledger") / "migrations" / name).read_text())
    conn.execute(
        "INSERT INTO runs (id, kind, status, priority, inputs, backend, created_at) "
        "VALUES ('01jd0000000000000000000000', 'image', 'completed', 'normal', '{\"prompt\": \"old\"}', 'local', 1.0)"
    )
    conn.execute("PRAGMA user_version=2")
    conn.commit()
    conn.close()

    upgraded = SQLiteLedger.open(path)
    try:
        assert upgraded.schema_version == 6
        old = await upgraded.get_run("01jd0000000000000000000000")
        assert old is not None and old.inputs == {"prompt": "old"}
        mara = await upgraded.insert_character(character("Mara", "mara_person"))
        assert (await upgraded.get_character(mara.id)).name == "Mara"  # type: ignore[union-attr]
    finally:
        await upgraded.close()


async def test_names_are_unique_whatever_their_case_and_trigger_words_unique(ledger: Ledger) -> None:
    await ledger.insert_character(character("Mara", "mara_person"))
    with pytest.raises(Conflict, match="named 'MARA' already exists"):
        await ledger.insert_character(character("MARA", "other_word"))
    with pytest.raises(Conflict, match="trigger word 'mara_person'"):
        await ledger.insert_character(character("Someone else", "mara_person"))
    found = await ledger.find_character_by_name("mArA")
    assert found is not None and found.trigger_word == "mara_person"
    assert [c.name for c in await ledger.list_characters()] == ["Mara"]


async def test_images_are_added_once_each_within_the_cap(ledger: Ledger) -> None:
    mara = await ledger.insert_character(character("Mara", "mara_person"))
    added, refused = await ledger.add_character_images(
        mara.id, [image("a.png", "a"), image("b.png", "b"), image("a-again.png", "a")], max_images=3
    )
    assert [i.filename for i in added] == ["a.png", "b.png"]
    assert refused == [("a-again.png", "duplicate: the same image is already stored as a.png")]
    added, refused = await ledger.add_character_images(
        mara.id, [image("b.png", "c"), image("c.png", "d"), image("d.png", "e")], max_images=3
    )
    assert [i.filename for i in added] == ["c.png"]
    assert refused[0][0] == "b.png" and "already stored" in refused[0][1]
    assert refused[1] == ("d.png", "the character already has the most images allowed (3)")
    removed = await ledger.remove_character_image(mara.id, "b.png")
    assert removed is not None and removed.sha256 == "b" * 64
    stored = await ledger.get_character(mara.id)
    assert stored is not None and [i.filename for i in stored.images] == ["a.png", "c.png"]


async def test_a_new_lora_version_becomes_the_active_one(ledger: Ledger) -> None:
    mara = await ledger.insert_character(character("Mara", "mara_person"))
    await ledger.add_lora_version(mara.id, version(1))
    await ledger.add_lora_version(mara.id, version(2))
    with pytest.raises(Conflict):
        await ledger.add_lora_version(mara.id, version(2))
    stored = await ledger.get_character(mara.id)
    assert stored is not None and stored.active is not None and stored.active.version == 2
    back = await ledger.update_character(mara.id, active_version=1)
    assert back is not None and back.active is not None and back.active.filename == "mara-v1.safetensors"


async def test_deleting_a_character_deletes_its_images_and_versions(
    ledger: Ledger, ledger_place: LedgerPlace
) -> None:
    mara = await ledger.insert_character(character("Mara", "mara_person"))
    await ledger.add_character_images(mara.id, [image("a.png", "a")], max_images=10)
    await ledger.add_lora_version(mara.id, version(1))
    assert await ledger.delete_character(mara.id)
    assert await ledger.get_character(mara.id) is None
    assert ledger_place.raw("SELECT COUNT(*) FROM character_images") == [(0,)]
    assert ledger_place.raw("SELECT COUNT(*) FROM lora_versions") == [(0,)]
    # The name is free again.
    await ledger.insert_character(character("Mara", "mara_person"))
