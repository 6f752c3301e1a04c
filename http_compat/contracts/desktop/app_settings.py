"""The application settings: kept in the ledger (document `desktop/settings`), read and merged
by `/api/settings`; their defaults fill what a generation request leaves out."""

from __future__ import annotations

import logging
from typing import Any

import anyio
from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import Response

from core.engine import Engine
from http_compat.api import Api
from http_compat.contracts.desktop.envelope import BAD_REQUEST, route
from http_compat.contracts.desktop.shapes import AppSettings, SettingsResponse, SettingsUpdate
from http_compat.responses import json_response

log = logging.getLogger("atelier.http.desktop")

SETTINGS_KEY = "desktop/settings"
DEFAULT_SETTINGS: dict[str, Any] = {
    "storagePath": "./generated",
    "defaultWidth": 512,
    "defaultHeight": 512,
    "defaultSteps": 25,
    "defaultCfgScale": 7.5,
}


async def load_settings(engine: Engine) -> AppSettings:
    """The stored settings over the defaults (the defaults alone if what is stored is invalid)."""
    stored = await engine.get_document(SETTINGS_KEY)
    merged = {**DEFAULT_SETTINGS, **(stored if isinstance(stored, dict) else {})}
    try:
        return AppSettings.model_validate({name: merged[name] for name in DEFAULT_SETTINGS})
    except ValidationError:
        log.warning("stored desktop settings are invalid; using the defaults")
        return AppSettings.model_validate(DEFAULT_SETTINGS)


def declare(api: Api, engine: Engine) -> None:
    """The settings routes, on `api`."""
    settings_lock = anyio.Lock()

    @route(api, "GET", "/api/settings", summary="The application settings", responses={200: SettingsResponse})
    async def get_settings(request: Request) -> Response:
        return json_response({"success": True, "data": (await load_settings(engine)).model_dump()})

    @route(
        api,
        "PUT",
        "/api/settings",
        summary="Update some or all settings",
        body=SettingsUpdate,
        responses={200: SettingsResponse, **BAD_REQUEST},
        example={"storagePath": "./custom/path", "defaultWidth": 768, "defaultHeight": 768},
    )
    async def put_settings(request: Request, body: SettingsUpdate) -> Response:
        async with settings_lock:
            current = await load_settings(engine)
            updated = AppSettings.model_validate(
                {**current.model_dump(), **body.model_dump(exclude_unset=True)}
            )
            await engine.put_document(SETTINGS_KEY, updated.model_dump())
        return json_response({"success": True, "message": "Settings updated", "data": updated.model_dump()})
