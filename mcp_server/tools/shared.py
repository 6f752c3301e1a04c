"""What every tool module shares: annotation presets, the tool collector, error translation, waiting."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Annotated, Any, TypeVar

from mcp.server.mcpserver import Context
from mcp.server.mcpserver.exceptions import ToolError
from mcp.server.mcpserver.tools import Tool
from mcp_types import CallToolResult, ToolAnnotations
from pydantic import Field

from core.backends import Progress
from core.engine import Engine
from core.errors import AtelierError, CharacterNotFound, InvalidInput
from core.models import Run
from mcp_server import views
from mcp_server.arguments import CheckedTool, lines
from mcp_server.tool_schema import compact_description, compact_input

# The spec gives destructive and idempotent hints meaning only for tools that change something.
READ_ONLY = ToolAnnotations(read_only_hint=True, open_world_hint=False)
CREATES = ToolAnnotations(
    read_only_hint=False, destructive_hint=False, idempotent_hint=False, open_world_hint=False
)
STOPS = ToolAnnotations(
    read_only_hint=False, destructive_hint=True, idempotent_hint=True, open_world_hint=False
)
MAX_WAIT_S = 120

RunId = Annotated[str, Field(description="A run id (from generate_image, list_runs...).")]
WaitSeconds = Annotated[
    float,
    Field(description="Seconds to wait for the run to finish.", ge=0, le=MAX_WAIT_S),
]
F = TypeVar("F", bound=Callable[..., Any])


class ToolList:
    """Tools collected in the order they are declared, for `MCPServer(tools=[...])`."""

    def __init__(self) -> None:
        self.tools: list[Tool] = []

    def tool(
        self,
        annotations: ToolAnnotations,
        *,
        structured_output: bool | None = None,
        engine_rules: bool = True,
    ) -> Callable[[F], F]:
        """Collect a function as a tool that checks its arguments in Atelier's words.

        `engine_rules=False` words argument errors from the tool's own schema only (see `CheckedTool`)."""

        def collect(fn: F) -> F:
            tool = CheckedTool.from_function(fn, annotations=annotations, structured_output=structured_output)
            tool.engine_rules = engine_rules
            tool.parameters = compact_input(tool.parameters)
            tool.description = compact_description(tool.description)
            self.tools.append(tool)
            return fn

        return collect


@contextmanager
def tool_errors() -> Iterator[None]:
    """Engine errors become a tool's isError result carrying the engine's own sentence(s)."""
    try:
        yield
    except InvalidInput as exc:
        raise ToolError(lines(exc)) from None
    except CharacterNotFound as exc:
        # Named as the argument it came from, like every other bad argument.
        raise ToolError(
            f"character: there is no character {exc.ref[:80]!r} (list_characters shows the ones that exist)"
        ) from None
    except AtelierError as exc:
        raise ToolError(str(exc)) from None


async def run_result(engine: Engine, run: Run, *, expose_paths: bool) -> CallToolResult:
    """A run as a tool result: its view, and thumbnails plus links once it has images."""
    return await views.run_result(
        engine, run, expose_paths=expose_paths, thumbnail_px=engine.settings.thumbnail_px
    )


async def wait_reporting(
    engine: Engine,
    run: Run,
    seconds: float,
    ctx: Context | None,
    describe: Callable[[Progress], str] | None = None,
) -> Run:
    """The run after waiting up to `seconds` for it to finish, its progress reported to `ctx`
    (in `describe`'s words; by default `progress_message`'s)."""
    words = describe or progress_message
    if run.status.is_final or seconds <= 0:
        return run
    best = 0.0

    async def report(current: Run, progress: Progress) -> None:
        nonlocal best
        # MCP progress must only grow; a retried attempt starts its steps again.
        value = max(best, round(progress.fraction * 100, 2))
        if ctx is not None and value > best:
            best = value
            await ctx.report_progress(value, 100, words(progress))

    return await engine.wait(run.id, seconds, on_progress=report)


def progress_message(progress: Progress) -> str:
    """A progress notification's words: "step 450/1000 · loss 0.1234 · ETA 12s" (loss and ETA when known)."""
    parts = [f"step {progress.step}/{progress.max_steps}"]
    if progress.loss is not None:
        parts.append(f"loss {progress.loss:.4f}")
    if progress.eta_s is not None:
        parts.append(f"ETA {_duration(progress.eta_s)}")
    return " · ".join(parts)


def _duration(seconds: float) -> str:
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds // 60 % 60:02d}m"
