"""Atelier's MCP tools and resources, as an MCP client (and the model behind it) sees them.

Every test talks to the real server over the in-process MCP client, on a real engine with
the local preview backend; nothing of ours is patched.
"""

from __future__ import annotations

import base64
import hashlib
import io
import itertools
import json
import zipfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client, MCPError
from mcp_types import (
    BlobResourceContents,
    CallToolResult,
    ImageContent,
    ResourceLink,
    TextResourceContents,
    Tool,
)
from PIL import Image

from core.engine import Engine
from core.settings import Settings
from mcp_server.server import build_mcp

pytestmark = pytest.mark.anyio

FOX = "a red fox in a snowy forest at sunset"
UNKNOWN_ID = "0" * 26
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
TOOLS = {
    "generate_image",
    "wait_for_run",
    "get_run",
    "list_runs",
    "cancel_run",
    "retry_run",
    "delete_run",
    "bundle_run",
    "get_status",
    "transform_image",
    "upscale_image",
    "list_workflows",
    "list_models",
    "create_character",
    "list_characters",
    "get_character",
    "update_character",
    "delete_character",
    "add_character_images",
    "remove_character_image",
    "train_character",
    "list_product_types",
    "compose_prompts",
    "create_products",
    "publish_products",
    "unpublish_product",
    "list_products",
    "get_product",
}
RUN_ID_TOOLS = ["get_run", "cancel_run", "delete_run", "retry_run", "wait_for_run", "bundle_run"]
# The slow engine's pace: a run of SLOW_STEPS steps takes about 0.5 s.
STEP_MS = 20
SLOW_STEPS = 25


# --- fixtures and helpers -------------------------------------------------------------------


@pytest.fixture(params=["auto", "legacy"])
def mode(request: pytest.FixtureRequest) -> str:
    """The default connection and the classic `initialize` handshake hosts like Claude Desktop use."""
    return request.param


@pytest.fixture
async def client(engine: Engine) -> AsyncIterator[Client]:
    async with Client(build_mcp(engine)) as connected:
        yield connected


@pytest.fixture
async def client_both(engine: Engine, mode: str) -> AsyncIterator[Client]:
    async with Client(build_mcp(engine), mode=mode) as connected:
        yield connected


@pytest.fixture
async def slow_engine(tmp_path: Path) -> AsyncIterator[Engine]:
    """An engine whose runs take real time (STEP_MS per step), for waits, progress and cancels."""
    settings = Settings.from_env({}, home=tmp_path / "slow", local_step_ms=STEP_MS, retry_backoff_s=0.01)
    async with Engine.open(settings) as opened:
        yield opened


@pytest.fixture
async def slow_client(slow_engine: Engine) -> AsyncIterator[Client]:
    async with Client(build_mcp(slow_engine)) as connected:
        yield connected


@pytest.fixture
async def slow_client_both(slow_engine: Engine, mode: str) -> AsyncIterator[Client]:
    async with Client(build_mcp(slow_engine), mode=mode) as connected:
        yield connected


async def call(client: Client, tool: str, **arguments: Any) -> CallToolResult:
    with anyio.fail_after(30):
        return await client.call_tool(tool, arguments)


async def ok(client: Client, tool: str, **arguments: Any) -> dict[str, Any]:
    """Call a tool that must succeed; its structured result."""
    result = await call(client, tool, **arguments)
    assert not result.is_error, error_text(result)
    assert result.structured_content is not None
    return result.structured_content


def error_text(result: CallToolResult) -> str:
    return " ".join(getattr(block, "text", "") for block in result.content)


async def failing(client: Client, tool: str, **arguments: Any) -> str:
    """Call a tool that must fail; the error text the model reads."""
    result = await call(client, tool, **arguments)
    assert result.is_error, f"{tool}({arguments}) should have failed: {result.structured_content}"
    return error_text(result)


async def list_tools(client: Client) -> list[Tool]:
    with anyio.fail_after(10):
        return (await client.list_tools()).tools


async def read(client: Client, uri: str) -> TextResourceContents | BlobResourceContents:
    with anyio.fail_after(30):
        result = await client.read_resource(uri)
    assert len(result.contents) == 1
    return result.contents[0]


async def read_bytes(client: Client, uri: str) -> bytes:
    contents = await read(client, uri)
    assert isinstance(contents, BlobResourceContents)
    return base64.b64decode(contents.blob)


async def run_ids(client: Client, **filters: Any) -> list[str]:
    listed = await ok(client, "list_runs", limit=200, **filters)
    return [run["run_id"] for run in listed["runs"]]


async def until_status(client: Client, run_id: str, wanted: set[str], within: float = 5) -> dict[str, Any]:
    with anyio.fail_after(within):
        while True:
            run = await ok(client, "get_run", run_id=run_id)
            if run["status"] in wanted:
                return run
            await anyio.sleep(0.01)


