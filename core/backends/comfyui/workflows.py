"""ComfyUI workflows: API-format graphs plus a parameter map, loaded, checked and filled in.

A workflow is two files side by side:
- `NAME.json`: the graph exactly as ComfyUI's "Export (API)" writes it;
- `NAME.atelier.json`: what Atelier may set in it, e.g.
  `{"operation": "txt2img", "description": "...", "defaults": {"steps": 30},
    "parameters": {"prompt": "6.text", "seed": ["3.seed"], "scale": {"to": "12.scale_by", "times": 0.25}},
    "loras": {"model": "4.0", "clip": "4.1"}, "outputs": ["9"]}`
A target is `"<node id>.<input name>"`; `loras` names the node outputs a chain of LoraLoader
(or, without `clip`, LoraLoaderModelOnly) nodes is inserted after.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.errors import InvalidInput
from core.models import OPERATIONS, WORKFLOW_NAME_PATTERN, ImageSpec

BUNDLED_DIR = Path(__file__).with_name("workflows")
SIDECAR_SUFFIX = ".atelier.json"
DEFAULT_WORKFLOWS = {"txt2img": "sd15", "img2img": "img2img", "upscale": "upscale"}

# Parameters a map may name, and the ImageSpec field each takes its value from.
PARAMETERS: dict[str, str] = {
    "prompt": "prompt",
    "negative_prompt": "negative_prompt",
    "width": "width",
    "height": "height",
    "steps": "steps",
    "cfg": "cfg",
    "seed": "seed",
    "sampler": "sampler",
    "scheduler": "scheduler",
    "count": "count",
    "checkpoint": "checkpoint",
    "denoise": "denoise",
    "scale": "scale",
    "source": "source",
}
# Spec fields that always have a value; a workflow that cannot use them just ignores them.
_ALWAYS_SET = {"prompt", "negative_prompt", "width", "height", "steps", "cfg", "seed", "sampler", "scheduler"}
_NAME = re.compile(WORKFLOW_NAME_PATTERN)


class WorkflowError(ValueError):
    """A workflow file is malformed; the message names the file and the problem."""


@dataclass(slots=True, frozen=True)
class Target:
    node: str
    input: str
    times: float | None = None


@dataclass(slots=True)
class Workflow:
    name: str
    operation: str
    description: str
    graph: dict[str, Any]
    parameters: dict[str, list[Target]]
    defaults: dict[str, Any] = field(default_factory=dict)
    lora_model: tuple[str, int] | None = None
    lora_clip: tuple[str, int] | None = None
    outputs: tuple[str, ...] = ()
    source_path: str = ""

    @property
    def takes_loras(self) -> bool:
        return self.lora_model is not None

    def describe(self) -> dict[str, Any]:
        """What `list_workflows` shows: the operation, parameters and defaults."""
        return {
            "name": self.name,
            "operation": self.operation,
            "description": self.description,
            "parameters": sorted(self.parameters) + (["loras"] if self.takes_loras else []),
            "defaults": self.defaults,
            "node_types": sorted({node["class_type"] for node in self.graph.values()}),
            "source": self.source_path,
        }

    def parameter_at(self, node: str, input_name: str) -> str | None:
        """The request parameter that sets `node.input_name`, if one does."""
        for name, targets in self.parameters.items():
            if any(t.node == node and t.input == input_name for t in targets):
                return name
        return None

    def check(self, spec: ImageSpec, given: Iterable[str]) -> None:
        """Raise `InvalidInput` for a parameter that was asked for but this workflow cannot take."""
        if spec.operation != self.operation:
            raise InvalidInput(
                "workflow",
                f"{self.name!r} is {_an(self.operation)} workflow; this request is {spec.operation}",
            )
        for name in given:
            if name in PARAMETERS and name not in _ALWAYS_SET and name not in self.parameters:
                raise InvalidInput(name, f"workflow {self.name!r} has no {name} parameter")
        if spec.loras and not self.takes_loras:
            raise InvalidInput("loras", f"workflow {self.name!r} takes no LoRAs")
        if spec.count > 1 and "count" not in self.parameters:
            raise InvalidInput("count", f"workflow {self.name!r} makes one image per run")

    def render(self, spec: ImageSpec, *, source_name: str | None = None) -> dict[str, Any]:
        """The graph with the spec's values set and its LoRA chain inserted, ready for POST /prompt."""
        graph = copy.deepcopy(self.graph)
        values = {name: _value(spec, name, source_name) for name in self.parameters}
        for name, targets in self.parameters.items():
            value = values[name]
            if value is None:
                continue
            for target in targets:
                graph[target.node]["inputs"][target.input] = (
                    value * target.times if target.times is not None else value
                )
        if spec.loras and self.lora_model is not None:
            _insert_loras(graph, spec, self.lora_model, self.lora_clip)
        return graph


