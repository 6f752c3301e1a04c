"""The document's bodies: requests, answers and settings, as pydantic models (they are the
OpenAPI document's schemas too)."""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from core.models import MAX_PROMPT_CHARS, MAX_SEED

Side = Annotated[
    int, Field(ge=64, le=4096, multiple_of=8, description="Pixels: a multiple of 8 in 64..4096.")
]
Steps = Annotated[int, Field(ge=1, le=150, description="Inference steps, 1..150.")]
CfgScale = Annotated[float, Field(ge=0, le=30, description="Guidance scale, 0..30.")]
Seed = Annotated[int, Field(ge=0, le=MAX_SEED, description="Same seed and inputs, same image.")]
NegativePrompt = Annotated[str, Field(max_length=MAX_PROMPT_CHARS, description="What to avoid.")]
PROMPT_FIELD = Field(default=None, description=f"What to make: 1..{MAX_PROMPT_CHARS} characters (required).")


def requiring(*fields: str) -> ConfigDict:
    """The prompt is checked by the handler (its errors are INVALID_PROMPT), yet it is required:
    say so in the schema."""
    return ConfigDict(extra="forbid", json_schema_extra={"required": list(fields)})


class TextToImageRequest(BaseModel):
    model_config = requiring("prompt")

    prompt: str | None = PROMPT_FIELD
    negativePrompt: NegativePrompt | None = None
    width: Side | None = Field(default=None, description="Default: the settings' defaultWidth (512).")
    height: Side | None = Field(default=None, description="Default: the settings' defaultHeight (512).")
    steps: Steps | None = Field(default=None, description="Default: the settings' defaultSteps (25).")
    cfgScale: CfgScale | None = Field(
        default=None, description="Default: the settings' defaultCfgScale (7.5)."
    )
    seed: Seed | None = None


class ImageToImageRequest(BaseModel):
    model_config = requiring("seedImage", "prompt")

    seedImage: str = Field(
        min_length=1,
        max_length=50_000_000,
        description="A filePath or url this API returned, a data: URL or base64, a path in an allowed "
        "folder, or a loopback URL.",
    )
    prompt: str | None = PROMPT_FIELD
    strength: float = Field(default=0.7, ge=0, le=1, description="0 = no change, 1 = full change.")
    steps: Steps | None = None
    cfgScale: CfgScale | None = None
    negativePrompt: NegativePrompt | None = Field(default=None, description="Atelier extension.")
    seed: Seed | None = Field(default=None, description="Atelier extension.")


class UpscaleRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    imagePath: str = Field(
        min_length=1, max_length=50_000_000, description="The image, in any form seedImage accepts."
    )
    scale: int = Field(default=2, ge=1, le=8, description="Scale factor, an integer 1..8.")


class Generation(BaseModel):
    id: int
    prompt: str
    filePath: str | None = Field(description="/generated/<id>/<filename>, relative to the API's base URL.")
    url: str | None = Field(description="The image's absolute URL.")
    seed: int | None
    created_at: str


class GenerationResponse(BaseModel):
    success: Literal[True]
    data: Generation


class PendingGeneration(Generation):
    status: Literal["queued", "generating"] = Field(description="Atelier extension.")


class PendingResponse(BaseModel):
    success: Literal[True]
    data: PendingGeneration


class HistoryItem(BaseModel):
    id: int
    type: Literal["image", "video"]
    prompt: str
    filePath: str | None
    created_at: str
    status: str = Field(description="Atelier extension: queued, generating, completed or failed.")


class HistoryPage(BaseModel):
    success: Literal[True]
    data: list[HistoryItem]
    total: int = Field(description="Every generation matching the filter, across all pages.")


class Parameters(BaseModel):
    width: int | None
    height: int | None
    steps: int | None
    cfgScale: float | None
    seed: int | None


class GenerationDetail(BaseModel):
    id: int
    type: Literal["image", "video"]
    prompt: str
    negativePrompt: str | None
    parameters: Parameters
    filePath: str | None
    url: str | None
    created_at: str
    status: str = Field(description="Atelier extension: queued, generating, completed or failed.")
    error: str | None = Field(description="Atelier extension: why it failed.")


class DetailResponse(BaseModel):
    success: Literal[True]
    data: GenerationDetail


class Done(BaseModel):
    success: Literal[True]
    message: str


def plain_path(value: str | None) -> str | None:
    if value is not None and (re.search(r"[\x00-\x1f\x7f]", value) or "://" in value):
        raise ValueError("must be a plain relative or absolute path (no control characters, no URL)")
    return value


class AppSettings(BaseModel):
    storagePath: str = Field(min_length=1, max_length=500, description="Kept and reported; not used.")
    defaultWidth: Side
    defaultHeight: Side
    defaultSteps: Steps
    defaultCfgScale: CfgScale

    @field_validator("storagePath")
    @classmethod
    def _plain(cls, value: str) -> str:
        return plain_path(value) or value


class SettingsUpdate(BaseModel):
    """Any subset of the settings; the rest keep their values."""

    model_config = ConfigDict(extra="forbid")

    storagePath: str | None = Field(default=None, min_length=1, max_length=500)
    defaultWidth: Side | None = None
    defaultHeight: Side | None = None
    defaultSteps: Steps | None = None
    defaultCfgScale: CfgScale | None = None

    @field_validator("storagePath")
    @classmethod
    def _plain(cls, value: str | None) -> str | None:
        return plain_path(value)

    @field_validator("*", mode="before")
    @classmethod
    def _not_null(cls, value: object) -> object:
        if value is None:
            raise ValueError("must not be null (leave the field out to keep its value)")
        return value


class SettingsResponse(BaseModel):
    success: Literal[True]
    data: AppSettings
    message: str | None = None


class Health(BaseModel):
    status: str
    version: str