async def start_slow_run(client: Client, steps: int = SLOW_STEPS, **extra: Any) -> str:
    """Queue a run that takes a while and return its id without waiting for it."""
    run = await ok(client, "generate_image", prompt=FOX, seed=3, steps=steps, wait_seconds=0, **extra)
    assert run["status"] in ("queued", "running")
    return run["run_id"]


# --- the tool list --------------------------------------------------------------------------


async def test_lists_exactly_the_atelier_tools_each_with_an_output_schema(client_both: Client) -> None:
    tools = await list_tools(client_both)
    assert {tool.name for tool in tools} == TOOLS
    assert len(tools) == len(TOOLS)
    for tool in tools:
        assert tool.description, tool.name
        assert tool.output_schema is not None, f"{tool.name} has no output schema"
        assert tool.output_schema.get("type") == "object", tool.name


async def test_annotations_tell_readers_from_destroyers(client: Client) -> None:
    annotations = {tool.name: tool.annotations for tool in await list_tools(client)}
    for name in ("get_run", "list_runs", "wait_for_run", "get_status", "bundle_run"):
        assert annotations[name] is not None
        assert annotations[name].read_only_hint is True, name
        assert annotations[name].destructive_hint is not True, name
    for name in ("cancel_run", "delete_run"):
        assert annotations[name].read_only_hint is False, name
        assert annotations[name].destructive_hint is True, name
    assert annotations["generate_image"].read_only_hint is False
    assert annotations["generate_image"].destructive_hint is not True
    assert annotations["retry_run"].read_only_hint is False
    for name in ("list_product_types", "compose_prompts", "list_products", "get_product"):
        assert annotations[name].read_only_hint is True, name
    # Products reach Printify and Shopify: the tools that list them there say so.
    for name in ("create_products", "publish_products", "unpublish_product"):
        assert annotations[name].read_only_hint is False, name
        assert annotations[name].open_world_hint is True, name
    assert annotations["publish_products"].destructive_hint is not True
    assert annotations["unpublish_product"].destructive_hint is True


async def test_generate_image_schema_advertises_the_allowed_ranges(client: Client) -> None:
    tool = next(t for t in await list_tools(client) if t.name == "generate_image")
    props = tool.input_schema["properties"]
    assert tool.input_schema["required"] == ["prompt"]

    def given(name: str) -> dict[str, Any]:
        """The schema of a value given (not left out, which takes the workflow's default)."""
        branches = [b for b in props[name].get("anyOf", [props[name]]) if b.get("type") != "null"]
        assert len(branches) == 1, props[name]
        return branches[0]

    for side in ("width", "height"):
        integer = given(side)
        assert integer["type"] == "integer"
        assert (integer["minimum"], integer["maximum"], integer["multipleOf"]) == (64, 4096, 8)
    assert (given("steps")["minimum"], given("steps")["maximum"]) == (1, 150)
    assert (given("count")["minimum"], given("count")["maximum"]) == (1, 16)
    assert (given("prompt")["minLength"], given("prompt")["maxLength"]) == (1, 4000)
    assert (given("wait_seconds")["minimum"], given("wait_seconds")["maximum"]) == (0, 120)
    assert given("priority")["enum"] == ["low", "normal", "high", "urgent"]


# --- generating -----------------------------------------------------------------------------


async def test_generate_image_finishes_within_its_wait_with_thumbnails_and_links(
    client_both: Client, settings: Settings
) -> None:
    result = await call(client_both, "generate_image", prompt=FOX, width=512, height=512, seed=1)
    assert not result.is_error, error_text(result)
    run = result.structured_content
    assert run is not None
    assert run["status"] == "completed"
    assert run["inputs"]["seed"] == 1
    assert (run["inputs"]["width"], run["inputs"]["height"]) == (512, 512)
    assert len(run["images"]) == 1
    image = run["images"][0]
    assert image["uri"] == f"atelier://runs/{run['run_id']}/images/{image['filename']}"
    assert (image["width"], image["height"], image["media_type"]) == (512, 512, "image/png")

    thumbs = [block for block in result.content if isinstance(block, ImageContent)]
    links = [block for block in result.content if isinstance(block, ResourceLink)]
    assert len(thumbs) == 1
    assert thumbs[0].mime_type == "image/jpeg"
    with Image.open(io.BytesIO(base64.b64decode(thumbs[0].data))) as thumb:
        assert thumb.format == "JPEG"
        assert max(thumb.size) <= settings.thumbnail_px
    assert [link.uri for link in links] == [image["uri"]]
    assert links[0].mime_type == "image/png"

    contents = await read(client_both, image["uri"])
    assert contents.mime_type == "image/png"
    data = await read_bytes(client_both, image["uri"])
    assert data.startswith(PNG_SIGNATURE)
    assert hashlib.sha256(data).hexdigest() == image["sha256"]
    with Image.open(io.BytesIO(data)) as full:
        assert full.format == "PNG"
        assert full.size == (512, 512)


