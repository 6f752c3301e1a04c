"""The built-in preview backend: deterministic pictures, honest progress, anyio cancellation."""

from __future__ import annotations

import hashlib
import io
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import anyio
import pytest
from PIL import Image, ImageChops, ImageStat

from core.backends import ImageOutput, Job, Progress, local
from core.backends.local import LocalPreviewBackend, render_png
from core.models import ImageSpec

REPO_ROOT = Path(__file__).resolve().parents[1]
FOX = "a red fox in a snowy forest at sunset"
OCEAN = "ocean waves under a night sky"


def _open(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def _spec(**overrides: object) -> ImageSpec:
    fields: dict[str, object] = {"prompt": FOX, "seed": 1, "width": 64, "height": 64, "steps": 4, "count": 1}
    fields.update(overrides)
    return ImageSpec(**fields)


def _job(**overrides: object) -> Job:
    return Job("run", 1, _spec(**overrides))


# --- render_png -----------------------------------------------------------------------------


def test_same_inputs_give_identical_bytes() -> None:
    assert render_png(FOX, "blurry", 7, 128, 96) == render_png(FOX, "blurry", 7, 128, 96)


def test_same_inputs_give_identical_bytes_in_a_fresh_process() -> None:
    # A different PYTHONHASHSEED proves nothing depends on the per-process salted hash().
    code = (
        "import hashlib, sys\n"
        "from core.backends.local import render_png\n"
        f"data = render_png({FOX!r}, 'blurry', 7, 128, 96)\n"
        "sys.stdout.write(hashlib.sha256(data).hexdigest())\n"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, env=env, capture_output=True, text=True, check=True
    )
    assert done.stdout == hashlib.sha256(render_png(FOX, "blurry", 7, 128, 96)).hexdigest()


def test_importing_the_backend_does_not_import_pillow() -> None:
    code = "import sys, core.backends.local\nsys.stdout.write(str('PIL' in sys.modules))\n"
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, check=True
    )
    assert done.stdout == "False"


def test_different_prompts_look_visibly_different() -> None:
    fox, ocean = _open(render_png(FOX, "", 1, 128, 128)), _open(render_png(OCEAN, "", 1, 128, 128))
    assert fox.tobytes() != ocean.tobytes()
    # Share of pixels whose strongest channel differs by more than 32 of 255.
    diff = ImageChops.difference(fox, ocean).convert("L").point(lambda v: 255 if v > 32 else 0)
    changed = ImageStat.Stat(diff).mean[0] / 255
    assert changed > 0.3
    mean_fox, mean_ocean = ImageStat.Stat(fox).mean, ImageStat.Stat(ocean).mean
    assert max(abs(a - b) for a, b in zip(mean_fox, mean_ocean, strict=True)) > 20


def test_colour_words_bias_the_palette() -> None:
    red = ImageStat.Stat(_open(render_png("red", "", 3, 64, 64))).mean
    blue = ImageStat.Stat(_open(render_png("blue", "", 3, 64, 64))).mean
    assert red[0] > red[2] + 40
    assert blue[2] > blue[0] + 40


def test_different_seed_gives_different_bytes() -> None:
    assert render_png(FOX, "", 1, 64, 64) != render_png(FOX, "", 2, 64, 64)


def test_negative_prompt_changes_the_picture() -> None:
    assert render_png(FOX, "", 1, 64, 64) != render_png(FOX, "fox", 1, 64, 64)


@pytest.mark.parametrize(("width", "height"), [(64, 64), (96, 64), (64, 200), (512, 512)])
def test_output_is_a_valid_png_of_the_requested_size(width: int, height: int) -> None:
    data = render_png(FOX, "", 1, width, height)
    assert data.startswith(b"\x89PNG\r\n\x1a\n")
    image = _open(data)
    assert image.format == "PNG"
    assert image.size == (width, height)
    assert image.mode == "RGB"


@pytest.mark.parametrize("prompt", ["a the of", "!!!", "x" * 4000, "word " * 800, "café über straße"])
def test_odd_prompts_still_render(prompt: str) -> None:
    assert _open(render_png(prompt, prompt, 1, 64, 64)).size == (64, 64)


