"""Characters through MCP, as a model drives them: create, add images, train, generate by character.

Every test talks to the real server over the in-process MCP client, on a real engine with the
local preview renderer and the embedded preview trainer; source URLs are served by a real HTTP
server on loopback. Nothing of ours is patched.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import io
import json
import re
import threading
from collections.abc import AsyncIterator, Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client, MCPError
from mcp_types import BlobResourceContents, CallToolResult, ImageContent, ResourceLink, TextResourceContents
from PIL import Image

from core.engine import Engine
from core.settings import Settings
from mcp_server.server import build_mcp
from tests.character_images import distance, mean_colour, photo

pytestmark = pytest.mark.anyio

RED = (200, 60, 40)
PROGRESS = re.compile(r"^step (\d+)/(\d+) · loss (\d+\.\d{4})(?: · ETA \S+)?$")


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """Preview renderer and trainer; a training step takes 1 ms so progress is seen step by step."""
    return Settings.from_env(
        {}, home=tmp_path / "home", local_step_ms=0, retry_backoff_s=0.01, preview_train_step_ms=1
    )


@pytest.fixture
async def client(engine: Engine) -> AsyncIterator[Client]:
    async with Client(build_mcp(engine)) as connected:
        yield connected


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A real HTTP server on loopback serving a folder: (its base URL, the folder)."""
    folder = tmp_path / "served"
    folder.mkdir()
    handler = functools.partial(SimpleHTTPRequestHandler, directory=str(folder))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", folder
    finally:
        server.shutdown()
        server.server_close()


async def call(client: Client, tool: str, progress: Any = None, **arguments: Any) -> CallToolResult:
    with anyio.fail_after(60):
        return await client.call_tool(tool, arguments, progress_callback=progress)


async def ok(client: Client, tool: str, **arguments: Any) -> dict[str, Any]:
    result = await call(client, tool, **arguments)
    assert not result.is_error, text_of(result)
    assert result.structured_content is not None
    return result.structured_content


async def failing(client: Client, tool: str, **arguments: Any) -> str:
    result = await call(client, tool, **arguments)
    assert result.is_error, f"{tool}({arguments}) should have failed: {result.structured_content}"
    return text_of(result)


def text_of(result: CallToolResult) -> str:
    return "\n".join(getattr(block, "text", "") for block in result.content)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def png_of(size: int, colour: tuple[int, int, int] = RED) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (size, size), colour).save(out, "PNG")
    return out.getvalue()


async def read(client: Client, uri: str) -> TextResourceContents | BlobResourceContents:
    with anyio.fail_after(30):
        result = await client.read_resource(uri)
    assert len(result.contents) == 1
    return result.contents[0]


async def mara_with_images(client: Client, count: int = 4) -> dict[str, Any]:
    await ok(client, "create_character", name="Mara", description="a red-haired explorer")
    added = await ok(
        client,
        "add_character_images",
        character="Mara",
        sources=[b64(photo(i, tint=RED)) for i in range(count)],
    )
    assert len(added["added"]) == count, added
    return added


# --- the whole flow ---------------------------------------------------------------------------


