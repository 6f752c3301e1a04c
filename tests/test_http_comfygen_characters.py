"""Generation by character through the ComfyUI generation server contract (/comfygen).

A real uvicorn server over a real engine with the preview renderer and the preview trainer: a
character is trained, then `POST /generate` names it (Atelier's `character` and
`character_strength` extension fields); the run records the character and its LoRA version,
the prompt starts with the trigger word, and the picture moves toward the character's colours.
Refusals are 422 in FastAPI's shape, naming the field.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from core.characters.catalog import Upload
from core.models import RunStatus
from tests.character_images import distance, mean_colour, photo
from tests.http_served import Served, atelier_http
from tests.test_http_comfygen import poll_until_final, submit

pytestmark = pytest.mark.anyio

RED = (200, 60, 40)
BEACH = {"prompt": "a portrait on a beach at dawn", "seed": 7, "width": 256, "height": 256, "steps": 2}


async def trained_mara(served: Served) -> str:
    engine = served.engine
    mara = await engine.characters.create("Mara", "a red-haired explorer")
    await engine.characters.add_images(
        mara.id, [Upload(f"mara-{i}.png", photo(i, tint=RED)) for i in range(6)]
    )
    training = await engine.training.submit(mara.id, {"steps": 100})
    done = await engine.wait(training.id, timeout_s=60)
    assert done.status is RunStatus.COMPLETED, done.error
    return mara.id


async def image_of(served: Served, status: dict[str, Any]) -> bytes:
    response = await served.http.get(status["image_url"])
    assert response.status_code == 200
    return response.content


async def test_a_job_naming_a_character_uses_its_lora_and_records_it(tmp_path: Path) -> None:
    async with atelier_http(tmp_path, preview_train_step_ms=0) as served:
        mara = await trained_mara(served)
        plain_id = await submit(served, BEACH)
        styled_id = await submit(served, {**BEACH, "character": "mara", "character_strength": 1.0})
        plain = await poll_until_final(served, plain_id)
        styled = await poll_until_final(served, styled_id)
        assert styled["status"] == "completed", styled["error"]
        run = await served.engine.get_run(styled_id)
        plain_png, styled_png = await image_of(served, plain), await image_of(served, styled)

    used = run.inputs["character"]
    assert (used["id"], used["name"], used["version"], used["strength"]) == (mara, "Mara", 1, 1.0)
    assert used["trainer"] == "preview"
    assert run.inputs["prompt"] == "mara_person, a portrait on a beach at dawn"
    assert run.meta["door"] == "comfygen"
    training_mean = mean_colour(photo(0, tint=RED))
    assert distance(mean_colour(styled_png), training_mean) < 0.8 * distance(
        mean_colour(plain_png), training_mean
    )


async def test_a_character_by_id_gets_the_default_strength(tmp_path: Path) -> None:
    async with atelier_http(tmp_path, preview_train_step_ms=0) as served:
        mara = await trained_mara(served)
        job = await submit(served, {**BEACH, "character": mara})
        assert (await poll_until_final(served, job))["status"] == "completed"
        run = await served.engine.get_run(job)
    assert (run.inputs["character"]["id"], run.inputs["character"]["strength"]) == (mara, 0.8)


@pytest.mark.parametrize(
    ("extra", "field", "words"),
    [
        ({"character": "Nobody"}, "character", "Character Nobody not found"),
        ({"character": "Blank"}, "character", "Blank has no trained LoRA yet: train it first"),
        ({"character_strength": 0.5}, "character_strength", "only used together with character"),
        ({"character": "Blank", "character_strength": 3}, "character_strength", "0..2"),
        ({"character": 12}, "character", "string"),
    ],
)
async def test_bad_character_fields_are_422_naming_the_field(
    tmp_path: Path, extra: dict[str, Any], field: str, words: str
) -> None:
    async with atelier_http(tmp_path) as served:
        await served.engine.characters.create("Blank")
        response = await served.http.post("/comfygen/generate", json={**BEACH, **extra})
        assert response.status_code == 422, response.text
        [detail] = response.json()["detail"]
        assert detail["loc"] == ["body", field]
        assert words in detail["msg"]
        assert (await served.engine.list_runs()).items == []
