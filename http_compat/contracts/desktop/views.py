"""What clients see of image runs: a generation, a history row, a detail; and the lookup of a
generation by its id (the run's `seq`)."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request

from core.engine import Engine
from core.errors import InvalidInput, RunNotFound
from core.models import Run, RunKind, RunStatus
from http_compat.contracts.desktop.shapes import Generation, GenerationDetail, HistoryItem, Parameters
from http_compat.errors import ApiError
from http_compat.responses import base_url, iso

STATUS = {
    RunStatus.QUEUED: "queued",
    RunStatus.RUNNING: "generating",
    RunStatus.COMPLETED: "completed",
    RunStatus.FAILED: "failed",
    RunStatus.CANCELLED: "failed",
}


def first_image(run: Run) -> str | None:
    return run.artifacts[0].filename if run.artifacts else None


def file_path(run: Run) -> str | None:
    filename = first_image(run)
    return None if filename is None else f"/generated/{run.seq}/{filename}"


def file_url(request: Request, run: Run) -> str | None:
    path = file_path(run)
    return None if path is None else base_url(request) + path


def generation(request: Request, run: Run) -> dict[str, Any]:
    return Generation(
        id=run.seq,
        prompt=run.inputs.get("prompt", ""),
        filePath=file_path(run),
        url=file_url(request, run),
        seed=run.inputs.get("seed"),
        created_at=iso(run.created_at) or "",
    ).model_dump()


def history_item(run: Run) -> dict[str, Any]:
    return HistoryItem(
        id=run.seq,
        type="image",
        prompt=run.inputs.get("prompt", ""),
        filePath=file_path(run),
        created_at=iso(run.created_at) or "",
        status=STATUS[run.status],
    ).model_dump()


def detail(request: Request, run: Run) -> dict[str, Any]:
    inputs = run.inputs
    first = run.artifacts[0] if run.artifacts else None
    source = inputs.get("source") or {}
    return GenerationDetail(
        id=run.seq,
        type="image",
        prompt=inputs.get("prompt", ""),
        negativePrompt=inputs.get("negative_prompt") or None,
        parameters=Parameters(
            width=inputs.get("width") or (first and first.width) or source.get("width"),
            height=inputs.get("height") or (first and first.height) or source.get("height"),
            steps=inputs.get("steps"),
            cfgScale=inputs.get("cfg"),
            seed=inputs.get("seed"),
        ),
        filePath=file_path(run),
        url=file_url(request, run),
        created_at=iso(run.created_at) or "",
        status=STATUS[run.status],
        error=run.error,
    ).model_dump()


def parse_id(raw: str) -> int:
    if not raw.isascii() or not raw.isdigit() or int(raw) == 0:
        raise ApiError(
            400, f"id: must be a positive integer (got {raw[:40]!r})", code="INVALID_PARAMETERS",
            details={"field": "id"},
        )  # fmt: skip
    return int(raw)


async def find(engine: Engine, raw_id: str) -> Run:
    """The image run with this id, or the document's 404."""
    try:
        run = await engine.get_run_by_seq(parse_id(raw_id))
    except (RunNotFound, InvalidInput):
        run = None
    if run is None or run.kind is not RunKind.IMAGE:
        raise ApiError(404, "Generation not found", code="NOT_FOUND")
    return run
