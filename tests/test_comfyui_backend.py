"""The ComfyUI backend end to end, against the fake ComfyUI 0.3.64 server on loopback.

A real engine (SQLite ledger, artifact store on a temp home) with `backend=comfyui` talks
HTTP and WebSocket to `tests.fakes.comfyui`; some tests go through the MCP tools as a client
sees them. Covered: text-to-image with what is POSTed and fetched, sampler progress reaching
MCP progress notifications, checkpoints and LoRA chains, up-front validation that spends no
GPU time, execution errors / OOM / HTTP rejections and which of them are retried, source
upload for image-to-image and upscaling, list_models / list_workflows, a user workflow from
ATELIER_WORKFLOWS_DIR, and get_status's per-server health, queue and VRAM figures.
"""

from __future__ import annotations

import base64
import io
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client
from PIL import Image

from core.engine import Engine
from core.errors import InvalidInput
from core.models import Run, RunStatus
from core.settings import Settings
from mcp_server.server import build_mcp
from tests.fakes.comfyui import DEFAULT_MODELS, FakeComfyUI, serve_fake
from tests.test_mcp_tools import call, error_text, failing, ok, read_bytes

pytestmark = pytest.mark.anyio

FOX = "a red fox in a snowy forest at sunset"
OCEAN = "a blue ocean under a purple night sky"
REPO = Path(__file__).resolve().parents[1]
EXAMPLES_DIR = REPO / "examples" / "workflows"
BUNDLED = {
    "flux-dev": "txt2img",
    "flux-schnell": "txt2img",
    "img2img": "img2img",
    "sd15": "txt2img",
    "sdxl": "txt2img",
    "upscale": "upscale",
}
SMALL: dict[str, Any] = {"width": 64, "height": 64, "steps": 3}


# --- helpers --------------------------------------------------------------------------------


async def until_servers_up(engine: Engine, count: int) -> None:
    """Wait until the pool has connected to `count` servers (and so knows their /object_info)."""
    with anyio.fail_after(10):
        while (await engine.status())["backends"]["comfyui"]["servers_up"] < count:
            await anyio.sleep(0.01)


@asynccontextmanager
async def comfyui_engine(tmp_path: Path, *fakes: FakeComfyUI, **settings: Any) -> AsyncIterator[Engine]:
    """An engine whose backend is a pool of the given fakes, each served on its own loopback port."""
    try:
        async with AsyncExitStack() as stack:
            servers = [await stack.enter_async_context(serve_fake(fake)) for fake in fakes]
            config = Settings.from_env(
                {},
                home=tmp_path / "home",
                backend="comfyui",
                comfyui_urls=",".join(server.url for server in servers),
                retry_backoff_s=0.01,
                **settings,
            )
            engine = await stack.enter_async_context(Engine.open(config))
            await until_servers_up(engine, len(servers))
            yield engine
    except BaseExceptionGroup as group:
        # The task groups (fakes, engine, MCP client) only wrap the test's own failure: show it as is.
        inner: BaseException = group
        while isinstance(inner, BaseExceptionGroup) and len(inner.exceptions) == 1:
            inner = inner.exceptions[0]
        raise inner from None


async def finished(engine: Engine, run_id: str, within: float = 15) -> Run:
    """The run once it is final (fails the test instead of hanging)."""
    with anyio.fail_after(within + 5):
        run = await engine.wait(run_id, within)
    assert run.status.is_final, f"run {run_id} still {run.status.value}: {run.message}"
    return run


async def generate(engine: Engine, **params: Any) -> Run:
    run = await engine.submit_image({"prompt": FOX, "seed": 1, **SMALL, **params})
    return await finished(engine, run.id)


def posted_prompts(fake: FakeComfyUI) -> list[dict[str, Any]]:
    """The bodies of every POST /prompt the fake received."""
    return fake.requests_to("POST", "/prompt")


def nodes_of(graph: dict[str, Any], class_type: str) -> dict[str, dict[str, Any]]:
    return {node_id: node for node_id, node in graph.items() if node["class_type"] == class_type}


