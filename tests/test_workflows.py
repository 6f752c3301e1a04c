"""ComfyUI workflows as Atelier loads, fills in and checks them before any GPU time is spent.

Bundled and example workflows are read from the repository; broken user workflows are written
to a temp folder. Graph checks run against the KSampler spec a real ComfyUI server answered
(recorded in the shared transcripts) plus small hand-written specs for the other nodes.
"""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path
from typing import Any

import pytest

from core.backends.comfyui.validation import (
    Problem,
    check_value,
    describe_rejection,
    installed_models,
    validate_graph,
)
from core.backends.comfyui.workflows import BUNDLED_DIR, Workflow, WorkflowLibrary, load_workflow
from core.errors import InvalidInput
from core.factory import make_workflows
from core.models import ImageSpec
from core.settings import Settings

REPO = Path(__file__).resolve().parents[1]
EXAMPLES_DIR = REPO / "examples" / "workflows"
TRANSCRIPTS = Path(
    os.environ.get("ATELIER_COMFYUI_TRANSCRIPTS", str(REPO / "tests" / "fakes" / "transcripts"))
)
BUNDLED = {
    "flux-dev": "txt2img",
    "flux-schnell": "txt2img",
    "img2img": "img2img",
    "sd15": "txt2img",
    "sdxl": "txt2img",
    "upscale": "upscale",
}
SD_FAMILY = ["sd15", "sdxl", "img2img", "portrait"]
FLUX = ["flux-dev", "flux-schnell"]
SOURCE_NAME = "atelier-0123abcd.png"
STORED_SOURCE = {"sha256": "ab" * 32, "media_type": "image/png", "width": 96, "height": 64}
INSTALLED_CHECKPOINTS = ["v1-5-pruned-emaonly.safetensors", "dreamshaper_8.safetensors"]
INSTALLED_LORAS = ["detail.safetensors", "style/ink.safetensors"]


# --- helpers --------------------------------------------------------------------------------


def library() -> WorkflowLibrary:
    """The bundled workflows plus the repository's example folder."""
    loaded = WorkflowLibrary.load(EXAMPLES_DIR)
    assert loaded.problems == []
    return loaded


def spec(operation: str = "txt2img", **fields: Any) -> ImageSpec:
    base: dict[str, Any] = {"operation": operation, "seed": 7}
    if operation != "upscale":
        base["prompt"] = "a lighthouse at dusk"
    if operation != "txt2img":
        base["source"] = STORED_SOURCE
    return ImageSpec.parse({**base, **fields})


def links(graph: dict[str, Any]) -> list[tuple[str, str, str, int]]:
    """Every (node, input, linked node, output index) of an API-format graph."""
    return [
        (node_id, name, str(value[0]), value[1])
        for node_id, node in graph.items()
        for name, value in node["inputs"].items()
        if isinstance(value, list)
    ]


def nodes_of(graph: dict[str, Any], class_type: str) -> dict[str, dict[str, Any]]:
    return {node_id: node for node_id, node in graph.items() if node["class_type"] == class_type}


def walk_back(graph: dict[str, Any], link: list[Any], through: str) -> tuple[list[str], list[Any]]:
    """Follow `link` back through a chain of `through` nodes: the LoRA names met, and where it starts."""
    met = []
    while graph[link[0]]["class_type"] == through:
        node = graph[link[0]]
        met.append(node["inputs"]["lora_name"])
        link = node["inputs"]["model" if link[1] == 0 else "clip"]
    return met, link


def sd15_graph() -> dict[str, Any]:
    return json.loads((BUNDLED_DIR / "sd15.json").read_text())


