"""Characters and training through the engine, with the embedded preview trainer: create, upload,
train, generate by character; the training lane, conflicts, deletion, and a restart mid-training."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import anyio
import pytest

from core.characters.catalog import Upload
from core.engine import Engine
from core.errors import CharacterNotFound, Conflict, InvalidInput
from core.models import RunKind, RunStatus
from core.settings import Settings
from tests.character_images import distance, mean_colour, photo
from tests.procs import atelier_command, atelier_env

pytestmark = pytest.mark.anyio

RED = (200, 60, 40)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings.from_env(
        {}, home=tmp_path / "home", local_step_ms=0, retry_backoff_s=0.01, preview_train_step_ms=0
    )


async def mara_with_images(engine: Engine, count: int = 6) -> str:
    mara = await engine.characters.create("Mara", "a red-haired explorer")
    report = await engine.characters.add_images(
        mara.id, [Upload(f"mara-{i}.png", photo(i, tint=RED)) for i in range(count)]
    )
    assert len(report.added) == count and not report.refused
    return mara.id


async def trained(engine: Engine, character: str, steps: int = 60) -> None:
    run = await engine.training.submit(character, {"steps": steps})
    done = await engine.wait(run.id, timeout_s=60)
    assert done.status is RunStatus.COMPLETED, done.error


async def test_a_character_is_created_with_a_trigger_word_and_found_by_name_or_id(engine: Engine) -> None:
    mara = await engine.characters.create("Mara Quinn", "explorer")
    assert mara.id.startswith("char-") and mara.trigger_word == "maraquinn_person"
    assert (await engine.characters.get("mara quinn")).id == mara.id
    assert (await engine.characters.get(mara.id)).name == "Mara Quinn"
    with pytest.raises(Conflict, match="already exists"):
        await engine.characters.create("MARA QUINN")
    with pytest.raises(InvalidInput, match="trigger_word"):
        await engine.characters.create("Other", trigger_word="Not Valid!")
    with pytest.raises(CharacterNotFound):
        await engine.characters.get("nobody")


async def test_training_without_images_is_refused_with_the_documented_words(engine: Engine) -> None:
    mara = await engine.characters.create("Mara")
    with pytest.raises(InvalidInput, match="No training images uploaded for this character"):
        await engine.training.submit(mara.id)
    with pytest.raises(CharacterNotFound):
        await engine.training.submit("char-000000000000")


async def test_bad_parameters_are_named_with_their_ranges(engine: Engine) -> None:
    mara = await mara_with_images(engine, 2)
    with pytest.raises(InvalidInput) as refused:
        await engine.training.submit(mara, {"steps": 0, "learning_rate": "fast", "colour": "red"})
    text = str(refused.value)
    assert "steps: must be an integer in" in text
    assert "learning_rate: must be a number" in text
    assert "colour: is not a parameter of this trainer" in text


async def test_training_makes_v1_active_and_the_run_says_what_it_made(
    engine: Engine, settings: Settings
) -> None:
    mara = await mara_with_images(engine)
    run = await engine.training.submit("Mara", {"steps": 80})
    assert run.kind is RunKind.TRAINING and run.backend == "training" and run.max_steps == 80
    done = await engine.wait(run.id, timeout_s=60)
    assert done.status is RunStatus.COMPLETED, done.error
    assert done.result is not None
    assert done.result["version"] == 1 and done.result["trainer"] == "preview"
    character = await engine.characters.get(mara)
    assert character.active is not None and character.active.run_id == run.id
    lora = engine.characters.lora_path(character, character.active)
    assert lora.is_file() and lora.stat().st_size == character.active.size
    assert not (settings.training_dir / run.id).exists()  # the working folder is cleaned up
    listed = await engine.list_runs(kind="training")
    assert [r.id for r in listed.items] == [run.id]
    assert any("trained Mara LoRA v1" in entry.message for entry in await engine.logs(run.id))


async def test_a_second_training_of_the_same_character_waits_its_turn(engine: Engine) -> None:
    mara = await mara_with_images(engine, 3)
    first = await engine.training.submit(mara, {"steps": 5000})
    with pytest.raises(Conflict, match="already being trained"):
        await engine.training.submit(mara, {"steps": 100})
    await engine.cancel(first.id)
    second = await engine.training.submit(mara, {"steps": 20})
    assert (await engine.wait(second.id, timeout_s=60)).status is RunStatus.COMPLETED


async def test_generation_by_character_moves_the_image_toward_the_characters_colours(engine: Engine) -> None:
    mara = await mara_with_images(engine)
    await trained(engine, mara, steps=100)
    asked = {"prompt": "a portrait on a beach at dawn", "seed": 7, "width": 256, "height": 256, "steps": 2}
    plain = await engine.submit_image(asked)
    styled = await engine.submit_image({**asked, "character": "Mara", "character_strength": 1.0})
    plain = await engine.wait(plain.id, timeout_s=30)
    styled = await engine.wait(styled.id, timeout_s=30)
    assert styled.status is RunStatus.COMPLETED, styled.error
    used = styled.inputs["character"]
    assert used["id"] == mara and used["version"] == 1 and used["strength"] == 1.0
    assert styled.inputs["prompt"].startswith("mara_person, ")
    training_mean = mean_colour(photo(0, tint=RED))
    _, plain_png = await engine.read_artifact(plain.id, plain.artifacts[0].filename)
    _, styled_png = await engine.read_artifact(styled.id, styled.artifacts[0].filename)
    assert distance(mean_colour(styled_png), training_mean) < 0.8 * distance(
        mean_colour(plain_png), training_mean
    )


async def test_retraining_does_not_change_what_a_finished_run_used(engine: Engine) -> None:
    mara = await mara_with_images(engine, 3)
    await trained(engine, mara, steps=20)
    first = await engine.wait((await engine.submit_image({"prompt": "mara", "character": mara})).id, 30)
    await trained(engine, mara, steps=20)
    assert (await engine.characters.get(mara)).active_version == 2
    again = await engine.get_run(first.id)
    assert again.inputs["character"]["version"] == 1


async def test_a_character_without_a_lora_cannot_be_generated_with(engine: Engine) -> None:
    await engine.characters.create("Mara")
    with pytest.raises(InvalidInput, match="Mara has no trained LoRA yet"):
        await engine.submit_image({"prompt": "a beach", "character": "Mara"})
    with pytest.raises(InvalidInput, match="character_strength"):
        await engine.submit_image({"prompt": "a beach", "character_strength": 0.5})


async def test_deleting_a_character_is_refused_while_it_trains_and_then_removes_its_files(
    engine: Engine, settings: Settings
) -> None:
    mara = await mara_with_images(engine, 3)
    await trained(engine, mara, steps=20)
    made = await engine.wait((await engine.submit_image({"prompt": "mara", "character": mara})).id, 30)
    training = await engine.training.submit(mara, {"steps": 5000})
    with pytest.raises(Conflict, match="cancel that run first"):
        await engine.training.delete_character(mara)
    await engine.cancel(training.id)
    await engine.training.delete_character(mara)
    assert not (settings.characters_dir / mara).exists()
    with pytest.raises(CharacterNotFound):
        await engine.characters.get(mara)
    kept = await engine.get_run(made.id)  # a finished run keeps its images and its record
    assert kept.artifacts and kept.inputs["character"]["name"] == "Mara"
    await engine.read_artifact(kept.id, kept.artifacts[0].filename)


async def test_image_runs_are_not_held_up_by_a_long_training(engine: Engine) -> None:
    mara = await mara_with_images(engine, 2)
    training = await engine.training.submit(mara, {"steps": 20000})
    image = await engine.submit_image({"prompt": "a lighthouse", "width": 64, "height": 64, "steps": 2})
    assert (await engine.wait(image.id, timeout_s=10)).status is RunStatus.COMPLETED
    assert (await engine.get_run(training.id)).status is RunStatus.RUNNING
    await engine.cancel(training.id)


async def test_a_training_stopped_by_a_restart_resumes_from_its_checkpoint(tmp_path: Path) -> None:
    settings = Settings.from_env({}, home=tmp_path / "home", local_step_ms=0, preview_train_step_ms=5)
    async with Engine.open(settings) as engine:
        mara = await mara_with_images(engine, 3)
        run = await engine.training.submit(mara, {"steps": 1000})
        with anyio.fail_after(30):
            while (await engine.get_run(run.id)).step < 400:
                await anyio.sleep(0.05)
        stopped_at = (await engine.get_run(run.id)).step
    handed = None
    async with Engine.open(settings) as engine:
        handed = await engine.wait(run.id, timeout_s=60)
    assert handed.status is RunStatus.COMPLETED, handed.error
    assert handed.attempts == 1  # a restart does not spend an attempt
    assert handed.result is not None and 0 < handed.result["resumed_from_step"] <= stopped_at


async def test_an_ai_toolkit_that_is_not_installed_is_reported_and_fails_its_runs_plainly(
    tmp_path: Path,
) -> None:
    settings = Settings.from_env({}, home=tmp_path / "home", local_step_ms=0, trainer="aitoolkit")
    async with Engine.open(settings) as engine:
        status = await engine.status()
        assert status["healthy"] is True  # image generation does not need the trainer
        assert status["trainer"]["ok"] is False and "ATELIER_AITOOLKIT_DIR" in status["trainer"]["reason"]
        mara = await mara_with_images(engine, 2)
        run = await engine.training.submit(mara, {"steps": 10})
        failed = await engine.wait(run.id, timeout_s=30)
        assert failed.status is RunStatus.FAILED and failed.attempts == 1
        assert "ai-toolkit cannot start" in (failed.error or "") and "ATELIER_AITOOLKIT_DIR" in (
            failed.error or ""
        )


async def test_a_gpu_out_of_memory_fails_the_run_at_once_saying_what_to_change(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "ai-toolkit"
    folder.mkdir()
    shutil.copyfile(Path(__file__).parent / "fakes" / "aitoolkit.py", folder / "run.py")
    monkeypatch.setenv("FAKE_AITOOLKIT_FAIL", "oom")  # the fake ai-toolkit's knob, read by its process
    settings = Settings.from_env(
        {}, home=tmp_path / "home", trainer="aitoolkit", aitoolkit_dir=folder, aitoolkit_python=sys.executable
    )
    async with Engine.open(settings) as engine:
        mara = await mara_with_images(engine, 2)
        run = await engine.training.submit(mara, {"steps": 10})
        failed = await engine.wait(run.id, timeout_s=30)
    assert failed.status is RunStatus.FAILED and failed.attempts == 1  # not retried: it cannot succeed
    assert "the GPU ran out of memory" in (failed.error or "")


async def test_a_cancelled_training_retried_resumes_and_deleting_it_removes_its_folder(
    tmp_path: Path,
) -> None:
    settings = Settings.from_env({}, home=tmp_path / "home", preview_train_step_ms=2)
    async with Engine.open(settings) as engine:
        mara = await mara_with_images(engine, 2)
        run = await engine.training.submit(mara, {"steps": 600})
        with anyio.fail_after(30):
            while (await engine.get_run(run.id)).step < 250:
                await anyio.sleep(0.05)
        cancelled = await engine.cancel(run.id)
        assert cancelled.status is RunStatus.CANCELLED
        assert (settings.training_dir / run.id).is_dir()  # its checkpoint waits for a retry
        await engine.retry(run.id)
        done = await engine.wait(run.id, timeout_s=60)
        assert done.status is RunStatus.COMPLETED and done.result is not None
        assert done.result["resumed_from_step"] >= 200
        assert any("resumed from the checkpoint" in e.message for e in await engine.logs(run.id))
        again = await engine.training.submit(mara, {"steps": 5000})
        with anyio.fail_after(30):
            while not (settings.training_dir / again.id).is_dir():
                await anyio.sleep(0.02)
        await engine.delete(again.id)
        assert not (settings.training_dir / again.id).exists()
        assert [v.version for v in (await engine.characters.get(mara)).versions] == [1]


async def test_the_command_line_lists_a_training_run_by_what_it_trains(tmp_path: Path) -> None:
    settings = Settings.from_env({}, home=tmp_path / "home", preview_train_step_ms=0)
    async with Engine.open(settings) as engine:
        mara = await mara_with_images(engine, 2)
        run = await engine.training.submit(mara, {"steps": 30})
        assert (await engine.wait(run.id, timeout_s=30)).status is RunStatus.COMPLETED
    listed = subprocess.run(
        [*atelier_command(), "runs", "--kind", "training"],
        env=atelier_env(settings.home),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert listed.returncode == 0, listed.stderr
    assert run.id in listed.stdout and "train Mara (preview, 30 steps)" in listed.stdout
