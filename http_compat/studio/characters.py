"""The studio's characters: the list, a character's page, and the JSON routes their script uses.

Pages: `GET /characters` (each character's name, trigger word, images, LoRA state; the create
form) and `GET /characters/{id}` (its images, the upload zone, training with live step and loss,
its LoRA versions, delete). A character's training images are served at
`/characters/{id}/images/{filename}`.

JSON (`/api/characters...`): create, read, delete; upload images (multipart `files`, the same
caps as Isengard's upload: `ATELIER_MAX_UPLOAD_BYTES` for the request, `max_character_images`
files, each file judged by `core.characters.uploads`, which names each refused file's reason)
and remove one; train (`engine.training.submit`, the trainer's own parameters) and cancel that
training; choose the active version.

Decisions:
- A malformed character id is a 404 like an unknown one; a file name is checked before use.
- A refused create or train names its fields (`fields.refused`); a name or trigger word taken
  by another character is a 409 on that field.
- Live training progress comes from the studio's one channel (`/api/events`, `progress` events
  with `loss`): the page draws its loss chart from them. A run's past losses are not kept by
  the ledger, so a page opened mid-training charts from that moment on.
"""

from __future__ import annotations

import time
from typing import Any

from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response

from core.characters.catalog import Upload
from core.characters.models import CHARACTER_ID_RE, Character
from core.engine import Engine
from core.errors import CharacterNotFound, Conflict, FieldProblem, InvalidInput
from core.ids import FILENAME_RE
from core.models import Run
from core.settings import Settings
from http_compat.api import Api
from http_compat.errors import ApiError
from http_compat.studio.fields import json_object, refusal, refused, text_field
from http_compat.studio.pages import not_found_page, prefix_of, render
from http_compat.studio.views import card

# The largest text part of an upload; file parts are spooled to disk by the parser past 1 MiB.
MAX_FIELD_BYTES = 64 * 1024


def when(ts: float) -> str:
    """A moment as the pages show it: `2026-12-07 16:05 UTC`."""
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(ts))


def character_summary(character: Character, training: Run | None, prefix: str) -> dict[str, Any]:
    """A character as the list shows it: what it is and where its LoRA stands."""
    active = character.active
    if training is not None:
        lora = f"training {round(training.progress * 100)}%"
    elif active is not None:
        lora = f"v{active.version} active"
    else:
        lora = "not trained"
    return {
        "id": character.id,
        "name": character.name,
        "trigger_word": character.trigger_word,
        "image_count": len(character.images),
        "version_count": len(character.versions),
        "lora": lora,
        "url": f"{prefix}/characters/{character.id}",
    }


def character_detail(character: Character, training: list[Run], prefix: str) -> dict[str, Any]:
    """A character with its images' URLs, its LoRA versions and its training runs (newest first)."""
    base = f"{prefix}/characters/{character.id}"
    active = next((run for run in training if not run.status.is_final), None)
    return {
        **character_summary(character, active, prefix),
        "description": character.description,
        "images": [
            {
                "filename": image.filename,
                "url": f"{base}/images/{image.filename}",
                "width": image.width,
                "height": image.height,
                "caption": image.caption,
            }
            for image in character.images
        ],
        "versions": [
            {
                **version.to_dict(),
                "active": version.version == character.active_version,
                "made": when(version.created_at),
                "run_url": f"{prefix}/runs/{version.run_id}",
            }
            for version in reversed(character.versions)
        ],
        "active_version": character.active_version,
        "training": [card(run, prefix) | {"created": when(run.created_at)} for run in training],
        "training_now": card(active, prefix) if active is not None else None,
    }