def _value(spec: ImageSpec, name: str, source_name: str | None) -> Any:
    if name == "source":
        return source_name
    if name == "denoise":
        return spec.effective_denoise
    if name == "scale":
        return spec.effective_scale
    return getattr(spec, PARAMETERS[name])


def _insert_loras(
    graph: dict[str, Any], spec: ImageSpec, model: tuple[str, int], clip: tuple[str, int] | None
) -> None:
    """Chain one loader per LoRA after `model` (and `clip`), and rewire their consumers to the chain's end."""
    model_out, clip_out = [model[0], model[1]], [clip[0], clip[1]] if clip else None
    consumers = [
        (node, name, value)
        for node in graph.values()
        for name, value in node["inputs"].items()
        if isinstance(value, list) and value in ([model_out, clip_out] if clip_out else [model_out])
    ]
    next_id = max((int(k) for k in graph if k.isdigit()), default=0) + 1
    last_model, last_clip = model_out, clip_out
    for lora in spec.loras:
        node_id = str(next_id)
        next_id += 1
        if last_clip is not None:
            graph[node_id] = {
                "class_type": "LoraLoader",
                "inputs": {
                    "model": last_model,
                    "clip": last_clip,
                    "lora_name": lora.name,
                    "strength_model": lora.strength,
                    "strength_clip": lora.strength,
                },
                "_meta": {"title": f"LoRA {lora.name}"},
            }
            last_clip = [node_id, 1]
        else:
            graph[node_id] = {
                "class_type": "LoraLoaderModelOnly",
                "inputs": {"model": last_model, "lora_name": lora.name, "strength_model": lora.strength},
                "_meta": {"title": f"LoRA {lora.name}"},
            }
        last_model = [node_id, 0]
    for node, name, value in consumers:
        node["inputs"][name] = last_model if value == model_out else last_clip


class WorkflowLibrary:
    """The bundled workflows plus the user's; a user's workflow of the same name wins."""

    def __init__(self, workflows: Mapping[str, Workflow], problems: Iterable[str] = ()) -> None:
        self._workflows = dict(sorted(workflows.items()))
        # Files that could not be loaded: shown by list_workflows rather than failing start-up.
        self.problems = list(problems)

    @classmethod
    def load(cls, user_dir: Path | None = None) -> WorkflowLibrary:
        workflows: dict[str, Workflow] = {}
        problems: list[str] = []
        for folder, strict in ((BUNDLED_DIR, True), (user_dir, False)):
            if folder is None:
                continue
            if not folder.is_dir():
                problems.append(f"ATELIER_WORKFLOWS_DIR {folder} is not a folder")
                continue
            for sidecar in sorted(folder.glob("*" + SIDECAR_SUFFIX)):
                try:
                    workflow = load_workflow(sidecar)
                except WorkflowError as exc:
                    if strict:
                        raise
                    problems.append(str(exc))
                    continue
                workflows[workflow.name] = workflow
        return cls(workflows, problems)

    def names(self) -> list[str]:
        return list(self._workflows)

    def get(self, name: str) -> Workflow:
        workflow = self._workflows.get(name)
        if workflow is None:
            raise InvalidInput(
                "workflow",
                f"unknown workflow {name[:60]!r}{'...' if len(name) > 60 else ''}; "
                f"available: {', '.join(self._workflows)}",
            )
        return workflow

    def for_request(self, operation: str, name: str | None) -> Workflow:
        """The named workflow, or the default one for the operation."""
        return self.get(name or DEFAULT_WORKFLOWS[operation])

    def describe(self) -> list[dict[str, Any]]:
        return [workflow.describe() for workflow in self._workflows.values()]