def write_workflow(folder: Path, name: str, graph: Any, meta: Any) -> Path:
    """`NAME.json` and `NAME.atelier.json` in `folder`; the sidecar's path."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.json").write_text(graph if isinstance(graph, str) else json.dumps(graph))
    sidecar = folder / f"{name}.atelier.json"
    sidecar.write_text(meta if isinstance(meta, str) else json.dumps(meta))
    return sidecar


MINIMAL_META = {
    "operation": "txt2img",
    "parameters": {"prompt": "6.text", "seed": "3.seed", "steps": "3.steps"},
}


def tiny_workflow(folder: Path) -> Workflow:
    """A user workflow mapping only prompt, seed and steps (no denoise, no checkpoint, no LoRAs)."""
    return load_workflow(write_workflow(folder, "tiny", sd15_graph(), MINIMAL_META))


# --- bundled and example workflows ----------------------------------------------------------


def test_bundled_workflows_all_load_with_their_operations() -> None:
    bundled = WorkflowLibrary.load()
    assert bundled.problems == []
    assert {w["name"]: w["operation"] for w in bundled.describe()} == BUNDLED
    assert {w["name"]: w["source"] for w in bundled.describe()} == {
        name: f"bundled:{name}.json" for name in BUNDLED
    }


def test_the_example_portrait_workflow_loads_next_to_the_bundled_ones() -> None:
    loaded = library()
    assert loaded.names() == sorted([*BUNDLED, "portrait"])
    portrait = loaded.get("portrait")
    assert portrait.operation == "txt2img"
    assert portrait.source_path == str(EXAMPLES_DIR / "portrait.json")
    assert portrait.defaults["height"] == 768
    assert "denoise" not in portrait.describe()["parameters"]
    assert "loras" in portrait.describe()["parameters"]


@pytest.mark.parametrize("name", [*BUNDLED, "portrait"])
def test_every_workflow_renders_a_graph_whose_links_all_point_at_existing_nodes(name: str) -> None:
    workflow = library().get(name)
    fields: dict[str, Any] = {}
    if workflow.takes_loras:
        fields["loras"] = ["detail.safetensors:0.7", "style/ink.safetensors"]
    graph = workflow.render(spec(workflow.operation, **fields), source_name=SOURCE_NAME)

    found = links(graph)
    assert found, "a workflow without links does nothing"
    for node_id, name_, target, index in found:
        assert target in graph, f"node {node_id} input {name_} links to missing node {target}"
        assert isinstance(index, int) and index >= 0
    for node in graph.values():
        assert isinstance(node["class_type"], str) and isinstance(node["inputs"], dict)
    for output in workflow.outputs:
        assert graph[output]["class_type"] == "SaveImage"
    if workflow.takes_loras:
        loaders = [n for n in graph.values() if n["class_type"].startswith("LoraLoader")]
        assert [n["inputs"]["lora_name"] for n in loaders] == ["detail.safetensors", "style/ink.safetensors"]


FULL_TXT2IMG = {
    "prompt": "a lighthouse at dusk",
    "negative_prompt": "blurry",
    "width": 640,
    "height": 384,
    "count": 3,
    "seed": 424242,
    "steps": 17,
    "cfg": 5.5,
    "sampler": "dpmpp_2m",
    "scheduler": "karras",
    "denoise": 0.9,
    "checkpoint": "dreamshaper_8.safetensors",
}


@pytest.mark.parametrize(
    ("name", "model_input", "cfg", "denoise"),
    [
        ("sd15", ("4", "ckpt_name"), 5.5, 0.9),
        ("sdxl", ("4", "ckpt_name"), 5.5, 0.9),
        # FLUX runs at cfg 1 whatever is asked; its "checkpoint" is the diffusion model.
        ("flux-dev", ("10", "unet_name"), 1.0, 0.9),
        ("flux-schnell", ("10", "unet_name"), 1.0, 0.9),
        # The example maps no denoise: its sampler keeps the graph's 1.0.
        ("portrait", ("4", "ckpt_name"), 5.5, 1.0),
    ],
)
def test_txt2img_parameters_land_on_their_node_inputs(
    name: str, model_input: tuple[str, str], cfg: float, denoise: float
) -> None:
    graph = library().get(name).render(spec(**FULL_TXT2IMG))
    assert graph["6"]["inputs"]["text"] == "a lighthouse at dusk"
    assert graph["7"]["inputs"]["text"] == "blurry"
    latent = graph["5"]["inputs"]
    assert (latent["width"], latent["height"], latent["batch_size"]) == (640, 384, 3)
    sampler = graph["3"]["inputs"]
    assert sampler["seed"] == 424242
    assert sampler["steps"] == 17
    assert sampler["cfg"] == cfg
    assert (sampler["sampler_name"], sampler["scheduler"]) == ("dpmpp_2m", "karras")
    assert sampler["denoise"] == denoise
    node, input_name = model_input
    assert graph[node]["inputs"][input_name] == "dreamshaper_8.safetensors"


def test_a_request_without_a_checkpoint_keeps_the_workflow_s_own_model() -> None:
    graph = library().get("sdxl").render(spec())
    assert graph["4"]["inputs"]["ckpt_name"] == "sd_xl_base_1.0.safetensors"


def test_img2img_sets_the_uploaded_source_and_the_denoise() -> None:
    workflow = library().get("img2img")
    graph = workflow.render(spec("img2img", denoise=0.35, steps=9), source_name=SOURCE_NAME)
    assert graph["10"]["class_type"] == "LoadImage"
    assert graph["10"]["inputs"]["image"] == SOURCE_NAME
    assert graph["3"]["inputs"]["denoise"] == 0.35
    assert graph["3"]["inputs"]["steps"] == 9
    assert graph["6"]["inputs"]["text"] == "a lighthouse at dusk"
    # Left out, image-to-image repaints 60% of the source.
    assert workflow.render(spec("img2img"), source_name=SOURCE_NAME)["3"]["inputs"]["denoise"] == 0.6


@pytest.mark.parametrize(("scale", "scale_by"), [(None, 0.5), (2, 0.5), (3, 0.75), (1.5, 0.375), (8, 2.0)])
def test_upscale_turns_the_asked_scale_into_a_factor_after_the_x4_model(
    scale: float | None, scale_by: float
) -> None:
    graph = library().get("upscale").render(spec("upscale", scale=scale), source_name=SOURCE_NAME)
    assert graph["1"]["inputs"]["image"] == SOURCE_NAME
    assert graph["3"]["class_type"] == "ImageUpscaleWithModel"
    assert graph["4"]["class_type"] == "ImageScaleBy"
    assert graph["4"]["inputs"]["scale_by"] == pytest.approx(scale_by)


# --- LoRA chains ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", SD_FAMILY)
def test_lora_chain_rewires_the_sampler_and_both_prompts_to_its_end(name: str) -> None:
    workflow = library().get(name)
    operation = workflow.operation
    loras = ["detail.safetensors:0.7", "style/ink.safetensors:-0.3"]
    graph = workflow.render(spec(operation, loras=loras), source_name=SOURCE_NAME)

    loaders = nodes_of(graph, "LoraLoader")
    assert len(loaders) == 2
    strengths = {n["inputs"]["lora_name"]: n["inputs"]["strength_model"] for n in loaders.values()}
    assert strengths == {"detail.safetensors": 0.7, "style/ink.safetensors": -0.3}
    for loader in loaders.values():
        assert loader["inputs"]["strength_clip"] == loader["inputs"]["strength_model"]

    [sampler] = nodes_of(graph, "KSampler").values()
    met, start = walk_back(graph, sampler["inputs"]["model"], "LoraLoader")
    # Walking back from the sampler meets the last LoRA first; the chain starts at the checkpoint.
    assert met == ["style/ink.safetensors", "detail.safetensors"]
    assert start == ["4", 0]
    encoders = nodes_of(graph, "CLIPTextEncode")
    assert len(encoders) == 2
    for encoder in encoders.values():
        met, start = walk_back(graph, encoder["inputs"]["clip"], "LoraLoader")
        assert met == ["style/ink.safetensors", "detail.safetensors"]
        assert start == ["4", 1]
    # Only the first loader still reads the checkpoint's model and clip; the VAE is untouched.
    readers = {(node, name_) for node, name_, target, index in links(graph) if target == "4" and index < 2}
    first = next(i for i, n in loaders.items() if n["inputs"]["lora_name"] == "detail.safetensors")
    assert readers == {(first, "model"), (first, "clip")}
    assert all(index == 2 for _, name_, target, index in links(graph) if target == "4" and name_ == "vae")


@pytest.mark.parametrize("name", FLUX)
def test_flux_loras_are_model_only_and_leave_the_text_encoders_alone(name: str) -> None:
    graph = library().get(name).render(spec(loras="detail.safetensors:0.5,style/ink.safetensors"))
    assert nodes_of(graph, "LoraLoader") == {}
    loaders = nodes_of(graph, "LoraLoaderModelOnly")
    assert len(loaders) == 2
    for loader in loaders.values():
        assert "clip" not in loader["inputs"]
    met, start = walk_back(graph, graph["3"]["inputs"]["model"], "LoraLoaderModelOnly")
    assert met == ["style/ink.safetensors", "detail.safetensors"]
    assert start == ["10", 0]
    for encoder in nodes_of(graph, "CLIPTextEncode").values():
        assert encoder["inputs"]["clip"] == ["11", 0]


def test_rendering_with_loras_does_not_change_the_next_render() -> None:
    workflow = library().get("sd15")
    with_loras = workflow.render(spec(loras=["detail.safetensors"], steps=40))
    assert nodes_of(with_loras, "LoraLoader")
    plain = workflow.render(spec())
    assert nodes_of(plain, "LoraLoader") == {}
    assert plain["3"]["inputs"]["model"] == ["4", 0]
    assert plain["3"]["inputs"]["steps"] == 20
    assert plain == workflow.render(spec())


# --- user workflows that cannot load --------------------------------------------------------


def _broken_cases() -> list[Any]:
    sd15 = sd15_graph()
    no_class = copy.deepcopy(sd15)
    del no_class["5"]["class_type"]
    dangling = copy.deepcopy(sd15)
    dangling["3"]["inputs"]["positive"] = ["42", 0]
    ui_export = {"last_node_id": 9, "nodes": [{"id": 3, "type": "KSampler"}], "links": [[1, 4, 0, 3, 0]]}
    meta = MINIMAL_META
    graph_file, sidecar_file = "{name}.json", "{name}.atelier.json"
    return [
        pytest.param(
            "ui-export", ui_export, meta, graph_file, ["UI-format workflow", "Export (API)"], id="ui-format"
        ),
        pytest.param(
            "no-class", no_class, meta, graph_file, ["node '5' has no class_type"], id="no-class-type"
        ),
        pytest.param(
            "dangling",
            dangling,
            meta,
            graph_file,
            ["node '3'", "'positive'", "node '42'"],
            id="link-to-missing-node",
        ),
        pytest.param(
            "far-node",
            sd15,
            {"parameters": {"prompt": "60.text", "seed": "3.seed"}},
            sidecar_file,
            ["prompt targets node '60'", "not in the graph"],
            id="missing-target-node",
        ),
        pytest.param(
            "typo",
            sd15,
            {"parameters": {"prompt": "6.txt", "seed": "3.seed"}},
            sidecar_file,
            ["prompt targets input 'txt' of node 6 (CLIPTextEncode)", "text, clip"],
            id="missing-target-input",
        ),
        pytest.param(
            "styled",
            sd15,
            {"parameters": {"prompt": "6.text", "seed": "3.seed", "style": "7.text"}},
            sidecar_file,
            ["unknown parameter 'style'", "known: prompt"],
            id="unknown-parameter",
        ),
        pytest.param(
            "mute",
            sd15,
            {"operation": "txt2img", "parameters": {"seed": "3.seed", "steps": "3.steps"}},
            sidecar_file,
            ["a txt2img workflow must map prompt"],
            id="txt2img-without-prompt",
        ),
        pytest.param(
            "sourceless",
            sd15,
            {"operation": "img2img", "parameters": {"prompt": "6.text", "seed": "3.seed"}},
            sidecar_file,
            ["img2img workflow must map source"],
            id="img2img-without-source",
        ),
        pytest.param(
            "Bad Name", sd15, meta, sidecar_file, ["'Bad Name'", "lower-case letters"], id="invalid-name"
        ),
        pytest.param("garbled", sd15, "{not json", sidecar_file, ["not readable JSON"], id="invalid-json"),
        pytest.param(
            "odd-op",
            sd15,
            {"operation": "inpaint", "parameters": {"prompt": "6.text", "seed": "3.seed"}},
            sidecar_file,
            ["operation must be one of txt2img, img2img, upscale", "'inpaint'"],
            id="unknown-operation",
        ),
    ]


@pytest.mark.parametrize(("name", "graph", "meta", "file", "fragments"), _broken_cases())
def test_a_broken_user_workflow_is_reported_in_problems_naming_the_file(
    tmp_path: Path, name: str, graph: Any, meta: Any, file: str, fragments: list[str]
) -> None:
    user_dir = tmp_path / "workflows"
    write_workflow(user_dir, name, graph, meta)
    loaded = WorkflowLibrary.load(user_dir)  # does not raise

    assert len(loaded.problems) == 1, loaded.problems
    [problem] = loaded.problems
    assert str(user_dir / file.format(name=name)) in problem
    for fragment in fragments:
        assert fragment in problem
    assert name not in loaded.names()
    assert set(BUNDLED) <= set(loaded.names())


def test_a_sidecar_without_its_graph_is_reported(tmp_path: Path) -> None:
    (tmp_path / "lonely.atelier.json").write_text(json.dumps(MINIMAL_META))
    loaded = WorkflowLibrary.load(tmp_path)
    assert len(loaded.problems) == 1
    assert str(tmp_path / "lonely.atelier.json") in loaded.problems[0]
    assert "lonely.json is missing" in loaded.problems[0]


def test_good_user_workflows_load_next_to_broken_ones(tmp_path: Path) -> None:
    write_workflow(tmp_path, "mine", sd15_graph(), MINIMAL_META)
    write_workflow(tmp_path, "broken", sd15_graph(), {"parameters": {"prompt": "6.nope", "seed": "3.seed"}})
    loaded = WorkflowLibrary.load(tmp_path)
    assert "mine" in loaded.names()
    assert "broken" not in loaded.names()
    assert [p for p in loaded.problems if "broken.atelier.json" in p] == loaded.problems
    graph = loaded.get("mine").render(spec(prompt="harbour lights", steps=11))
    assert (graph["6"]["inputs"]["text"], graph["3"]["inputs"]["steps"]) == ("harbour lights", 11)


def test_a_user_workflow_with_a_bundled_name_replaces_it(tmp_path: Path) -> None:
    graph = sd15_graph()
    graph["9"]["inputs"]["filename_prefix"] = "mine/sd15"
    write_workflow(
        tmp_path, "sd15", graph, {**MINIMAL_META, "description": "my own sd15", "defaults": {"steps": 8}}
    )
    loaded = WorkflowLibrary.load(tmp_path)
    assert loaded.problems == []
    mine = loaded.get("sd15")
    assert mine.description == "my own sd15"
    assert mine.defaults == {"steps": 8}
    assert mine.source_path == str(tmp_path / "sd15.json")
    assert mine.render(spec())["9"]["inputs"]["filename_prefix"] == "mine/sd15"
    assert loaded.names().count("sd15") == 1


def test_a_missing_workflows_dir_from_the_environment_is_a_problem_not_a_crash(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-folder"
    settings = Settings.from_env({"ATELIER_WORKFLOWS_DIR": str(missing)}, home=tmp_path / "home")
    loaded = make_workflows(settings)
    assert len(loaded.problems) == 1
    assert "ATELIER_WORKFLOWS_DIR" in loaded.problems[0]
    assert str(missing) in loaded.problems[0]
    assert loaded.names() == sorted(BUNDLED)


def test_an_unknown_workflow_name_lists_the_available_ones() -> None:
    with pytest.raises(InvalidInput) as raised:
        library().get("nope")
    assert raised.value.field == "workflow"
    assert "'nope'" in raised.value.problem
    for name in [*BUNDLED, "portrait"]:
        assert name in raised.value.problem


# --- what a workflow can take ---------------------------------------------------------------


def test_check_accepts_what_the_workflow_maps() -> None:
    workflows = library()
    workflows.get("sd15").check(
        spec(denoise=0.5, loras=["detail.safetensors"], count=4), {"denoise", "loras"}
    )
    workflows.get("img2img").check(spec("img2img", denoise=0.2), {"prompt", "source", "denoise"})
    workflows.get("upscale").check(spec("upscale", scale=3), {"source", "scale"})


@pytest.mark.parametrize(
    ("name", "request_spec", "given", "field", "said"),
    [
        (
            "upscale",
            {"operation": "upscale", "loras": ["detail.safetensors"]},
            {"source", "loras"},
            "loras",
            "takes no LoRAs",
        ),
        ("upscale", {"operation": "upscale", "count": 2}, {"source", "count"}, "count", "'upscale'"),
        (
            "img2img",
            {"operation": "txt2img"},
            {"prompt"},
            "workflow",
            "'img2img' is an img2img workflow; this request is txt2img",
        ),
        ("sd15", {"operation": "img2img"}, {"prompt", "source"}, "workflow", "this request is img2img"),
        ("upscale", {"operation": "txt2img"}, {"prompt"}, "workflow", "upscale workflow"),
        (
            "portrait",
            {"operation": "txt2img", "denoise": 0.5},
            {"prompt", "denoise"},
            "denoise",
            "no denoise parameter",
        ),
    ],
    ids=[
        "upscale-loras",
        "upscale-count",
        "img2img-for-txt2img",
        "txt2img-for-img2img",
        "upscale-for-txt2img",
        "portrait-denoise",
    ],
)
def test_check_refuses_what_the_workflow_cannot_take(
    name: str, request_spec: dict[str, Any], given: set[str], field: str, said: str
) -> None:
    fields = dict(request_spec)
    operation = fields.pop("operation")
    with pytest.raises(InvalidInput) as raised:
        library().get(name).check(spec(operation, **fields), given)
    assert raised.value.field == field
    assert said in raised.value.problem


def test_check_refuses_only_the_unmapped_parameters_that_were_asked_for(tmp_path: Path) -> None:
    tiny = tiny_workflow(tmp_path)
    # Defaults for fields the workflow ignores are fine when nobody asked for them.
    tiny.check(spec(), {"prompt", "seed"})
    for field, value in [("denoise", 0.4), ("checkpoint", "dreamshaper_8.safetensors")]:
        with pytest.raises(InvalidInput) as raised:
            tiny.check(spec(**{field: value}), {"prompt", field})
        assert raised.value.field == field
        assert f"workflow 'tiny' has no {field} parameter" in raised.value.problem
    with pytest.raises(InvalidInput) as raised:
        tiny.check(spec(loras=["detail.safetensors"]), {"prompt", "loras"})
    assert raised.value.field == "loras"
    with pytest.raises(InvalidInput) as raised:
        tiny.check(spec(count=2), {"prompt", "count"})
    assert raised.value.field == "count"


# --- checking a graph against a server's object_info ----------------------------------------


def ksampler_info() -> dict[str, Any]:
    """The KSampler entry of a real ComfyUI server's /object_info, as recorded."""
    path = TRANSCRIPTS / "object_info.jsonl"
    if not path.is_file():
        pytest.skip(f"no recorded object_info at {path}")
    for line in path.read_text().splitlines():
        record = json.loads(line)
        if record.get("path") == "/object_info/KSampler":
            return record["json"]["KSampler"]
    pytest.skip("the recording has no KSampler entry")


