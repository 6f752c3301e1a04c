"""What a character is: its images, its LoRA versions and which version is active."""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass, field
from typing import Any

CHARACTER_ID_RE = re.compile(r"^char-[0-9a-z]{12}$")
TRIGGER_WORD_RE = re.compile(r"^[a-z0-9_]{2,48}$")
MAX_NAME_CHARS = 80
MAX_DESCRIPTION_CHARS = 2000
MAX_CAPTION_CHARS = 1000
# The embedded trainer's name: its files are colour styles for the preview renderer, which
# ComfyUI cannot load as LoRAs, so they are never installed for it.
PREVIEW_TRAINER = "preview"


def new_character_id() -> str:
    alphabet = "0123456789abcdefghijklmnopqrstuvwxyz"
    return "char-" + "".join(secrets.choice(alphabet) for _ in range(12))


def trigger_word_for(name: str) -> str:
    """A trigger word made from a name: "Mara Quinn" -> "maraquinn_person"-like `[a-z0-9_]` text."""
    slug = re.sub(r"[^a-z0-9]+", "", name.lower())[:32] or "character"
    return f"{slug}_person" if len(slug) < 40 else slug


def slug_of(name: str) -> str:
    """A file-name-safe form of a name ("Mara Quinn" -> "mara-quinn")."""
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:40] or "character"


def comfyui_lora_name(filename: str) -> str:
    """The name ComfyUI's LoraLoader knows a character's LoRA file by once installed in its LoRA
    folder: `atelier/<slug>-v<N>.safetensors` (Atelier's subfolder keeps them apart from others)."""
    return f"atelier/{filename}"


@dataclass(slots=True, frozen=True)
class CharacterImage:
    """A training image as stored: orientation applied, metadata stripped."""

    filename: str
    sha256: str
    size: int
    width: int
    height: int
    media_type: str
    caption: str = ""
    added_at: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "filename": self.filename,
            "sha256": self.sha256,
            "size": self.size,
            "width": self.width,
            "height": self.height,
            "media_type": self.media_type,
            "caption": self.caption,
            "added_at": self.added_at,
        }


@dataclass(slots=True, frozen=True)
class LoraVersion:
    """One trained LoRA of a character: v1, v2, ..."""

    version: int
    # The file under the character's `loras/` folder: `<slug>-v<N>.safetensors`.
    filename: str
    trainer: str
    base_model: str
    steps: int
    run_id: str
    sha256: str
    size: int
    created_at: float
    # Its name for ComfyUI's LoraLoader (`atelier/<slug>-v<N>.safetensors`) once installed there.
    comfyui_name: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "filename": self.filename,
            "trainer": self.trainer,
            "base_model": self.base_model,
            "steps": self.steps,
            "run_id": self.run_id,
            "sha256": self.sha256,
            "size": self.size,
            "created_at": self.created_at,
            "comfyui_name": self.comfyui_name,
        }


@dataclass(slots=True)
class Character:
    id: str
    name: str
    trigger_word: str
    created_at: float
    updated_at: float
    description: str = ""
    images: list[CharacterImage] = field(default_factory=list)
    versions: list[LoraVersion] = field(default_factory=list)
    active_version: int | None = None

    @property
    def active(self) -> LoraVersion | None:
        """The LoRA generation uses: the active version (the newest unless another was chosen)."""
        for version in self.versions:
            if version.version == self.active_version:
                return version
        return None

    def image(self, filename: str) -> CharacterImage | None:
        return next((image for image in self.images if image.filename == filename), None)

    def to_dict(self) -> dict[str, Any]:
        active = self.active
        return {
            "id": self.id,
            "name": self.name,
            "description": self.description,
            "trigger_word": self.trigger_word,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "image_count": len(self.images),
            "images": [image.to_dict() for image in self.images],
            "versions": [version.to_dict() for version in self.versions],
            "active_version": self.active_version,
            "lora": active.to_dict() if active else None,
        }
