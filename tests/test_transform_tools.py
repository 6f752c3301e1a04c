"""Image-to-image, upscaling and workflow choice, end to end on the preview backend.

Through the MCP tools as a client sees them, and through the engine API the other front doors
use: real SQLite ledger and artifact store on a temp home, the real preview renderer, real
images checked by their pixels.
"""

from __future__ import annotations

import base64
import hashlib
import io
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client
from PIL import Image, ImageChops

from core.engine import Engine
from core.errors import InvalidInput
from core.models import Run, RunStatus
from core.settings import Settings
from mcp_server.server import build_mcp
from tests.slow_http import trickling_server
from tests.test_mcp_tools import call, error_text, failing, ok, read_bytes, run_ids

pytestmark = pytest.mark.anyio

FOX = "a red fox in a snowy forest at sunset"
OCEAN = "a blue ocean under a purple night sky"
REPO = Path(__file__).resolve().parents[1]
BUNDLED = {
    "flux-dev": "txt2img",
    "flux-schnell": "txt2img",
    "img2img": "img2img",
    "sd15": "txt2img",
    "sdxl": "txt2img",
    "upscale": "upscale",
}


# --- fixtures and helpers -------------------------------------------------------------------


@pytest.fixture
async def client(engine: Engine) -> AsyncIterator[Client]:
    async with Client(build_mcp(engine)) as connected:
        yield connected