def load_workflow(sidecar: Path) -> Workflow:
    """Read `NAME.atelier.json` and its `NAME.json`; raise `WorkflowError` naming what is wrong."""
    name = sidecar.name[: -len(SIDECAR_SUFFIX)]
    graph_path = sidecar.with_name(name + ".json")
    where = str(sidecar)
    if not _NAME.fullmatch(name):
        raise WorkflowError(f"{where}: workflow names use lower-case letters, digits, _ and - (got {name!r})")
    meta = _read_json(sidecar)
    if not graph_path.is_file():
        raise WorkflowError(f"{where}: its graph {graph_path.name} is missing")
    graph = _read_json(graph_path)
    if not isinstance(meta, dict):
        raise WorkflowError(f"{where}: must be a JSON object")
    check_graph_shape(graph, str(graph_path))

    operation = meta.get("operation", "txt2img")
    if operation not in OPERATIONS:
        raise WorkflowError(f"{where}: operation must be one of {', '.join(OPERATIONS)} (got {operation!r})")
    raw_parameters = meta.get("parameters")
    if not isinstance(raw_parameters, dict) or not raw_parameters:
        raise WorkflowError(f"{where}: 'parameters' must map parameter names to node inputs")
    parameters: dict[str, list[Target]] = {}
    for pname, raw in raw_parameters.items():
        if pname not in PARAMETERS:
            raise WorkflowError(f"{where}: unknown parameter {pname!r}; known: {', '.join(PARAMETERS)}")
        parameters[pname] = [_target(graph, item, where, pname) for item in _as_list(raw)]
    required = {
        "txt2img": ("prompt", "seed"),
        "img2img": ("prompt", "seed", "source"),
        "upscale": ("source",),
    }
    missing = [p for p in required[operation] if p not in parameters]
    if missing:
        raise WorkflowError(f"{where}: {_an(operation)} workflow must map {', '.join(missing)}")

    defaults = meta.get("defaults", {})
    if not isinstance(defaults, dict) or not set(defaults) <= set(PARAMETERS) - {"source", "prompt"}:
        raise WorkflowError(
            f"{where}: 'defaults' may set only parameters such as steps, cfg, width, checkpoint"
        )
    lora_model = lora_clip = None
    loras = meta.get("loras")
    if loras is not None:
        if not isinstance(loras, dict) or "model" not in loras:
            raise WorkflowError(f'{where}: \'loras\' must be {{"model": "<node>.<output>", "clip"?: ...}}')
        lora_model = _output(graph, loras["model"], where)
        lora_clip = _output(graph, loras["clip"], where) if loras.get("clip") else None
    outputs = tuple(str(o) for o in _as_list(meta.get("outputs", [])))
    for node in outputs:
        if node not in graph:
            raise WorkflowError(f"{where}: output node {node!r} is not in the graph")
    return Workflow(
        name=name,
        operation=operation,
        description=str(meta.get("description", "")),
        graph=graph,
        parameters=parameters,
        defaults=defaults,
        lora_model=lora_model,
        lora_clip=lora_clip,
        outputs=outputs,
        source_path=str(graph_path) if graph_path.parent != BUNDLED_DIR else f"bundled:{graph_path.name}",
    )


def check_graph_shape(graph: Any, where: str) -> None:
    """An API-format graph: `{node_id: {"class_type", "inputs"}}`, links to nodes that exist."""
    if isinstance(graph, dict) and "nodes" in graph and "links" in graph:
        raise WorkflowError(
            f"{where}: this is a UI-format workflow; in ComfyUI use 'Export (API)' and save that instead"
        )
    if not isinstance(graph, dict) or not graph:
        raise WorkflowError(f"{where}: must be an API-format graph: an object of nodes")
    for node_id, node in graph.items():
        if not isinstance(node, dict) or not isinstance(node.get("class_type"), str):
            raise WorkflowError(f"{where}: node {node_id!r} has no class_type")
        if not isinstance(node.get("inputs"), dict):
            raise WorkflowError(f"{where}: node {node_id!r} ({node['class_type']}) has no inputs object")
        for input_name, value in node["inputs"].items():
            if isinstance(value, list) and len(value) == 2 and str(value[0]) not in graph:
                raise WorkflowError(
                    f"{where}: node {node_id!r} input {input_name!r} links to node {value[0]!r}, which is not in the graph"
                )


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise WorkflowError(f"{path}: not readable JSON ({exc})") from None


def _as_list(raw: Any) -> list[Any]:
    return raw if isinstance(raw, list) else [raw]


def _target(graph: dict[str, Any], raw: Any, where: str, pname: str) -> Target:
    times = None
    if isinstance(raw, dict):
        times = raw.get("times")
        if times is not None and not isinstance(times, int | float):
            raise WorkflowError(f"{where}: {pname}: 'times' must be a number")
        raw = raw.get("to")
    node, _, input_name = str(raw).partition(".")
    if node not in graph:
        raise WorkflowError(f"{where}: {pname} targets node {node!r}, which is not in the graph")
    if input_name not in graph[node]["inputs"]:
        raise WorkflowError(
            f"{where}: {pname} targets input {input_name!r} of node {node} ({graph[node]['class_type']}), "
            f"which has {', '.join(graph[node]['inputs'])}"
        )
    return Target(node, input_name, times)


def _output(graph: dict[str, Any], raw: Any, where: str) -> tuple[str, int]:
    node, _, index = str(raw).partition(".")
    if node not in graph or not index.isdigit():
        raise WorkflowError(
            f"{where}: LoRA anchor {raw!r} must be '<node id>.<output index>' of a node in the graph"
        )
    return node, int(index)


def _an(word: str) -> str:
    return f"an {word}" if word[:1] in "aeiou" else f"a {word}"