def add_characters(api: Api, engine: Engine, settings: Settings) -> None:
    """Declare the characters pages and their JSON routes on the studio's `api`."""
    logged_in = settings.api_token is not None

    async def character_of(request: Request) -> Character:
        ref = request.path_params["id"]
        if not CHARACTER_ID_RE.fullmatch(ref):
            raise ApiError(404, "no such character (that is not a character id)", code="NOT_FOUND")
        return await engine.characters.get(ref)

    async def detail(character: Character, prefix: str) -> dict[str, Any]:
        return character_detail(character, await engine.training.runs_of(character.id), prefix)

    @api.route("GET", "/characters", summary="Characters: the list and the create form", produces="text/html")
    async def characters_page(request: Request) -> Response:
        prefix = prefix_of(request)
        rows = []
        for character in await engine.characters.list():
            busy = await engine.training.runs_of(character.id, active_only=True)
            rows.append(character_summary(character, busy[0] if busy else None, prefix))
        return render("characters.html", prefix, characters=rows, logged_in=logged_in)

    @api.route("GET", "/characters/{id}", summary="A character's page", produces="text/html")
    async def character_page(request: Request) -> Response:
        prefix = prefix_of(request)
        try:
            character = await character_of(request)
        except (ApiError, CharacterNotFound):
            return not_found_page(prefix, "character", "characters", logged_in)
        trainer = engine.training.parameters()
        return render(
            "characters_one.html",
            prefix,
            character=await detail(character, prefix),
            trainer=trainer,
            logged_in=logged_in,
        )

    @api.route(
        "GET",
        "/characters/{id}/images/{filename}",
        summary="A character's training image, as stored",
        produces="image/*",
    )
    async def character_image(request: Request) -> Response:
        character = await character_of(request)
        filename = request.path_params["filename"]
        image = character.image(filename) if FILENAME_RE.fullmatch(filename) else None
        path = engine.characters.image_path(character, image) if image is not None else None
        if image is None or path is None or not path.is_file():
            raise ApiError(404, f"{character.name} has no image {filename[:80]!r}", code="NOT_FOUND")
        headers = {"Cache-Control": "private, max-age=3600", "ETag": f'"{image.sha256}"'}
        return FileResponse(path, media_type=image.media_type, headers=headers)

    @api.route("GET", "/api/characters/{id}", summary="A character, its images, versions and training")
    async def get_character(request: Request) -> Response:
        character = await character_of(request)
        return JSONResponse(await detail(character, prefix_of(request)))

    @api.route(
        "POST",
        "/api/characters",
        summary="Create a character: {name, trigger_word?, description?}",
        responses={201: "The character", 409: "The name or trigger word is another character's"},
    )
    async def create(request: Request) -> Response:
        data = await json_object(request)
        try:
            name = text_field(data, "name") or ""
            trigger_word = text_field(data, "trigger_word") or None
            description = text_field(data, "description") or ""
            unknown = sorted(set(data) - {"name", "trigger_word", "description"})
            if unknown:
                raise InvalidInput(unknown[0], "is not a field of a character")
            character = await engine.characters.create(name, description, trigger_word)
        except InvalidInput as exc:
            return refused(exc)
        except Conflict as exc:
            field = "trigger_word" if "trigger word" in str(exc) else "name"
            return refusal(409, str(exc), [FieldProblem(field, str(exc))])
        return JSONResponse(await detail(character, prefix_of(request)), status_code=201)

    @api.route(
        "DELETE",
        "/api/characters/{id}",
        summary="Delete a character, its images and its LoRA files",
        responses={204: None, 409: "It is being trained: cancel that run first"},
    )
    async def delete(request: Request) -> Response:
        character = await character_of(request)
        await engine.training.delete_character(character.id)  # Conflict (409) while it trains
        return Response(status_code=204)

    @api.route(
        "POST",
        "/api/characters/{id}/images",
        summary="Upload training images (multipart `files`); each refused file with its reason",
        streamed_body=(settings.max_upload_bytes, "ATELIER_MAX_UPLOAD_BYTES"),
        responses={200: "{added: [...], refused: [{filename, reason}], character}", 400: "No files"},
    )
    async def upload(request: Request) -> Response:
        character = await character_of(request)
        cap = settings.max_character_images
        added: list[str] = []
        refused_files: list[dict[str, str]] = []
        try:
            async with request.form(max_files=cap, max_fields=10, max_part_size=MAX_FIELD_BYTES) as form:
                parts = form.getlist("files")
                if not parts:
                    raise ApiError(
                        400, "no files: choose or drop images to upload", code="INVALID_PARAMETERS"
                    )
                for part in parts:
                    kept, refused_now = await _store(engine, character.id, part, settings.max_input_bytes)
                    added += kept
                    refused_files += refused_now
        except HTTPException as exc:  # the multipart parser's own refusals (malformed, too many parts)
            raise ApiError(400, f"the upload is not valid: {exc.detail}", code="INVALID_PARAMETERS") from None
        character = await engine.characters.get(character.id)
        return JSONResponse(
            {
                "added": added,
                "refused": refused_files,
                "character": await detail(character, prefix_of(request)),
            }
        )

    @api.route(
        "DELETE",
        "/api/characters/{id}/images/{filename}",
        summary="Remove a training image",
        responses={204: None},
    )
    async def remove_image(request: Request) -> Response:
        character = await character_of(request)
        filename = request.path_params["filename"]
        if not FILENAME_RE.fullmatch(filename) or character.image(filename) is None:
            raise ApiError(404, f"{character.name} has no image {filename[:80]!r}", code="NOT_FOUND")
        await engine.characters.remove_image(character.id, filename)
        return Response(status_code=204)

    @api.route(
        "POST",
        "/api/characters/{id}/train",
        summary="Train the character's LoRA: {params: {steps, learning_rate, ...}}",
        responses={201: "The training run's card", 409: "It is already being trained"},
    )
    async def train(request: Request) -> Response:
        character = await character_of(request)
        data = await json_object(request)
        params = data.get("params", {})
        try:
            if not isinstance(params, dict):
                raise InvalidInput("params", "must be an object of training parameters")
            run = await engine.training.submit(character.id, params, meta={"door": "studio"})
        except InvalidInput as exc:
            return refused(exc)
        except Conflict as exc:
            return refusal(409, str(exc), [FieldProblem("character", str(exc))])
        return JSONResponse(card(run, prefix_of(request)), status_code=201)

    @api.route(
        "POST",
        "/api/characters/{id}/training/cancel",
        summary="Cancel the character's queued or running training",
        responses={200: "The cancelled run's card", 409: "It is not being trained"},
    )
    async def cancel_training(request: Request) -> Response:
        character = await character_of(request)
        busy = await engine.training.runs_of(character.id, active_only=True)
        if not busy:
            raise ApiError(409, f"{character.name} is not being trained", code="CONFLICT")
        return JSONResponse(card(await engine.cancel(busy[0].id), prefix_of(request)))

    @api.route(
        "POST",
        "/api/characters/{id}/active",
        summary="Choose the LoRA version generation uses: {version}",
        responses={200: "The character"},
    )
    async def choose_version(request: Request) -> Response:
        character = await character_of(request)
        data = await json_object(request)
        version = data.get("version")
        try:
            if not isinstance(version, int) or isinstance(version, bool):
                raise InvalidInput("version", f"must be a version number (got {version!r:.40})")
            character = await engine.characters.update(character.id, active_version=version)
        except InvalidInput as exc:
            return refused(exc)
        return JSONResponse(await detail(character, prefix_of(request)))


async def _store(
    engine: Engine, character_id: str, part: Any, max_bytes: int
) -> tuple[list[str], list[dict[str, str]]]:
    """Check and keep one uploaded part: (names kept, [{filename, reason}] refused)."""
    if not isinstance(part, UploadFile):
        return [], [{"filename": "(form field)", "reason": "sent as text, not as a file"}]
    name = part.filename or None
    if part.size is not None and part.size > max_bytes:
        # Refused from its size alone: it is never read into memory.
        reason = f"the file is {part.size:,} bytes; the limit is {max_bytes:,} bytes"
        return [], [{"filename": name or "(unnamed file)", "reason": reason}]
    report = await engine.characters.add_images(character_id, [Upload(name, await part.read())])
    return (
        [image.filename for image in report.added],
        [{"filename": filename, "reason": reason} for filename, reason in report.refused],
    )