async def test_same_inputs_make_a_new_run_with_identical_image_bytes(client: Client) -> None:
    first = await ok(client, "generate_image", prompt=FOX, width=512, height=512, seed=1)
    second = await ok(client, "generate_image", prompt=FOX, width=512, height=512, seed=1)
    assert second["status"] == "completed"
    assert second["run_id"] != first["run_id"]
    first_png = await read_bytes(client, first["images"][0]["uri"])
    second_png = await read_bytes(client, second["images"][0]["uri"])
    assert first_png == second_png


async def test_an_omitted_seed_is_reported_and_reproduces_the_image(client: Client) -> None:
    first = await ok(client, "generate_image", prompt=FOX, steps=1, width=64, height=64)
    seed = first["inputs"]["seed"]
    assert isinstance(seed, int)
    assert 0 <= seed <= 2**32 - 1
    again = await ok(client, "generate_image", prompt=FOX, steps=1, width=64, height=64, seed=seed)
    assert await read_bytes(client, again["images"][0]["uri"]) == await read_bytes(
        client, first["images"][0]["uri"]
    )


async def test_sixteen_large_images_stay_under_the_inline_size_limit(client: Client) -> None:
    result = await call(
        client, "generate_image", prompt=FOX, width=1024, height=1024, count=16, steps=1, seed=5
    )
    assert not result.is_error, error_text(result)
    assert result.structured_content is not None
    images = result.structured_content["images"]
    assert len(images) == 16
    thumbs = [block for block in result.content if isinstance(block, ImageContent)]
    assert thumbs, "a finished batch should show at least some thumbnails"
    assert sum(len(block.data) for block in thumbs) < 1_000_000
    for block in thumbs:
        with Image.open(io.BytesIO(base64.b64decode(block.data))) as thumb:
            assert thumb.format == "JPEG"
    links = [block.uri for block in result.content if isinstance(block, ResourceLink)]
    assert links == [image["uri"] for image in images]
    assert len(set(links)) == 16


# --- waiting, progress and cancelling the call ------------------------------------------------


async def test_wait_seconds_zero_returns_at_once_and_wait_for_run_finishes_it(slow_client: Client) -> None:
    # Still unfinished when the call returns: the call did not wait for the run.
    run = await ok(slow_client, "generate_image", prompt=FOX, seed=2, steps=SLOW_STEPS, wait_seconds=0)
    assert run["status"] in ("queued", "running")
    assert len(run["run_id"]) == 26
    assert run["images"] == []
    assert "wait_for_run" in run["next"]

    waited = await ok(slow_client, "wait_for_run", run_id=run["run_id"], timeout_seconds=0.2)
    assert waited["status"] == "running"
    assert 0 < waited["step"] < SLOW_STEPS
    assert 0 < waited["progress"] < 1

    done = await ok(slow_client, "wait_for_run", run_id=run["run_id"], timeout_seconds=10)
    assert done["status"] == "completed"
    assert len(done["images"]) == 1


async def test_generate_image_does_not_wait_past_its_budget(slow_client: Client) -> None:
    started = anyio.current_time()
    run = await ok(slow_client, "generate_image", prompt=FOX, seed=2, steps=150, wait_seconds=0.3)
    # It used its budget, and returned long before the 150-step run could finish.
    assert anyio.current_time() - started >= 0.25
    assert run["status"] in ("queued", "running")


async def test_progress_notifications_only_grow_within_0_to_100(slow_client_both: Client) -> None:
    run_id = await start_slow_run(slow_client_both)
    seen: list[tuple[float, float | None, str | None]] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        seen.append((progress, total, message))

    with anyio.fail_after(10):
        result = await slow_client_both.call_tool(
            "wait_for_run", {"run_id": run_id, "timeout_seconds": 10}, progress_callback=on_progress
        )
    assert result.structured_content is not None
    assert result.structured_content["status"] == "completed"
    assert len(seen) >= 5
    values = [progress for progress, _, _ in seen]
    assert all(0 <= value <= 100 for value in values)
    assert all(later > earlier for earlier, later in itertools.pairwise(values))
    assert {total for _, total, _ in seen} == {100}


async def test_cancelling_the_wait_call_leaves_the_run_going(slow_client: Client) -> None:
    run_id = await start_slow_run(slow_client)
    with anyio.move_on_after(0.15) as scope:
        await slow_client.call_tool("wait_for_run", {"run_id": run_id, "timeout_seconds": 10})
    assert scope.cancelled_caught

    still = await ok(slow_client, "get_run", run_id=run_id)
    assert still["status"] in ("queued", "running")
    done = await ok(slow_client, "wait_for_run", run_id=run_id, timeout_seconds=10)
    assert done["status"] == "completed"
    assert len(done["images"]) == 1


async def test_cancelling_generate_image_while_it_waits_leaves_the_run_going(slow_client: Client) -> None:
    with anyio.move_on_after(0.2) as scope:
        await slow_client.call_tool(
            "generate_image", {"prompt": FOX, "seed": 4, "steps": SLOW_STEPS, "wait_seconds": 10}
        )
    assert scope.cancelled_caught

    [run_id] = await run_ids(slow_client)
    done = await ok(slow_client, "wait_for_run", run_id=run_id, timeout_seconds=10)
    assert done["status"] == "completed"


