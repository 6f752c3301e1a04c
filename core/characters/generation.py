"""Generating with a character: its active LoRA added to the run and its trigger word in the prompt.

A request names the character (`character`: id or name) and how strongly to apply it
(`character_strength`, default 0.8). The run records which character and LoRA version it used
(`ImageSpec.character`), so retraining later never changes what a finished run says.
On ComfyUI the version's installed file joins the run's LoRAs (a LoraLoader in the graph) under
its name in ComfyUI's LoRA folder, `atelier/<slug>-v<N>.safetensors`, whether Atelier installed it
there (`ATELIER_COMFYUI_LORAS_DIR`) or a person copied it by hand; the backend checks the servers
list it and, when they do not, refuses with `not_installed`'s words. A LoRA made by the preview
trainer is refused on ComfyUI (it is a colour style, not a diffusion LoRA). The preview renderer
applies a preview style instead (read from the version's file at run time).
"""

from __future__ import annotations

import math
from typing import Any

from core.characters.catalog import Characters
from core.characters.models import PREVIEW_TRAINER, comfyui_lora_name
from core.errors import InvalidInput
from core.models import CharacterUse

DEFAULT_STRENGTH = 0.8


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
        # Installed by Atelier (ATELIER_COMFYUI_LORAS_DIR) or by hand under the same name: whether
        # the servers have it is checked against their LoRA lists before any GPU time is spent,
        # and `not_installed` says what to do when they do not.
        loras = given.get("loras") or []
        if isinstance(loras, str):
            loras = [part for part in loras.split(",") if part.strip()]
        name = version.comfyui_name or comfyui_lora_name(version.filename)
        given["loras"] = [*loras, {"name": name, "strength": float(strength)}]
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


def not_installed(use: CharacterUse) -> str:
    """Why a run naming `use` cannot go to ComfyUI when its LoRA is not in the servers' lists, and
    how to install it (by hand, or by letting Atelier do it)."""
    name = comfyui_lora_name(use.lora_file)
    return (
        f"{use.name}'s LoRA v{use.version} is not installed on ComfyUI (its LoRA list has no {name!r}). "
        f"Its file is ATELIER_HOME/characters/{use.id}/loras/{use.lora_file}: "
        f"copy it into the folder ComfyUI loads LoRAs from as {name} (e.g. ComfyUI/models/loras/{name}), "
        "or set ATELIER_COMFYUI_LORAS_DIR to that folder and Atelier installs each LoRA it trains there"
    )
