"""Generating with a character: its active LoRA added to the run and its trigger word in the prompt.

A request names the character (`character`: id or name) and how strongly to apply it
(`character_strength`, default 0.8). The run records which character and LoRA version it used
(`ImageSpec.character`), so retraining later never changes what a finished run says.
On ComfyUI the version's installed file joins the run's LoRAs (a LoraLoader in the graph); the
preview renderer applies a preview style instead (read from the version's file at run time).
"""

from __future__ import annotations

import math
from typing import Any

from core.characters.catalog import Characters
from core.errors import InvalidInput

DEFAULT_STRENGTH = 0.8
PREVIEW_TRAINER = "preview"


async def with_character(given: dict[str, Any], characters: Characters, backend: str) -> dict[str, Any]:
    """`given` (an image request's fields) with the named character applied, or as it was."""
    ref = given.pop("character", None)
    strength = given.pop("character_strength", None)
    if ref is None or ref == "":
        if strength is not None:
            raise InvalidInput("character_strength", "is only used together with character")
        return given
    if strength is None:
        strength = DEFAULT_STRENGTH
    if isinstance(strength, bool) or not isinstance(strength, int | float) or not math.isfinite(strength):
        raise InvalidInput("character_strength", f"must be a number in 0..2 (got {strength!r:.40})")
    if not 0 <= strength <= 2:
        raise InvalidInput("character_strength", f"must be a number in 0..2 (got {strength!r})")
    character = await characters.get(str(ref))
    version = character.active
    if version is None:
        raise InvalidInput(
            "character",
            f"{character.name} has no trained LoRA yet: train it first (train_character, or POST /api/training)",
        )
    given = dict(given)
    if backend != "local":
        if version.trainer == PREVIEW_TRAINER:
            raise InvalidInput(
                "character",
                f"{character.name}'s LoRA v{version.version} was made by the preview trainer, which ComfyUI "
                "cannot load; train it with ATELIER_TRAINER=aitoolkit",
            )
        if version.comfyui_name is None:
            path = characters.lora_path(character, version)
            raise InvalidInput(
                "character",
                f"{character.name}'s LoRA is not installed where ComfyUI loads LoRAs: set "
                f"ATELIER_COMFYUI_LORAS_DIR, or copy {path} into ComfyUI's models/loras/atelier/",
            )
        loras = given.get("loras") or []
        if isinstance(loras, str):
            loras = [part for part in loras.split(",") if part.strip()]
        given["loras"] = [*loras, {"name": version.comfyui_name, "strength": float(strength)}]
    prompt = given.get("prompt")
    if isinstance(prompt, str) and prompt.strip() and character.trigger_word not in prompt.split():
        given["prompt"] = f"{character.trigger_word}, {prompt.strip()}"
    given["character"] = {
        "id": character.id,
        "name": character.name,
        "version": version.version,
        "trigger_word": character.trigger_word,
        "strength": float(strength),
        "trainer": version.trainer,
        "lora_file": version.filename,
    }
    return given
