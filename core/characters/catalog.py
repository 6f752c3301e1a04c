"""Keeping characters: their rows in the ledger and their files under `ATELIER_HOME/characters/<id>/`.

Files: `images/<sha256>.<ext>` (content-addressed: writing one is idempotent, so a crash between
the file and its row leaves at worst an unreferenced file, never a row without its bytes) and
`loras/<slug>-v<N>.safetensors`. Every file is written to a temporary name, synced and renamed,
so a reader never sees half of one. An image's name lives in the ledger only, which is why
a name such as `../x.png` can never reach the disk.

Each uploaded image goes through `core.characters.uploads` (one validation path for MCP and
Isengard); the good files of an upload are kept and each refused one is reported with its
reason. A trained LoRA becomes the character's next version (`keep_lora`): its header is read
back first, so a half-written file is never registered, and it is installed for ComfyUI when
`ATELIER_COMFYUI_LORAS_DIR` is set (as `atelier/<slug>-v<N>.safetensors`, written under a temporary
name and renamed; removed again when the character is deleted).
"""

from __future__ import annotations

import os
import shutil
import time
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import anyio
import anyio.to_thread

from core.characters.models import (
    CHARACTER_ID_RE,
    MAX_CAPTION_CHARS,
    MAX_DESCRIPTION_CHARS,
    MAX_NAME_CHARS,
    PREVIEW_TRAINER,
    TRIGGER_WORD_RE,
    Character,
    CharacterImage,
    LoraVersion,
    comfyui_lora_name,
    new_character_id,
    slug_of,
    trigger_word_for,
)
from core.characters.uploads import ImageRefused, UploadLimits, check_training_image
from core.errors import CharacterNotFound, Conflict, InvalidInput
from core.ids import check_filename
from core.ledger import CharacterLedger
from core.settings import Settings

_EXTENSIONS = {"image/png": "png", "image/jpeg": "jpg", "image/webp": "webp"}


@dataclass(frozen=True, slots=True)
class Upload:
    """One file offered as a training image: its name as the client gave it, bytes and caption."""

    filename: str | None
    data: bytes
    caption: str = ""


@dataclass(slots=True)
class UploadReport:
    """What an upload did: the images kept, and each refused file with its reason."""

    character: Character
    added: list[CharacterImage] = field(default_factory=list)
    refused: list[tuple[str, str]] = field(default_factory=list)