def object_info(checkpoints: list[str] = INSTALLED_CHECKPOINTS) -> dict[str, Any]:
    floats = ["FLOAT", {"default": 1.0, "min": -100.0, "max": 100.0, "step": 0.01}]
    return {
        "KSampler": ksampler_info(),
        "CheckpointLoaderSimple": {
            "input": {"required": {"ckpt_name": [list(checkpoints), {}]}},
            "output": ["MODEL", "CLIP", "VAE"],
        },
        "LoraLoader": {
            "input": {
                "required": {
                    "model": ["MODEL"],
                    "clip": ["CLIP"],
                    "lora_name": [list(INSTALLED_LORAS), {}],
                    "strength_model": floats,
                    "strength_clip": floats,
                }
            },
            "output": ["MODEL", "CLIP"],
        },
        "EmptyLatentImage": {
            "input": {
                "required": {
                    "width": ["INT", {"default": 512, "min": 16, "max": 16384, "step": 8}],
                    "height": ["INT", {"default": 512, "min": 16, "max": 16384, "step": 8}],
                    "batch_size": ["INT", {"default": 1, "min": 1, "max": 4096}],
                }
            },
            "output": ["LATENT"],
        },
        "CLIPTextEncode": {
            "input": {"required": {"text": ["STRING", {"multiline": True}], "clip": ["CLIP"]}},
            "output": ["CONDITIONING"],
        },
        "VAEDecode": {"input": {"required": {"samples": ["LATENT"], "vae": ["VAE"]}}, "output": ["IMAGE"]},
        "SaveImage": {
            "input": {
                "required": {"images": ["IMAGE"], "filename_prefix": ["STRING", {"default": "ComfyUI"}]}
            },
            "output": [],
        },
    }


