"""What the character tools return: characters, their images and LoRA versions, as a model reads them.

A character's images come back as a few small thumbnails (at most `INLINE_CHARACTER_IMAGES`, the
first ones) and a resource link per image (`atelier://characters/{id}/images/{filename}`), so a
character with 200 images is still a small result. Its LoRA versions say where each file is and
whether ComfyUI can load it (installed under `ATELIER_COMFYUI_LORAS_DIR`), and how to install it
when it is not.
"""

from __future__ import annotations

from typing import Any

from mcp_types import CallToolResult, ContentBlock, ResourceLink, TextContent
from pydantic import BaseModel, Field

from core.characters.models import Character, CharacterImage, LoraVersion
from core.engine import Engine
from core.models import Run
from mcp_server.views import image_thumbnails

INLINE_CHARACTER_IMAGES = 4


def character_uri(character_id: str) -> str:
    return f"atelier://characters/{character_id}"


def character_image_uri(character_id: str, filename: str) -> str:
    return f"atelier://characters/{character_id}/images/{filename}"


class CharacterImageView(BaseModel):
    filename: str
    uri: str = Field(description="Resource URI of the stored image (read it with resources/read).")
    media_type: str
    width: int
    height: int
    size: int = Field(description="Bytes.")
    sha256: str
    caption: str


class LoraVersionView(BaseModel):
    version: int
    active: bool = Field(description="Whether generation by this character uses this version.")
    trainer: str = Field(
        description="aitoolkit (a real LoRA) or preview (a colour style, not a diffusion LoRA)."
    )
    base_model: str
    steps: int
    run_id: str = Field(description="The training run that made it (get_run shows its parameters).")
    filename: str
    size: int
    sha256: str
    created_at: float
    comfyui_name: str | None = Field(description="Its name for ComfyUI's LoraLoader, once installed there.")
    installed: bool = Field(
        description="Whether ComfyUI can load it (installed in ATELIER_COMFYUI_LORAS_DIR)."
    )
    path: str | None = Field(default=None, description="Where the file is on the Atelier machine.")


class TrainingSummary(BaseModel):
    run_id: str
    status: str
    step: int
    max_steps: int
    message: str


class CharacterView(BaseModel):
    """A character as a model sees it: who it is, its training images, its LoRAs, how it trains."""

    id: str
    name: str
    description: str
    trigger_word: str = Field(description="Put at the front of prompts that name the character.")
    uri: str
    created_at: float
    updated_at: float
    image_count: int
    images: list[CharacterImageView]
    versions: list[LoraVersionView]
    active_version: int | None
    training: list[TrainingSummary] = Field(description="Its training runs, newest first (at most 5).")
    trainer: dict[str, Any] = Field(
        description="The configured trainer: name, base model and each parameter train_character takes."
    )
    next: str = Field(description="What to do next with this character.")


class CharacterSummary(BaseModel):
    id: str
    name: str
    description: str
    trigger_word: str
    uri: str
    image_count: int
    versions: int
    active_version: int | None


class CharacterList(BaseModel):
    characters: list[CharacterSummary]


class RefusedSource(BaseModel):
    index: int = Field(description="Its position in `sources` (from 0).")
    source: str = Field(description="The source as given (base64 data is only described).")
    reason: str


class ImagesAdded(BaseModel):
    character_id: str
    name: str
    added: list[CharacterImageView]
    refused: list[RefusedSource]
    image_count: int = Field(description="The character's images now.")
    next: str


class CharacterDeleted(BaseModel):
    character_id: str
    name: str
    deleted: bool
    images_removed: int
    versions_removed: int


def image_view(character: Character, image: CharacterImage) -> CharacterImageView:
    return CharacterImageView(
        filename=image.filename,
        uri=character_image_uri(character.id, image.filename),
        media_type=image.media_type,
        width=image.width,
        height=image.height,
        size=image.size,
        sha256=image.sha256,
        caption=image.caption,
    )


