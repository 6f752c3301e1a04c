"""Characters on ComfyUI: a trained LoRA delivered to the servers' LoRA folder and used by name.

The fake ComfyUI runs as a real server whose `models/loras` is a real folder on disk (listed
recursively and re-read on every /object_info, as ComfyUI does), and `ATELIER_COMFYUI_LORAS_DIR`
points at it, as on a box where Atelier and ComfyUI share that folder. A version trained by a
diffusion trainer is recorded the way a finished training records it (`Characters.keep_lora`
with a real safetensors file). Covered: the installed file and its name, the LoraLoader (and
FLUX's LoraLoaderModelOnly) a run naming the character carries, the trigger word, what the run
records, refusal before any GPU time when the servers do not list the LoRA, preview-trained
LoRAs refused on ComfyUI, installing by hand without `ATELIER_COMFYUI_LORAS_DIR`, the model
lists re-read after a training keeps a LoRA, and deleting a character.
"""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest

from core.characters.catalog import Upload
from core.characters.models import Character
from core.engine import Engine
from core.errors import InvalidInput
from core.models import RunStatus
from core.training import safetensors
from tests.character_images import photo
from tests.fakes.comfyui import FakeComfyUI
from tests.test_comfyui_backend import SMALL, comfyui_engine, finished, nodes_of, only_node, posted_prompts

pytestmark = pytest.mark.anyio

BEACH = "walking on a beach at dawn"


def lora_file(path: Path, rank: int = 4) -> Path:
    """A small but real LoRA-shaped safetensors file, as a trainer leaves it."""
    tensors = {
        "lora_unet_down.lora_down.weight": ("F16", (rank, 8), bytes(2 * rank * 8)),
        "lora_unet_down.lora_up.weight": ("F16", (8, rank), bytes(2 * 8 * rank)),
    }
    safetensors.write(path, tensors, {"ss_network_dim": str(rank)})
    return path


async def trained_by_aitoolkit(engine: Engine, tmp_path: Path, name: str, **create: Any) -> Character:
    """A character with a v1 recorded exactly as a finished ai-toolkit training records it."""
    character = await engine.characters.create(name, **create)
    source = lora_file(tmp_path / f"{character.id}-final.safetensors")
    await engine.characters.keep_lora(
        character.id,
        source,
        trainer="aitoolkit",
        base_model="flux",
        steps=10,
        run_id="01TRAININGRUN0000000000000",
    )
    return await engine.characters.get(character.id)


async def models_reread(engine: Engine) -> None:
    """What the engine does once a training has kept a LoRA (the training kind's `on_lora_kept`)."""
    await engine.backends["comfyui"].refresh_models()


@asynccontextmanager
async def shared_loras(tmp_path: Path, **settings: Any) -> AsyncIterator[tuple[Engine, FakeComfyUI, Path]]:
    """An engine on a fake ComfyUI whose LoRA folder is also ATELIER_COMFYUI_LORAS_DIR."""
    loras = tmp_path / "ComfyUI" / "models" / "loras"
    loras.mkdir(parents=True)
    fake = FakeComfyUI(loras_dir=loras)
    async with comfyui_engine(tmp_path, fake, comfyui_loras_dir=loras, **settings) as engine:
        yield engine, fake, loras


