"""Atelier's MCP tools and resources, over one engine.

Tools validate through the engine (so every front door gives the same errors), never hold
state of their own, and never block past the caller's wait budget: a run keeps going when a
call stops waiting for it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Annotated, Any

from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ResourceError, ToolError
from mcp_types import CallToolResult, ResourceLink, TextContent, ToolAnnotations
from pydantic import Field

from core.backends import Progress
from core.engine import Engine
from core.errors import AtelierError
from core.ids import check_filename, check_run_id
from core.models import MAX_PROMPT_CHARS, MAX_SEED, Run
from mcp_server import views
from mcp_server.views import BundleView, Deleted, RunList, RunView

INSTRUCTIONS = """\
Atelier makes images and keeps a durable record of every run.
generate_image (text-to-image), transform_image (image-to-image) and upscale_image queue a
run and wait up to `wait_seconds` for it; if it is not done by then you get the run id: call
wait_for_run with it (as often as needed). list_workflows and list_models tell which
workflows, checkpoints and LoRAs can be named. Finished runs come back as
small thumbnails plus links (atelier://runs/{run_id}/images/{filename}) to the full-size files.
list_runs, get_run, cancel_run, retry_run, delete_run and bundle_run manage runs; get_status
reports backend health and the queue.
"""

READ_ONLY = ToolAnnotations(
    read_only_hint=True, destructive_hint=False, idempotent_hint=True, open_world_hint=False
)
CREATES = ToolAnnotations(
    read_only_hint=False, destructive_hint=False, idempotent_hint=False, open_world_hint=False
)
STOPS = ToolAnnotations(
    read_only_hint=False, destructive_hint=True, idempotent_hint=True, open_world_hint=False
)
MAX_WAIT_S = 120


def _ranged(description: str, **bounds: Any) -> Any:
    """A parameter whose range the schema advertises; the engine enforces it with a clear message."""
    return Field(description=description, json_schema_extra=bounds)


RunId = Annotated[str, Field(description="The run's id, as returned by generate_image or list_runs.")]
NegativePrompt = Annotated[str | None, _ranged("What to keep out of the image.", maxLength=MAX_PROMPT_CHARS)]
Side = Annotated[
    int | None,
    _ranged(
        "Pixels, a multiple of 8. Default: the workflow's (512 for sd15).",
        minimum=64,
        maximum=4096,
        multipleOf=8,
    ),
]
Steps = Annotated[int | None, _ranged("Sampling steps. Default: the workflow's.", minimum=1, maximum=150)]
Cfg = Annotated[
    float | None, _ranged("Prompt guidance strength. Default: the workflow's.", minimum=0, maximum=30)
]
Seed = Annotated[
    int | None, _ranged("Same seed + inputs = same image. Random if omitted.", minimum=0, maximum=MAX_SEED)
]
Sampler = Annotated[str | None, Field(description="Sampler name, e.g. euler, dpmpp_2m.")]
Scheduler = Annotated[str | None, Field(description="Noise schedule, e.g. normal, karras, simple.")]
Count = Annotated[int | None, _ranged("Images in this run (a batch). Default 1.", minimum=1, maximum=16)]
WorkflowName = Annotated[
    str | None, Field(description="A workflow from list_workflows. Default: sd15 / img2img / upscale.")
]
Checkpoint = Annotated[
    str | None, Field(description="Model file to use instead of the workflow's, from list_models.")
]
Loras = Annotated[
    list[str] | None,
    Field(
        description="LoRAs to apply, each 'name' or 'name:strength' (e.g. 'pixel-art.safetensors:0.8').",
        max_length=8,
    ),
]
Denoise = Annotated[
    float | None, _ranged("Denoising strength 0..1 (text-to-image uses 1).", minimum=0, maximum=1)
]
PriorityName = Annotated[
    str, Field(description="low | normal | high | urgent: higher priorities start first.")
]
IdempotencyKey = Annotated[
    str | None, Field(description="Calling again with the same key returns the same run, not a new one.")
]
Source = Annotated[
    str,
    Field(
        description=(
            "The image to start from: a run's image (atelier://runs/<id>/images/<file>, or a run id for its "
            "first image), a file path inside an allowed folder, an http(s) URL on this machine, or base64 "
            "PNG/JPEG/WebP data (optionally as a data: URL)."
        ),
        min_length=1,
    ),
]
WaitSeconds = Annotated[
    float,
    _ranged(f"How long to wait for the run to finish, 0..{MAX_WAIT_S} s.", minimum=0, maximum=MAX_WAIT_S),
]


@contextmanager
def _reported_as(error: type[ToolError] | type[ResourceError]) -> Iterator[None]:
    """Engine errors become MCP errors (a tool's isError result) carrying the engine's own sentence."""
    try:
        yield
    except AtelierError as exc:
        raise error(str(exc)) from None


def _tool_errors() -> AbstractContextManager[None]:
    return _reported_as(ToolError)


def _resource_errors() -> AbstractContextManager[None]:
    return _reported_as(ResourceError)


def _check_wait(seconds: float, field: str) -> float:
    if not 0 <= seconds <= MAX_WAIT_S:
        raise ToolError(f"{field}: must be a number of seconds in 0..{MAX_WAIT_S} (got {seconds!r})")
    return seconds


def build_mcp(engine: Engine, *, expose_paths: bool = True) -> MCPServer:
    """An MCP server over `engine`. `expose_paths` adds server-side file paths to results (stdio)."""
    mcp = MCPServer(
        "atelier", instructions=INSTRUCTIONS, version=_version(), log_level=engine.settings.log_level.upper()
    )
    thumb_px = engine.settings.thumbnail_px

    async def result_for(run: Run) -> CallToolResult:
        return await views.run_result(engine, run, expose_paths=expose_paths, thumbnail_px=thumb_px)

    async def wait_reporting(run: Run, seconds: float, ctx: Context | None) -> Run:
        if run.status.is_final or seconds <= 0:
            return run
        best = 0.0

        async def report(current: Run, progress: Progress) -> None:
            nonlocal best
            # MCP progress must only grow; a retried attempt starts its steps again.
            value = max(best, round(progress.fraction * 100, 2))
            if ctx is not None and value > best:
                best = value
                await ctx.report_progress(value, 100, f"step {progress.step}/{progress.max_steps}")

        return await engine.wait(run.id, seconds, on_progress=report)

    async def submit_and_wait(
        params: dict[str, Any],
        priority: str,
        idempotency_key: str | None,
        wait_seconds: float,
        ctx: Context | None,
    ) -> CallToolResult:
        with _tool_errors():
            _check_wait(wait_seconds, "wait_seconds")
            run = await engine.submit_image(params, priority=priority, idempotency_key=idempotency_key)
            run = await wait_reporting(run, wait_seconds, ctx)
            return await result_for(run)

    @mcp.tool(annotations=CREATES, structured_output=True)
    async def generate_image(
        prompt: Annotated[str, _ranged("What to draw.", minLength=1, maxLength=MAX_PROMPT_CHARS)],
        negative_prompt: NegativePrompt = None,
        width: Side = None,
        height: Side = None,
        steps: Steps = None,
        cfg: Cfg = None,
        seed: Seed = None,
        sampler: Sampler = None,
        scheduler: Scheduler = None,
        count: Count = None,
        workflow: WorkflowName = None,
        checkpoint: Checkpoint = None,
        loras: Loras = None,
        denoise: Denoise = None,
        priority: PriorityName = "normal",
        idempotency_key: IdempotencyKey = None,
        wait_seconds: WaitSeconds = 20,
        ctx: Context | None = None,
    ) -> Annotated[CallToolResult, RunView]:
        """Generate images from a text prompt.

        Queues a run and waits up to `wait_seconds` for it. Returns the run (id, status,
        inputs including the seed used) and, once finished, thumbnails plus resource links to
        the full-size PNGs. If it is still running, call wait_for_run with the run id.
        Options left out take the workflow's defaults (see list_workflows).
        """
        params = {
            "prompt": prompt,
            "negative_prompt": negative_prompt,
            "width": width,
            "height": height,
            "steps": steps,
            "cfg": cfg,
            "seed": seed,
            "sampler": sampler,
            "scheduler": scheduler,
            "count": count,
            "workflow": workflow,
            "checkpoint": checkpoint,
            "loras": loras,
            "denoise": denoise,
        }
        return await submit_and_wait(params, priority, idempotency_key, wait_seconds, ctx)

    @mcp.tool(annotations=CREATES, structured_output=True)
    async def transform_image(
        source: Source,
        prompt: Annotated[
            str, _ranged("What the result should show.", minLength=1, maxLength=MAX_PROMPT_CHARS)
        ],
        denoise: Annotated[
            float | None,
            _ranged(
                "How much to repaint: 0 keeps the source, 1 ignores it. Default 0.6.", minimum=0, maximum=1
            ),
        ] = None,
        negative_prompt: NegativePrompt = None,
        steps: Steps = None,
        cfg: Cfg = None,
        seed: Seed = None,
        sampler: Sampler = None,
        scheduler: Scheduler = None,
        count: Count = None,
        workflow: WorkflowName = None,
        checkpoint: Checkpoint = None,
        loras: Loras = None,
        priority: PriorityName = "normal",
        idempotency_key: IdempotencyKey = None,
        wait_seconds: WaitSeconds = 20,
        ctx: Context | None = None,
    ) -> Annotated[CallToolResult, RunView]:
        """Image-to-image: repaint a source image guided by a prompt. The result keeps the source's size.

        Returns like generate_image. The source is stored with the run, so retries and
        restarts use the same pixels.
        """
        params = {
            "operation": "img2img",
            "source": source,
            "prompt": prompt,
            "denoise": denoise,
            "negative_prompt": negative_prompt,
            "steps": steps,
            "cfg": cfg,
            "seed": seed,
            "sampler": sampler,
            "scheduler": scheduler,
            "count": count,
            "workflow": workflow,
            "checkpoint": checkpoint,
            "loras": loras,
        }
        return await submit_and_wait(params, priority, idempotency_key, wait_seconds, ctx)

    @mcp.tool(annotations=CREATES, structured_output=True)
    async def upscale_image(
        source: Source,
        scale: Annotated[
            float | None, _ranged("Enlargement factor, 1..8. Default 2.", minimum=1, maximum=8)
        ] = None,
        workflow: WorkflowName = None,
        priority: PriorityName = "normal",
        idempotency_key: IdempotencyKey = None,
        wait_seconds: WaitSeconds = 20,
        ctx: Context | None = None,
    ) -> Annotated[CallToolResult, RunView]:
        """Upscale an image (on ComfyUI: an upscale model, then Lanczos to the exact factor).

        Returns like generate_image; the result is at most 8192 pixels on its longer side.
        """
        params = {"operation": "upscale", "source": source, "scale": scale, "workflow": workflow}
        return await submit_and_wait(params, priority, idempotency_key, wait_seconds, ctx)

    @mcp.tool(annotations=READ_ONLY)
    async def list_workflows() -> dict[str, Any]:
        """The workflows generate_image, transform_image and upscale_image can use.

        Each has its operation (txt2img, img2img, upscale), the parameters it takes, its
        defaults and the ComfyUI node types it needs. `problems` lists user workflow files
        that could not be loaded, and why.
        """
        return engine.list_workflows()

    @mcp.tool(annotations=READ_ONLY)
    async def list_models() -> dict[str, Any]:
        """Model files installed on the ComfyUI servers, by kind: checkpoints, loras, diffusion_models, vae, upscale_models.

        Use these names for `checkpoint` and `loras`. Empty with the preview renderer.
        """
        with _tool_errors():
            return await engine.list_models()

    @mcp.tool(annotations=READ_ONLY, structured_output=True)
    async def wait_for_run(
        run_id: RunId, timeout_seconds: WaitSeconds = 30, ctx: Context | None = None
    ) -> Annotated[CallToolResult, RunView]:
        """Wait for a run to finish, reporting progress, for at most `timeout_seconds`.

        Returns the run either way; if it is still queued or running, call again. Stopping
        the wait (or cancelling this call) never stops the run: use cancel_run for that.
        """
        with _tool_errors():
            _check_wait(timeout_seconds, "timeout_seconds")
            run = await engine.get_run(run_id)
            run = await wait_reporting(run, timeout_seconds, ctx)
            return await result_for(run)

    @mcp.tool(annotations=READ_ONLY, structured_output=True)
    async def get_run(
        run_id: RunId,
        include_logs: Annotated[bool, Field(description="Add the run's log lines.")] = False,
    ) -> RunView:
        """The current state of one run: status, progress, inputs, errors and image links. Does not wait."""
        with _tool_errors():
            run = await engine.get_run(run_id)
            logs = None
            if include_logs:
                logs = [f"{entry.level}: {entry.message}" for entry in await engine.logs(run_id)]
            return views.run_view(engine, run, expose_paths=expose_paths, logs=logs)

    @mcp.tool(annotations=READ_ONLY, structured_output=True)
    async def list_runs(
        status: Annotated[
            str | None,
            Field(description="Only runs in this status (queued, running, completed, failed, cancelled)."),
        ] = None,
        kind: Annotated[str | None, Field(description="Only runs of this kind (image, batch, ...).")] = None,
        limit: Annotated[int, _ranged("Runs per page, 1..200.", minimum=1, maximum=200)] = 20,
        cursor: Annotated[str | None, Field(description="`next_cursor` of the previous page.")] = None,
    ) -> RunList:
        """Runs, newest first, optionally filtered by status and kind. Page with `cursor`."""
        with _tool_errors():
            page = await engine.list_runs(status=status, kind=kind, limit=limit, cursor=cursor)
            return views.page_view(engine, page, expose_paths=expose_paths)

    @mcp.tool(annotations=STOPS, structured_output=True)
    async def cancel_run(run_id: RunId) -> RunView:
        """Cancel a queued or running run; a running one is stopped. A finished run is left as it is."""
        with _tool_errors():
            return views.run_view(engine, await engine.cancel(run_id), expose_paths=expose_paths)

    @mcp.tool(annotations=CREATES, structured_output=True)
    async def retry_run(run_id: RunId) -> RunView:
        """Queue a failed or cancelled run again with the same inputs (same seed, same images)."""
        with _tool_errors():
            return views.run_view(engine, await engine.retry(run_id), expose_paths=expose_paths)

    @mcp.tool(annotations=STOPS, structured_output=True)
    async def delete_run(run_id: RunId) -> Deleted:
        """Delete a run, its images and its log for good (stopping it first if needed)."""
        with _tool_errors():
            run = await engine.delete(run_id)
            return Deleted(run_id=run.id, deleted=True, status_before=run.status.value)

    @mcp.tool(annotations=READ_ONLY, structured_output=True)
    async def bundle_run(run_id: RunId) -> Annotated[CallToolResult, BundleView]:
        """Pack a run's images and its run.json (inputs, seed, timings) into one ZIP; returns a link to it."""
        with _tool_errors():
            bundle = await engine.bundle(run_id)
            view = BundleView(
                run_id=bundle.run_id,
                uri=f"atelier://runs/{bundle.run_id}/bundle.zip",
                size=bundle.size,
                files=bundle.files,
                path=str(bundle.path) if expose_paths else None,
            )
            link = ResourceLink(
                type="resource_link",
                uri=view.uri,
                name=f"{run_id}.zip",
                mime_type="application/zip",
                size=view.size,
            )
            text = TextContent(
                type="text", text=f"ZIP of run {run_id}: {len(view.files)} files, {view.size} bytes."
            )
            return CallToolResult(content=[text, link], structured_content=view.model_dump(mode="json"))

    @mcp.tool(annotations=READ_ONLY)
    async def get_status() -> dict[str, Any]:
        """Health of each backend, how many runs are queued and running, and throughput/latency figures."""
        return await engine.status()

    @mcp.resource("atelier://runs/{run_id}", mime_type="application/json", description="A run, as JSON.")
    async def run_resource(run_id: str) -> str:
        with _resource_errors():
            run = await engine.get_run(check_run_id(run_id))
            return json.dumps(run.to_dict())

    @mcp.resource(
        "atelier://runs/{run_id}/images/{filename}",
        mime_type="image/png",
        description="A full-size image of a run.",
    )
    async def image_resource(run_id: str, filename: str) -> bytes:
        with _resource_errors():
            _, data = await engine.read_artifact(check_run_id(run_id), check_filename(filename))
            return data

    @mcp.resource(
        "atelier://runs/{run_id}/bundle.zip",
        mime_type="application/zip",
        description="A run's images as a ZIP.",
    )
    async def bundle_resource(run_id: str) -> bytes:
        with _resource_errors():
            bundle = await engine.bundle(check_run_id(run_id))
            return bundle.path.read_bytes()

    return mcp


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("atelier-mcp")
    except PackageNotFoundError:
        return "0.0.0"