# --- LocalPreviewBackend.run ------------------------------------------------------------------


@pytest.mark.anyio
async def test_run_returns_count_distinct_pngs() -> None:
    outputs = await LocalPreviewBackend(step_ms=0).run(_job(count=3, width=96, height=64), lambda p: None)
    assert len(outputs) == 3
    assert len({o.data for o in outputs}) == 3
    for output in outputs:
        assert isinstance(output, ImageOutput)
        assert (output.media_type, output.extension, output.width, output.height) == (
            "image/png",
            "png",
            96,
            64,
        )
        assert _open(output.data).size == (96, 64)


@pytest.mark.anyio
async def test_image_i_uses_seed_plus_i_wrapping_at_2_32() -> None:
    spec = _spec(count=2, seed=2**32 - 1)
    outputs = await LocalPreviewBackend(step_ms=0).run(Job("r", 1, spec), lambda p: None)
    assert outputs[0].data == render_png(FOX, "", 2**32 - 1, 64, 64)
    assert outputs[1].data == render_png(FOX, "", 0, 64, 64)


@pytest.mark.anyio
async def test_progress_reports_every_step_in_order() -> None:
    seen: list[Progress] = []
    await LocalPreviewBackend(step_ms=0).run(_job(steps=7), seen.append)
    assert [p.step for p in seen] == list(range(1, 8))
    assert {p.max_steps for p in seen} == {7}
    assert seen[-1].fraction == 1.0


@pytest.mark.anyio
async def test_step_time_is_honoured() -> None:
    started = time.perf_counter()
    await LocalPreviewBackend(step_ms=50).run(_job(steps=4), lambda p: None)
    assert time.perf_counter() - started >= 0.18


@pytest.mark.anyio
async def test_zero_step_ms_never_sleeps(monkeypatch: pytest.MonkeyPatch) -> None:
    async def no_sleep(delay: float) -> None:
        raise AssertionError(f"slept {delay}s with step_ms=0")

    monkeypatch.setattr(anyio, "sleep", no_sleep)
    seen: list[Progress] = []
    await LocalPreviewBackend(step_ms=0).run(_job(steps=20), seen.append)
    assert len(seen) == 20


@pytest.mark.anyio
async def test_big_images_render_off_the_event_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    threads: list[int] = []

    def recording_render(*args: object) -> bytes:
        threads.append(threading.get_ident())
        return render_png(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(local, "render_png", recording_render)
    backend = LocalPreviewBackend(step_ms=0)
    await backend.run(_job(width=64, height=64), lambda p: None)
    await backend.run(_job(width=512, height=512), lambda p: None)
    loop_thread = threading.get_ident()
    assert threads[0] == loop_thread  # tiny: inline, a thread hop would cost more than the render
    assert threads[1] != loop_thread  # big: in a worker thread


@pytest.mark.anyio
async def test_cancelling_stops_the_run_without_output() -> None:
    seen: list[Progress] = []
    results: list[list[ImageOutput]] = []
    backend = LocalPreviewBackend(step_ms=20)

    async def go() -> None:
        results.append(await backend.run(_job(steps=50), seen.append))

    with anyio.fail_after(5):
        async with anyio.create_task_group() as group:
            group.start_soon(go)
            while len(seen) < 2:
                await anyio.sleep(0.005)
            group.cancel_scope.cancel()

    assert results == []
    assert 2 <= len(seen) < 50
    assert seen[-1].step < 50


@pytest.mark.anyio
async def test_health() -> None:
    health = await LocalPreviewBackend(step_ms=10, concurrency=3).health()
    assert health == {"up": True, "kind": "preview", "step_ms": 10, "concurrency": 3}


def test_backend_identity_and_bad_settings() -> None:
    backend = LocalPreviewBackend()
    assert (backend.name, backend.concurrency, backend.step_ms) == ("local", 2, 25.0)
    with pytest.raises(ValueError, match="step_ms"):
        LocalPreviewBackend(step_ms=-1)
    with pytest.raises(ValueError, match="concurrency"):
        LocalPreviewBackend(concurrency=0)
