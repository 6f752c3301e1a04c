"""Tools that make images (generate, transform, upscale) and tell what they can be made with."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from mcp.server.mcpserver import Context
from mcp.server.mcpserver.tools import Tool
from mcp_types import CallToolResult
from pydantic import Field

from core.engine import Engine
from core.models import MAX_PROMPT_CHARS, MAX_SEED, MAX_SIDE, MIN_SIDE, WORKFLOW_NAME_PATTERN
from mcp_server.tools.shared import (
    CREATES,
    READ_ONLY,
    ToolList,
    WaitSeconds,
    run_result,
    tool_errors,
    wait_reporting,
)
from mcp_server.views import RunView

NegativePrompt = Annotated[
    str | None, Field(description="What to keep out of the image.", max_length=MAX_PROMPT_CHARS)
]
Side = Annotated[
    int | None,
    Field(
        description="Pixels. Default: the workflow's (512 for sd15).",
        ge=MIN_SIDE,
        le=MAX_SIDE,
        multiple_of=8,
    ),
]
Steps = Annotated[int | None, Field(description="Sampling steps.", ge=1, le=150)]
Cfg = Annotated[float | None, Field(description="Prompt guidance strength.", ge=0, le=30)]
Seed = Annotated[
    int | None, Field(description="Same seed + inputs = same image. Default: random.", ge=0, le=MAX_SEED)
]
Sampler = Annotated[str | None, Field(description="e.g. euler, dpmpp_2m.")]
Scheduler = Annotated[str | None, Field(description="e.g. normal, karras.")]
Count = Annotated[int | None, Field(description="Images in this run. Default 1.", ge=1, le=16)]
WorkflowName = Annotated[
    str | None,
    Field(
        description="From list_workflows. Default: sd15 / img2img / upscale.",
        pattern=WORKFLOW_NAME_PATTERN,
    ),
]
Checkpoint = Annotated[
    str | None, Field(description="A checkpoint from list_models, instead of the workflow's.")
]
Loras = Annotated[
    list[str] | None,
    Field(
        description="LoRAs from list_models, each 'name' or 'name:strength' (e.g. 'x.safetensors:0.8').",
        max_length=8,
    ),
]
Denoise = Annotated[float | None, Field(description="Denoising strength (text-to-image uses 1).", ge=0, le=1)]
PriorityName = Annotated[
    Literal["low", "normal", "high", "urgent"], Field(description="Higher starts first.")
]
IdempotencyKey = Annotated[
    str | None, Field(description="The same key again returns the same run, not a new one.")
]
CharacterName = Annotated[
    str | None,
    Field(
        description="A trained character's id or name (list_characters): adds its LoRA and trigger word.",
        min_length=1,
        max_length=100,
    ),
]
CharacterStrength = Annotated[
    float | None,
    Field(description="Its LoRA's strength. Default 0.8.", ge=0, le=2),
]
Source = Annotated[
    str,
    Field(
        description=(
            "The image: atelier://runs/<id>/images/<file> (or a run id: its first image), a path in an "
            "allowed folder, an http(s) URL on this machine, or base64 PNG/JPEG/WebP (or a data: URL)."
        ),
        min_length=1,
    ),
]


def tools(engine: Engine, *, expose_paths: bool) -> list[Tool]:
    """generate_image, transform_image, upscale_image, list_workflows and list_models over `engine`."""
    found = ToolList()

    async def submit_and_wait(
        params: dict[str, Any],
        priority: str,
        idempotency_key: str | None,
        wait_seconds: float,
        ctx: Context | None,
    ) -> CallToolResult:
        with tool_errors():
            run = await engine.submit_image(params, priority=priority, idempotency_key=idempotency_key)
            run = await wait_reporting(engine, run, wait_seconds, ctx)
            return await run_result(engine, run, expose_paths=expose_paths)

    @found.tool(CREATES, structured_output=True)
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
        character: CharacterName = None,
        character_strength: CharacterStrength = None,
        priority: PriorityName = "normal",
        idempotency_key: IdempotencyKey = None,
        wait_seconds: WaitSeconds = 20,
        ctx: Context | None = None,
    ) -> Annotated[CallToolResult, RunView]:
        """Generate images from a text prompt.

        Queues a run and waits up to `wait_seconds` for it. Returns the run (id, status,
        inputs including the seed used) and, once finished, thumbnails plus resource links to
        the full-size PNGs. If it is still running, call wait_for_run with the run id.
        Options left out take the workflow's defaults (see list_workflows). `character` draws a
        trained character (train_character) with its LoRA; the run records the version used.
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
            "character": character,
            "character_strength": character_strength,
        }
        return await submit_and_wait(params, priority, idempotency_key, wait_seconds, ctx)

    @found.tool(CREATES, structured_output=True)
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
        character: CharacterName = None,
        character_strength: CharacterStrength = None,
        priority: PriorityName = "normal",
        idempotency_key: IdempotencyKey = None,
        wait_seconds: WaitSeconds = 20,
        ctx: Context | None = None,
    ) -> Annotated[CallToolResult, RunView]:
        """Image-to-image: repaint a source image guided by a prompt. The result keeps the source's size.

        Returns like generate_image. The source is stored with the run, so retries and
        restarts use the same pixels. `character` applies a trained character's LoRA, as in
        generate_image.
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
            "character": character,
            "character_strength": character_strength,
        }
        return await submit_and_wait(params, priority, idempotency_key, wait_seconds, ctx)

    @found.tool(CREATES, structured_output=True)
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

    @found.tool(READ_ONLY)
    async def list_workflows() -> dict[str, Any]:
        """The workflows generate_image, transform_image and upscale_image can use.

        Each has its operation (txt2img, img2img, upscale), the parameters it takes, its
        defaults and the ComfyUI node types it needs. `problems` lists user workflow files
        that could not be loaded, and why.
        """
        return engine.images.list_workflows()

    @found.tool(READ_ONLY)
    async def list_models() -> dict[str, Any]:
        """Model files installed on the ComfyUI servers, by kind: checkpoints, loras, diffusion_models, vae, upscale_models.

        Use these names for `checkpoint` and `loras`. Empty with the preview renderer.
        """
        with tool_errors():
            return await engine.images.list_models()

    return found.tools