def sd15_rendered(**fields: Any) -> dict[str, Any]:
    return library().get("sd15").render(spec(**fields))


def only_problem(graph: dict[str, Any], info: dict[str, Any] | None = None) -> Problem:
    problems = validate_graph(graph, info if info is not None else object_info())
    assert len(problems) == 1, [str(p) for p in problems]
    return problems[0]


def test_a_rendered_graph_of_installed_models_has_no_problems() -> None:
    graph = sd15_rendered(checkpoint="dreamshaper_8.safetensors", loras=INSTALLED_LORAS, sampler="dpmpp_2m")
    assert validate_graph(graph, object_info()) == []


def test_steps_below_the_minimum_name_the_node_input_and_range() -> None:
    graph = sd15_rendered()
    graph["3"]["inputs"]["steps"] = 0
    problem = only_problem(graph)
    assert (problem.node, problem.class_type, problem.input) == ("3", "KSampler", "steps")
    assert str(problem) == "node 3 (KSampler) input 'steps': 0 is below the minimum 1 (allowed 1..10000)"


def test_cfg_above_the_maximum_names_the_range() -> None:
    graph = sd15_rendered()
    graph["3"]["inputs"]["cfg"] = 150.0
    problem = only_problem(graph)
    assert problem.input == "cfg"
    assert "above the maximum 100.0" in problem.message