class Characters:
    """Create, find, change and delete characters; add and remove their images; keep their LoRAs."""

    def __init__(self, settings: Settings, ledger: CharacterLedger) -> None:
        self._settings = settings
        self._ledger = ledger
        self._root = settings.characters_dir
        self._limits = UploadLimits.from_settings(settings)

    # -- characters ---------------------------------------------------------------------------

    async def create(self, name: str, description: str = "", trigger_word: str | None = None) -> Character:
        """A new character; its trigger word is derived from the name unless given."""
        name = _check_name(name)
        description = _check_text("description", description, MAX_DESCRIPTION_CHARS)
        if await self._ledger.find_character_by_name(name) is not None:
            raise Conflict(
                f"a character named {name!r} already exists (names are unique, whatever their case)"
            )
        now = time.time()
        candidates = [_check_trigger_word(trigger_word)] if trigger_word else _derived_trigger_words(name)
        for word in candidates[:-1]:
            try:
                return await self._ledger.insert_character(
                    Character(new_character_id(), name, word, now, now, description)
                )
            except Conflict as exc:
                if "trigger word" not in str(exc):
                    raise  # the name was taken meanwhile
        # A derived word taken by another character gets a number; the last candidate's error stands.
        return await self._ledger.insert_character(
            Character(new_character_id(), name, candidates[-1], now, now, description)
        )

    async def list(self) -> list[Character]:
        return await self._ledger.list_characters()

    async def get(self, ref: str) -> Character:
        """The character with this id, or this name (whatever its case). `CharacterNotFound` if none."""
        if not isinstance(ref, str) or not ref.strip() or len(ref) > MAX_NAME_CHARS + 20:
            raise InvalidInput("character", f"must be a character's id or name (got {ref!r:.40})")
        ref = ref.strip()
        found = (
            await self._ledger.get_character(ref)
            if CHARACTER_ID_RE.fullmatch(ref)
            else await self._ledger.find_character_by_name(ref)
        )
        if found is None:
            raise CharacterNotFound(ref)
        return found

    async def update(
        self,
        ref: str,
        *,
        name: str | None = None,
        description: str | None = None,
        trigger_word: str | None = None,
        active_version: int | None = None,
    ) -> Character:
        """Change what is given; the trigger word of finished runs stays what they used."""
        character = await self.get(ref)
        changes: dict[str, object] = {}
        if name is not None:
            changes["name"] = _check_name(name)
        if description is not None:
            changes["description"] = _check_text("description", description, MAX_DESCRIPTION_CHARS)
        if trigger_word is not None:
            changes["trigger_word"] = _check_trigger_word(trigger_word)
        if active_version is not None:
            if not any(v.version == active_version for v in character.versions):
                have = ", ".join(f"v{v.version}" for v in character.versions) or "none yet"
                raise InvalidInput(
                    "active_version", f"{character.name} has no LoRA v{active_version} (it has {have})"
                )
            changes["active_version"] = active_version
        if not changes:
            return character
        updated = await self._ledger.update_character(character.id, **changes)
        if updated is None:
            raise CharacterNotFound(ref)
        return updated

    async def delete(self, ref: str) -> Character:
        """Delete the character, its images and its LoRA files (installed copies included).

        Runs that used it keep their images and their record of it. The caller (the engine)
        refuses while the character is training.
        """
        character = await self.get(ref)
        await self._ledger.delete_character(character.id)
        await anyio.to_thread.run_sync(self._remove_files, character)
        return character

    def _remove_files(self, character: Character) -> None:
        shutil.rmtree(self._root / character.id, ignore_errors=True)
        loras_dir = self._settings.comfyui_loras_dir
        for version in character.versions:
            if loras_dir is not None and version.comfyui_name:
                (loras_dir / version.comfyui_name).unlink(missing_ok=True)

    # -- images -------------------------------------------------------------------------------

    async def add_images(self, ref: str, uploads: Sequence[Upload]) -> UploadReport:
        """Check each file and keep the good ones; every refused file is named with its reason."""
        character = await self.get(ref)
        report = UploadReport(character)
        checked: list[CharacterImage] = []
        seen: set[str] = set()
        for upload in uploads:
            shown = upload.filename or "(unnamed)"
            try:
                caption = _check_text("caption", upload.caption, MAX_CAPTION_CHARS)
                image = await anyio.to_thread.run_sync(
                    check_training_image, upload.filename, upload.data, self._limits
                )
            except ImageRefused as exc:
                report.refused.append((exc.filename or shown, exc.reason))
                continue
            except InvalidInput as exc:
                report.refused.append((shown, str(exc)))
                continue
            if image.sha256 in seen:
                report.refused.append((image.filename, "duplicate: the same image is already in this upload"))
                continue
            seen.add(image.sha256)
            await anyio.to_thread.run_sync(
                _write_atomically, self._image_path(character.id, image.sha256, image.media_type), image.data
            )
            checked.append(
                CharacterImage(
                    filename=image.filename,
                    sha256=image.sha256,
                    size=len(image.data),
                    width=image.width,
                    height=image.height,
                    media_type=image.media_type,
                    caption=caption,
                    added_at=time.time(),
                )
            )
        if checked:
            added, refused = await self._ledger.add_character_images(
                character.id, checked, self._settings.max_character_images
            )
            report.added = added
            report.refused.extend(refused)
            kept = {image.sha256 for image in added} | {image.sha256 for image in character.images}
            for image in checked:
                if image.sha256 not in kept:  # refused by the ledger: its bytes were never referenced
                    self._image_path(character.id, image.sha256, image.media_type).unlink(missing_ok=True)
        report.character = await self.get(character.id)
        return report

    async def remove_image(self, ref: str, filename: str) -> Character:
        character = await self.get(ref)
        check_filename(filename)
        removed = await self._ledger.remove_character_image(character.id, filename)
        if removed is None:
            raise InvalidInput("filename", f"{character.name} has no image named {filename!r}")
        self._image_path(character.id, removed.sha256, removed.media_type).unlink(missing_ok=True)
        return await self.get(character.id)

    def image_path(self, character: Character, image: CharacterImage) -> Path:
        """Where an image's bytes are (read-only use: serving it, a trainer's dataset)."""
        return self._image_path(character.id, image.sha256, image.media_type)

    async def read_image(self, ref: str, filename: str) -> tuple[CharacterImage, bytes]:
        character = await self.get(ref)
        image = character.image(check_filename(filename))
        if image is None:
            raise InvalidInput("filename", f"{character.name} has no image named {filename!r}")
        return image, await anyio.Path(self.image_path(character, image)).read_bytes()

    def _image_path(self, character_id: str, sha256: str, media_type: str) -> Path:
        return self._root / character_id / "images" / f"{sha256}.{_EXTENSIONS.get(media_type, 'bin')}"

    # -- LoRAs --------------------------------------------------------------------------------

    def lora_path(self, character: Character, version: LoraVersion) -> Path:
        return self._root / character.id / "loras" / version.filename

    async def keep_lora(
        self, character_id: str, source: Path, *, trainer: str, base_model: str, steps: int, run_id: str
    ) -> LoraVersion:
        """Make a finished LoRA file the character's next version (and active), moved atomically.

        The file's safetensors header is read first: a half-written file raises `ValueError` and is
        never registered. With `ATELIER_COMFYUI_LORAS_DIR` set, a copy is installed there as
        `atelier/<slug>-v<N>.safetensors` for the ComfyUI servers to load (not a preview style,
        which ComfyUI cannot load); the caller then has the backends re-read their model lists.
        """
        from core.training import safetensors

        await anyio.to_thread.run_sync(safetensors.read_header, source)
        character = await self.get(character_id)
        number = max((v.version for v in character.versions), default=0) + 1
        filename = await self._lora_filename(character, number)
        target = self._root / character.id / "loras" / filename
        sha256, size = await anyio.to_thread.run_sync(_move_into, source, target)
        comfyui_name = None
        if self._settings.comfyui_loras_dir is not None and trainer != PREVIEW_TRAINER:
            comfyui_name = comfyui_lora_name(filename)
            await anyio.to_thread.run_sync(
                _copy_into, target, self._settings.comfyui_loras_dir / comfyui_name
            )
        version = LoraVersion(
            version=number,
            filename=filename,
            trainer=trainer,
            base_model=base_model,
            steps=steps,
            run_id=run_id,
            sha256=sha256,
            size=size,
            created_at=time.time(),
            comfyui_name=comfyui_name,
        )
        await self._ledger.add_lora_version(character.id, version)
        return version

    async def _lora_filename(self, character: Character, number: int) -> str:
        """`<slug>-v<N>.safetensors`, unless another character's LoRA has that name (names such as
        "Mara!" and "Mara?", or two in a script with no a-z letters, share a slug): then the id
        tells them apart, so an installed copy never replaces, or is deleted with, another's."""
        slug = slug_of(character.name)
        filename = f"{slug}-v{number}.safetensors"
        others = {v.filename for c in await self.list() if c.id != character.id for v in c.versions}
        if filename in others:
            filename = f"{slug}-{character.id.removeprefix('char-')}-v{number}.safetensors"
        return filename