# --- managing runs --------------------------------------------------------------------------


async def test_cancel_run_stops_a_running_run_for_good_and_retry_runs_it_again(slow_client: Client) -> None:
    steps = 10  # about 0.2 s of work
    run_id = await start_slow_run(slow_client, steps=steps)
    await until_status(slow_client, run_id, {"running"})

    result = await call(slow_client, "cancel_run", run_id=run_id)
    assert result.structured_content is not None
    assert (result.structured_content["status"], result.structured_content["cancelled"]) == (
        "cancelled",
        True,
    )
    assert error_text(result).startswith(f"Run {run_id} was running and is now cancelled.")
    await anyio.sleep(steps * STEP_MS / 1000 + 0.2)  # past the time it would have finished
    later = await ok(slow_client, "get_run", run_id=run_id)
    assert later["status"] == "cancelled"
    assert later["images"] == []
    assert "retry_run" in later["next"]
    again = await call(slow_client, "cancel_run", run_id=run_id)
    assert again.structured_content is not None
    assert (again.structured_content["status"], again.structured_content["cancelled"]) == ("cancelled", False)
    assert error_text(again) == f"Run {run_id} was already cancelled; nothing was cancelled."

    result = await call(slow_client, "retry_run", run_id=run_id)
    retried = result.structured_content
    assert retried is not None
    assert retried["run_id"] == run_id
    assert retried["status"] == "queued"
    assert error_text(result).startswith(f"Run {run_id} is queued again with the same inputs.")
    done = await ok(slow_client, "wait_for_run", run_id=run_id, timeout_seconds=10)
    assert done["status"] == "completed"
    assert len(done["images"]) == 1


async def test_cancel_run_of_a_queued_run_says_it_was_cancelled(
    slow_engine: Engine, slow_client_both: Client
) -> None:
    # Every runner busy: the next run waits in the queue.
    busy = [
        await start_slow_run(slow_client_both, steps=150)
        for _ in range(slow_engine.settings.local_concurrency)
    ]
    queued = await start_slow_run(slow_client_both, steps=150)
    assert (await ok(slow_client_both, "get_run", run_id=queued))["status"] == "queued"
    result = await call(slow_client_both, "cancel_run", run_id=queued)
    assert result.structured_content is not None
    assert result.structured_content["cancelled"] is True
    assert error_text(result).startswith(f"Run {queued} was queued and is now cancelled.")
    for run_id in busy:
        await ok(slow_client_both, "cancel_run", run_id=run_id)


async def test_cancel_run_of_a_finished_run_says_nothing_was_cancelled(client_both: Client) -> None:
    run = await ok(client_both, "generate_image", prompt=FOX, seed=1, steps=1, width=64, height=64)
    result = await call(client_both, "cancel_run", run_id=run["run_id"])
    assert not result.is_error, error_text(result)
    assert result.structured_content is not None
    assert result.structured_content["status"] == "completed"
    assert result.structured_content["cancelled"] is False
    assert error_text(result) == f"Run {run['run_id']} had already completed; nothing was cancelled."
    assert (await ok(client_both, "get_run", run_id=run["run_id"]))["status"] == "completed"


async def test_retry_of_a_completed_run_is_refused(client: Client) -> None:
    run = await ok(client, "generate_image", prompt=FOX, seed=1, steps=1)
    text = await failing(client, "retry_run", run_id=run["run_id"])
    assert "completed" in text
    assert (await ok(client, "get_run", run_id=run["run_id"]))["status"] == "completed"


async def test_delete_run_removes_the_run_and_its_images(client: Client, settings: Settings) -> None:
    run = await ok(client, "generate_image", prompt=FOX, seed=1, steps=1)
    run_id, image_uri = run["run_id"], run["images"][0]["uri"]
    assert (await read_bytes(client, image_uri)).startswith(PNG_SIGNATURE)

    result = await call(client, "delete_run", run_id=run_id)
    assert not result.is_error, error_text(result)
    assert result.structured_content == {
        "run_id": run_id,
        "deleted": True,
        "status_before": "completed",
        "stopped": False,
    }
    assert error_text(result) == f"Deleted run {run_id} (completed) with its 1 image(s) and its log."

    text = await failing(client, "get_run", run_id=run_id)
    assert run_id in text and "does not exist" in text
    with pytest.raises(MCPError) as raised:
        await read(client, image_uri)
    assert str(settings.home) not in str(raised.value)
    with pytest.raises(MCPError):
        await read(client, f"atelier://runs/{run_id}")
    assert await run_ids(client) == []
    assert "does not exist" in await failing(client, "delete_run", run_id=run_id)


async def test_delete_run_stops_a_running_run(slow_client: Client) -> None:
    run_id = await start_slow_run(slow_client)
    await until_status(slow_client, run_id, {"running"})
    result = await call(slow_client, "delete_run", run_id=run_id)
    assert not result.is_error, error_text(result)
    assert result.structured_content is not None
    assert result.structured_content["status_before"] == "running"
    assert result.structured_content["stopped"] is True
    assert error_text(result) == f"Run {run_id} was running: stopped it, then deleted it and its log."
    await anyio.sleep(0.1)
    assert "does not exist" in await failing(slow_client, "get_run", run_id=run_id)
    assert await run_ids(slow_client) == []