def png(width: int, height: int) -> bytes:
    image = Image.new("RGB", (width, height), (230, 180, 40))
    image.paste((30, 60, 160), (0, 0, width // 3, height))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def pixels(data: bytes) -> Image.Image:
    with Image.open(io.BytesIO(data)) as opened:
        return opened.convert("RGB")


def largest_difference(a: Image.Image, b: Image.Image) -> int:
    assert a.size == b.size
    return max(high for _, high in ImageChops.difference(a, b).getextrema())


async def generated(
    client: Client, width: int = 96, height: int = 64, **extra: Any
) -> tuple[dict[str, Any], bytes]:
    """A finished text-to-image run and its first image's bytes."""
    run = await ok(client, "generate_image", prompt=FOX, width=width, height=height, seed=1, steps=2, **extra)
    assert run["status"] == "completed"
    return run, await read_bytes(client, run["images"][0]["uri"])


async def finished(engine: Engine, run: Run) -> Run:
    done = await engine.wait(run.id, timeout_s=10)
    assert done.status.is_final, f"run {run.id} still {done.status.value}"
    return done


async def image_of(engine: Engine, run: Run, index: int = 0) -> bytes:
    return (await engine.read_artifact(run.id, run.artifacts[index].filename))[1]


# --- transform_image ------------------------------------------------------------------------


async def test_transform_image_repaints_a_run_image_at_the_source_size(
    client: Client, settings: Settings
) -> None:
    source_run, source_png = await generated(client, 96, 64)
    uri = source_run["images"][0]["uri"]
    assert uri.endswith("/images/image-01.png")

    run = await ok(client, "transform_image", source=uri, prompt=OCEAN, denoise=0.5, seed=2, steps=3)
    assert run["status"] == "completed"
    assert run["run_id"] != source_run["run_id"]
    [image] = run["images"]
    assert (image["width"], image["height"]) == (96, 64)
    data = await read_bytes(client, image["uri"])
    assert pixels(data).size == (96, 64)
    assert largest_difference(pixels(data), pixels(source_png)) > 30

    inputs = run["inputs"]
    assert inputs["operation"] == "img2img"
    assert inputs["prompt"] == OCEAN
    assert inputs["denoise"] == 0.5
    sha = hashlib.sha256(source_png).hexdigest()
    assert inputs["source"] == {
        "sha256": sha,
        "media_type": "image/png",
        "width": 96,
        "height": 64,
        "origin": uri,
    }
    stored = settings.artifacts_dir / "inputs" / f"{sha}.png"
    assert stored.read_bytes() == source_png
    # The run as every client reads it records the same.
    again = await ok(client, "get_run", run_id=run["run_id"])
    assert again["inputs"]["source"]["sha256"] == sha


async def test_denoise_zero_keeps_the_source_pixels(client: Client) -> None:
    source_run, source_png = await generated(client, 64, 80)
    run = await ok(client, "transform_image", source=source_run["run_id"], prompt=OCEAN, denoise=0, seed=9)
    assert run["status"] == "completed"
    assert run["inputs"]["denoise"] == 0
    assert run["inputs"]["source"]["origin"] == f"atelier://runs/{source_run['run_id']}"
    result = pixels(await read_bytes(client, run["images"][0]["uri"]))
    assert largest_difference(result, pixels(source_png)) <= 1


async def test_transform_repaints_more_as_denoise_grows(client: Client) -> None:
    source_run, source_png = await generated(client, 64, 64)
    differences = []
    for denoise in (0.2, 0.9):
        run = await ok(
            client, "transform_image", source=source_run["run_id"], prompt=OCEAN, denoise=denoise, seed=4
        )
        result = pixels(await read_bytes(client, run["images"][0]["uri"]))
        differences.append(largest_difference(result, pixels(source_png)))
    assert differences[0] < differences[1]


@pytest.mark.parametrize("form", ["bare", "data-url"])
async def test_transform_takes_base64_png(client: Client, form: str) -> None:
    data = png(72, 40)
    value = base64.b64encode(data).decode()
    if form == "data-url":
        value = f"data:image/png;base64,{value}"
    run = await ok(client, "transform_image", source=value, prompt=OCEAN, seed=3, steps=2)
    assert run["status"] == "completed"
    assert (run["images"][0]["width"], run["images"][0]["height"]) == (72, 40)
    assert run["inputs"]["source"]["origin"] == "base64"
    assert run["inputs"]["source"]["sha256"] == hashlib.sha256(data).hexdigest()


async def test_transform_of_a_missing_run_or_image_is_refused_naming_source(client: Client) -> None:
    unknown = "0" * 26
    text = await failing(
        client, "transform_image", source=f"atelier://runs/{unknown}/images/image-01.png", prompt=OCEAN
    )
    assert "source:" in text
    assert unknown in text
    source_run, _ = await generated(client)
    text = await failing(
        client, "transform_image", source=f"{source_run['run_id']}/image-09.png", prompt=OCEAN
    )
    assert "source:" in text and "image-09.png" in text


# --- upscale_image --------------------------------------------------------------------------


@pytest.mark.parametrize(("scale", "size"), [(None, (192, 128)), (2, (192, 128)), (1.5, (144, 96))])
async def test_upscale_image_enlarges_both_sides(
    client: Client, scale: float | None, size: tuple[int, int]
) -> None:
    source_run, source_png = await generated(client, 96, 64)
    arguments = {"scale": scale} if scale is not None else {}
    run = await ok(client, "upscale_image", source=source_run["images"][0]["uri"], **arguments)
    assert run["status"] == "completed"
    assert run["inputs"]["operation"] == "upscale"
    [image] = run["images"]
    assert (image["width"], image["height"]) == size
    result = pixels(await read_bytes(client, image["uri"]))
    assert result.size == size
    # Still the same picture: shrunk back, it is close to the source.
    back = result.resize((96, 64), Image.Resampling.BOX)
    assert ImageChops.difference(back, pixels(source_png)).convert("L").getextrema()[1] < 64


async def test_upscale_past_8192_pixels_is_refused_naming_scale(client: Client) -> None:
    wide = base64.b64encode(png(3000, 16)).decode()
    before = await run_ids(client)
    text = await failing(client, "upscale_image", source=wide, scale=3)
    assert "scale:" in text
    assert "8192" in text
    assert await run_ids(client) == before
    # The same source at a scale that fits is fine.
    run = await ok(client, "upscale_image", source=wide, scale=2)
    assert (run["images"][0]["width"], run["images"][0]["height"]) == (6000, 32)


# --- big and deep images: rendered a strip at a time ----------------------------------------


def noise_png(width: int, height: int) -> bytes:
    buffer = io.BytesIO()
    Image.effect_noise((width, height), 70).convert("RGB").save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


async def test_a_multi_strip_upscale_is_a_lanczos_resize_of_the_whole_image(
    engine: Engine, settings: Settings
) -> None:
    # 2048 px wide output: 512-row strips, so 1200 rows take three of them.
    settings.inputs_dir.mkdir(parents=True)
    source = noise_png(1024, 600)
    (settings.inputs_dir / "noise.png").write_bytes(source)
    run = await finished(engine, await engine.submit_image({"operation": "upscale", "source": "noise.png"}))
    assert run.status is RunStatus.COMPLETED
    result = pixels(await image_of(engine, run))
    whole = pixels(source).resize((2048, 1200), Image.Resampling.LANCZOS)
    assert largest_difference(result, whole) <= 1


async def test_img2img_of_a_multi_strip_image_keeps_or_replaces_it_exactly(
    engine: Engine, settings: Settings
) -> None:
    settings.inputs_dir.mkdir(parents=True)
    source = noise_png(1104, 1000)  # 949-row strips at this width: two of them
    (settings.inputs_dir / "noise.png").write_bytes(source)
    kept = await finished(
        engine,
        await engine.submit_image(
            {"operation": "img2img", "source": "noise.png", "prompt": OCEAN, "denoise": 0, "seed": 5}
        ),
    )
    assert largest_difference(pixels(await image_of(engine, kept)), pixels(source)) == 0
    replaced = await finished(
        engine,
        await engine.submit_image(
            {"operation": "img2img", "source": "noise.png", "prompt": OCEAN, "denoise": 1, "seed": 5}
        ),
    )
    painted = await finished(
        engine, await engine.submit_image({"prompt": OCEAN, "width": 1104, "height": 1000, "seed": 5})
    )
    assert await image_of(engine, replaced) == await image_of(engine, painted)


async def test_a_16_bit_grey_source_keeps_its_tones(client: Client) -> None:
    grey = Image.new("I;16", (64, 48), 0x8000)
    grey.paste(0xFFFF, (0, 0, 32, 48))
    buffer = io.BytesIO()
    grey.save(buffer, format="PNG")
    run = await ok(client, "upscale_image", source=base64.b64encode(buffer.getvalue()).decode(), scale=2)
    result = pixels(await read_bytes(client, run["images"][0]["uri"]))
    assert result.getpixel((8, 8)) == (255, 255, 255)
    assert result.getpixel((120, 80)) == (128, 128, 128)  # mid-grey, not clipped to white


# --- bad sources ----------------------------------------------------------------------------


def _gif() -> str:
    buffer = io.BytesIO()
    Image.new("RGB", (32, 32), (1, 2, 3)).save(buffer, format="GIF")
    return base64.b64encode(buffer.getvalue()).decode()


BAD_SOURCES = [
    pytest.param(
        base64.b64encode(b"not an image, just some words " * 12).decode(),
        "not a readable image",
        id="not-an-image",
    ),
    pytest.param(_gif(), "PNG, JPEG or WebP expected", id="gif"),
    pytest.param(base64.b64encode(png(8, 8)).decode(), "8x8", id="too-small"),
    pytest.param("/etc/hostname", "ATELIER_INPUT_DIRS", id="outside-input-dirs"),
    pytest.param("../ledger.sqlite3", "outside the folders tools may read", id="relative-escaping"),
    pytest.param("fox\0.png", "NUL byte", id="nul-byte"),
    pytest.param("~nosuchuser/x.png", "home folder of 'nosuchuser'", id="unknown-user"),
    pytest.param("http://example.com/x.png", "ATELIER_FETCH_HOSTS", id="non-loopback-url"),
    pytest.param("0" * 26, "does not exist", id="unknown-run"),
    pytest.param("   ", "is required", id="blank"),
]


@pytest.mark.parametrize("tool", ["transform_image", "upscale_image"])
@pytest.mark.parametrize(("source", "said"), BAD_SOURCES)
async def test_bad_sources_are_tool_errors_naming_source_and_record_nothing(
    client: Client, settings: Settings, tool: str, source: str, said: str
) -> None:
    before = await run_ids(client)
    arguments = {"prompt": OCEAN} if tool == "transform_image" else {}
    result = await call(client, tool, source=source, **arguments)
    assert result.is_error
    text = error_text(result)
    assert "source:" in text
    assert said in text
    assert await run_ids(client) == before
    assert not (settings.artifacts_dir / "inputs").exists()


async def test_transform_reads_a_path_relative_to_the_inputs_folder(
    client: Client, settings: Settings
) -> None:
    (settings.inputs_dir / "harbour").mkdir(parents=True)
    (settings.inputs_dir / "harbour" / "dusk.png").write_bytes(png(40, 24))
    run = await ok(client, "transform_image", source="harbour/dusk.png", prompt=OCEAN, seed=3)
    assert run["status"] == "completed"
    assert (run["images"][0]["width"], run["images"][0]["height"]) == (40, 24)
    text = await failing(client, "upscale_image", source="../harbour/dusk.png")
    assert f"outside the folders tools may read: {settings.inputs_dir.resolve()}" in text
    assert "a relative path starts at" in text


async def test_a_source_url_that_trickles_is_refused_at_the_fetch_deadline(tmp_path: Path) -> None:
    settings = Settings.from_env({"ATELIER_FETCH_TIMEOUT_S": "1"}, home=tmp_path / "home", local_step_ms=0)
    async with Engine.open(settings) as engine, Client(build_mcp(engine)) as client:
        with trickling_server(interval=0.2) as trickle, anyio.fail_after(10):
            text = await failing(client, "transform_image", source=trickle.url, prompt=OCEAN)
        assert f"source: the URL {trickle.url} did not answer in full within 1 s" in text
        assert await run_ids(client) == []


async def test_a_truncated_jpeg_source_is_refused_up_front(client: Client) -> None:
    buffer = io.BytesIO()
    Image.effect_noise((64, 64), 60).convert("RGB").save(buffer, format="JPEG")
    truncated = buffer.getvalue()[: len(buffer.getvalue()) // 2]
    source = base64.b64encode(truncated).decode()
    text = await failing(client, "transform_image", source=source, prompt=OCEAN, wait_seconds=0)
    assert "source:" in text
    assert await run_ids(client) == []


# --- samplers and schedulers on the preview backend ------------------------------------------


@pytest.mark.parametrize(
    ("field", "value", "listed"),
    [("sampler", "euler_magic", "dpmpp_2m_sde_gpu"), ("scheduler", "cosine_dream", "kl_optimal")],
)
async def test_an_unknown_sampler_or_scheduler_is_refused_listing_comfyui_s_names(
    client: Client, field: str, value: str, listed: str
) -> None:
    for tool, arguments in (
        ("generate_image", {"prompt": FOX, "width": 64, "height": 64}),
        ("transform_image", {"prompt": OCEAN, "source": base64.b64encode(png(32, 32)).decode()}),
    ):
        text = await failing(client, tool, **arguments, **{field: value})
        assert f"{field}: {value!r} is not a {field}; one of: " in text
        assert listed in text
    assert await run_ids(client) == []


async def test_comfyui_s_sampler_and_scheduler_names_are_taken_and_recorded(client: Client) -> None:
    run = await ok(
        client, "generate_image", prompt=FOX, width=64, height=64, sampler="dpmpp_2m", scheduler="karras"
    )
    assert run["status"] == "completed"
    assert (run["inputs"]["sampler"], run["inputs"]["scheduler"]) == ("dpmpp_2m", "karras")


async def test_engine_refuses_an_unknown_sampler_naming_the_field(engine: Engine) -> None:
    with pytest.raises(InvalidInput) as raised:
        await engine.submit_image({"prompt": FOX, "width": 64, "height": 64, "sampler": "euler_a"})
    assert raised.value.field == "sampler"
    assert "euler_ancestral" in raised.value.problem
    with pytest.raises(InvalidInput) as raised:
        await engine.submit_image({"prompt": FOX, "width": 64, "height": 64, "scheduler": "Karras"})
    assert raised.value.field == "scheduler"
    assert (await engine.list_runs()).items == []


# --- workflows, checkpoints and LoRAs on generate_image -------------------------------------


async def test_an_unknown_workflow_is_refused_listing_the_available_ones(client: Client) -> None:
    text = await failing(client, "generate_image", prompt=FOX, workflow="nope")
    assert "workflow:" in text
    assert "'nope'" in text
    for name in BUNDLED:
        assert name in text
    assert await run_ids(client) == []


async def test_generate_image_with_the_upscale_workflow_says_it_is_one(client: Client) -> None:
    text = await failing(client, "generate_image", prompt=FOX, workflow="upscale")
    assert "workflow:" in text
    assert "upscale workflow" in text
    assert "txt2img" in text
    assert await run_ids(client) == []


async def test_transform_with_a_txt2img_workflow_is_refused(client: Client) -> None:
    source_run, _ = await generated(client)
    before = await run_ids(client)
    text = await failing(client, "transform_image", source=source_run["run_id"], prompt=FOX, workflow="sd15")
    assert "workflow:" in text
    assert "txt2img workflow" in text
    assert await run_ids(client) == before


async def test_a_named_workflow_s_defaults_apply(client: Client) -> None:
    run = await ok(client, "generate_image", prompt=FOX, workflow="sdxl", seed=1, steps=1, width=256)
    inputs = run["inputs"]
    assert inputs["workflow"] == "sdxl"
    assert (inputs["width"], inputs["height"]) == (256, 1024)
    assert (inputs["sampler"], inputs["scheduler"], inputs["cfg"]) == ("dpmpp_2m", "karras", 6.5)
    assert inputs["checkpoint"] == "sd_xl_base_1.0.safetensors"
    assert (run["images"][0]["width"], run["images"][0]["height"]) == (256, 1024)


async def test_loras_are_recorded_with_their_strengths(client: Client) -> None:
    run = await ok(
        client,
        "generate_image",
        prompt=FOX,
        seed=1,
        steps=1,
        width=64,
        height=64,
        loras=["a.safetensors:0.5", "styles/ink.safetensors"],
        checkpoint="dreamshaper_8.safetensors",
    )
    expected = [
        {"name": "a.safetensors", "strength": 0.5},
        {"name": "styles/ink.safetensors", "strength": 1.0},
    ]
    assert run["inputs"]["loras"] == expected
    assert run["inputs"]["checkpoint"] == "dreamshaper_8.safetensors"
    assert (await ok(client, "get_run", run_id=run["run_id"]))["inputs"]["loras"] == expected


@pytest.mark.parametrize(
    ("arguments", "field"),
    [
        ({"loras": ["../x"]}, "loras"),
        ({"loras": ["a.safetensors:9"]}, "loras"),
        ({"loras": ["/etc/passwd"]}, "loras"),
        ({"checkpoint": "../../models/x.safetensors"}, "checkpoint"),
        ({"workflow": "Bad Name"}, "workflow"),
    ],
)
async def test_model_and_workflow_names_that_could_escape_are_refused(
    client: Client, arguments: dict[str, Any], field: str
) -> None:
    text = await failing(client, "generate_image", prompt=FOX, **arguments)
    assert f"{field}:" in text
    assert await run_ids(client) == []


async def test_list_workflows_shows_the_bundled_workflows(client: Client) -> None:
    listed = await ok(client, "list_workflows")
    assert listed["problems"] == []
    workflows = {w["name"]: w for w in listed["workflows"]}
    assert {name: w["operation"] for name, w in workflows.items()} == BUNDLED
    assert workflows["upscale"]["parameters"] == ["scale", "source"]
    assert {"source", "denoise", "loras", "prompt"} <= set(workflows["img2img"]["parameters"])
    assert {"prompt", "width", "count", "checkpoint", "loras"} <= set(workflows["sd15"]["parameters"])
    assert "cfg" not in workflows["flux-dev"]["parameters"]
    assert workflows["sdxl"]["defaults"]["width"] == 1024
    assert "KSampler" in workflows["sd15"]["node_types"]


async def test_list_models_is_empty_on_the_preview_backend(client: Client) -> None:
    assert await ok(client, "list_models") == {"backend": "local", "models": {}}


# --- user workflows -------------------------------------------------------------------------


@pytest.fixture
async def examples_client(tmp_path: Path) -> AsyncIterator[Client]:
    """An engine configured through the environment with the repository's example workflows."""
    settings = Settings.from_env(
        {"ATELIER_WORKFLOWS_DIR": str(REPO / "examples" / "workflows")},
        home=tmp_path / "examples-home",
        local_step_ms=0,
    )
    async with Engine.open(settings) as engine, Client(build_mcp(engine)) as connected:
        yield connected


async def test_a_user_workflow_runs_with_its_defaults_and_refuses_what_it_does_not_map(
    examples_client: Client,
) -> None:
    listed = await ok(examples_client, "list_workflows")
    assert "portrait" in {w["name"] for w in listed["workflows"]}
    run = await ok(examples_client, "generate_image", prompt=FOX, workflow="portrait", seed=1, steps=1)
    assert (run["images"][0]["width"], run["images"][0]["height"]) == (512, 768)
    assert run["inputs"]["workflow"] == "portrait"

    text = await failing(examples_client, "generate_image", prompt=FOX, workflow="portrait", denoise=0.5)
    assert "denoise:" in text
    assert "portrait" in text
    assert len(await run_ids(examples_client)) == 1


async def test_a_missing_workflows_dir_shows_up_in_list_workflows(tmp_path: Path) -> None:
    missing = tmp_path / "not-there"
    settings = Settings.from_env(
        {"ATELIER_WORKFLOWS_DIR": str(missing)}, home=tmp_path / "home2", local_step_ms=0
    )
    async with Engine.open(settings) as engine, Client(build_mcp(engine)) as connected:
        listed = await ok(connected, "list_workflows")
    assert len(listed["problems"]) == 1
    assert "ATELIER_WORKFLOWS_DIR" in listed["problems"][0]
    assert str(missing) in listed["problems"][0]
    assert {w["name"] for w in listed["workflows"]} == set(BUNDLED)


# --- the engine API -------------------------------------------------------------------------


async def test_engine_submit_image_transforms_a_named_run_image(engine: Engine) -> None:
    first = await finished(
        engine,
        await engine.submit_image(
            {"prompt": FOX, "width": 72, "height": 64, "count": 2, "seed": 1, "steps": 1}
        ),
    )
    second_png = await image_of(engine, first, 1)
    queued = await engine.submit_image(
        {
            "operation": "img2img",
            "prompt": OCEAN,
            "source": f"{first.id}/image-02.png",
            "denoise": 0,
            "seed": 5,
        }
    )
    assert queued.status is RunStatus.QUEUED
    done = await finished(engine, queued)
    assert done.status is RunStatus.COMPLETED
    source = done.inputs["source"]
    assert source["sha256"] == hashlib.sha256(second_png).hexdigest()
    assert source["origin"] == f"atelier://runs/{first.id}/images/image-02.png"
    [artifact] = done.artifacts
    assert (artifact.width, artifact.height) == (72, 64)
    assert largest_difference(pixels(await image_of(engine, done)), pixels(second_png)) <= 1


async def test_engine_reads_sources_from_the_inputs_folder_and_input_dirs(tmp_path: Path) -> None:
    extra = tmp_path / "photos"
    extra.mkdir()
    settings = Settings.from_env({"ATELIER_INPUT_DIRS": str(extra)}, home=tmp_path / "home3", local_step_ms=0)
    settings.inputs_dir.mkdir(parents=True)
    in_home = settings.inputs_dir / "harbour.png"
    in_home.write_bytes(png(40, 24))
    buffer = io.BytesIO()
    Image.new("RGB", (36, 20), (90, 20, 120)).save(buffer, format="JPEG")
    in_extra = extra / "dusk.jpg"
    in_extra.write_bytes(buffer.getvalue())

    async with Engine.open(settings) as engine:
        from_home = await finished(
            engine, await engine.submit_image({"operation": "upscale", "source": str(in_home), "scale": 2})
        )
        from_extra = await finished(
            engine,
            await engine.submit_image({"operation": "img2img", "prompt": OCEAN, "source": str(in_extra)}),
        )
        with pytest.raises(InvalidInput) as raised:
            await engine.submit_image({"operation": "upscale", "source": str(tmp_path / "stray.png")})
        assert raised.value.field == "source"

    assert from_home.status is RunStatus.COMPLETED
    assert (from_home.artifacts[0].width, from_home.artifacts[0].height) == (80, 48)
    assert from_home.inputs["source"]["origin"] == str(in_home)
    assert from_extra.status is RunStatus.COMPLETED
    assert (from_extra.artifacts[0].width, from_extra.artifacts[0].height) == (36, 20)
    assert from_extra.inputs["source"]["media_type"] == "image/jpeg"
    sha = from_extra.inputs["source"]["sha256"]
    assert (settings.artifacts_dir / "inputs" / f"{sha}.jpg").read_bytes() == in_extra.read_bytes()


async def test_engine_resolves_relative_sources_in_the_inputs_folder_and_names_bad_paths(
    engine: Engine, settings: Settings
) -> None:
    settings.inputs_dir.mkdir(parents=True)
    (settings.inputs_dir / "harbour.png").write_bytes(png(40, 24))
    (settings.home / "stray.png").write_bytes(png(40, 24))
    done = await finished(
        engine, await engine.submit_image({"operation": "upscale", "source": "harbour.png"})
    )
    assert done.status is RunStatus.COMPLETED
    assert (done.artifacts[0].width, done.artifacts[0].height) == (80, 48)
    assert done.inputs["source"]["origin"] == "harbour.png"
    for source, said in (
        ("../stray.png", "outside the folders"),
        ("harbour\0.png", "NUL byte"),
        ("~nosuchuser/harbour.png", "unknown"),
    ):
        with pytest.raises(InvalidInput) as raised:
            await engine.submit_image({"operation": "upscale", "source": source})
        assert raised.value.field == "source"
        assert said in raised.value.problem
    assert [run.id for run in (await engine.list_runs()).items] == [done.id]


async def test_engine_refuses_workflow_mismatches_naming_the_field(engine: Engine) -> None:
    source = await finished(
        engine, await engine.submit_image({"prompt": FOX, "width": 64, "height": 64, "steps": 1})
    )
    cases = [
        ({"operation": "upscale", "source": source.id, "workflow": "upscale", "count": 2}, "count"),
        (
            {"operation": "upscale", "source": source.id, "workflow": "upscale", "loras": ["a.safetensors"]},
            "loras",
        ),
        ({"operation": "img2img", "prompt": OCEAN, "source": source.id, "workflow": "sdxl"}, "workflow"),
        ({"operation": "inpaint", "prompt": OCEAN, "source": source.id}, "operation"),
        ({"operation": "img2img", "prompt": OCEAN}, "source"),
        ({"prompt": OCEAN, "source": source.id}, "source"),
    ]
    for params, field in cases:
        with pytest.raises(InvalidInput) as raised:
            await engine.submit_image(params)
        assert raised.value.field == field, params
    assert [run.id for run in (await engine.list_runs()).items] == [source.id]


async def test_a_cancelled_img2img_run_retries_from_its_stored_source(tmp_path: Path) -> None:
    # One slot, so a long run holds the img2img run in the queue.
    settings = Settings.from_env(
        {}, home=tmp_path / "held", local_step_ms=20, local_concurrency=1, retry_backoff_s=0.01
    )
    async with Engine.open(settings) as engine:
        source = await finished(
            engine,
            await engine.submit_image({"prompt": FOX, "width": 88, "height": 64, "steps": 1, "seed": 1}),
        )
        source_png = await image_of(engine, source)
        blocker = await engine.submit_image(
            {"prompt": "a long wait", "width": 64, "height": 64, "steps": 150}
        )
        with anyio.fail_after(5):
            while (await engine.get_run(blocker.id)).status is not RunStatus.RUNNING:
                await anyio.sleep(0.01)

        held = await engine.submit_image(
            {
                "operation": "img2img",
                "prompt": OCEAN,
                "source": f"atelier://runs/{source.id}/images/image-01.png",
                "denoise": 0,
                "seed": 5,
                "steps": 2,
            }
        )
        assert (await engine.get_run(held.id)).status is RunStatus.QUEUED
        assert (await engine.cancel(held.id)).status is RunStatus.CANCELLED
        await engine.cancel(blocker.id)
        # The source run goes away; the stored copy of its image is what the retry uses.
        await engine.delete(source.id)
        sha = held.inputs["source"]["sha256"]
        stored = settings.artifacts_dir / "inputs" / f"{sha}.png"
        assert stored.read_bytes() == source_png

        retried = await engine.retry(held.id)
        assert retried.status is RunStatus.QUEUED
        done = await finished(engine, retried)
        assert done.status is RunStatus.COMPLETED, done.error
        assert done.inputs == held.inputs
        [artifact] = done.artifacts
        assert (artifact.width, artifact.height) == (88, 64)
        assert largest_difference(pixels(await image_of(engine, done)), pixels(source_png)) <= 1