def test_an_unknown_sampler_lists_the_allowed_values() -> None:
    samplers = ksampler_info()["input"]["required"]["sampler_name"][0]
    problem = only_problem(sd15_rendered(sampler="nope"))
    assert (problem.node, problem.input) == ("3", "sampler_name")
    assert "'nope' is not one of" in problem.message
    assert f"{len(samplers)} allowed values" in problem.message
    assert ", ".join(samplers[:3]) in problem.message
    assert "node 3 (KSampler) input 'sampler_name'" in str(problem)


def test_a_checkpoint_that_is_not_installed_lists_the_installed_ones() -> None:
    problem = only_problem(sd15_rendered(checkpoint="missing.safetensors"))
    assert (problem.node, problem.class_type, problem.input) == ("4", "CheckpointLoaderSimple", "ckpt_name")
    assert problem.parameter == "checkpoint"
    assert "'missing.safetensors'" in problem.message
    for name in INSTALLED_CHECKPOINTS:
        assert name in problem.message


def test_a_server_without_checkpoints_says_none_are_installed() -> None:
    problem = only_problem(sd15_rendered(), object_info(checkpoints=[]))
    assert problem.input == "ckpt_name"
    assert "(none installed)" in problem.message


def test_a_lora_that_is_not_installed_lists_the_installed_ones() -> None:
    problem = only_problem(sd15_rendered(loras=["detail.safetensors", "nowhere.safetensors:0.5"]))
    assert (problem.class_type, problem.input, problem.parameter) == ("LoraLoader", "lora_name", "loras")
    assert "'nowhere.safetensors'" in problem.message
    for name in INSTALLED_LORAS:
        assert name in problem.message


