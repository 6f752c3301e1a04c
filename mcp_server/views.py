"""What MCP tools return: structured run views, chat-sized thumbnails, and links to full-size files."""

from __future__ import annotations

import base64
import io
from typing import Any

import anyio
from mcp_types import CallToolResult, ContentBlock, ImageContent, ResourceLink, TextContent
from pydantic import BaseModel, Field

from core.engine import Engine
from core.models import Artifact, Run, RunStatus

# All inline images of one result together stay under this many base64 bytes (1 MB with headroom
# for the JSON around them), so chat clients accept the result.
INLINE_IMAGE_BUDGET = 900_000


def run_uri(run_id: str) -> str:
    return f"atelier://runs/{run_id}"


def image_uri(run_id: str, filename: str) -> str:
    return f"atelier://runs/{run_id}/images/{filename}"


class ImageRef(BaseModel):
    filename: str
    uri: str = Field(description="Resource URI of the full-size image (read it with resources/read).")
    media_type: str
    width: int | None
    height: int | None
    size: int = Field(description="Bytes.")
    sha256: str
    path: str | None = Field(default=None, description="Path of the file on the Atelier machine.")


class RunView(BaseModel):
    """A run as a model sees it: its state, what it asked for, and what it made."""

    run_id: str
    seq: int
    kind: str
    status: str = Field(description="queued | running | completed | failed | cancelled")
    progress: float = Field(description="0..1")
    step: int
    max_steps: int
    message: str
    priority: str
    backend: str
    attempts: int
    max_attempts: int
    error: str | None
    inputs: dict[str, Any]
    result: dict[str, Any] | None = Field(
        default=None, description="What a finished run made; for a training run, the LoRA version it added."
    )
    created_at: float
    started_at: float | None
    finished_at: float | None
    images: list[ImageRef]
    logs: list[str] | None = None
    next: str = Field(description="What to do next with this run.")


class Cancelled(RunView):
    """The run after a cancel_run, and whether that call is what stopped it."""

    cancelled: bool = Field(
        description="True if this call cancelled the run; false if it had already finished (see `status`)."
    )


class Deleted(BaseModel):
    run_id: str
    deleted: bool
    status_before: str = Field(description="The run's status when it was deleted.")
    stopped: bool = Field(description="True if the run was queued or running and was stopped first.")


class BundleView(BaseModel):
    run_id: str
    uri: str = Field(description="Resource URI of the ZIP.")
    size: int
    files: list[str]
    path: str | None = None


def run_view(engine: Engine, run: Run, *, expose_paths: bool, logs: list[str] | None = None) -> RunView:
    return RunView(
        run_id=run.id,
        seq=run.seq,
        kind=run.kind.value,
        status=run.status.value,
        progress=round(run.progress, 4),
        step=run.step,
        max_steps=run.max_steps,
        message=run.message,
        priority=run.priority.value,
        backend=run.backend,
        attempts=run.attempts,
        max_attempts=run.max_attempts,
        error=run.error,
        inputs=run.inputs,
        result=run.result,
        created_at=run.created_at,
        started_at=run.started_at,
        finished_at=run.finished_at,
        images=[_image_ref(engine, a, expose_paths) for a in run.artifacts],
        logs=logs,
        next=next_step(run),
    )


def _image_ref(engine: Engine, artifact: Artifact, expose_paths: bool) -> ImageRef:
    path = engine.artifact_path(artifact) if expose_paths else None
    return ImageRef(
        filename=artifact.filename,
        uri=image_uri(artifact.run_id, artifact.filename),
        media_type=artifact.media_type,
        width=artifact.width,
        height=artifact.height,
        size=artifact.size,
        sha256=artifact.sha256,
        path=str(path) if path else None,
    )


def next_step(run: Run) -> str:
    """What a model can do next with `run`, in one sentence."""
    match run.status.value:
        case "queued" | "running":
            return f"Still {run.status.value}. Call wait_for_run with run_id={run.id!r} to wait for it."
        case "completed" if run.kind.value == "training" and run.result:
            name = run.result.get("character_name") or run.result.get("character_id")
            return (
                f"Done: {name}'s LoRA v{run.result.get('version')} is trained and active. "
                f"generate_image with character={name!r} uses it."
            )
        case "completed":
            return "Done. Full-size images are at the `uri` of each image; bundle_run makes a ZIP."
        case "failed":
            return f"Failed: {run.error}. retry_run queues it again."
        case _:
            return "Cancelled. retry_run queues it again."


def said(text: str, view: BaseModel) -> CallToolResult:
    """A tool result that says `text` in words and carries `view` as its structured content."""
    return CallToolResult(
        content=[TextContent(type="text", text=text)], structured_content=view.model_dump(mode="json")
    )