async def test_create_add_train_and_generate_by_character(
    client: Client, engine: Engine, settings: Settings, served: tuple[str, Path]
) -> None:
    made = await ok(client, "create_character", name="Mara", description="a red-haired explorer")
    assert made["id"].startswith("char-") and made["trigger_word"] == "mara_person"
    assert made["images"] == [] and made["versions"] == [] and made["active_version"] is None
    assert "add_character_images" in made["next"]

    # Sources of every kind transform_image takes, good and bad, in one call.
    run = await ok(client, "generate_image", prompt="a red cliff", seed=3, width=256, height=256, steps=1)
    base_url, folder = served
    (folder / "mara-by-url.jpg").write_bytes(photo(20, tint=RED, fmt="JPEG"))
    settings.inputs_dir.mkdir(parents=True, exist_ok=True)
    (settings.inputs_dir / "mara-on-disk.png").write_bytes(photo(21, tint=RED))
    (settings.inputs_dir / "notes.txt").write_text("Mara is an explorer with red hair.\n" * 10)
    truncated = photo(22, tint=RED)[:2000]
    svg = b'<svg xmlns="http://www.w3.org/2000/svg" width="512" height="512"><rect fill="red"/></svg>'
    photos = [photo(i, tint=RED) for i in range(4)]
    sources = [
        *(b64(data) for data in photos),  # 0-3: base64 photos
        "data:image/png;base64," + b64(photo(4, tint=RED)),  # 4: a data: URL
        run["run_id"],  # 5: a run's first image
        f"{base_url}/mara-by-url.jpg",  # 6: an allowed URL (loopback), a JPEG
        "mara-on-disk.png",  # 7: a file in the inputs folder
        "notes.txt",  # 8: a text file
        b64(truncated),  # 9: a truncated PNG
        b64(svg),  # 10: an SVG
        b64(png_of(64)),  # 11: too small
        b64(photos[0]),  # 12: a duplicate of 0
        "/etc/passwd",  # 13: outside the allowed folders
    ]
    result = await call(client, "add_character_images", character="mara", sources=sources)
    assert not result.is_error, text_of(result)
    added = result.structured_content
    assert added is not None
    assert len(added["added"]) == 8 and added["image_count"] == 8, text_of(result)
    reasons = {refused["index"]: refused["reason"] for refused in added["refused"]}
    assert sorted(reasons) == [8, 9, 10, 11, 12, 13]
    assert "text, not an image" in reasons[8]
    assert "truncated or corrupt" in reasons[9]
    assert "SVG is not accepted" in reasons[10]
    assert "64x64" in reasons[11] and "at least 256 pixels" in reasons[11]
    assert "duplicate" in reasons[12]
    assert "outside the folders tools may read" in reasons[13]
    words = text_of(result)
    for index in reasons:
        assert f"sources[{index}]" in words
    assert b64(truncated)[:100] not in words  # base64 is described, never echoed
    names = [image["filename"] for image in added["added"]]
    assert f"{run['run_id']}-{run['images'][0]['filename']}" in names
    assert "mara-by-url.jpg" in names and "mara-on-disk.png" in names

    # Training, with progress notifications that carry the step and a falling loss.
    seen: list[tuple[float, str]] = []

    async def progress(value: float, total: float | None, message: str | None) -> None:
        seen.append((value, message or ""))

    result = await call(client, "train_character", progress, character="Mara", steps=120, wait_seconds=60)
    assert not result.is_error, text_of(result)
    trained = result.structured_content
    assert trained is not None
    assert trained["kind"] == "training" and trained["status"] == "completed", trained
    assert trained["result"]["version"] == 1 and trained["result"]["trainer"] == "preview"
    assert trained["inputs"]["character_name"] == "Mara" and trained["inputs"]["params"]["steps"] == 120
    assert "LoRA v1 is trained and active" in text_of(result)
    parsed = [PROGRESS.match(message) for _, message in seen]
    assert seen and all(parsed), seen[:3]
    steps = [int(m[1]) for m in parsed if m]
    losses = [float(m[3]) for m in parsed if m]
    assert steps[-1] == 120 and all(int(m[2]) == 120 for m in parsed if m)
    assert losses[-1] < losses[0]
    assert [value for value, _ in seen] == sorted(value for value, _ in seen)

    # The character now has v1, thumbnails of a few images and a link to every one.
    result = await call(client, "get_character", character=made["id"])
    shown = result.structured_content
    assert shown is not None
    assert shown["active_version"] == 1 and [v["version"] for v in shown["versions"]] == [1]
    version = shown["versions"][0]
    assert version["active"] and version["trainer"] == "preview" and version["steps"] == 120
    assert version["run_id"] == trained["run_id"] and not version["installed"]
    assert version["path"] and Path(version["path"]).is_file()
    assert shown["trainer"]["trainer"] == "preview" and "steps" in shown["trainer"]["parameters"]
    assert [t["run_id"] for t in shown["training"]] == [trained["run_id"]]
    thumbnails = [block for block in result.content if isinstance(block, ImageContent)]
    links = [block for block in result.content if isinstance(block, ResourceLink)]
    assert 1 <= len(thumbnails) <= 4
    assert sorted(link.uri for link in links) == sorted(image["uri"] for image in shown["images"])

    # Resources: the character as JSON, and each image's stored bytes with its own type.
    as_json = await read(client, f"atelier://characters/{made['id']}")
    assert isinstance(as_json, TextResourceContents) and as_json.mime_type == "application/json"
    assert json.loads(as_json.text)["active_version"] == 1
    stored = []
    for image in shown["images"]:
        contents = await read(client, image["uri"])
        assert isinstance(contents, BlobResourceContents)
        data = base64.b64decode(contents.blob)
        assert hashlib.sha256(data).hexdigest() == image["sha256"]
        assert contents.mime_type == image["media_type"]
        stored.append(data)
    assert "image/jpeg" in {image["media_type"] for image in shown["images"]}

    # Generating by character moves the same seed's image toward the training images' colours.
    asked = {"prompt": "a portrait on a beach at dawn", "seed": 7, "width": 256, "height": 256, "steps": 2}
    plain = await ok(client, "generate_image", **asked)
    styled = await ok(client, "generate_image", **asked, character="mara", character_strength=1.0)
    assert styled["inputs"]["character"]["version"] == 1
    assert styled["inputs"]["prompt"].startswith("mara_person, ")
    means = [mean_colour(data) for data in stored]
    training_mean = tuple(sum(m[i] for m in means) / len(means) for i in range(3))
    _, plain_png = await engine.read_artifact(plain["run_id"], plain["images"][0]["filename"])
    _, styled_png = await engine.read_artifact(styled["run_id"], styled["images"][0]["filename"])
    assert distance(mean_colour(styled_png), training_mean) < 0.8 * distance(
        mean_colour(plain_png), training_mean
    )

    # list_runs shows the training run for what it is.
    listed = await ok(client, "list_runs", kind="training")
    assert [r["run_id"] for r in listed["runs"]] == [trained["run_id"]]
    summary = listed["runs"][0]
    assert summary["kind"] == "training" and summary["status"] == "completed"
    assert summary["about"] == "LoRA of Mara"
    # the rest is get_run's
    assert (await ok(client, "get_run", run_id=summary["run_id"]))["result"]["version"] == 1


