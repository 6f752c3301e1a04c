"""Atelier's MCP resources by atelier:// URI: runs, their full-size images and their ZIP bundles;
characters and their training images; products and their mockups (files of the run that made them).

An image's declared MIME type is the template's (`image/png`); `build_mcp`'s server reports the
type the bytes themselves have (a character's images may be JPEG or WebP)."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import anyio
from mcp.server.mcpserver import Context
from mcp.shared.exceptions import MCPError
from mcp_types import INVALID_PARAMS

from core.engine import Engine
from core.errors import (
    ArtifactNotFound,
    AtelierError,
    CharacterNotFound,
    Conflict,
    ProductNotFound,
    RunNotFound,
)
from core.ids import check_filename, check_run_id
from mcp_server import character_views, product_views, views

# The resource-not-found code of the 2025 protocols; 2026-07-28 answers INVALID_PARAMS instead (SEP-2164).
RESOURCE_NOT_FOUND_2025 = -32002
FIRST_PROTOCOL_WITH_INVALID_PARAMS_FOR_NOT_FOUND = "2026-07-28"


@dataclass(frozen=True)
class Template:
    """A resource template for `MCPServer.resource`: its URI, what it serves, and the function reading it.

    The function's parameters are the URI's variables (plus the context); its name is the resource's."""

    uri: str
    mime_type: str
    description: str
    read: Callable[..., Awaitable[Any]]


@contextmanager
def resource_errors(uri: str, ctx: Context | None) -> Iterator[None]:
    """Engine errors become JSON-RPC errors: "resource not found" for what does not exist (or has no
    file yet), invalid params for a malformed id or name. The message is the engine's sentence;
    `uri` (rebuilt from the template's values, percent-encoded again) goes in `data`."""
    try:
        yield
    except (RunNotFound, ArtifactNotFound, CharacterNotFound, ProductNotFound, Conflict) as exc:
        raise not_found(uri, ctx, str(exc)) from None
    except AtelierError as exc:
        raise MCPError(INVALID_PARAMS, str(exc), {"uri": uri}) from None


def not_found(uri: str, ctx: Context | None, what: str) -> MCPError:
    """The "resource not found" error in the code of the client's protocol era."""
    version = ctx.protocol_version if ctx is not None else None
    modern = version is not None and version >= FIRST_PROTOCOL_WITH_INVALID_PARAMS_FOR_NOT_FOUND
    code = INVALID_PARAMS if modern else RESOURCE_NOT_FOUND_2025
    return MCPError(code, f"Resource not found: {what}", {"uri": uri})


def templates(engine: Engine) -> list[Template]:
    """atelier://runs/{run_id}, .../images/{filename} and .../bundle.zip, characters and products over `engine`."""

    async def run_resource(run_id: str, ctx: Context) -> str:
        with resource_errors(views.run_uri(quote(run_id, safe="")), ctx):
            run = await engine.get_run(check_run_id(run_id))
            return json.dumps(run.to_dict())

    async def image_resource(run_id: str, filename: str, ctx: Context) -> bytes:
        with resource_errors(views.image_uri(quote(run_id, safe=""), quote(filename, safe="")), ctx):
            _, data = await engine.read_artifact(check_run_id(run_id), check_filename(filename))
            return data

    async def bundle_resource(run_id: str, ctx: Context) -> bytes:
        with resource_errors(f"{views.run_uri(quote(run_id, safe=''))}/bundle.zip", ctx):
            bundle = await engine.bundle(check_run_id(run_id))
            return await anyio.Path(bundle.path).read_bytes()

    async def character_resource(character_id: str, ctx: Context) -> str:
        with resource_errors(character_views.character_uri(quote(character_id, safe="")), ctx):
            character = await engine.characters.get(character_id)
            training = await engine.training.runs_of(character.id)
            view = character_views.character_view(engine, character, training, expose_paths=False)
            return view.model_dump_json()

    async def character_image_resource(character_id: str, filename: str, ctx: Context) -> bytes:
        uri = character_views.character_image_uri(quote(character_id, safe=""), quote(filename, safe=""))
        with resource_errors(uri, ctx):
            character = await engine.characters.get(character_id)
            if character.image(check_filename(filename)) is None:
                raise not_found(uri, ctx, f"{character.name} has no image {filename!r}")
            _, data = await engine.characters.read_image(character.id, filename)
            return data

    async def product_resource(product_id: str, ctx: Context) -> str:
        with resource_errors(product_views.product_uri(quote(product_id, safe="")), ctx):
            product = await engine.products.get(product_id)
            return product_views.product_view(engine, product).model_dump_json()

    async def mockup_resource(product_id: str, filename: str, ctx: Context) -> bytes:
        uri = product_views.mockup_uri(quote(product_id, safe=""), quote(filename, safe=""))
        with resource_errors(uri, ctx):
            product = await engine.products.get(product_id)
            mockup = next((f for f in product.mockups if f.filename == check_filename(filename)), None)
            if mockup is None:
                raise not_found(uri, ctx, f"product {product.id} has no mockup {filename!r}")
            # A mockup is a file of the run that made the product (readable once that run is done).
            _, data = await engine.read_artifact(mockup.run_id, mockup.filename)
            return data

    return [
        Template("atelier://runs/{run_id}", "application/json", "A run, as JSON.", run_resource),
        Template(
            "atelier://runs/{run_id}/images/{filename}",
            "image/png",
            "A full-size image of a run.",
            image_resource,
        ),
        Template(
            "atelier://runs/{run_id}/bundle.zip",
            "application/zip",
            "A run's images as a ZIP.",
            bundle_resource,
        ),
        Template(
            "atelier://characters/{character_id}",
            "application/json",
            "A character (by id or name), as JSON: its images, LoRA versions and training runs.",
            character_resource,
        ),
        Template(
            "atelier://characters/{character_id}/images/{filename}",
            "image/png",
            "A character's training image as stored (PNG, JPEG or WebP: the contents carry its type).",
            character_image_resource,
        ),
        Template(
            "atelier://products/{product_id}",
            "application/json",
            "A product, as JSON: its listings per platform, print files and mockups.",
            product_resource,
        ),
        Template(
            "atelier://products/{product_id}/mockups/{filename}",
            "image/jpeg",
            "A product's mockup image, one per colour (JPEG: the contents carry its type).",
            mockup_resource,
        ),
    ]