def test_a_node_type_the_server_lacks_is_named() -> None:
    graph = sd15_rendered()
    graph["20"] = {"class_type": "FaceDetailer", "inputs": {"image": ["8", 0]}}
    problem = only_problem(graph)
    assert (problem.node, problem.class_type) == ("20", "FaceDetailer")
    assert "not installed on the server" in problem.message
    assert str(problem).startswith("node 20 (FaceDetailer):")


def test_a_missing_required_input_is_named() -> None:
    graph = sd15_rendered()
    del graph["3"]["inputs"]["latent_image"]
    problem = only_problem(graph)
    assert (problem.node, problem.input) == ("3", "latent_image")
    assert "required" in problem.message


def test_a_link_to_a_missing_node_is_named() -> None:
    graph = sd15_rendered()
    graph["3"]["inputs"]["positive"] = ["42", 0]
    problem = only_problem(graph)
    assert (problem.node, problem.class_type, problem.input) == ("3", "KSampler", "positive")
    assert "'42'" in problem.message


def test_a_link_to_an_output_the_node_does_not_have_is_named() -> None:
    graph = sd15_rendered()
    graph["3"]["inputs"]["model"] = ["4", 5]  # CheckpointLoaderSimple has outputs 0..2
    problem = only_problem(graph)
    assert (problem.node, problem.input) == ("3", "model")