async def test_list_runs_is_newest_first_filters_by_status_and_pages(slow_client: Client) -> None:
    completed = []
    for seed in range(3):
        run = await ok(slow_client, "generate_image", prompt=FOX, seed=seed, steps=1, wait_seconds=10)
        assert run["status"] == "completed"
        completed.append(run["run_id"])
    cancelled = await start_slow_run(slow_client, steps=150)
    assert (await ok(slow_client, "cancel_run", run_id=cancelled))["status"] == "cancelled"
    newest_first = [cancelled, *reversed(completed)]

    assert await run_ids(slow_client) == newest_first
    assert await run_ids(slow_client, status="completed") == list(reversed(completed))
    assert await run_ids(slow_client, status="cancelled") == [cancelled]
    assert await run_ids(slow_client, status="failed") == []

    first = await ok(slow_client, "list_runs", limit=3)
    assert [r["run_id"] for r in first["runs"]] == newest_first[:3]
    assert first["next_cursor"]
    second = await ok(slow_client, "list_runs", limit=3, cursor=first["next_cursor"])
    assert [r["run_id"] for r in second["runs"]] == newest_first[3:]
    assert second["next_cursor"] is None

    page = await ok(slow_client, "list_runs", status="completed", limit=2)
    rest = await ok(slow_client, "list_runs", status="completed", limit=2, cursor=page["next_cursor"])
    assert [r["run_id"] for r in page["runs"] + rest["runs"]] == list(reversed(completed))
    assert rest["next_cursor"] is None


async def test_list_runs_gives_a_compact_summary_of_each_run_and_get_run_the_rest(client: Client) -> None:
    long_prompt = "a lighthouse on a basalt cliff at dusk, " * 20
    made = await ok(
        client, "generate_image", prompt=long_prompt, seed=1, steps=1, count=2, width=64, height=64
    )
    await ok(client, "generate_image", prompt=FOX, seed=2, steps=1, width=64, height=64)

    result = await call(client, "list_runs", limit=50)
    assert not result.is_error
    listed = result.structured_content
    assert listed is not None and listed["next_cursor"] is None
    fox, lighthouse = listed["runs"]
    assert set(lighthouse) == {"run_id", "status", "kind", "about", "created_at", "images", "uri"}
    assert lighthouse["run_id"] == made["run_id"] and lighthouse["kind"] == "image"
    assert lighthouse["status"] == "completed" and lighthouse["images"] == 2
    assert lighthouse["about"].startswith("a lighthouse on a basalt cliff") and lighthouse["about"].endswith(
        "…"
    )
    assert len(lighthouse["about"]) <= 60
    assert fox["about"] == FOX and fox["images"] == 1
    assert lighthouse["created_at"] == pytest.approx(made["created_at"], abs=0.001)
    # The link is the whole run, as get_run gives it.
    whole = json.loads((await read(client, lighthouse["uri"])).text)
    assert whole["inputs"]["prompt"] == long_prompt and len(whole["artifacts"]) == 2
    # In words too, one line per run, and the answer stays small: ~400 bytes a run at most.
    lines = error_text(result).splitlines()
    assert lines[1].startswith(f"{made['run_id']} completed image, 2 image(s), ")
    for summary, line in zip(listed["runs"], lines, strict=True):
        assert len(json.dumps(summary, ensure_ascii=False).encode()) + len(line.encode()) <= 400


@pytest.mark.parametrize(
    ("arguments", "field", "allowed"),
    [
        ({"status": "done"}, "status", "queued, running, completed, failed, cancelled"),
        ({"kind": "nope"}, "kind", "image"),
        ({"limit": 0}, "limit", "1..200"),
        ({"limit": 201}, "limit", "1..200"),
        ({"cursor": "not-a-cursor"}, "cursor", "cursor"),
    ],
)
async def test_list_runs_rejects_bad_filters_naming_the_field(
    client: Client, arguments: dict[str, Any], field: str, allowed: str
) -> None:
    text = await failing(client, "list_runs", **arguments)
    assert f"{field}:" in text
    assert allowed in text


async def test_bundle_run_links_a_zip_of_the_images_and_run_json(client: Client) -> None:
    run = await ok(client, "generate_image", prompt=FOX, seed=1, steps=1, count=2, width=64, height=64)
    run_id = run["run_id"]
    result = await call(client, "bundle_run", run_id=run_id)
    assert not result.is_error, error_text(result)
    uri = f"atelier://runs/{run_id}/bundle.zip"
    assert result.structured_content is not None
    assert result.structured_content["uri"] == uri
    links = [block for block in result.content if isinstance(block, ResourceLink)]
    assert [link.uri for link in links] == [uri]
    assert links[0].mime_type == "application/zip"

    assert (await read(client, uri)).mime_type == "application/zip"
    data = await read_bytes(client, uri)
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        assert sorted(archive.namelist()) == ["image-01.png", "image-02.png", "run.json"]
        manifest = json.loads(archive.read("run.json"))
        assert manifest["id"] == run_id
        assert manifest["inputs"]["seed"] == 1
        for image in run["images"]:
            assert archive.read(image["filename"]) == await read_bytes(client, image["uri"])