async def test_a_kept_lora_is_installed_and_a_run_naming_the_character_loads_it(tmp_path: Path) -> None:
    async with shared_loras(tmp_path) as (engine, fake, loras):
        mara = await trained_by_aitoolkit(engine, tmp_path, "Mara Quinn", description="an explorer")
        assert mara.active is not None and mara.active.comfyui_name == "atelier/mara-quinn-v1.safetensors"
        installed = loras / "atelier" / "mara-quinn-v1.safetensors"
        kept = engine.characters.lora_path(mara, mara.active)
        assert installed.read_bytes() == kept.read_bytes()
        assert [p.name for p in installed.parent.iterdir()] == [installed.name]  # no temporary file left
        await models_reread(engine)

        run = await engine.submit_image(
            {"prompt": BEACH, "seed": 3, **SMALL, "character": "mara quinn", "character_strength": 0.7}
        )
        done = await finished(engine, run.id)

    assert done.status is RunStatus.COMPLETED, done.error
    assert done.inputs["prompt"] == f"maraquinn_person, {BEACH}"
    assert done.inputs["character"] == {
        "id": mara.id,
        "name": "Mara Quinn",
        "version": 1,
        "trigger_word": "maraquinn_person",
        "strength": 0.7,
        "trainer": "aitoolkit",
        "lora_file": "mara-quinn-v1.safetensors",
    }
    [posted] = posted_prompts(fake)
    graph = posted["prompt"]
    lora = only_node(graph, "LoraLoader")["inputs"]
    assert lora["lora_name"] == "atelier/mara-quinn-v1.safetensors"
    assert lora["strength_model"] == lora["strength_clip"] == 0.7
    texts = [node["inputs"]["text"] for node in nodes_of(graph, "CLIPTextEncode").values()]
    assert f"maraquinn_person, {BEACH}" in texts


async def test_a_flux_workflow_loads_the_characters_lora_into_the_model_only(tmp_path: Path) -> None:
    async with shared_loras(tmp_path) as (engine, fake, _):
        await trained_by_aitoolkit(engine, tmp_path, "Mara")
        await models_reread(engine)
        run = await engine.submit_image(
            {"prompt": BEACH, "seed": 3, **SMALL, "workflow": "flux-dev", "character": "Mara"}
        )
        done = await finished(engine, run.id)
    assert done.status is RunStatus.COMPLETED, done.error
    [posted] = posted_prompts(fake)
    lora = only_node(posted["prompt"], "LoraLoaderModelOnly")["inputs"]
    assert (lora["lora_name"], lora["strength_model"]) == ("atelier/mara-v1.safetensors", 0.8)
    assert not nodes_of(posted["prompt"], "LoraLoader")


async def test_a_lora_the_servers_do_not_list_is_refused_before_any_gpu_time(tmp_path: Path) -> None:
    async with shared_loras(tmp_path) as (engine, fake, loras):
        mara = await trained_by_aitoolkit(engine, tmp_path, "Mara")
        (loras / "atelier" / "mara-v1.safetensors").unlink()  # someone cleaned ComfyUI's folder
        listed = await engine.images.list_models()  # what the servers list now
        assert "atelier/mara-v1.safetensors" not in listed["models"]["loras"]
        with pytest.raises(InvalidInput) as refused:
            await engine.submit_image({"prompt": BEACH, "seed": 3, **SMALL, "character": "Mara"})
        assert refused.value.field == "character"
        message = str(refused.value)
        assert "Mara's LoRA v1 is not installed on ComfyUI" in message
        assert "'atelier/mara-v1.safetensors'" in message
        assert f"ATELIER_HOME/characters/{mara.id}/loras/mara-v1.safetensors" in message
        assert (await engine.list_runs()).items == []
        assert posted_prompts(fake) == []


async def test_a_preview_trained_lora_is_not_installed_and_is_refused_on_comfyui(tmp_path: Path) -> None:
    async with shared_loras(tmp_path, preview_train_step_ms=0) as (engine, fake, loras):
        mara = await engine.characters.create("Mara")
        await engine.characters.add_images(mara.id, [Upload(f"m{i}.png", photo(i)) for i in range(3)])
        reads_before = len(fake.requests_to("GET", "/object_info"))
        training = await engine.training.submit(mara.id, {"steps": 20})
        done = await engine.wait(training.id, timeout_s=60)
        assert done.status is RunStatus.COMPLETED, done.error
        # The engine had the servers' model lists re-read once the LoRA was kept.
        assert len(fake.requests_to("GET", "/object_info")) == reads_before + 1
        assert not (loras / "atelier").exists()  # a colour style is no LoRA for ComfyUI
        with pytest.raises(InvalidInput) as refused:
            await engine.submit_image({"prompt": BEACH, "seed": 3, **SMALL, "character": "Mara"})
        assert "made by the preview trainer, which ComfyUI cannot load" in str(refused.value)
        assert "ATELIER_TRAINER=aitoolkit" in str(refused.value)
        assert posted_prompts(fake) == []


