"""The character catalog on a real data directory: what an upload keeps on disk, what a LoRA
version needs before it is registered, and what deleting a character removes."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from PIL import Image

from core.characters.catalog import Upload
from core.engine import Engine
from core.errors import Conflict, InvalidInput
from core.ids import new_run_id
from core.settings import Settings
from core.training import safetensors
from tests.character_images import photo

pytestmark = pytest.mark.anyio


def stored_files(settings: Settings, character_id: str) -> set[str]:
    folder = settings.characters_dir / character_id / "images"
    return {p.name for p in folder.iterdir()} if folder.exists() else set()


def lora_file(path: Path, valid: bool = True) -> Path:
    safetensors.write(path, {"w": ("F32", (2, 2), bytes(16))}, {"atelier.trainer": "test"})
    if not valid:
        path.write_bytes(path.read_bytes()[:-7])  # cut short, as a crash mid-write would
    return path


async def test_an_upload_keeps_the_good_files_and_names_each_refused_one(
    engine: Engine, settings: Settings
) -> None:
    mara = await engine.characters.create("Mara")
    good = photo(1)
    small = io.BytesIO()
    Image.new("RGB", (100, 100), "red").save(small, "PNG")
    report = await engine.characters.add_images(
        mara.id,
        [
            Upload("one.png", good, caption="in a red coat"),
            Upload("one-again.png", good),
            Upload("notes.png", b"just some text, renamed"),
            Upload("tiny.png", small.getvalue()),
            Upload("../escape.png", photo(2)),
            Upload("two.jpg", photo(3, fmt="JPEG")),
        ],
    )
    assert [i.filename for i in report.added] == ["one.png", "two.jpg"]
    reasons = dict(report.refused)
    assert set(reasons) == {"one-again.png", "notes.png", "tiny.png", "../escape.png"}
    assert "duplicate" in reasons["one-again.png"]
    assert "too small" in reasons["tiny.png"] or "256" in reasons["tiny.png"]
    assert "directories" in reasons["../escape.png"]
    assert report.character.images[0].caption == "in a red coat"
    # Only the kept images are on disk, under their content hashes; no name from a client is.
    assert stored_files(settings, mara.id) == {
        f"{i.sha256}.{i.filename.rsplit('.', 1)[1]}" for i in report.added
    }

    again = await engine.characters.add_images(mara.id, [Upload("copy.png", good)])
    assert not again.added and "already stored as one.png" in again.refused[0][1]
    image, data = await engine.characters.read_image("Mara", "one.png")
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and image.size == len(data)

    after = await engine.characters.remove_image(mara.id, "one.png")
    assert [i.filename for i in after.images] == ["two.jpg"]
    assert len(stored_files(settings, mara.id)) == 1
    with pytest.raises(InvalidInput, match=r"no image named 'one\.png'"):
        await engine.characters.remove_image(mara.id, "one.png")


async def test_the_image_cap_holds(tmp_path: Path) -> None:
    settings = Settings.from_env({}, home=tmp_path / "home", max_character_images=3)
    async with Engine.open(settings) as engine:
        mara = await engine.characters.create("Mara")
        report = await engine.characters.add_images(mara.id, [Upload(f"{i}.png", photo(i)) for i in range(5)])
        assert len(report.added) == 3
        assert [name for name, _ in report.refused] == ["3.png", "4.png"]
        assert all("most images allowed (3)" in reason for _, reason in report.refused)
        assert len(stored_files(settings, mara.id)) == 3


async def test_a_half_written_lora_is_never_registered(engine: Engine, tmp_path: Path) -> None:
    mara = await engine.characters.create("Mara")
    broken = lora_file(tmp_path / "broken.safetensors", valid=False)
    with pytest.raises(ValueError):
        await engine.characters.keep_lora(
            mara.id, broken, trainer="aitoolkit", base_model="flux", steps=10, run_id=new_run_id()
        )
    assert (await engine.characters.get(mara.id)).versions == []


async def test_a_lora_is_installed_for_comfyui_and_removed_with_its_character(tmp_path: Path) -> None:
    loras = tmp_path / "comfyui" / "models" / "loras"
    settings = Settings.from_env({}, home=tmp_path / "home", comfyui_loras_dir=loras)
    async with Engine.open(settings) as engine:
        mara = await engine.characters.create("Mara Quinn")
        version = await engine.characters.keep_lora(
            mara.id, lora_file(tmp_path / "out.safetensors"), trainer="aitoolkit", base_model="flux", steps=10,
            run_id=new_run_id(),
        )  # fmt: skip
        assert version.version == 1 and version.comfyui_name == "atelier/mara-quinn-v1.safetensors"
        installed = loras / "atelier" / "mara-quinn-v1.safetensors"
        assert safetensors.read_metadata(installed)["atelier.trainer"] == "test"
        assert not (tmp_path / "out.safetensors").exists()  # moved, not copied
        await engine.training.delete_character(mara.id)
        assert not installed.exists() and not (settings.characters_dir / mara.id).exists()


async def test_names_and_trigger_words_stay_unique_on_update(engine: Engine) -> None:
    mara = await engine.characters.create("Mara")
    await engine.characters.create("Ada", trigger_word="ada_person")
    with pytest.raises(Conflict, match="named 'ada' already exists"):
        await engine.characters.update(mara.id, name="ada")
    with pytest.raises(Conflict, match="trigger word 'ada_person'"):
        await engine.characters.update(mara.id, trigger_word="ada_person")
    renamed = await engine.characters.update(mara.id, name="Mara Quinn", description="explorer")
    assert renamed.name == "Mara Quinn" and renamed.trigger_word == "mara_person"
    with pytest.raises(InvalidInput, match="has no LoRA v3"):
        await engine.characters.update(mara.id, active_version=3)