async def test_bundle_run_of_an_unfinished_run_says_why(slow_client: Client) -> None:
    run_id = await start_slow_run(slow_client, steps=150)
    text = await failing(slow_client, "bundle_run", run_id=run_id)
    assert "no outputs" in text


async def test_get_status_reports_backend_health_and_counts(client: Client) -> None:
    await ok(client, "generate_image", prompt=FOX, seed=1, steps=1)
    status = await ok(client, "get_status")
    assert status["backends"]["local"]["up"] is True
    assert status["healthy"] is True
    assert status["runs"]["completed"] == 1
    assert status["runs"]["queued"] == 0
    assert status["runs"]["running"] == 0
    assert status["metrics"]["submitted"] == 1


async def test_get_run_with_logs_shows_the_run_life(client: Client) -> None:
    run = await ok(client, "generate_image", prompt=FOX, seed=1, steps=1)
    plain = await ok(client, "get_run", run_id=run["run_id"])
    assert plain["logs"] is None
    logged = await ok(client, "get_run", run_id=run["run_id"], include_logs=True)
    logs = logged["logs"]
    assert logs is not None

    def first_line_with(word: str) -> int:
        return next(i for i, line in enumerate(logs) if word in line)

    assert first_line_with("queued") < first_line_with("started") < first_line_with("completed")


async def test_idempotency_key_returns_the_same_run(client: Client) -> None:
    first = await ok(client, "generate_image", prompt=FOX, seed=1, steps=1, idempotency_key="job-42")
    second = await ok(client, "generate_image", prompt=FOX, seed=1, steps=1, idempotency_key="job-42")
    assert second["run_id"] == first["run_id"]
    assert await run_ids(client) == [first["run_id"]]


async def test_idempotency_key_reused_for_other_inputs_is_an_error(client: Client) -> None:
    first = await ok(client, "generate_image", prompt=FOX, seed=1, steps=1, idempotency_key="job-43")
    text = await failing(client, "generate_image", prompt=FOX, seed=2, steps=1, idempotency_key="job-43")
    assert "job-43" in text
    assert await run_ids(client) == [first["run_id"]]


# --- resources ------------------------------------------------------------------------------


async def test_run_resource_is_the_run_as_json(client: Client) -> None:
    run = await ok(client, "generate_image", prompt=FOX, seed=1, steps=1)
    contents = await read(client, f"atelier://runs/{run['run_id']}")
    assert isinstance(contents, TextResourceContents)
    assert contents.mime_type == "application/json"
    document = json.loads(contents.text)
    assert document["id"] == run["run_id"]
    assert document["status"] == "completed"
    assert document["inputs"] == run["inputs"]
    assert [a["filename"] for a in document["artifacts"]] == [i["filename"] for i in run["images"]]


async def test_run_resource_follows_the_run_as_it_changes(slow_client: Client) -> None:
    run_id = await start_slow_run(slow_client)
    before = json.loads((await read(slow_client, f"atelier://runs/{run_id}")).text)
    assert before["status"] in ("queued", "running")
    await ok(slow_client, "wait_for_run", run_id=run_id, timeout_seconds=10)
    after = json.loads((await read(slow_client, f"atelier://runs/{run_id}")).text)
    assert after["status"] == "completed"


@pytest.mark.parametrize(
    "path",
    [
        "{unknown}",
        "{unknown}/images/image-01.png",
        "{run}/images/image-99.png",
        "{run}/images/..%2F..%2Fetc%2Fpasswd",
        "{run}/images/../x",
        "{run}/images/..%2F..%2Fledger.sqlite3",
        "{run}/images/.hidden",
        "..%2F..%2Fetc%2Fpasswd",
        "..%2F..%2Fetc%2Fpasswd/images/image-01.png",
        "{unknown}/bundle.zip",
    ],
)
async def test_bad_resource_uris_fail_without_leaking_anything(
    client: Client, settings: Settings, path: str
) -> None:
    run = await ok(client, "generate_image", prompt=FOX, seed=1, steps=1, width=64, height=64)
    uri = "atelier://runs/" + path.format(unknown=UNKNOWN_ID, run=run["run_id"])
    with pytest.raises(MCPError) as raised:
        await read(client, uri)
    shown = f"{raised.value} {raised.value.error!r}"
    assert str(settings.home) not in shown
    assert "root:" not in shown
    assert "Traceback" not in shown


