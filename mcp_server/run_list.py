"""What list_runs returns: one compact summary per run, for a model to pick from; details are in get_run.

A model's context pays for every byte a list returns, so a listed run is a summary of at
most ~400 bytes (its structured form plus its line of text, together): its id, status and
kind, an excerpt of what it was asked to make, when it was created, how many images it made,
and the link to the whole run. Nothing in it grows with the run (no inputs, logs or image
metadata): get_run, wait_for_run or the `atelier://runs/{run_id}` resource give those.
"""

from __future__ import annotations

import time
from typing import Any

from mcp_types import CallToolResult, TextContent
from pydantic import BaseModel, Field

from core.models import Page, Run, RunKind
from mcp_server.views import run_uri

# Characters of the prompt a summary keeps; a longer one ends in an ellipsis.
EXCERPT_CHARS = 60


class RunSummary(BaseModel):
    """A run in a list: enough to choose it; get_run has the rest."""

    run_id: str
    status: str = Field(description="queued | running | completed | failed | cancelled")
    kind: str
    about: str = Field(description="The start of its prompt (or what it trains, makes or publishes).")
    created_at: float = Field(description="Unix time.")
    images: int = Field(description="How many images it has made.")
    uri: str = Field(description="The whole run (resources/read), or call get_run with run_id.")


class RunList(BaseModel):
    runs: list[RunSummary]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page; null on the last one.")


def summary(run: Run) -> RunSummary:
    return RunSummary(
        run_id=run.id,
        status=run.status.value,
        kind=run.kind.value,
        about=excerpt(about(run)),
        created_at=round(run.created_at, 3),
        images=sum(a.media_type.startswith("image/") for a in run.artifacts),
        uri=run_uri(run.id),
    )


def about(run: Run) -> str:
    """What the run was asked to do, in a few words."""
    inputs: dict[str, Any] = run.inputs
    match run.kind:
        case RunKind.BATCH:
            return f"batch of {inputs.get('items')} images"
        case RunKind.TRAINING:
            return f"LoRA of {inputs.get('character_name')}"
        case RunKind.POD:
            designs = inputs.get("designs") or [{}]
            first = designs[0].get("prompt") or "a given design"
            more = f" (+{len(designs) - 1} designs)" if len(designs) > 1 else ""
            return f"products of {first}{more}"
        case RunKind.PUBLISH:
            products, platforms = inputs.get("product_ids") or [], inputs.get("platforms") or []
            return f"{inputs.get('action', 'publish')} {len(products)} product(s) on {', '.join(platforms)}"
    return str(inputs.get("prompt") or inputs.get("operation") or "")


def excerpt(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= EXCERPT_CHARS else text[: EXCERPT_CHARS - 1].rstrip() + "…"


def list_result(page: Page) -> CallToolResult:
    """list_runs's answer: a line per run in words, and the summaries as structured content."""
    view = RunList(runs=[summary(run) for run in page.items], next_cursor=page.next_cursor)
    lines = [_line(run) for run in view.runs] or ["No runs."]
    if view.next_cursor:
        lines.append(f"More: cursor={view.next_cursor!r}")
    return CallToolResult(
        content=[TextContent(type="text", text="\n".join(lines))],
        structured_content=view.model_dump(mode="json"),
    )


def _line(run: RunSummary) -> str:
    created = time.strftime("%Y-%m-%d %H:%M", time.gmtime(run.created_at))
    return f"{run.run_id} {run.status} {run.kind}, {run.images} image(s), {created}Z: {run.about}"