def version_view(
    engine: Engine, character: Character, version: LoraVersion, expose_paths: bool
) -> LoraVersionView:
    loras_dir = engine.settings.comfyui_loras_dir
    installed = bool(version.comfyui_name and loras_dir and (loras_dir / version.comfyui_name).is_file())
    return LoraVersionView(
        version=version.version,
        active=version.version == character.active_version,
        trainer=version.trainer,
        base_model=version.base_model,
        steps=version.steps,
        run_id=version.run_id,
        filename=version.filename,
        size=version.size,
        sha256=version.sha256,
        created_at=version.created_at,
        comfyui_name=version.comfyui_name,
        installed=installed,
        path=str(engine.characters.lora_path(character, version)) if expose_paths else None,
    )


def character_view(
    engine: Engine, character: Character, training: list[Run], *, expose_paths: bool
) -> CharacterView:
    return CharacterView(
        id=character.id,
        name=character.name,
        description=character.description,
        trigger_word=character.trigger_word,
        uri=character_uri(character.id),
        created_at=character.created_at,
        updated_at=character.updated_at,
        image_count=len(character.images),
        images=[image_view(character, image) for image in character.images],
        versions=[version_view(engine, character, v, expose_paths) for v in character.versions],
        active_version=character.active_version,
        training=[
            TrainingSummary(
                run_id=r.id, status=r.status.value, step=r.step, max_steps=r.max_steps, message=r.message
            )
            for r in training[:5]
        ],
        trainer=engine.training.parameters(),
        next=character_next_step(engine, character, training),
    )


def summary(character: Character) -> CharacterSummary:
    return CharacterSummary(
        id=character.id,
        name=character.name,
        description=character.description,
        trigger_word=character.trigger_word,
        uri=character_uri(character.id),
        image_count=len(character.images),
        versions=len(character.versions),
        active_version=character.active_version,
    )


def character_next_step(engine: Engine, character: Character, training: list[Run]) -> str:
    """What a model can do next with `character`, in a sentence or two."""
    busy = [r for r in training if not r.status.is_final]
    if busy:
        run = busy[0]
        return (
            f"Training now (run {run.id}, {run.status.value}, step {run.step}/{run.max_steps}): "
            f"wait_for_run with run_id={run.id!r} follows it."
        )
    if not character.images:
        return "Add 10-30 images of it with add_character_images, then train it with train_character."
    active = character.active
    if active is None:
        return f"It has {len(character.images)} image(s) and no LoRA yet: train it with train_character."
    use = f"generate_image or transform_image with character={character.name!r} uses LoRA v{active.version}."
    if active.trainer != "preview" and engine.settings.backend == "comfyui" and active.comfyui_name is None:
        path = engine.characters.lora_path(character, active)
        use += (
            f" It is not installed for ComfyUI: set ATELIER_COMFYUI_LORAS_DIR, or copy {path} into "
            "ComfyUI's models/loras/atelier/."
        )
    return use


async def character_result(
    engine: Engine, character: Character, training: list[Run], *, expose_paths: bool, text: str = ""
) -> CallToolResult:
    """A character as a tool result: its view, a few thumbnails, and a link to every image."""
    view = character_view(engine, character, training, expose_paths=expose_paths)
    versions = ", ".join(f"v{v.version}{' (active)' if v.active else ''}" for v in view.versions) or "none"
    head = text or f"{character.name} ({character.id}), trigger word {character.trigger_word!r}"
    words = f"{head}: {len(character.images)} image(s), LoRA versions: {versions}. {view.next}"
    content: list[ContentBlock] = [TextContent(type="text", text=words)]
    shown = character.images[:INLINE_CHARACTER_IMAGES]
    if shown:
        sources = [await _read(engine, character, image) for image in shown]
        content.extend(await image_thumbnails([s for s in sources if s], engine.settings.thumbnail_px))
    content.extend(
        ResourceLink(
            type="resource_link",
            uri=character_image_uri(character.id, image.filename),
            name=image.filename,
            mime_type=image.media_type,
            size=image.size,
            description=f"{image.width}x{image.height} training image of {character.name}",
        )
        for image in character.images
    )
    return CallToolResult(content=content, structured_content=view.model_dump(mode="json"))


async def _read(engine: Engine, character: Character, image: CharacterImage) -> bytes | None:
    import anyio

    try:
        return await anyio.Path(engine.characters.image_path(character, image)).read_bytes()
    except OSError:
        return None  # a file removed meanwhile: no thumbnail, the link still says what it was