@pytest.mark.parametrize(
    ("path", "missing"),
    [
        ("{unknown}", "run '{unknown}' does not exist"),
        ("{unknown}/images/image-01.png", "run '{unknown}' does not exist"),
        ("{run}/images/image-99.png", "run '{run}' has no file 'image-99.png'"),
        ("{unknown}/bundle.zip", "run '{unknown}' does not exist"),
        ("{busy}/bundle.zip", "run {busy} is running and has no outputs to bundle"),
    ],
)
async def test_a_missing_resource_is_resource_not_found_naming_what_is_missing(
    slow_client_both: Client, mode: str, path: str, missing: str
) -> None:
    run = await ok(slow_client_both, "generate_image", prompt=FOX, seed=1, steps=1, width=64, height=64)
    busy = await start_slow_run(slow_client_both, steps=150)
    await until_status(slow_client_both, busy, {"running"})
    ids = {"unknown": UNKNOWN_ID, "run": run["run_id"], "busy": busy}
    uri = "atelier://runs/" + path.format(**ids)
    with pytest.raises(MCPError) as raised:
        await read(slow_client_both, uri)
    # The code of the protocol the client speaks: -32002 until 2025-11-25; SEP-2164 moved it to
    # -32602 (invalid params) in 2026-07-28, which the default connection negotiates.
    assert raised.value.code == (-32002 if mode == "legacy" else -32602)
    assert raised.value.message.startswith("Resource not found: ")
    assert missing.format(**ids) in raised.value.message
    assert raised.value.data == {"uri": uri}
    await ok(slow_client_both, "cancel_run", run_id=busy)


@pytest.mark.parametrize(
    ("path", "said"),
    [
        ("not-a-run-id", "run_id: is not a valid run id (26 characters of 0-9 a-z, got 'not-a-run-id')"),
        ("{run}/images/-x.png", "filename: is not a valid file name (got '-x.png')"),
    ],
)
async def test_a_malformed_resource_uri_is_invalid_params(client_both: Client, path: str, said: str) -> None:
    run = await ok(client_both, "generate_image", prompt=FOX, seed=1, steps=1, width=64, height=64)
    uri = "atelier://runs/" + path.format(run=run["run_id"])
    with pytest.raises(MCPError) as raised:
        await read(client_both, uri)
    assert raised.value.code == -32602
    assert raised.value.message == said
    assert raised.value.data == {"uri": uri}


async def test_resource_templates_cover_runs_images_bundles_characters_and_products(client: Client) -> None:
    with anyio.fail_after(10):
        templates = (await client.list_resource_templates()).resource_templates
    assert {t.uri_template: t.mime_type for t in templates} == {
        "atelier://runs/{run_id}": "application/json",
        "atelier://runs/{run_id}/images/{filename}": "image/png",
        "atelier://runs/{run_id}/bundle.zip": "application/zip",
        "atelier://characters/{character_id}": "application/json",
        # A character's image is read with the type of its own bytes (PNG, JPEG or WebP).
        "atelier://characters/{character_id}/images/{filename}": "image/png",
        "atelier://products/{product_id}": "application/json",
        "atelier://products/{product_id}/mockups/{filename}": "image/jpeg",
    }


# --- bad input ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("arguments", "field", "allowed"),
    [
        ({"prompt": ""}, "prompt", "1..4000"),
        ({"prompt": "   "}, "prompt", "non-blank"),
        ({"prompt": "x" * 4001}, "prompt", "1..4000"),
        ({"width": 100}, "width", "multiple of 8 in 64..4096"),
        ({"width": 32}, "width", "multiple of 8 in 64..4096"),
        ({"height": 5000}, "height", "multiple of 8 in 64..4096"),
        ({"steps": 0}, "steps", "1..150"),
        ({"steps": 151}, "steps", "1..150"),
        ({"count": 0}, "count", "1..16"),
        ({"count": 17}, "count", "1..16"),
        ({"priority": "asap"}, "priority", "low, normal, high, urgent"),
        ({"wait_seconds": -1}, "wait_seconds", "0..120"),
        ({"wait_seconds": 1000}, "wait_seconds", "0..120"),
        ({"seed": -1}, "seed", "0..4294967295"),
        ({"cfg": 31}, "cfg", "0..30"),
    ],
    ids=lambda value: repr(value)[:40] if isinstance(value, dict) else None,
)
async def test_bad_generate_input_is_an_error_naming_the_field_and_creates_no_run(
    client_both: Client, arguments: dict[str, Any], field: str, allowed: str
) -> None:
    text = await failing(client_both, "generate_image", **{"prompt": FOX, **arguments})
    assert f"{field}:" in text
    assert allowed in text
    assert len(text) < 300, "the error should be a sentence, not a dump of the prompt"
    assert await run_ids(client_both) == []