async def test_without_a_shared_folder_the_error_says_where_the_file_is_and_a_copy_by_hand_works(
    tmp_path: Path,
) -> None:
    loras = tmp_path / "ComfyUI" / "models" / "loras"
    loras.mkdir(parents=True)
    fake = FakeComfyUI(loras_dir=loras)
    async with comfyui_engine(tmp_path, fake) as engine:  # no ATELIER_COMFYUI_LORAS_DIR
        mara = await trained_by_aitoolkit(engine, tmp_path, "Mara")
        assert mara.active is not None and mara.active.comfyui_name is None
        assert not any(loras.iterdir())
        with pytest.raises(InvalidInput) as refused:
            await engine.submit_image({"prompt": BEACH, "seed": 3, **SMALL, "character": "Mara"})
        message = str(refused.value)
        where = f"ATELIER_HOME/characters/{mara.id}/loras/mara-v1.safetensors"
        assert where in message and "ATELIER_COMFYUI_LORAS_DIR" in message
        assert "models/loras/atelier/mara-v1.safetensors" in message

        # Do what it says: copy the file from the home into ComfyUI's folder as atelier/<file>.
        (loras / "atelier").mkdir()
        shutil.copyfile(
            engine.settings.home / where.removeprefix("ATELIER_HOME/"),
            loras / "atelier" / "mara-v1.safetensors",
        )
        # Trying again is enough: a refusal over a missing model has the servers' lists re-read.
        with anyio.fail_after(10):
            while True:
                try:
                    run = await engine.submit_image(
                        {"prompt": BEACH, "seed": 3, **SMALL, "character": "Mara"}
                    )
                    break
                except InvalidInput:
                    await anyio.sleep(0.05)
        done = await finished(engine, run.id)
    assert done.status is RunStatus.COMPLETED, done.error
    [posted] = posted_prompts(fake)
    assert only_node(posted["prompt"], "LoraLoader")["inputs"]["lora_name"] == "atelier/mara-v1.safetensors"


async def test_characters_sharing_a_slug_get_their_own_installed_files_and_deletion_removes_one(
    tmp_path: Path,
) -> None:
    async with shared_loras(tmp_path) as (engine, _, loras):
        first = await trained_by_aitoolkit(engine, tmp_path, "Mara!")
        second = await trained_by_aitoolkit(engine, tmp_path, "Mara?")
        assert first.active is not None and second.active is not None
        assert first.active.comfyui_name == "atelier/mara-v1.safetensors"
        suffix = second.id.removeprefix("char-")
        assert second.active.comfyui_name == f"atelier/mara-{suffix}-v1.safetensors"
        assert sorted(p.name for p in (loras / "atelier").iterdir()) == sorted(
            ["mara-v1.safetensors", f"mara-{suffix}-v1.safetensors"]
        )
        await engine.training.delete_character(first.id)
        assert [p.name for p in (loras / "atelier").iterdir()] == [f"mara-{suffix}-v1.safetensors"]
        await models_reread(engine)
        run = await engine.submit_image({"prompt": BEACH, "seed": 3, **SMALL, "character": "Mara?"})
        assert (await finished(engine, run.id)).status is RunStatus.COMPLETED


async def test_a_character_without_a_trained_lora_is_named_and_told_to_train(tmp_path: Path) -> None:
    async with shared_loras(tmp_path) as (engine, fake, _):
        await engine.characters.create("Mara")
        with pytest.raises(InvalidInput, match="Mara has no trained LoRA yet: train it first"):
            await engine.submit_image({"prompt": BEACH, "seed": 3, **SMALL, "character": "Mara"})
        assert posted_prompts(fake) == []
