"""The embedded preview trainer: a character's colours learnt in seconds, with no GPU.

It learns real statistics from the character's images (a palette, a per-channel tone curve,
the mean and spread of their colours; see `core.training.style_fit`) over `steps` iterations
with a falling loss, and saves them as a real `.safetensors` file whose metadata says what it
is: a preview style, applied by the preview renderer (`core.backends.preview_style`), never a
diffusion LoRA. Runs record `trainer: preview` and base model `preview-style`.

It behaves like a real trainer where a user can see it:
  - `step_ms` (ATELIER_PREVIEW_TRAIN_STEP_MS) paces each step, so progress, ETA and cancel look
    as they would on a GPU; 0 runs at full speed (1,000 steps in about a second).
  - Every `checkpoint_every` steps its whole state goes to `<workdir>/checkpoint.safetensors`;
    a later attempt of the same run resumes from it, as ai-toolkit resumes from its last save.
    A checkpoint from other images or other parameters is ignored (training starts afresh).
  - The maths runs in worker threads in chunks of a few milliseconds, so the event loop stays
    free and a cancel lands within one chunk; the result file is written (atomically) only at
    the end, so a cancelled run leaves none.

Parameters: `steps`, `learning_rate` (Adam's step size for the tone curve), `resolution` (each
image is read as a thumbnail of 1/16 of it: 64 px at 1024) and `batch_size` (images whose pixels
each step sees) are used; `lora_rank`, `optimizer`, `scheduler` and `precision` are accepted and
recorded but mean nothing here (`wired: false`).
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread

from core.backends import Progress, ProgressCallback
from core.errors import BackendError
from core.training import LogCallback, TrainedLora, TrainerParameter, TrainingImage, TrainingJob, safetensors
from core.training.parameters import standard_parameters
from core.training.style_fit import Pixels, StyleFit, sample_pixels

CHECKPOINT_NAME = "checkpoint.safetensors"
KIND = "preview-style"
NOTE = "A preview style learnt from colours; not a diffusion LoRA"
# Thumbnails are this fraction of `resolution` on their longest side.
THUMBNAIL_DIVISOR = 16
# Most pixels kept from one image (a 2048 resolution gives 128x128 thumbnails).
MAX_PIXELS_PER_IMAGE = 4096
# Steps per worker-thread hop at full speed: a few milliseconds of maths, so cancel is prompt.
_CHUNK_STEPS = 20


class PreviewTrainer:
    """The preview trainer (see the module docstring)."""

    name = "preview"
    base_model = KIND

    def __init__(self, *, step_ms: float = 2.0, checkpoint_every: int = 100) -> None:
        if step_ms < 0:
            raise ValueError(f"step_ms must be >= 0 (got {step_ms})")
        if checkpoint_every < 1:
            raise ValueError(f"checkpoint_every must be >= 1 (got {checkpoint_every})")
        self.step_ms = step_ms
        self.checkpoint_every = checkpoint_every

    def parameters(self) -> dict[str, TrainerParameter]:
        """The standard parameters; those this trainer uses are wired, with defaults that suit it."""
        declared = standard_parameters(
            {"steps", "learning_rate", "resolution", "batch_size"},
            steps=500,
            learning_rate=5e-3,
            batch_size=4,
        )
        declared["learning_rate"] = replace(
            declared["learning_rate"], description="Learning rate (Adam's step size for the tone curve)"
        )
        declared["resolution"] = replace(
            declared["resolution"],
            description=f"Training resolution (images are read as thumbnails of 1/{THUMBNAIL_DIVISOR} of it)",
        )
        declared["batch_size"] = replace(
            declared["batch_size"], description="Images per training step (64 pixels from each)"
        )
        return declared

    async def health(self) -> dict[str, Any]:
        """Always ready: it needs nothing but Pillow."""
        return {"ok": True, "trainer": self.name, "kind": KIND, "step_ms": self.step_ms}

    async def train(
        self, job: TrainingJob, on_progress: ProgressCallback, *, on_log: LogCallback | None = None
    ) -> TrainedLora:
        """Fit the style to `job.images` and save it as `<workdir>/<name>.safetensors`."""
        steps = int(job.params["steps"])
        if not job.images:
            raise BackendError("the character has no images to train on", retryable=False)
        on_progress(Progress(0, steps, f"reading {len(job.images)} images"))
        side = max(1, int(job.params["resolution"]) // THUMBNAIL_DIVISOR)
        images = []
        for index, image in enumerate(job.images):
            images.append(await anyio.to_thread.run_sync(_read_pixels, image, index, side))
        fit = StyleFit(
            images,
            batch_images=int(job.params["batch_size"]),
            learning_rate=float(job.params["learning_rate"]),
            steps=steps,
        )
        checkpoint = job.workdir / CHECKPOINT_NAME
        fingerprint = _fingerprint(job, side)
        resumed = await anyio.to_thread.run_sync(_resume, fit, checkpoint, fingerprint)
        if resumed:
            if on_log is not None:
                on_log(f"resumed from the checkpoint at step {resumed} of {steps}")
            on_progress(Progress(resumed, steps, f"resumed from the checkpoint at step {resumed}", fit.loss))

        delay, started, first = self.step_ms / 1000, time.monotonic(), fit.step
        while fit.step < steps:
            until_save = self.checkpoint_every - fit.step % self.checkpoint_every
            count = min(1 if delay else _CHUNK_STEPS, steps - fit.step, until_save)
            began = time.monotonic()
            losses = await anyio.to_thread.run_sync(fit.advance, count)
            if delay:
                # A step takes `step_ms` in all, the maths included, as the setting promises.
                await anyio.sleep(max(0.0, delay * count - (time.monotonic() - began)))
            rate = (fit.step - first) / max(1e-9, time.monotonic() - started)
            for offset, loss in enumerate(losses):
                step = fit.step - count + 1 + offset
                eta = (steps - step) / rate if rate > 0 else None
                # The loss is in the message too: a run read back from the ledger keeps only the message.
                message = f"learning colours, loss {loss:.4f}"
                on_progress(Progress(step, steps, message, loss=loss, eta_s=eta))
            if fit.step % self.checkpoint_every == 0 and fit.step < steps:
                await anyio.to_thread.run_sync(_save_checkpoint, fit, checkpoint, fingerprint)

        metadata = {
            "atelier.kind": KIND,
            "atelier.trainer": self.name,
            "trigger_word": job.trigger_word,
            "steps": str(steps),
            "note": NOTE,
            "loss": f"{fit.loss:.6f}",
            "images": str(len(images)),
        }
        path = job.workdir / f"{job.name}.safetensors"
        await anyio.to_thread.run_sync(_save_style, fit, path, metadata)
        return TrainedLora(path, steps, KIND, resumed_from_step=resumed, metadata=metadata)


def _read_pixels(image: TrainingImage, index: int, side: int) -> Pixels:
    """The image's pixels from a thumbnail at most `side` on its longest side (worker thread)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(image.path) as opened:
            opened.draft("RGB", (side, side))  # JPEG decodes at 1/2..1/8 scale directly
            thumbnail = opened.convert("RGB")
    except (OSError, UnidentifiedImageError, Image.DecompressionBombError) as error:
        raise BackendError(
            f"cannot read training image {image.path.name}: {error}", retryable=False
        ) from None
    thumbnail.thumbnail((side, side), Image.Resampling.BOX)
    data = thumbnail.tobytes()
    stride = max(1, math.ceil(len(data) // 3 / MAX_PIXELS_PER_IMAGE))
    if stride > 1:
        data = b"".join(data[i : i + 3] for i in range(0, len(data), 3 * stride))
    return sample_pixels(data, index)


def _fingerprint(job: TrainingJob, side: int) -> str:
    """What a checkpoint must have been trained on to be resumed: images and parameters."""
    facts = {
        "images": [(image.path.name, image.path.stat().st_size) for image in job.images],
        "side": side,
        "params": {name: job.params[name] for name in ("steps", "learning_rate", "batch_size")},
    }
    return hashlib.sha256(json.dumps(facts, sort_keys=True).encode()).hexdigest()


def _resume(fit: StyleFit, checkpoint: Path, fingerprint: str) -> int:
    """Load the checkpoint into `fit` if it is this training's; the step it resumes from, or 0."""
    try:
        if safetensors.read_metadata(checkpoint).get("fingerprint") != fingerprint:
            return 0
        # `restore` checks every tensor before taking any, so a refused file leaves `fit` fresh.
        fit.restore(safetensors.read_tensors(checkpoint))
    except (FileNotFoundError, ValueError):
        # Writes are atomic, so a damaged checkpoint is rare; it costs only the steps it held.
        return 0
    return fit.step


def _save_style(fit: StyleFit, path: Path, metadata: dict[str, str]) -> None:
    # In a worker thread: the mean and spread go over every sampled pixel (tens of ms).
    safetensors.write(path, fit.style_tensors(), metadata)


def _save_checkpoint(fit: StyleFit, checkpoint: Path, fingerprint: str) -> None:
    metadata = {"atelier.kind": "preview-style-checkpoint", "fingerprint": fingerprint, "step": str(fit.step)}
    safetensors.write(checkpoint, fit.checkpoint_tensors(), metadata)
