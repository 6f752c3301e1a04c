"""Isengard's characters: create, list, get, update, delete, and their training images
(multipart upload of several files at once, list, serve, delete)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import FileResponse, Response

from core.characters.catalog import Upload
from core.characters.models import MAX_DESCRIPTION_CHARS, MAX_NAME_CHARS
from core.engine import Engine
from core.errors import Conflict
from core.settings import Settings
from http_compat.api import Api
from http_compat.contracts.isengard.envelope import Detail, not_found
from http_compat.contracts.isengard.views import CharacterView, CharacterViews, Jobs
from http_compat.errors import ApiError
from http_compat.responses import json_response

# The largest text part (a caption) of an upload. Its file parts are spooled to disk by the
# multipart parser past 1 MiB each, so an upload is never held in memory whole; they are read
# back one at a time, to be checked and stored.
MAX_FIELD_BYTES = 64 * 1024


class NewCharacter(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=MAX_NAME_CHARS, description="Unique, whatever its case.")
    description: str | None = Field(default=None, max_length=MAX_DESCRIPTION_CHARS)
    trigger_word: str | None = Field(
        default=None,
        description="2..48 of a-z, 0-9 and _; unique. Made from the name when not given.",
    )


class CharacterChanges(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(default=None, min_length=1, max_length=MAX_NAME_CHARS)
    description: str | None = Field(default=None, max_length=MAX_DESCRIPTION_CHARS)
    trigger_word: str | None = Field(default=None, description="2..48 of a-z, 0-9 and _; unique.")


class ImageUpload(BaseModel):
    """The multipart form of an upload."""

    files: list[bytes] = Field(description="The images: PNG, JPEG or WebP, one part per file.")
    captions: list[str] | None = Field(
        default=None, description="Optional: one caption per file, in the same order as the files."
    )


class Rejected(BaseModel):
    filename: str
    reason: str


class UploadResult(BaseModel):
    uploaded: list[str] = Field(description="The names the images are stored (and served) under.")
    rejected: list[Rejected]
    total_images: int = Field(description="The character's images after this upload.")


class ImageList(BaseModel):
    images: list[str]
    count: int


def declare(api: Api, engine: Engine, settings: Settings, jobs: Jobs) -> None:
    """The character routes, on `api`."""
    bad_request = (Detail, "A field is invalid (the message says which)")
    taken = (Detail, "The name or trigger word belongs to another character")
    no_character = {404: (Detail, "No such character")}

    @api.route(
        "GET",
        "/api/characters",
        summary="Every character, oldest first",
        responses={200: (CharacterViews, "A JSON array of characters")},
    )
    async def list_characters(request: Request) -> Response:
        return json_response([jobs.character_view(c) for c in await engine.characters.list()])

    @api.route(
        "POST",
        "/api/characters",
        summary="Create a character",
        body=NewCharacter,
        responses={201: CharacterView, 400: bad_request, 409: taken},
        example={
            "name": "John Smith",
            "description": "Optional description",
            "trigger_word": "johnsmith_person",
        },
    )
    async def create(request: Request, body: NewCharacter) -> Response:
        character = await engine.characters.create(body.name, body.description or "", body.trigger_word)
        return json_response(jobs.character_view(character), 201)

    @api.route(
        "GET", "/api/characters/{id}", summary="A character", responses={200: CharacterView, **no_character}
    )
    async def get(request: Request) -> Response:
        return json_response(jobs.character_view(await jobs.character(request.path_params["id"])))

    @api.route(
        "PATCH",
        "/api/characters/{id}",
        summary="Change a character's name, description or trigger word",
        body=CharacterChanges,
        responses={200: CharacterView, 400: bad_request, **no_character, 409: taken},
        example={
            "name": "Updated Name",
            "description": "Updated description",
            "trigger_word": "updated_trigger",
        },
    )
    async def update(request: Request, body: CharacterChanges) -> Response:
        character = await jobs.character(request.path_params["id"])
        changed = await engine.characters.update(
            character.id, name=body.name, description=body.description, trigger_word=body.trigger_word
        )
        return json_response(jobs.character_view(changed))

    @api.route(
        "DELETE",
        "/api/characters/{id}",
        summary="Delete a character, its images and its LoRA files",
        responses={
            204: None,
            **no_character,
            409: (Detail, "The character is being trained: cancel its training job first"),
        },
    )
    async def delete(request: Request) -> Response:
        character = await jobs.character(request.path_params["id"])
        busy = await engine.training.runs_of(character.id, active_only=True)
        if busy:
            raise training_conflict(character.name, busy[0].id)
        try:
            await engine.training.delete_character(character.id)
        except Conflict:  # a training started meanwhile
            busy = await engine.training.runs_of(character.id, active_only=True)
            raise training_conflict(character.name, busy[0].id if busy else None) from None
        return Response(status_code=204)

    @api.route(
        "POST",
        "/api/characters/{id}/images",
        summary="Upload training images (multipart `files`, several at once; 30 req/min)",
        form=ImageUpload,
        streamed_body=(settings.max_upload_bytes, "ATELIER_MAX_UPLOAD_BYTES"),
        responses={
            201: (UploadResult, "What was kept, and each refused file with its reason"),
            400: (Detail, "No files in the request, or a malformed multipart body"),
            **no_character,
            413: (Detail, "The request is larger than ATELIER_MAX_UPLOAD_BYTES"),
            429: (Detail, "Rate limit exceeded (Retry-After says when to try again)"),
        },
    )
    async def upload(request: Request) -> Response:
        character = await jobs.character(request.path_params["id"])
        cap = settings.max_character_images
        try:
            async with request.form(
                max_files=cap, max_fields=cap + 10, max_part_size=MAX_FIELD_BYTES
            ) as form:
                parts = form.getlist("files")
                captions = [c for c in form.getlist("captions") if isinstance(c, str)]
                if not parts:
                    raise ApiError(400, "No files: send the images as multipart/form-data parts named files")
                if captions and len(captions) != len(parts):
                    raise ApiError(
                        400,
                        f"captions: give one per file, in the order of the files "
                        f"(got {len(captions)} captions for {len(parts)} files)",
                    )
                uploaded: list[str] = []
                rejected: list[dict[str, str]] = []
                for index, part in enumerate(parts):
                    caption = captions[index] if captions else ""
                    kept, refused = await _store(
                        engine, character.id, part, caption, settings.max_input_bytes
                    )
                    uploaded += kept
                    rejected += refused
        except HTTPException as exc:  # the multipart parser's own refusals (malformed, too many parts)
            raise ApiError(400, f"the multipart body is not valid: {exc.detail}") from None
        total = len((await engine.characters.get(character.id)).images)
        return json_response({"uploaded": uploaded, "rejected": rejected, "total_images": total}, 201)

    @api.route(
        "GET",
        "/api/characters/{id}/images",
        summary="A character's training images, by the names they are served under",
        responses={200: ImageList, **no_character},
    )
    async def list_images(request: Request) -> Response:
        character = await jobs.character(request.path_params["id"])
        names = [image.filename for image in character.images]
        return json_response({"images": names, "count": len(names)})

    @api.route(
        "GET",
        "/api/characters/{id}/images/{filename}",
        summary="One training image, as stored (orientation applied, metadata stripped)",
        responses={200: "The image's bytes: PNG, JPEG or WebP", 404: (Detail, "No such character or image")},
        produces="image/*",
    )
    async def image(request: Request) -> Response:
        character = await jobs.character(request.path_params["id"])
        filename = request.path_params["filename"]
        found = character.image(filename)
        if found is None:
            raise not_found("Image", filename)
        path = engine.characters.image_path(character, found)
        if not path.is_file():
            raise not_found("Image", filename)
        headers = {"Cache-Control": "private, max-age=3600", "ETag": f'"{found.sha256}"'}
        return FileResponse(path, media_type=found.media_type, headers=headers)

    @api.route(
        "DELETE",
        "/api/characters/{id}/images/{filename}",
        summary="Delete a training image",
        responses={204: None, 404: (Detail, "No such character or image")},
    )
    async def delete_image(request: Request) -> Response:
        character = await jobs.character(request.path_params["id"])
        filename = request.path_params["filename"]
        if character.image(filename) is None:
            raise not_found("Image", filename)
        await engine.characters.remove_image(character.id, filename)
        return Response(status_code=204)


def training_conflict(name: str, run_id: str | None) -> ApiError:
    job = f" (job train-{run_id})" if run_id else ""
    cancel = f"POST /api/training/train-{run_id}/cancel" if run_id else "POST /api/training/{id}/cancel"
    return ApiError(
        409, f"Character {name} is being trained{job}: cancel the training first ({cancel}), then delete it"
    )


async def _store(
    engine: Engine, character_id: str, part: Any, caption: str, max_bytes: int
) -> tuple[list[str], list[dict[str, str]]]:
    """Check and keep one uploaded part: (names kept, [{filename, reason}] refused)."""
    if not isinstance(part, UploadFile):
        return [], [
            {"filename": "(form field)", "reason": "sent as a text field, not a file: send it as a file part"}
        ]
    name = part.filename or None
    if part.size is not None and part.size > max_bytes:
        # Refused from its size alone: it is never read into memory.
        shown = name or "(unnamed file)"
        return [], [
            {
                "filename": shown,
                "reason": f"the file is {part.size:,} bytes; the limit is {max_bytes:,} bytes",
            }
        ]
    data = await part.read()
    report = await engine.characters.add_images(character_id, [Upload(name, data, caption)])
    return (
        [image.filename for image in report.added],
        [{"filename": filename, "reason": reason} for filename, reason in report.refused],
    )