async def test_a_run_image_can_be_named_by_run_and_file_and_by_its_uri(client: Client) -> None:
    await ok(client, "create_character", name="Orin")
    run = await ok(client, "generate_image", prompt="a cliff", count=2, width=256, height=256, steps=1)
    second = run["images"][1]
    added = await ok(
        client,
        "add_character_images",
        character="Orin",
        sources=[f"{run['run_id']}/{second['filename']}", run["images"][0]["uri"]],
        captions=["the second image", ""],
    )
    assert [image["filename"] for image in added["added"]] == [
        f"{run['run_id']}-{second['filename']}",
        f"{run['run_id']}-{run['images'][0]['filename']}",
    ]
    assert [image["caption"] for image in added["added"]] == ["the second image", ""]


# --- training -----------------------------------------------------------------------------------


async def test_training_progress_reaches_a_client_of_the_classic_handshake(engine: Engine) -> None:
    async with Client(build_mcp(engine), mode="legacy") as legacy:
        await mara_with_images(legacy, 2)
        messages: list[str] = []

        async def progress(value: float, total: float | None, message: str | None) -> None:
            messages.append(message or "")

        result = await call(legacy, "train_character", progress, character="Mara", steps=30, wait_seconds=60)
        assert not result.is_error and result.structured_content is not None, text_of(result)
        assert result.structured_content["result"]["version"] == 1
        assert messages and all(PROGRESS.match(message) for message in messages), messages[:3]
        assert messages[-1].startswith("step 30/30 · loss ")