@pytest.mark.parametrize(
    ("value", "spec_", "said"),
    [
        (20, ["INT", {"min": 1, "max": 10000}], None),
        (2.5, ["INT", {"min": 1, "max": 10000}], "must be a whole number"),
        ("20", ["INT", {"min": 1, "max": 10000}], "must be a number"),
        (True, ["INT", {"min": 0, "max": 10}], "must be a number"),
        (-0.5, ["FLOAT", {"min": 0.0, "max": 1.0}], "-0.5 is below the minimum 0.0 (allowed 0.0..1.0)"),
        (7, ["STRING", {}], "must be text"),
        ("yes", ["BOOLEAN", {}], "must be true or false"),
        ("lanczos", ["COMBO", {"options": ["nearest-exact", "lanczos"]}], None),
        (
            "bicubic",
            ["COMBO", {"options": ["nearest-exact", "lanczos"]}],
            "2 allowed values: nearest-exact, lanczos",
        ),
    ],
)
def test_check_value_explains_what_does_not_fit(value: Any, spec_: list[Any], said: str | None) -> None:
    message = check_value(value, spec_)
    if said is None:
        assert message is None
    else:
        assert message is not None and said in message


def test_installed_models_reads_the_loaders_choice_lists() -> None:
    info = object_info()
    info["UNETLoader"] = {
        "input": {"required": {"unet_name": ["COMBO", {"options": ["flux1-dev.safetensors"]}]}}
    }
    assert installed_models(info) == {
        "checkpoints": sorted(INSTALLED_CHECKPOINTS),
        "loras": sorted(INSTALLED_LORAS),
        "diffusion_models": ["flux1-dev.safetensors"],
    }
    assert installed_models({"KSampler": ksampler_info()}) == {}