def _check_name(name: object) -> str:
    if not isinstance(name, str):
        raise InvalidInput("name", "must be text")
    name = unicodedata.normalize("NFC", name).strip()
    if not 1 <= len(name) <= MAX_NAME_CHARS or any(unicodedata.category(c).startswith("C") for c in name):
        raise InvalidInput("name", f"must be 1..{MAX_NAME_CHARS} printable characters (got {name!r:.40})")
    if CHARACTER_ID_RE.fullmatch(name):
        raise InvalidInput("name", "must not look like a character id (char-...)")
    return name


def _check_text(field_name: str, value: object, limit: int) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise InvalidInput(field_name, "must be text")
    value = value.strip()
    if len(value) > limit:
        raise InvalidInput(field_name, f"must be at most {limit} characters (got {len(value)})")
    return value


def _check_trigger_word(word: object) -> str:
    if not isinstance(word, str) or not TRIGGER_WORD_RE.fullmatch(word):
        raise InvalidInput("trigger_word", f"must be 2..48 characters of a-z, 0-9 and _ (got {word!r:.40})")
    return word


def _derived_trigger_words(name: str) -> list[str]:
    base = trigger_word_for(name)
    base = base if TRIGGER_WORD_RE.fullmatch(base) else "character_person"
    return [base, *(f"{base[:44]}_{n}" for n in range(2, 10))]


def _write_atomically(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists():
        return  # content-addressed: the same name holds the same bytes
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _move_into(source: Path, target: Path) -> tuple[str, int]:
    """Move `source` to `target` (copy then rename across file systems); its sha256 and size."""
    import hashlib

    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    digest = hashlib.sha256()
    try:
        with open(source, "rb") as src, open(tmp, "wb") as dst:
            while chunk := src.read(1 << 20):
                digest.update(chunk)
                dst.write(chunk)
            dst.flush()
            os.fsync(dst.fileno())
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    size = target.stat().st_size
    source.unlink(missing_ok=True)
    return digest.hexdigest(), size


def _copy_into(source: Path, target: Path) -> None:
    """Copy `source` to `target` under a temporary name, synced, then renamed: a ComfyUI server
    listing the folder meanwhile sees no file or the whole file (it lists `.safetensors` names
    only, so not the temporary `.tmp` one)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        with open(source, "rb") as src, open(tmp, "wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
            dst.flush()
            os.fsync(dst.fileno())
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