def only_node(graph: dict[str, Any], class_type: str) -> dict[str, Any]:
    [node] = nodes_of(graph, class_type).values()
    return node


def image_size(data: bytes, expected_format: str = "PNG") -> tuple[int, int]:
    with Image.open(io.BytesIO(data)) as image:
        assert image.format == expected_format
        return image.size


def png(width: int, height: int) -> bytes:
    image = Image.new("RGB", (width, height), (230, 180, 40))
    image.paste((30, 60, 160), (0, 0, width // 3, height))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def saved_outputs(fake: FakeComfyUI, prompt_id: str) -> list[bytes]:
    """The images the fake saved to output/ for one prompt, in node order."""
    outputs = fake.history[prompt_id]["outputs"]
    found = []
    for node_id in sorted(outputs, key=int):
        for image in outputs[node_id].get("images", []):
            data = fake.files.read_file(image["type"], image["subfolder"], image["filename"])
            assert data is not None
            found.append(data)
    return found


# --- text-to-image --------------------------------------------------------------------------


async def test_txt2img_run_brings_back_the_png_comfyui_saved(tmp_path: Path) -> None:
    fake = FakeComfyUI(prompt_seconds=0.02)
    async with comfyui_engine(tmp_path, fake) as engine:
        run = await generate(engine, width=64, height=96, steps=3, seed=1234)

        assert run.status is RunStatus.COMPLETED, run.error
        assert run.backend == "comfyui"
        assert run.attempts == 1
        [artifact] = run.artifacts
        assert artifact.media_type == "image/png"
        assert (artifact.width, artifact.height) == (64, 96)
        _, data = await engine.read_artifact(run.id, artifact.filename)
        assert image_size(data) == (64, 96)
        assert artifact.size == len(data)

        # Sent once, with Atelier's client id (its WebSocket) and a prompt id of its choosing.
        [body] = posted_prompts(fake)
        assert isinstance(body["client_id"], str) and body["client_id"]
        assert isinstance(body["prompt_id"], str) and body["prompt_id"]
        graph = body["prompt"]
        sampler = only_node(graph, "KSampler")["inputs"]
        assert (sampler["seed"], sampler["steps"]) == (1234, 3)
        latent = only_node(graph, "EmptyLatentImage")["inputs"]
        assert (latent["width"], latent["height"]) == (64, 96)
        assert FOX in [node["inputs"]["text"] for node in nodes_of(graph, "CLIPTextEncode").values()]

        # The image is the very file ComfyUI saved for that prompt, fetched with GET /view.
        assert fake.history[body["prompt_id"]]["status"]["status_str"] == "success"
        assert saved_outputs(fake, body["prompt_id"]) == [data]
        assert len(fake.requests_to("GET", "/view")) == 1


async def test_count_makes_a_batch_of_distinct_images(tmp_path: Path) -> None:
    fake = FakeComfyUI(prompt_seconds=0.02)
    async with comfyui_engine(tmp_path, fake) as engine:
        run = await generate(engine, count=2)

        assert run.status is RunStatus.COMPLETED, run.error
        assert [a.filename for a in run.artifacts] == ["image-01.png", "image-02.png"]
        assert only_node(posted_prompts(fake)[0]["prompt"], "EmptyLatentImage")["inputs"]["batch_size"] == 2
        first, second = [(await engine.read_artifact(run.id, a.filename))[1] for a in run.artifacts]
        assert image_size(first) == image_size(second) == (64, 64)
        assert first != second


@pytest.mark.parametrize("workflow", ["sd15", "sdxl", "flux-dev", "flux-schnell"])
async def test_every_bundled_txt2img_workflow_runs_on_a_stock_server(tmp_path: Path, workflow: str) -> None:
    fake = FakeComfyUI(prompt_seconds=0.02)
    async with comfyui_engine(tmp_path, fake) as engine:
        run = await generate(engine, workflow=workflow, steps=2)

        assert run.status is RunStatus.COMPLETED, run.error
        [artifact] = run.artifacts
        assert image_size((await engine.read_artifact(run.id, artifact.filename))[1]) == (64, 64)
        assert len(posted_prompts(fake)) == 1


async def test_sampler_steps_reach_mcp_progress_notifications(tmp_path: Path) -> None:
    fake = FakeComfyUI(prompt_seconds=0.25)
    seen: list[tuple[float, float | None, str | None]] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        seen.append((progress, total, message))

    async with comfyui_engine(tmp_path, fake) as engine, Client(build_mcp(engine)) as client:
        arguments = {"prompt": FOX, "width": 64, "height": 64, "steps": 5, "seed": 3}
        with anyio.fail_after(20):
            result = await client.call_tool("generate_image", arguments, progress_callback=on_progress)

    assert not result.is_error, error_text(result)
    assert result.structured_content is not None
    assert result.structured_content["status"] == "completed"
    # One notification per KSampler step ComfyUI reported, in order, out of 100.
    assert [message for _, _, message in seen] == [f"step {n}/5" for n in range(1, 6)]
    assert [progress for progress, _, _ in seen] == [20, 40, 60, 80, 100]
    assert {total for _, total, _ in seen} == {100}


async def test_checkpoint_and_loras_become_a_lora_loader_chain(tmp_path: Path) -> None:
    fake = FakeComfyUI(prompt_seconds=0.02)
    async with comfyui_engine(tmp_path, fake) as engine:
        run = await generate(
            engine,
            workflow="sd15",
            checkpoint="sd_xl_base_1.0.safetensors",
            loras=["detail-tweaker:0.7", "pixel-art.safetensors:0.4"],
        )
        assert run.status is RunStatus.COMPLETED, run.error

    [body] = posted_prompts(fake)
    graph = body["prompt"]
    [(checkpoint_id, checkpoint)] = nodes_of(graph, "CheckpointLoaderSimple").items()
    assert checkpoint["inputs"]["ckpt_name"] == "sd_xl_base_1.0.safetensors"

    loaders = nodes_of(graph, "LoraLoader")
    assert len(loaders) == 2
    # The chain starts at the checkpoint loader: find each link by what it is fed from.
    by_model_input = {tuple(node["inputs"]["model"]): (node_id, node) for node_id, node in loaders.items()}
    first_id, first = by_model_input[(checkpoint_id, 0)]
    second_id, second = by_model_input[(first_id, 0)]
    assert first["inputs"]["clip"] == [checkpoint_id, 1]
    assert second["inputs"]["clip"] == [first_id, 1]
    assert first["inputs"]["lora_name"] == "detail-tweaker.safetensors"  # extension completed
    assert (first["inputs"]["strength_model"], first["inputs"]["strength_clip"]) == (0.7, 0.7)
    assert second["inputs"]["lora_name"] == "pixel-art.safetensors"
    assert (second["inputs"]["strength_model"], second["inputs"]["strength_clip"]) == (0.4, 0.4)

    # Everything that used the checkpoint's model and clip now uses the end of the chain.
    assert only_node(graph, "KSampler")["inputs"]["model"] == [second_id, 0]
    for encoder in nodes_of(graph, "CLIPTextEncode").values():
        assert encoder["inputs"]["clip"] == [second_id, 1]


# --- up-front validation --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("params", "field", "fragments"),
    [
        pytest.param(
            {"checkpoint": "dreamshaper_8.safetensors"},
            "checkpoint",
            [
                "CheckpointLoaderSimple",
                "ckpt_name",
                "dreamshaper_8.safetensors",
                "v1-5-pruned-emaonly.safetensors",
                "sd_xl_base_1.0.safetensors",
            ],
            id="checkpoint-not-installed",
        ),
        pytest.param(
            {"loras": ["detail-tweaker:0.5", "film-grain:0.5"]},
            "loras",
            ["LoraLoader", "lora_name", "film-grain", "detail-tweaker.safetensors", "pixel-art.safetensors"],
            id="lora-not-installed",
        ),
        pytest.param(
            {"sampler": "euler_magic"},
            None,
            ["KSampler", "sampler_name", "euler_magic", "42 allowed values: euler, "],
            id="sampler-not-on-server",
        ),
        pytest.param(
            {"scheduler": "cosine_dream"},
            None,
            ["KSampler", "scheduler", "cosine_dream", "simple", "karras", "normal"],
            id="scheduler-not-on-server",
        ),
        pytest.param({"steps": 20000}, "steps", ["1..150", "20000"], id="steps-out-of-range"),
        pytest.param({"cfg": 150.0}, "cfg", ["0..30", "150"], id="cfg-out-of-range"),
        pytest.param(
            {"workflow": "watercolor"},
            "workflow",
            ["watercolor", *BUNDLED],
            id="unknown-workflow",
        ),
    ],
)
async def test_a_request_that_cannot_run_is_refused_before_comfyui_sees_it(
    tmp_path: Path, params: dict[str, Any], field: str | None, fragments: list[str]
) -> None:
    fake = FakeComfyUI(prompt_seconds=0.02)
    async with comfyui_engine(tmp_path, fake) as engine:
        with pytest.raises(InvalidInput) as refused:
            await engine.submit_image({"prompt": FOX, "seed": 1, **SMALL, **params})

        message = str(refused.value)
        for fragment in fragments:
            assert fragment in message, f"{fragment!r} missing from {message!r}"
        if field is not None:
            assert refused.value.field == field
        # No GPU time spent, nothing recorded.
        assert posted_prompts(fake) == []
        assert fake.requests_to("POST", "/upload/image") == []
        assert (await engine.list_runs()).items == []


async def test_a_sampler_the_server_lacks_is_blamed_on_the_sampler_parameter(tmp_path: Path) -> None:
    fake = FakeComfyUI(prompt_seconds=0.02)
    async with comfyui_engine(tmp_path, fake) as engine:
        with pytest.raises(InvalidInput) as refused:
            await engine.submit_image({"prompt": FOX, "seed": 1, **SMALL, "sampler": "euler_magic"})
    assert refused.value.field == "sampler"


async def test_mcp_reports_a_missing_lora_as_a_tool_error_and_records_nothing(tmp_path: Path) -> None:
    fake = FakeComfyUI(prompt_seconds=0.02)
    async with comfyui_engine(tmp_path, fake) as engine, Client(build_mcp(engine)) as client:
        text = await failing(client, "generate_image", prompt=FOX, seed=1, loras=["film-grain:0.8"], **SMALL)
        assert "loras" in text
        assert "LoraLoader" in text and "lora_name" in text and "film-grain" in text
        assert "detail-tweaker.safetensors" in text  # what is installed

        text = await failing(client, "generate_image", prompt=FOX, seed=1, checkpoint="nope.safetensors")
        assert "CheckpointLoaderSimple" in text and "nope.safetensors" in text

        listed = await ok(client, "list_runs")
        assert listed["runs"] == []
    assert posted_prompts(fake) == []


# --- failures and retries -------------------------------------------------------------------


async def test_a_node_error_fails_the_run_at_once_with_comfyuis_message(tmp_path: Path) -> None:
    fake = FakeComfyUI(prompt_seconds=0.02)
    async with comfyui_engine(tmp_path, fake) as engine:
        fake.fail_next(1, "CUDA error: device-side assert triggered")
        run = await generate(engine)

        assert run.status is RunStatus.FAILED
        assert run.error is not None
        assert "CUDA error: device-side assert triggered" in run.error
        assert "KSampler" in run.error
        assert run.attempts == 1
        assert run.artifacts == []
        assert len(posted_prompts(fake)) == 1
        logs = " ".join(entry.message for entry in await engine.logs(run.id))
        assert "not retried" in logs


async def test_an_out_of_memory_error_is_retried(tmp_path: Path) -> None:
    fake = FakeComfyUI(prompt_seconds=0.02)
    async with comfyui_engine(tmp_path, fake) as engine:
        fake.fail_next(1, "Allocation on device 0 would exceed allowed memory. (out of memory)")
        run = await generate(engine)

        assert run.status is RunStatus.COMPLETED, run.error
        assert run.attempts == 2
        assert len(posted_prompts(fake)) == 2


async def test_a_server_error_on_submit_is_retried_and_the_run_completes(tmp_path: Path) -> None:
    fake = FakeComfyUI(prompt_seconds=0.02)
    async with comfyui_engine(tmp_path, fake) as engine:
        fake.reject_next(1, 500)
        run = await generate(engine)

        assert run.status is RunStatus.COMPLETED, run.error
        assert run.attempts == 2
        assert len(run.artifacts) == 1
        assert len(posted_prompts(fake)) == 2
        logs = [entry.message for entry in await engine.logs(run.id)]
        assert any("500" in line and "retrying" in line for line in logs), logs


async def test_a_bad_request_answer_fails_the_run_without_retrying(tmp_path: Path) -> None:
    fake = FakeComfyUI(prompt_seconds=0.02)
    async with comfyui_engine(tmp_path, fake) as engine:
        fake.reject_next(1, 400)
        run = await generate(engine)

        assert run.status is RunStatus.FAILED
        assert run.attempts == 1
        assert run.error is not None and "400" in run.error
        assert len(posted_prompts(fake)) == 1


async def test_comfyuis_own_validation_error_names_the_node_and_is_not_retried(tmp_path: Path) -> None:
    fake = FakeComfyUI(prompt_seconds=0.02)
    async with comfyui_engine(tmp_path, fake) as engine:
        # The checkpoint is removed after Atelier read the server's /object_info: only ComfyUI knows.
        fake.models["checkpoints"] = ["sd_xl_base_1.0.safetensors"]
        run = await generate(engine, checkpoint="v1-5-pruned-emaonly.safetensors")

        assert run.status is RunStatus.FAILED
        assert run.attempts == 1
        assert run.error is not None
        for fragment in ("CheckpointLoaderSimple", "ckpt_name", "v1-5-pruned-emaonly.safetensors"):
            assert fragment in run.error, run.error
        assert len(posted_prompts(fake)) == 1
        assert fake.history == {}


# --- sources: image-to-image and upscaling --------------------------------------------------


async def test_the_source_reaches_comfyui_input_folder_byte_for_byte(tmp_path: Path) -> None:
    fake = FakeComfyUI(prompt_seconds=0.02)
    source_png = png(80, 48)
    async with comfyui_engine(tmp_path, fake) as engine, Client(build_mcp(engine)) as client:
        await call(client, "transform_image", source=base64.b64encode(source_png).decode(), prompt=OCEAN)

    assert len(fake.requests_to("POST", "/upload/image")) == 1
    [name] = fake.files.list_files("input")
    assert name.startswith("atelier-") and name.endswith(".png")
    assert fake.files.read_file("input", "", name) == source_png


async def test_transform_image_uploads_the_source_and_keeps_its_size(tmp_path: Path) -> None:
    fake = FakeComfyUI(prompt_seconds=0.02)
    async with comfyui_engine(tmp_path, fake) as engine, Client(build_mcp(engine)) as client:
        source = await ok(client, "generate_image", prompt=FOX, width=96, height=64, steps=2, seed=1)
        assert source["status"] == "completed"
        uri = source["images"][0]["uri"]
        source_png = await read_bytes(client, uri)

        run = await ok(client, "transform_image", source=uri, prompt=OCEAN, denoise=0.5, steps=2, seed=2)

        assert run["status"] == "completed", run["error"]
        [image] = run["images"]
        assert (image["width"], image["height"]) == (96, 64)
        result_png = await read_bytes(client, image["uri"])
        assert image_size(result_png) == (96, 64)
        assert result_png != source_png

    assert len(fake.requests_to("POST", "/upload/image")) == 1
    graph = posted_prompts(fake)[-1]["prompt"]
    uploaded = only_node(graph, "LoadImage")["inputs"]["image"]
    # ComfyUI holds exactly the source's bytes under the name the graph loads.
    assert fake.files.read_file("input", "", uploaded) == source_png
    assert only_node(graph, "KSampler")["inputs"]["denoise"] == 0.5


async def test_upscale_image_by_two_doubles_a_base64_source(tmp_path: Path) -> None:
    fake = FakeComfyUI(prompt_seconds=0.02)
    source_png = png(80, 48)
    async with comfyui_engine(tmp_path, fake) as engine, Client(build_mcp(engine)) as client:
        run = await ok(client, "upscale_image", source=base64.b64encode(source_png).decode(), scale=2)

        assert run["status"] == "completed", run["error"]
        [image] = run["images"]
        assert (image["width"], image["height"]) == (160, 96)
        assert image_size(await read_bytes(client, image["uri"])) == (160, 96)

    assert len(fake.requests_to("POST", "/upload/image")) == 1
    [body] = posted_prompts(fake)
    graph = body["prompt"]
    assert fake.files.read_file("input", "", only_node(graph, "LoadImage")["inputs"]["image"]) == source_png
    assert only_node(graph, "UpscaleModelLoader")["inputs"]["model_name"] == "RealESRGAN_x4plus.pth"


# --- what is available ----------------------------------------------------------------------


async def test_list_models_shows_what_the_server_has_installed(tmp_path: Path) -> None:
    fake = FakeComfyUI(
        prompt_seconds=0.02,
        models={
            "checkpoints": ["v1-5-pruned-emaonly.safetensors", "dreamshaper_8.safetensors"],
            "loras": ["style/ink.safetensors", "detail-tweaker.safetensors"],
        },
    )
    async with comfyui_engine(tmp_path, fake) as engine, Client(build_mcp(engine)) as client:
        listed = await ok(client, "list_models")

    assert listed["backend"] == "comfyui"
    models = listed["models"]
    assert models["checkpoints"] == ["dreamshaper_8.safetensors", "v1-5-pruned-emaonly.safetensors"]
    assert models["loras"] == ["detail-tweaker.safetensors", "style/ink.safetensors"]
    assert models["upscale_models"] == sorted(DEFAULT_MODELS["upscale_models"])
    assert models["diffusion_models"] == sorted(DEFAULT_MODELS["diffusion_models"])
    assert set(DEFAULT_MODELS["vae"]) <= set(models["vae"])


async def test_list_workflows_describes_the_bundled_ones_which_a_stock_server_can_run(
    tmp_path: Path,
) -> None:
    fake = FakeComfyUI(prompt_seconds=0.02)
    async with comfyui_engine(tmp_path, fake) as engine, Client(build_mcp(engine)) as client:
        listed = await ok(client, "list_workflows")

    assert listed["problems"] == []
    workflows = {workflow["name"]: workflow for workflow in listed["workflows"]}
    assert {name: workflows[name]["operation"] for name in BUNDLED} == BUNDLED
    for name, workflow in workflows.items():
        assert workflow["description"], name
        # Every node type it needs is one ComfyUI provides.
        assert set(workflow["node_types"]) <= set(fake.node_types), name
    sd15 = workflows["sd15"]
    assert {"prompt", "negative_prompt", "seed", "steps", "cfg", "checkpoint", "loras"} <= set(
        sd15["parameters"]
    )
    assert sd15["defaults"]["checkpoint"] == "v1-5-pruned-emaonly.safetensors"
    assert workflows["sdxl"]["defaults"]["width"] == 1024
    assert "source" in workflows["img2img"]["parameters"]
    assert workflows["upscale"]["parameters"] == ["scale", "source"]
    assert "loras" in workflows["flux-dev"]["parameters"]


async def test_a_user_workflow_runs_with_the_values_its_sidecar_maps(tmp_path: Path) -> None:
    fake = FakeComfyUI(prompt_seconds=0.02)
    async with (
        comfyui_engine(tmp_path, fake, workflows_dir=EXAMPLES_DIR) as engine,
        Client(build_mcp(engine)) as client,
    ):
        listed = await ok(client, "list_workflows")
        assert "portrait" in [workflow["name"] for workflow in listed["workflows"]]

        run = await ok(
            client,
            "generate_image",
            prompt="a portrait of an old sailor",
            negative_prompt="cartoon",
            workflow="portrait",
            width=64,
            height=96,
            steps=3,
            cfg=5.5,
            seed=77,
            count=2,
            loras=["pixel-art:0.6"],
        )

        assert run["status"] == "completed", run["error"]
        # The graph enlarges 1.5x before saving.
        assert [(image["width"], image["height"]) for image in run["images"]] == [(96, 144), (96, 144)]
        assert image_size(await read_bytes(client, run["images"][0]["uri"])) == (96, 144)

    [body] = posted_prompts(fake)
    graph = body["prompt"]
    assert graph["6"]["inputs"]["text"] == "a portrait of an old sailor"
    assert graph["7"]["inputs"]["text"] == "cartoon"
    assert (graph["5"]["inputs"]["width"], graph["5"]["inputs"]["height"]) == (64, 96)
    assert graph["5"]["inputs"]["batch_size"] == 2
    sampler = graph["3"]["inputs"]
    assert (sampler["seed"], sampler["steps"], sampler["cfg"]) == (77, 3, 5.5)
    # Not asked for: the sidecar's defaults.
    assert (sampler["sampler_name"], sampler["scheduler"]) == ("dpmpp_2m", "karras")
    assert graph["4"]["inputs"]["ckpt_name"] == "v1-5-pruned-emaonly.safetensors"
    assert graph["10"]["inputs"]["scale_by"] == 1.5
    [(lora_id, lora)] = nodes_of(graph, "LoraLoader").items()
    assert lora["inputs"]["lora_name"] == "pixel-art.safetensors"
    assert lora["inputs"]["strength_model"] == 0.6
    assert lora["inputs"]["model"] == ["4", 0]
    assert sampler["model"] == [lora_id, 0]


# --- status ---------------------------------------------------------------------------------


def queued_on(fake: FakeComfyUI) -> int:
    """What the fake itself has in its queue, the running prompt included."""
    return len(fake.pending_prompt_ids) + (fake.running_prompt_id is not None)


async def until_queues_reported(client: Client, fakes: list[FakeComfyUI], total: int) -> list[dict[str, Any]]:
    """get_status's servers once each reports its fake's queue, `total` prompts in all."""
    with anyio.fail_after(10):
        while True:
            status = await ok(client, "get_status")
            servers: list[dict[str, Any]] = status["backends"]["comfyui"]["servers"]
            actual = [queued_on(fake) for fake in fakes]
            if sum(actual) == total and [server["queue_remaining"] for server in servers] == actual:
                return servers
            await anyio.sleep(0.02)


async def test_get_status_shows_each_server_with_its_vram_and_queue(tmp_path: Path) -> None:
    small = FakeComfyUI(prompt_seconds=2.0, vram_total=8_589_934_592, vram_free=6_442_450_944)
    large = FakeComfyUI(prompt_seconds=2.0, vram_total=25_757_220_864, vram_free=20_000_000_000)
    async with comfyui_engine(tmp_path, small, large) as engine, Client(build_mcp(engine)) as client:
        status = await ok(client, "get_status")
        comfyui = status["backends"]["comfyui"]
        assert status["healthy"] is True
        assert (comfyui["up"], comfyui["servers_up"]) == (True, 2)
        servers = await until_queues_reported(client, [small, large], total=0)
        assert [server["url"] for server in servers] == engine.settings.comfyui_servers
        assert [(server["up"], server["error"]) for server in servers] == [(True, None), (True, None)]
        assert [(server["vram_total"], server["vram_free"]) for server in servers] == [
            (8_589_934_592, 6_442_450_944),
            (25_757_220_864, 20_000_000_000),
        ]
        assert {server["comfyui_version"] for server in servers} == {"0.3.64"}

        # Three long runs over two servers, two deep: each server's queue shows in the status.
        runs = [await engine.submit_image({"prompt": FOX, "seed": n, **SMALL}) for n in range(3)]
        servers = await until_queues_reported(client, [small, large], total=3)
        assert sorted(server["queue_remaining"] for server in servers) == [1, 2]

        for run in runs:
            await engine.cancel(run.id)
        await until_queues_reported(client, [small, large], total=0)