# --- ComfyUI's own rejections ---------------------------------------------------------------


def recorded_rejections() -> list[dict[str, Any]]:
    path = TRANSCRIPTS / "invalid.jsonl"
    if not path.is_file():
        pytest.skip(f"no recorded rejections at {path}")
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [r for r in records if r.get("status") == 400 and "prompt" in r.get("request_json", {})]


def test_describe_rejection_names_every_failing_node_and_input() -> None:
    checked = 0
    for record in recorded_rejections():
        body, graph = record["json"], record["request_json"]["prompt"]
        message = describe_rejection(body, graph)
        assert message.startswith(body["error"]["message"])
        for node_id, node_error in body["node_errors"].items():
            for item in node_error["errors"]:
                assert f"node {node_id} ({node_error['class_type']})" in message
                input_name = (item.get("extra_info") or {}).get("input_name")
                if input_name:
                    assert f"input '{input_name}'" in message
                checked += 1
    assert checked >= 5


def test_describe_rejection_of_a_value_below_the_minimum() -> None:
    [record] = [
        r
        for r in recorded_rejections()
        if any(
            e["type"] == "value_smaller_than_min"
            for n in r["json"]["node_errors"].values()
            for e in n["errors"]
        )
    ]
    body, graph = record["json"], record["request_json"]["prompt"]
    message = describe_rejection(body, graph)
    assert "node 1 (EmptyImage) input 'width'" in message
    assert "Value 0 smaller than min of 1" in message
    # Without the class type in the answer, the graph still names the node's type.
    bare = copy.deepcopy(body)
    del bare["node_errors"]["1"]["class_type"]
    assert "node 1 (EmptyImage) input 'width'" in describe_rejection(bare, graph)


def test_describe_rejection_of_an_unknown_node_type_keeps_comfyui_s_detail() -> None:
    [record] = [
        r
        for r in recorded_rejections()
        if r["json"]["error"]["type"] == "invalid_prompt" and "NoSuchNode" in json.dumps(r["request_json"])
    ]
    message = describe_rejection(record["json"], record["request_json"]["prompt"])
    assert "NoSuchNode" in message
    assert "#1" in message
