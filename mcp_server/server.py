"""Atelier's MCP tools and resources, over one engine.

Tools never hold state of their own and never block past the caller's wait budget: a run keeps
going when a call stops waiting for it.

Errors, decided once here:
- A tool's arguments are checked against its advertised schema (types, ranges, allowed words)
  before it runs, and every bad or unknown one is named on its own line, `field: problem (got
  value)`, in the engine's words for the same field (see `arguments.py`). What only the engine
  can judge (a blank prompt, an unknown workflow, a source image) comes back the same way.
- A tool's failure is an `isError` result; a resource's is a JSON-RPC error: a run, image or
  bundle that does not exist is "resource not found" (-32002 for clients of the 2025 protocols,
  -32602 from 2026-07-28 on, where the spec moved it), a malformed run id or file name is
  -32602 invalid params. Both carry the URI in `data`.
- Tools that change a run say in words what they did: `cancel_run` tells a run it stopped from
  one that had already finished (`cancelled: false`).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Annotated, Any, Literal, TypeVar
from urllib.parse import quote

import anyio
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.server.mcpserver.tools import Tool
from mcp.shared.exceptions import MCPError
from mcp_types import INVALID_PARAMS, CallToolResult, ResourceLink, TextContent, ToolAnnotations
from pydantic import Field

from core.backends import Progress
from core.engine import Engine
from core.errors import ArtifactNotFound, AtelierError, Conflict, InvalidInput, RunNotFound
from core.ids import check_filename, check_run_id
from core.models import MAX_PROMPT_CHARS, MAX_SEED, MAX_SIDE, MIN_SIDE, WORKFLOW_NAME_PATTERN, Run
from mcp_server import views
from mcp_server.arguments import CheckedTool, lines
from mcp_server.views import BundleView, Cancelled, Deleted, RunList, RunView

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
# The resource-not-found code of the 2025 protocols; 2026-07-28 answers INVALID_PARAMS instead (SEP-2164).
RESOURCE_NOT_FOUND_2025 = -32002
FIRST_PROTOCOL_WITH_INVALID_PARAMS_FOR_NOT_FOUND = "2026-07-28"

RunId = Annotated[str, Field(description="The run's id, as returned by generate_image or list_runs.")]
NegativePrompt = Annotated[
    str | None, Field(description="What to keep out of the image.", max_length=MAX_PROMPT_CHARS)
]
Side = Annotated[
    int | None,
    Field(
        description="Pixels, a multiple of 8. Default: the workflow's (512 for sd15).",
        ge=MIN_SIDE,
        le=MAX_SIDE,
        multiple_of=8,
    ),
]
Steps = Annotated[int | None, Field(description="Sampling steps. Default: the workflow's.", ge=1, le=150)]
Cfg = Annotated[
    float | None, Field(description="Prompt guidance strength. Default: the workflow's.", ge=0, le=30)
]
Seed = Annotated[
    int | None, Field(description="Same seed + inputs = same image. Random if omitted.", ge=0, le=MAX_SEED)
]
Sampler = Annotated[str | None, Field(description="Sampler name, e.g. euler, dpmpp_2m.")]
Scheduler = Annotated[str | None, Field(description="Noise schedule, e.g. normal, karras, simple.")]
Count = Annotated[int | None, Field(description="Images in this run (a batch). Default 1.", ge=1, le=16)]
WorkflowName = Annotated[
    str | None,
    Field(
        description="A workflow from list_workflows. Default: sd15 / img2img / upscale.",
        pattern=WORKFLOW_NAME_PATTERN,
    ),
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
    float | None, Field(description="Denoising strength 0..1 (text-to-image uses 1).", ge=0, le=1)
]
PriorityName = Annotated[
    Literal["low", "normal", "high", "urgent"], Field(description="Higher priorities start first.")
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
    Field(description=f"How long to wait for the run to finish, 0..{MAX_WAIT_S} s.", ge=0, le=MAX_WAIT_S),
]
StatusName = Literal["queued", "running", "completed", "failed", "cancelled"]
KindName = Literal["image", "batch", "training", "publish", "pod"]
F = TypeVar("F", bound=Callable[..., Any])


@contextmanager
def _tool_errors() -> Iterator[None]:
    """Engine errors become a tool's isError result carrying the engine's own sentence(s)."""
    try:
        yield
    except InvalidInput as exc:
        raise ToolError(lines(exc)) from None
    except AtelierError as exc:
        raise ToolError(str(exc)) from None


@contextmanager
def _resource_errors(uri: str, ctx: Context | None) -> Iterator[None]:
    """Engine errors become JSON-RPC errors: "resource not found" for what does not exist (or has no
    file yet), invalid params for a malformed id or name. The message is the engine's sentence;
    `uri` (rebuilt from the template's values, percent-encoded again) goes in `data`."""
    try:
        yield
    except (RunNotFound, ArtifactNotFound, Conflict) as exc:
        version = ctx.protocol_version if ctx is not None else None
        modern = version is not None and version >= FIRST_PROTOCOL_WITH_INVALID_PARAMS_FOR_NOT_FOUND
        code = INVALID_PARAMS if modern else RESOURCE_NOT_FOUND_2025
        raise MCPError(code, f"Resource not found: {exc}", {"uri": uri}) from None
    except AtelierError as exc:
        raise MCPError(INVALID_PARAMS, str(exc), {"uri": uri}) from None


def build_mcp(engine: Engine, *, expose_paths: bool = True) -> MCPServer:
    """An MCP server over `engine`. `expose_paths` adds server-side file paths to results (stdio)."""
    thumb_px = engine.settings.thumbnail_px
    tools: list[Tool] = []

    def tool(annotations: ToolAnnotations, *, structured_output: bool | None = None) -> Callable[[F], F]:
        """Register a function as a tool that checks its arguments in Atelier's words."""

        def register(fn: F) -> F:
            tools.append(
                CheckedTool.from_function(fn, annotations=annotations, structured_output=structured_output)
            )
            return fn

        return register

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
            run = await engine.submit_image(params, priority=priority, idempotency_key=idempotency_key)
            run = await wait_reporting(run, wait_seconds, ctx)
            return await result_for(run)

    @tool(CREATES, structured_output=True)
    async def generate_image(
        prompt: Annotated[str, Field(description="What to draw.", min_length=1, max_length=MAX_PROMPT_CHARS)],
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

    @tool(CREATES, structured_output=True)
    async def transform_image(
        source: Source,
        prompt: Annotated[
            str, Field(description="What the result should show.", min_length=1, max_length=MAX_PROMPT_CHARS)
        ],
        denoise: Annotated[
            float | None,
            Field(
                description="How much to repaint: 0 keeps the source, 1 ignores it. Default 0.6.", ge=0, le=1
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

    @tool(CREATES, structured_output=True)
    async def upscale_image(
        source: Source,
        scale: Annotated[
            float | None, Field(description="Enlargement factor, 1..8. Default 2.", ge=1, le=8)
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

    @tool(READ_ONLY)
    async def list_workflows() -> dict[str, Any]:
        """The workflows generate_image, transform_image and upscale_image can use.

        Each has its operation (txt2img, img2img, upscale), the parameters it takes, its
        defaults and the ComfyUI node types it needs. `problems` lists user workflow files
        that could not be loaded, and why.
        """
        return engine.list_workflows()

    @tool(READ_ONLY)
    async def list_models() -> dict[str, Any]:
        """Model files installed on the ComfyUI servers, by kind: checkpoints, loras, diffusion_models, vae, upscale_models.

        Use these names for `checkpoint` and `loras`. Empty with the preview renderer.
        """
        with _tool_errors():
            return await engine.list_models()

    @tool(READ_ONLY, structured_output=True)
    async def wait_for_run(
        run_id: RunId, timeout_seconds: WaitSeconds = 30, ctx: Context | None = None
    ) -> Annotated[CallToolResult, RunView]:
        """Wait for a run to finish, reporting progress, for at most `timeout_seconds`.

        Returns the run either way; if it is still queued or running, call again. Stopping
        the wait (or cancelling this call) never stops the run: use cancel_run for that.
        """
        with _tool_errors():
            run = await engine.get_run(run_id)
            run = await wait_reporting(run, timeout_seconds, ctx)
            return await result_for(run)

    @tool(READ_ONLY, structured_output=True)
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

    @tool(READ_ONLY, structured_output=True)
    async def list_runs(
        status: Annotated[StatusName | None, Field(description="Only runs in this status.")] = None,
        kind: Annotated[KindName | None, Field(description="Only runs of this kind.")] = None,
        limit: Annotated[int, Field(description="Runs per page, 1..200.", ge=1, le=200)] = 20,
        cursor: Annotated[str | None, Field(description="`next_cursor` of the previous page.")] = None,
    ) -> RunList:
        """Runs, newest first, optionally filtered by status and kind. Page with `cursor`."""
        with _tool_errors():
            page = await engine.list_runs(status=status, kind=kind, limit=limit, cursor=cursor)
            return views.page_view(engine, page, expose_paths=expose_paths)

    @tool(STOPS, structured_output=True)
    async def cancel_run(run_id: RunId) -> Annotated[CallToolResult, Cancelled]:
        """Cancel a queued or running run; a running one is stopped.

        A run that had already finished is left as it is: the result then says `cancelled: false`
        and which state it had finished in.
        """
        with _tool_errors():
            before = await engine.get_run(run_id)
            after = await engine.cancel(run_id)
            return views.cancel_result(engine, before, after, expose_paths=expose_paths)

    @tool(CREATES, structured_output=True)
    async def retry_run(run_id: RunId) -> Annotated[CallToolResult, RunView]:
        """Queue a failed or cancelled run again with the same inputs (same seed, same images).

        A queued, running or completed run is refused, saying why.
        """
        with _tool_errors():
            run = await engine.retry(run_id)
            return views.said(
                f"Run {run.id} is queued again with the same inputs. {views.next_step(run)}",
                views.run_view(engine, run, expose_paths=expose_paths),
            )

    @tool(STOPS, structured_output=True)
    async def delete_run(run_id: RunId) -> Annotated[CallToolResult, Deleted]:
        """Delete a run, its images and its log for good (stopping it first if it is queued or running)."""
        with _tool_errors():
            before = await engine.get_run(run_id)
            await engine.delete(run_id)
            return views.delete_result(before)

    @tool(READ_ONLY, structured_output=True)
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

    @tool(READ_ONLY)
    async def get_status() -> dict[str, Any]:
        """Health of each backend, how many runs are queued and running, and throughput/latency figures."""
        return await engine.status()

    mcp = MCPServer(
        "atelier",
        instructions=INSTRUCTIONS,
        version=_version(),
        log_level=engine.settings.log_level.upper(),
        tools=tools,
    )

    @mcp.resource("atelier://runs/{run_id}", mime_type="application/json", description="A run, as JSON.")
    async def run_resource(run_id: str, ctx: Context) -> str:
        with _resource_errors(views.run_uri(quote(run_id, safe="")), ctx):
            run = await engine.get_run(check_run_id(run_id))
            return json.dumps(run.to_dict())

    @mcp.resource(
        "atelier://runs/{run_id}/images/{filename}",
        mime_type="image/png",
        description="A full-size image of a run.",
    )
    async def image_resource(run_id: str, filename: str, ctx: Context) -> bytes:
        with _resource_errors(views.image_uri(quote(run_id, safe=""), quote(filename, safe="")), ctx):
            _, data = await engine.read_artifact(check_run_id(run_id), check_filename(filename))
            return data

    @mcp.resource(
        "atelier://runs/{run_id}/bundle.zip",
        mime_type="application/zip",
        description="A run's images as a ZIP.",
    )
    async def bundle_resource(run_id: str, ctx: Context) -> bytes:
        with _resource_errors(f"{views.run_uri(quote(run_id, safe=''))}/bundle.zip", ctx):
            bundle = await engine.bundle(check_run_id(run_id))
            return await anyio.Path(bundle.path).read_bytes()

    return mcp


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("atelier-mcp")
    except PackageNotFoundError:
        return "0.0.0"