@pytest.mark.parametrize(
    ("tool", "arguments", "said"),
    [
        ("generate_image", {"width": "abc"}, "width: must be a multiple of 8 in 64..4096 (got 'abc')"),
        ("generate_image", {"steps": 2.5}, "steps: must be an integer in 1..150 (got 2.5)"),
        ("generate_image", {"seed": "lucky"}, "seed: must be an integer in 0..4294967295 (got 'lucky')"),
        ("generate_image", {"loras": "x" * 100}, "loras: must be at most 8 LoRAs"),
        (
            "generate_image",
            {"priority": "ASAP"},
            "priority: must be one of low, normal, high, urgent (got 'ASAP')",
        ),
        (
            "generate_image",
            {"prompt": None},
            "prompt: must be non-blank text of 1..4000 characters (got None)",
        ),
        ("generate_image", {"wait_seconds": "soon"}, "wait_seconds: must be a number in 0..120 (got 'soon')"),
        ("list_runs", {"limit": "all"}, "limit: must be an integer in 1..200 (got 'all')"),
        ("get_run", {"include_logs": "maybe"}, "include_logs: must be true or false (got 'maybe')"),
        ("get_run", {"run_id": 42}, "run_id: must be text (got 42)"),
    ],
    ids=lambda value: repr(value)[:30] if isinstance(value, dict) else None,
)
async def test_an_argument_of_the_wrong_type_is_named_with_its_allowed_values(
    client_both: Client, tool: str, arguments: dict[str, Any], said: str
) -> None:
    base = {"generate_image": {"prompt": FOX}, "get_run": {"run_id": UNKNOWN_ID}}.get(tool, {})
    text = await failing(client_both, tool, **{**base, **arguments})
    assert text.startswith(f"Error executing tool {tool}: {said}")
    assert "\n" not in text, "one bad field, one line"
    for noise in ("validation error", "input_value", "type=", "https://", "Arguments"):
        assert noise not in text
    assert await run_ids(client_both) == []


async def test_every_bad_argument_is_named_on_its_own_line(client_both: Client) -> None:
    text = await failing(client_both, "generate_image", prompt=FOX, width="abc", steps=0, count=99, cfg=-1)
    assert text.splitlines() == [
        "Error executing tool generate_image: width: must be a multiple of 8 in 64..4096 (got 'abc')",
        "steps: must be an integer in 1..150 (got 0)",
        "cfg: must be a number in 0..30 (got -1)",
        "count: must be an integer in 1..16 (got 99)",
    ]
    assert await run_ids(client_both) == []


async def test_every_bad_field_the_engine_judges_is_named_on_its_own_line(client_both: Client) -> None:
    # Names only the engine checks (their patterns are not in the tool's schema).
    text = await failing(client_both, "generate_image", prompt=FOX, sampler="no such!", scheduler="Bad Name")
    assert text.splitlines() == [
        "Error executing tool generate_image: sampler: must be a sampler name (letters, digits, _ . + -)"
        " (got 'no such!')",
        "scheduler: must be a scheduler name (letters, digits, _ . + -) (got 'Bad Name')",
    ]
    assert await run_ids(client_both) == []


async def test_an_unknown_argument_is_refused_naming_it_and_the_known_ones(client_both: Client) -> None:
    text = await failing(client_both, "generate_image", prompt=FOX, size="512x512")
    assert text.startswith("Error executing tool generate_image: size: is not a parameter of this tool")
    assert "it takes prompt, negative_prompt, width, height," in text
    assert await run_ids(client_both) == []


async def test_an_unknown_argument_that_is_not_a_plain_word_is_quoted(client: Client) -> None:
    text = await failing(client, "generate_image", prompt=FOX, **{"prompt ": "a fox"})
    assert text.startswith("Error executing tool generate_image: 'prompt ': is not a parameter of this tool")
    text = await failing(client, "get_status", verbose=True)
    assert text == (
        "Error executing tool get_status: verbose: is not a parameter of this tool (it takes no arguments)"
    )


async def test_a_workflow_name_that_cannot_be_one_is_refused_without_echoing_it(client: Client) -> None:
    text = await failing(client, "generate_image", prompt=FOX, workflow="x" * 10_000)
    assert text.startswith("Error executing tool generate_image: workflow: must be a workflow name")
    assert len(text) < 300


async def test_a_missing_argument_is_named(client_both: Client) -> None:
    text = await failing(client_both, "transform_image", prompt=FOX)
    assert text == "Error executing tool transform_image: source: is required"


@pytest.mark.parametrize("timeout", [-1, 1000])
async def test_bad_wait_timeout_is_an_error_naming_the_field(client: Client, timeout: float) -> None:
    run = await ok(client, "generate_image", prompt=FOX, seed=1, steps=1)
    text = await failing(client, "wait_for_run", run_id=run["run_id"], timeout_seconds=timeout)
    assert "timeout_seconds:" in text
    assert "0..120" in text


@pytest.mark.parametrize("tool", RUN_ID_TOOLS)
async def test_bad_run_ids_are_refused_naming_the_field_or_the_missing_run(client: Client, tool: str) -> None:
    for malformed in ("../../etc/passwd", ""):
        text = await failing(client, tool, run_id=malformed)
        assert "run_id:" in text
        assert "26 characters" in text
    text = await failing(client, tool, run_id=UNKNOWN_ID)
    assert UNKNOWN_ID in text
    assert "does not exist" in text
    assert await run_ids(client) == []