async def test_train_character_schema_is_the_trainer_declaration(client: Client, engine: Engine) -> None:
    tool = next(t for t in (await client.list_tools()).tools if t.name == "train_character")
    props = tool.input_schema["properties"]
    declared = engine.training.parameters()["parameters"]
    assert set(declared) <= set(props)
    for name, spec in declared.items():
        [branch] = [b for b in props[name].get("anyOf", [props[name]]) if b.get("type") != "null"]
        assert props[name]["default"] == spec["default"], name
        assert (
            branch["type"]
            == {"int": "integer", "float": "number", "str": "string", "bool": "boolean"}[spec["type"]]
        )
        if "min" in spec:
            assert (branch["minimum"], branch["maximum"]) == (spec["min"], spec["max"]), name
        if "choices" in spec:
            assert branch["enum"] == spec["choices"], name
        if not spec["wired"]:
            assert "not used by this trainer" in props[name]["description"], name
    assert tool.input_schema["required"] == ["character"]


async def test_bad_training_parameters_are_named_with_the_trainer_s_ranges(client: Client) -> None:
    await mara_with_images(client, 2)
    text = await failing(client, "train_character", character="Mara", steps=0, optimizer="sgd")
    assert "steps: must be an integer in 1..20000 (got 0)" in text
    assert "optimizer: must be one of adamw8bit, adamw, adafactor, prodigy" in text
    assert (await ok(client, "list_runs", kind="training"))["runs"] == []


async def test_training_without_images_is_refused_saying_what_to_do(client: Client) -> None:
    await ok(client, "create_character", name="Mara")
    text = await failing(client, "train_character", character="Mara")
    assert text.endswith(
        "character: No training images uploaded for this character (add 10-30 images of it first)"
    )


async def test_delete_character_is_refused_while_it_trains_then_removes_it(client: Client) -> None:
    await mara_with_images(client, 2)
    training = await ok(client, "train_character", character="Mara", steps=20000, wait_seconds=0)
    assert training["status"] in ("queued", "running")
    with anyio.fail_after(30):
        while (running := await ok(client, "get_run", run_id=training["run_id"]))["step"] == 0:
            await anyio.sleep(0.02)
    # A training run read back says what it trains and how the loss goes, not only its step.
    assert running["kind"] == "training" and running["backend"] == "training"
    assert running["inputs"]["character_name"] == "Mara" and running["inputs"]["trainer"] == "preview"
    assert re.fullmatch(r"learning colours, loss \d+\.\d{4}", running["message"]), running["message"]
    text = await failing(client, "delete_character", character="Mara")
    assert f"character: Mara is being trained (run {training['run_id']}); cancel that run first" in text
    assert (await ok(client, "get_character", character="Mara"))["image_count"] == 2
    text = await failing(client, "train_character", character="Mara", steps=10)
    assert "character: Mara is already being trained" in text

    await ok(client, "cancel_run", run_id=training["run_id"])
    deleted = await ok(client, "delete_character", character="mara")
    assert deleted["deleted"] and deleted["name"] == "Mara" and deleted["images_removed"] == 2
    assert "there is no character 'Mara'" in await failing(client, "get_character", character="Mara")
    with pytest.raises(MCPError) as missing:
        await read(client, f"atelier://characters/{deleted['character_id']}")
    assert missing.value.code in (-32002, -32602) and missing.value.message.startswith("Resource not found")


