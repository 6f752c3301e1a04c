"""Tools that follow and manage runs: wait, look, list, cancel, retry, delete, bundle."""

from __future__ import annotations

from typing import Annotated, Literal

from mcp.server.mcpserver import Context
from mcp.server.mcpserver.tools import Tool
from mcp_types import CallToolResult, ResourceLink, TextContent
from pydantic import Field

from core.engine import Engine
from mcp_server import run_list, views
from mcp_server.run_list import RunList
from mcp_server.tools.shared import (
    CREATES,
    READ_ONLY,
    STOPS,
    RunId,
    ToolList,
    WaitSeconds,
    run_result,
    tool_errors,
    wait_reporting,
)
from mcp_server.views import BundleView, Cancelled, Deleted, RunView

StatusName = Literal["queued", "running", "completed", "failed", "cancelled"]
KindName = Literal["image", "batch", "training", "publish", "pod"]


def tools(engine: Engine, *, expose_paths: bool) -> list[Tool]:
    """wait_for_run, get_run, list_runs, cancel_run, retry_run, delete_run and bundle_run over `engine`."""
    found = ToolList()

    @found.tool(READ_ONLY, structured_output=True)
    async def wait_for_run(
        run_id: RunId, timeout_seconds: WaitSeconds = 30, ctx: Context | None = None
    ) -> Annotated[CallToolResult, RunView]:
        """Wait for a run to finish, reporting progress, for at most `timeout_seconds`.

        Returns the run either way; if it is still queued or running, call again. Stopping
        the wait (or cancelling this call) never stops the run: use cancel_run for that.
        """
        with tool_errors():
            run = await engine.get_run(run_id)
            run = await wait_reporting(engine, run, timeout_seconds, ctx)
            return await run_result(engine, run, expose_paths=expose_paths)

    @found.tool(READ_ONLY, structured_output=True)
    async def get_run(
        run_id: RunId,
        include_logs: Annotated[bool, Field(description="Add the run's log lines.")] = False,
    ) -> RunView:
        """The current state of one run: status, progress, inputs, errors and image links. Does not wait."""
        with tool_errors():
            run = await engine.get_run(run_id)
            logs = None
            if include_logs:
                logs = [f"{entry.level}: {entry.message}" for entry in await engine.logs(run_id)]
            return views.run_view(engine, run, expose_paths=expose_paths, logs=logs)

    @found.tool(READ_ONLY, structured_output=True)
    async def list_runs(
        status: Annotated[StatusName | None, Field(description="Only runs in this status.")] = None,
        kind: Annotated[KindName | None, Field(description="Only runs of this kind.")] = None,
        limit: Annotated[int, Field(description="Runs per page, 1..200.", ge=1, le=200)] = 20,
        cursor: Annotated[str | None, Field(description="`next_cursor` of the previous page.")] = None,
    ) -> Annotated[CallToolResult, RunList]:
        """Runs, newest first, optionally filtered by status and kind. Page with `cursor`.

        A short summary per run; get_run gives its inputs, errors and images.
        """
        with tool_errors():
            page = await engine.list_runs(status=status, kind=kind, limit=limit, cursor=cursor)
            return run_list.list_result(page)

    @found.tool(STOPS, structured_output=True)
    async def cancel_run(run_id: RunId) -> Annotated[CallToolResult, Cancelled]:
        """Cancel a queued or running run; a running one is stopped.

        A run that had already finished is left as it is: the result then says `cancelled: false`
        and which state it had finished in.
        """
        with tool_errors():
            before = await engine.get_run(run_id)
            after = await engine.cancel(run_id)
            return views.cancel_result(engine, before, after, expose_paths=expose_paths)

    @found.tool(CREATES, structured_output=True)
    async def retry_run(run_id: RunId) -> Annotated[CallToolResult, RunView]:
        """Queue a failed or cancelled run again with the same inputs (same seed, same images).

        A queued, running or completed run is refused, saying why.
        """
        with tool_errors():
            run = await engine.retry(run_id)
            return views.said(
                f"Run {run.id} is queued again with the same inputs. {views.next_step(run)}",
                views.run_view(engine, run, expose_paths=expose_paths),
            )

    @found.tool(STOPS, structured_output=True)
    async def delete_run(run_id: RunId) -> Annotated[CallToolResult, Deleted]:
        """Delete a run, its images and its log for good (stopping it first if it is queued or running)."""
        with tool_errors():
            before = await engine.get_run(run_id)
            await engine.delete(run_id)
            return views.delete_result(before)

    @found.tool(READ_ONLY, structured_output=True)
    async def bundle_run(run_id: RunId) -> Annotated[CallToolResult, BundleView]:
        """Pack a run's images and its run.json (inputs, seed, timings) into one ZIP; returns a link to it."""
        with tool_errors():
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

    return found.tools
