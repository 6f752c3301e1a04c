"""Isengard's logs: a job's log as JSONL (generation and training jobs), and client-side log
entries written to the server log with the request's correlation id."""

from __future__ import annotations

import json
import logging
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator
from starlette.requests import Request
from starlette.responses import Response

from core.engine import Engine
from core.models import RunKind
from http_compat.api import Api
from http_compat.contracts.isengard.envelope import Detail
from http_compat.contracts.isengard.middleware import CORRELATION_ID
from http_compat.contracts.isengard.views import Jobs
from http_compat.errors import ApiError
from http_compat.responses import iso

MAX_CLIENT_ENTRIES = 100
MAX_CLIENT_MESSAGE = 2_000
CLIENT_LEVELS = {
    "DEBUG": logging.DEBUG,
    "INFO": logging.INFO,
    "WARN": logging.WARNING,
    "WARNING": logging.WARNING,
    "ERROR": logging.ERROR,
    "CRITICAL": logging.CRITICAL,
}
client_log = logging.getLogger("atelier.client")


class ClientLogEntry(BaseModel):
    model_config = ConfigDict(extra="ignore")

    timestamp: str = Field(max_length=64)
    level: str = Field(description="DEBUG, INFO, WARN, WARNING, ERROR or CRITICAL (any case).")
    message: str = Field(max_length=MAX_CLIENT_MESSAGE)
    event: str | None = Field(default=None, max_length=200)
    context: dict[str, Any] | None = None

    @field_validator("level")
    @classmethod
    def _known_level(cls, value: str) -> str:
        level = value.strip().upper()
        if level not in CLIENT_LEVELS:
            raise ValueError(f"must be one of {', '.join(CLIENT_LEVELS)} (got {value[:20]!r})")
        return level


class ClientLogs(BaseModel):
    model_config = ConfigDict(extra="forbid")

    entries: list[ClientLogEntry] = Field(max_length=MAX_CLIENT_ENTRIES)


def declare(api: Api, engine: Engine, jobs: Jobs) -> None:
    """`/api/jobs/{id}/logs` and `/api/client-logs`, on `api`."""

    @api.route(
        "GET",
        "/api/jobs/{id}/logs",
        summary="A job's log (gen- or train- id) as JSONL: {timestamp, level, message, job_id} per line",
        responses={200: "text/plain: one JSON object per line", 404: (Detail, "Job logs not found")},
        produces="text/plain",
    )
    async def job_logs(request: Request) -> Response:
        given = request.path_params["id"]
        find = jobs.training_run if given.startswith("train-") else jobs.generation_run
        try:
            run = await find(given)
        except ApiError:
            raise ApiError(404, "Job logs not found") from None
        lines = [(entry.at, entry.message, entry.level) for entry in await engine.logs(run.id)]
        if run.kind is RunKind.BATCH:
            for item in await jobs.items(run):
                lines += [
                    (e.at, f"item gen-{item.id}: {e.message}", e.level) for e in await engine.logs(item.id)
                ]
        text = "".join(
            json.dumps(
                {
                    "timestamp": iso(at, millis=True),
                    "level": {"WARN": "WARNING"}.get(level.upper(), level.upper()),
                    "message": message,
                    "job_id": given,
                }
            )
            + "\n"
            for at, message, level in sorted(lines, key=lambda line: line[0])
        )
        return Response(text, media_type="text/plain")

    @api.route(
        "POST",
        "/api/client-logs",
        summary="Client-side log entries, written to the server log with the correlation id",
        body=ClientLogs,
        responses={204: None, 400: (Detail, "An entry is malformed (the message says which)")},
        example={
            "entries": [
                {
                    "timestamp": "2025-01-15T10:30:00.000Z",
                    "level": "ERROR",
                    "message": "Button click failed",
                    "event": "ui.error",
                    "context": {"page": "/characters", "button": "create"},
                }
            ]
        },
    )
    async def client_logs(request: Request, body: ClientLogs) -> Response:
        cid = CORRELATION_ID.get()
        for entry in body.entries:
            client_log.log(
                CLIENT_LEVELS[entry.level],
                "client %s at %s: %s (correlation id %s)",
                entry.event or "log",
                entry.timestamp,
                _one_line(entry.message),
                cid,
                extra={
                    "correlation_id": cid,
                    "client_timestamp": entry.timestamp,
                    "client_event": entry.event,
                    "client_context": entry.context,
                },
            )
        return Response(status_code=204)


def _one_line(text: str) -> str:
    """A client's message on one log line: it cannot forge lines of its own."""
    return text.replace("\r", "\\r").replace("\n", "\\n")