async def test_a_second_training_becomes_v2_and_update_can_go_back_to_v1(client: Client) -> None:
    await mara_with_images(client, 2)
    for _ in range(2):
        assert (await ok(client, "train_character", character="Mara", steps=10, wait_seconds=60))[
            "status"
        ] == "completed"
    assert (await ok(client, "get_character", character="Mara"))["active_version"] == 2
    back = await ok(client, "update_character", character="Mara", active_version=1, description="explorer")
    assert back["active_version"] == 1 and back["description"] == "explorer"
    assert [v["active"] for v in back["versions"]] == [True, False]
    text = await failing(client, "update_character", character="Mara", active_version=5)
    assert "active_version: Mara has no LoRA v5 (it has v1, v2)" in text
    run = await ok(client, "generate_image", prompt="Mara at dawn", character="Mara", width=64, height=64)
    assert run["inputs"]["character"]["version"] == 1


# --- characters and their images ----------------------------------------------------------------


async def test_names_are_unique_and_every_error_names_its_argument(client: Client) -> None:
    await ok(client, "create_character", name="Mara", trigger_word="mara_q")
    assert "name: a character named 'MARA' already exists" in await failing(
        client, "create_character", name="MARA"
    )
    text = await failing(client, "create_character", name="Other", trigger_word="mara_q")
    assert "trigger_word: the trigger word 'mara_q' is already another character's" in text
    text = await failing(client, "create_character", name="Other", trigger_word="Not Valid!")
    assert "trigger_word: must be 2..48 characters of a-z, 0-9 and _ (got 'Not Valid!')" in text
    text = await failing(client, "generate_image", prompt="a beach", character="Nobody")
    assert text.endswith(
        "character: there is no character 'Nobody' (list_characters shows the ones that exist)"
    )
    text = await failing(client, "generate_image", prompt="a beach", character="Mara")
    assert "character: Mara has no trained LoRA yet: train it first" in text
    text = await failing(client, "generate_image", prompt="a beach", character_strength=3)
    assert "character_strength: must be a number in 0..2" in text
    text = await failing(
        client, "add_character_images", character="Mara", sources=["a", "b"], captions=["one"]
    )
    assert "captions: must have one caption per source (got 1 for 2 sources)" in text
    assert (await ok(client, "list_runs"))["runs"] == []


async def test_annotations_tell_readers_from_destroyers(client: Client) -> None:
    annotations = {tool.name: tool.annotations for tool in (await client.list_tools()).tools}
    for name in ("list_characters", "get_character"):
        assert annotations[name] is not None and annotations[name].read_only_hint is True, name
    for name in ("delete_character", "remove_character_image"):
        assert annotations[name] is not None and annotations[name].destructive_hint is True, name
    for name in ("create_character", "update_character", "add_character_images", "train_character"):
        assert annotations[name] is not None, name
        assert annotations[name].read_only_hint is False and annotations[name].destructive_hint is not True, (
            name
        )


async def test_list_characters_and_remove_an_image(client: Client) -> None:
    added = await mara_with_images(client, 3)
    await ok(client, "create_character", name="Orin")
    listed = await ok(client, "list_characters")
    assert {(c["name"], c["image_count"]) for c in listed["characters"]} == {("Mara", 3), ("Orin", 0)}
    first = added["added"][0]
    after = await ok(client, "remove_character_image", character="Mara", filename=first["filename"])
    assert after["image_count"] == 2 and first["filename"] not in {i["filename"] for i in after["images"]}
    text = await failing(client, "remove_character_image", character="Mara", filename=first["filename"])
    assert f"filename: Mara has no image named {first['filename']!r}" in text
    with pytest.raises(MCPError) as missing:
        await read(client, first["uri"])
    assert missing.value.code in (-32002, -32602) and missing.value.message.startswith("Resource not found")


async def test_a_character_with_many_images_shows_a_few_thumbnails_and_links_them_all(client: Client) -> None:
    await mara_with_images(client, 9)
    result = await call(client, "get_character", character="Mara")
    assert len([b for b in result.content if isinstance(b, ImageContent)]) == 4
    assert len([b for b in result.content if isinstance(b, ResourceLink)]) == 9
