"""The preview trainer: a real style file learnt from a character's images, and the renderer using it."""

from __future__ import annotations

import hashlib
import io
import json
import math
import random
import struct
from pathlib import Path
from typing import Any

import anyio
import pytest
from PIL import Image, ImageStat

from core.backends import Job, Progress
from core.backends.local import LocalPreviewBackend
from core.models import ImageSpec
from core.training import TrainedLora, TrainingImage, TrainingJob, safetensors
from core.training.parameters import check_parameters
from core.training.preview import CHECKPOINT_NAME, PreviewTrainer

OCEAN = "ocean waves under a night sky"


def _warm_photo(index: int, size: int = 256) -> Image.Image:
    """A photo-like reddish-orange picture: a diagonal gradient, a darker blob, grain."""
    rng = random.Random(index)
    gradient = Image.linear_gradient("L").rotate(rng.uniform(0, 360)).resize((size, size))
    grain = Image.effect_noise((size, size), 40)
    red = Image.blend(gradient.point(lambda v: 170 + v * 80 // 255), grain, 0.2)
    green = Image.blend(gradient.point(lambda v: 50 + v * 110 // 255), grain, 0.2)
    blue = Image.blend(gradient.point(lambda v: 10 + v * 40 // 255), grain, 0.15)
    picture = Image.merge("RGB", (red, green, blue))
    blob = Image.new("RGB", (size // 3, size // 3), (110 + rng.randrange(30), 30, 15))
    picture.paste(blob, (rng.randrange(size // 2), rng.randrange(size // 2)))
    return picture


def _training_set(folder: Path, count: int = 6) -> tuple[TrainingImage, ...]:
    folder.mkdir(parents=True, exist_ok=True)
    images = []
    for index in range(count):
        path = folder / f"mara-{index}.{'jpg' if index % 2 else 'png'}"
        _warm_photo(index).save(path)
        images.append(TrainingImage(path, f"a photo of mara_tok, picture {index}"))
    return tuple(images)


def _job(tmp_path: Path, images: tuple[TrainingImage, ...], **params: Any) -> TrainingJob:
    workdir = tmp_path / "run"
    workdir.mkdir(parents=True, exist_ok=True)
    checked = check_parameters(PreviewTrainer().parameters(), {"steps": 300, **params})
    return TrainingJob("run-1", 1, "char-1", "mara-v1", "mara_tok", images, checked, workdir)


def _mean_colour(images: tuple[TrainingImage, ...]) -> list[float]:
    means = [ImageStat.Stat(Image.open(image.path).convert("RGB")).mean for image in images]
    return [sum(m[c] for m in means) / len(means) for c in range(3)]


def _distance(a: list[float], b: list[float]) -> float:
    return math.dist(a, b)


def _png_mean(data: bytes) -> list[float]:
    return ImageStat.Stat(Image.open(io.BytesIO(data)).convert("RGB")).mean


async def _train(trainer: PreviewTrainer, job: TrainingJob) -> tuple[TrainedLora, list[Progress]]:
    seen: list[Progress] = []
    return await trainer.train(job, seen.append), seen


# --- what is learnt and saved ---------------------------------------------------------------


def test_declares_which_parameters_it_really_uses() -> None:
    declared = PreviewTrainer().parameters()
    assert {name for name, p in declared.items() if p.wired} == {
        "steps",
        "learning_rate",
        "resolution",
        "batch_size",
    }
    assert not declared["lora_rank"].wired and not declared["optimizer"].wired
    assert declared["steps"].default == 500 and declared["steps"].maximum == 20000


@pytest.mark.anyio
async def test_training_saves_a_safetensors_file_labelled_as_a_preview_style(tmp_path: Path) -> None:
    job = _job(tmp_path, _training_set(tmp_path / "images"))
    lora, _ = await _train(PreviewTrainer(step_ms=0), job)

    assert lora.path == job.workdir / "mara-v1.safetensors" and lora.steps == 300
    assert lora.base_model == "preview-style" and lora.resumed_from_step == 0
    header = safetensors.read_header(lora.path)
    assert header["palette"]["shape"] == [6, 3] and header["tone_curve"]["shape"] == [3, 256]
    metadata = safetensors.read_metadata(lora.path)
    assert metadata["atelier.kind"] == "preview-style" and metadata["atelier.trainer"] == "preview"
    assert metadata["trigger_word"] == "mara_tok" and metadata["steps"] == "300"
    assert "not a diffusion LoRA" in metadata["note"]
    assert dict(lora.metadata) == metadata


@pytest.mark.anyio
async def test_learnt_colours_are_the_training_images_colours(tmp_path: Path) -> None:
    images = _training_set(tmp_path / "images")
    lora, _ = await _train(PreviewTrainer(step_ms=0), _job(tmp_path, images))
    tensors = safetensors.read_tensors(lora.path)

    learnt_mean = [v * 255 for v in struct.unpack("<3f", tensors["mean"][2])]
    assert _distance(learnt_mean, _mean_colour(images)) < 8  # from thumbnails: close, not exact
    palette = struct.unpack("<18f", tensors["palette"][2])
    weights = struct.unpack("<6f", tensors["palette_weight"][2])
    for index, weight in enumerate(weights):
        red, _, blue = palette[3 * index : 3 * index + 3]
        assert weight == 0 or red > blue  # every colour in use is warm
    curve = struct.unpack("<768f", tensors["tone_curve"][2])
    red_curve, blue_curve = curve[:256], curve[512:]
    assert list(red_curve) == sorted(red_curve)  # a quantile function never goes down
    assert red_curve[128] > 0.6 > 0.3 > blue_curve[128]  # the median red is high, the blue low


@pytest.mark.anyio
async def test_loss_falls_and_progress_counts_every_step(tmp_path: Path) -> None:
    _, seen = await _train(PreviewTrainer(step_ms=0), _job(tmp_path, _training_set(tmp_path / "images")))

    steps = [p for p in seen if p.loss is not None]
    assert [p.step for p in steps] == list(range(1, 301))
    assert all(p.max_steps == 300 for p in seen)
    assert steps[0].loss > 2 * steps[-1].loss  # type: ignore[operator]
    assert steps[-1].eta_s == 0


# --- cancel and resume ----------------------------------------------------------------------


@pytest.mark.anyio
async def test_cancel_stops_training_promptly_and_leaves_no_lora(tmp_path: Path) -> None:
    job = _job(tmp_path, _training_set(tmp_path / "images"), steps=5000)
    seen: list[Progress] = []

    with anyio.fail_after(10):
        async with anyio.create_task_group() as group:
            group.start_soon(PreviewTrainer(step_ms=2).train, job, seen.append)
            while len(seen) < 10:
                await anyio.sleep(0.005)
            cancelled_at = len(seen)
            group.cancel_scope.cancel()

    assert len(seen) - cancelled_at <= 1  # at most the step under way when the cancel came
    assert seen[-1].step < 5000
    assert not (job.workdir / "mara-v1.safetensors").exists()
    assert [p.name for p in job.workdir.iterdir() if p.name != CHECKPOINT_NAME] == []


async def _train_until(trainer: PreviewTrainer, job: TrainingJob, step: int) -> None:
    seen: list[Progress] = []
    with anyio.fail_after(20):
        async with anyio.create_task_group() as group:
            group.start_soon(trainer.train, job, seen.append)
            while not seen or seen[-1].step < step:
                await anyio.sleep(0.002)
            group.cancel_scope.cancel()


@pytest.mark.anyio
async def test_a_new_attempt_resumes_from_the_checkpoint_and_ends_as_if_never_stopped(
    tmp_path: Path,
) -> None:
    images = _training_set(tmp_path / "images")
    uninterrupted, _ = await _train(PreviewTrainer(step_ms=0), _job(tmp_path / "a", images))

    job = _job(tmp_path / "b", images)
    await _train_until(PreviewTrainer(step_ms=1, checkpoint_every=50), job, 120)
    saved = int(safetensors.read_metadata(job.workdir / CHECKPOINT_NAME)["step"])
    assert saved % 50 == 0 and 100 <= saved < 300
    resumed, seen = await _train(PreviewTrainer(step_ms=0, checkpoint_every=50), job)

    assert resumed.resumed_from_step == saved
    assert [p.step for p in seen if p.loss is not None][:2] == [saved, saved + 1]
    assert seen[-1].step == 300
    assert safetensors.read_tensors(resumed.path) == safetensors.read_tensors(uninterrupted.path)


@pytest.mark.anyio
async def test_a_checkpoint_of_other_images_is_not_resumed(tmp_path: Path) -> None:
    job = _job(tmp_path, _training_set(tmp_path / "images"))
    await _train_until(PreviewTrainer(step_ms=1, checkpoint_every=50), job, 60)
    other = _job(tmp_path, _training_set(tmp_path / "other", count=4))

    lora, _ = await _train(PreviewTrainer(step_ms=0), other)

    assert lora.resumed_from_step == 0


@pytest.mark.anyio
async def test_an_unreadable_image_fails_the_training_with_its_name(tmp_path: Path) -> None:
    images = _training_set(tmp_path / "images", count=2)
    images[1].path.write_bytes(b"not an image")
    from core.errors import BackendError

    with pytest.raises(BackendError, match=r"mara-1\.jpg") as raised:
        await _train(PreviewTrainer(step_ms=0), _job(tmp_path, images))
    assert raised.value.retryable is False


# --- the preview renderer applying the style ------------------------------------------------


@pytest.fixture
async def style(tmp_path: Path) -> tuple[bytes, list[float]]:
    images = _training_set(tmp_path / "images")
    lora, _ = await _train(PreviewTrainer(step_ms=0), _job(tmp_path, images))
    return lora.path.read_bytes(), _mean_colour(images)


def _render_job(styles: tuple[tuple[bytes, float], ...] = (), **spec: Any) -> Job:
    fields: dict[str, Any] = {"prompt": OCEAN, "seed": 7, "width": 256, "height": 192, "steps": 2}
    return Job("run-2", 1, ImageSpec(**{**fields, **spec}), styles=styles)


@pytest.mark.anyio
async def test_a_styled_render_moves_toward_the_characters_colours(style: tuple[bytes, list[float]]) -> None:
    data, training_mean = style
    backend = LocalPreviewBackend(step_ms=0)

    plain = (await backend.run(_render_job(), lambda p: None))[0].data
    half = (await backend.run(_render_job(((data, 0.5),)), lambda p: None))[0].data
    full = (await backend.run(_render_job(((data, 1.0),)), lambda p: None))[0].data

    plain_distance = _distance(_png_mean(plain), training_mean)
    half_distance = _distance(_png_mean(half), training_mean)
    full_distance = _distance(_png_mean(full), training_mean)
    assert full_distance < half_distance < plain_distance
    assert full_distance < plain_distance / 3


@pytest.mark.anyio
async def test_a_styled_render_is_deterministic(style: tuple[bytes, list[float]]) -> None:
    data, _ = style
    backend = LocalPreviewBackend(step_ms=0)
    job = _render_job(((data, 0.8),), width=64, height=64, count=2)

    first = [image.data for image in await backend.run(job, lambda p: None)]
    second = [image.data for image in await backend.run(job, lambda p: None)]

    assert first == second and first[0] != first[1]


@pytest.mark.anyio
async def test_image_to_image_and_upscale_take_the_style_too(style: tuple[bytes, list[float]]) -> None:
    data, training_mean = style
    backend = LocalPreviewBackend(step_ms=0)
    buffer = io.BytesIO()
    Image.new("RGB", (96, 64), (30, 60, 160)).save(buffer, "PNG")
    source = buffer.getvalue()
    stored = {
        "sha256": hashlib.sha256(source).hexdigest(),
        "media_type": "image/png",
        "width": 96,
        "height": 64,
    }
    img2img = {"operation": "img2img", "denoise": 0.8, "source": stored}
    upscale = {"operation": "upscale", "scale": 2.0, "source": stored}

    for spec in (img2img, upscale):
        plain = _render_job(**spec)
        styled = _render_job(((data, 1.0),), **spec)
        plain.source = styled.source = source
        without = (await backend.run(plain, lambda p: None))[0].data
        with_style = (await backend.run(styled, lambda p: None))[0].data
        assert _distance(_png_mean(with_style), training_mean) < _distance(_png_mean(without), training_mean)


@pytest.mark.anyio
async def test_a_file_that_is_not_a_preview_style_fails_the_render_plainly(tmp_path: Path) -> None:
    from core.errors import BackendError

    other = tmp_path / "other.safetensors"
    safetensors.write(other, {"lora_down.weight": ("F16", (2, 2), bytes(8))}, {})
    backend = LocalPreviewBackend(step_ms=0)

    with pytest.raises(BackendError, match="preview style") as raised:
        await backend.run(_render_job(((other.read_bytes(), 1.0),)), lambda p: None)
    assert raised.value.retryable is False


# --- the safetensors format -----------------------------------------------------------------


def test_safetensors_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "t.safetensors"
    tensors = {
        "a": ("F32", (2, 3), struct.pack("<6f", *range(6))),
        "b": ("I32", (4,), struct.pack("<4i", 1, -2, 3, -4)),
        "c": ("F16", (1,), b"\x00\x3c"),
    }
    safetensors.write(path, tensors, {"atelier.kind": "test"})

    assert safetensors.read_tensors(path) == tensors
    assert safetensors.read_metadata(path) == {"atelier.kind": "test"}
    length = struct.unpack("<Q", path.read_bytes()[:8])[0]
    assert length % 8 == 0
    assert json.loads(path.read_bytes()[8 : 8 + length])["b"]["data_offsets"] == [24, 40]
    assert [p.name for p in tmp_path.iterdir()] == ["t.safetensors"]  # no temp file left


def _forged(tmp_path: Path, header: dict[str, Any], data: bytes, length: int | None = None) -> Path:
    encoded = json.dumps(header).encode()
    path = tmp_path / "forged.safetensors"
    path.write_bytes(struct.pack("<Q", len(encoded) if length is None else length) + encoded + data)
    return path


def test_read_header_refuses_a_truncated_file(tmp_path: Path) -> None:
    path = tmp_path / "t.safetensors"
    safetensors.write(path, {"a": ("F32", (4,), bytes(16))}, {})
    path.write_bytes(path.read_bytes()[:-5])

    with pytest.raises(ValueError, match="end at byte"):
        safetensors.read_header(path)
    path.write_bytes(b"\x05\x00")
    with pytest.raises(ValueError, match="too short"):
        safetensors.read_header(path)


def test_read_header_refuses_a_header_length_beyond_the_file(tmp_path: Path) -> None:
    path = _forged(tmp_path, {"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}, bytes(4), 10**6)

    with pytest.raises(ValueError, match="does not fit"):
        safetensors.read_header(path)


def test_read_header_refuses_overlapping_offsets(tmp_path: Path) -> None:
    header = {
        "a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
        "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]},
    }
    with pytest.raises(ValueError, match="overlapping"):
        safetensors.read_header(_forged(tmp_path, header, bytes(12)))


def test_read_header_refuses_offsets_that_disagree_with_the_shape_or_bad_json(tmp_path: Path) -> None:
    header = {"a": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}}
    with pytest.raises(ValueError, match="do not hold"):
        safetensors.read_header(_forged(tmp_path, header, bytes(8)))
    path = tmp_path / "junk.safetensors"
    path.write_bytes(struct.pack("<Q", 4) + b"{no}")
    with pytest.raises(ValueError, match="not JSON"):
        safetensors.read_header(path)