def cancel_result(engine: Engine, before: Run, after: Run, *, expose_paths: bool) -> CallToolResult:
    """cancel_run's answer: whether this call stopped the run (`before` and `after` the cancel)."""
    stopped = not before.status.is_final and after.status is RunStatus.CANCELLED
    view = Cancelled(**run_view(engine, after, expose_paths=expose_paths).model_dump(), cancelled=stopped)
    if stopped:
        text = f"Run {after.id} was {before.status.value} and is now cancelled. retry_run queues it again."
    elif after.status is RunStatus.CANCELLED:
        text = f"Run {after.id} was already cancelled; nothing was cancelled."
    else:
        text = f"Run {after.id} had already {after.status.value}; nothing was cancelled."
    return said(text, view)


def delete_result(before: Run) -> CallToolResult:
    """delete_run's answer for the run as it was (`before`) when it was deleted."""
    stopped = not before.status.is_final
    files = f"its {len(before.artifacts)} image(s) and its log" if before.artifacts else "its log"
    if stopped:
        verb = "stopped" if before.status is RunStatus.RUNNING else "cancelled"
        text = f"Run {before.id} was {before.status.value}: {verb} it, then deleted it and {files}."
    else:
        text = f"Deleted run {before.id} ({before.status.value}) with {files}."
    view = Deleted(run_id=before.id, deleted=True, status_before=before.status.value, stopped=stopped)
    return said(text, view)


async def run_result(
    engine: Engine, run: Run, *, expose_paths: bool, thumbnail_px: int, with_images: bool = True
) -> CallToolResult:
    """The tool result for one run: a summary, thumbnails if it is done, and links to full size."""
    view = run_view(engine, run, expose_paths=expose_paths)
    content: list[ContentBlock] = [TextContent(type="text", text=_summary(view))]
    if with_images and run.artifacts:
        content.extend(await thumbnails(engine, run, thumbnail_px))
        content.extend(
            ResourceLink(
                type="resource_link",
                uri=image_uri(run.id, a.filename),
                name=a.filename,
                mime_type=a.media_type,
                size=a.size,
                description=f"{a.width}x{a.height} full-size image of run {run.id}",
            )
            for a in run.artifacts
        )
    return CallToolResult(content=content, structured_content=view.model_dump(mode="json"))


def _summary(view: RunView) -> str:
    head = f"Run {view.run_id}: {view.status}"
    if view.kind == "training":
        head = f"Training run {view.run_id} of {view.inputs.get('character_name')}: {view.status}"
    if view.status == "running":
        head += f" ({view.step}/{view.max_steps} steps{', ' + view.message if view.message else ''})"
    if view.images:
        head += f", {len(view.images)} image(s)"
    return f"{head}. {view.next}"


async def thumbnails(engine: Engine, run: Run, max_px: int) -> list[ImageContent]:
    """JPEG thumbnails of the run's images, together within `INLINE_IMAGE_BUDGET`."""
    sources = [
        await engine.store.read(a.storage_key) for a in run.artifacts if a.media_type.startswith("image/")
    ]
    return await image_thumbnails(sources, max_px)


async def image_thumbnails(sources: list[bytes], max_px: int) -> list[ImageContent]:
    """JPEG thumbnails of encoded images (PNG, JPEG, WebP), together within `INLINE_IMAGE_BUDGET`."""
    encoded = await anyio.to_thread.run_sync(_encode_thumbnails, sources, max_px)
    return [ImageContent(type="image", data=data, mime_type="image/jpeg") for data in encoded]


def _encode_thumbnails(sources: list[bytes], max_px: int) -> list[str]:
    from PIL import Image

    if not sources:
        return []
    # Shrink the side so that every image gets an equal share of the budget.
    share = INLINE_IMAGE_BUDGET // len(sources)
    out, used = [], 0
    for data in sources:
        with Image.open(io.BytesIO(data)) as opened:
            opened.draft("RGB", (max_px, max_px))  # JPEG: decode at a fraction of the size
            # Shrink by whole factors first (cheap, and never a second full-size copy), then
            # work on the small image only: an 8192x8192 result never exists twice in memory.
            factor = max(1, min(opened.size) // (2 * max_px))
            image = (opened.reduce(factor) if factor > 1 else opened).convert("RGB")
            side = max_px
            while True:
                thumb = image.copy()
                thumb.thumbnail((side, side))
                buffer = io.BytesIO()
                thumb.save(buffer, format="JPEG", quality=80)
                text = base64.b64encode(buffer.getvalue()).decode()
                if len(text) <= share or side <= 32:
                    break
                side = side * 3 // 4
        if used + len(text) > INLINE_IMAGE_BUDGET:
            break
        used += len(text)
        out.append(text)
    return out
