"""Checking a graph against a server's `/object_info` before any GPU time is spent.

ComfyUI checks the same things when a prompt arrives, but its answer comes after the upload,
per server, and in its own words; this names the node, the input and the allowed values.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

# Inputs whose values are file names of installed models, and what a person calls them.
MODEL_INPUTS = {
    "ckpt_name": "checkpoint",
    "lora_name": "LoRA",
    "unet_name": "diffusion model",
    "clip_name": "text encoder",
    "clip_name1": "text encoder",
    "clip_name2": "text encoder",
    "vae_name": "VAE",
    "model_name": "upscale model",
}
# Input names -> the request parameter a person would change to fix them.
PARAMETER_OF_INPUT = {"ckpt_name": "checkpoint", "lora_name": "loras", "image": "source"}
_SHOWN_CHOICES = 12


@dataclass(slots=True, frozen=True)
class Problem:
    node: str
    class_type: str
    input: str
    message: str

    def __str__(self) -> str:
        where = f"node {self.node} ({self.class_type})"
        return f"{where} input {self.input!r}: {self.message}" if self.input else f"{where}: {self.message}"

    @property
    def parameter(self) -> str:
        return PARAMETER_OF_INPUT.get(self.input, "workflow")


def validate_graph(
    graph: Mapping[str, Any], object_info: Mapping[str, Any], *, skip_inputs: frozenset[str] = frozenset()
) -> list[Problem]:
    """Every problem ComfyUI would reject the graph for, as far as `object_info` tells."""
    problems: list[Problem] = []
    for node_id, node in graph.items():
        class_type = node.get("class_type", "")
        info = object_info.get(class_type)
        if not info:
            problems.append(
                Problem(
                    node_id,
                    class_type,
                    "",
                    "this node type is not installed on the server (a missing custom node?)",
                )
            )
            continue
        inputs = node.get("inputs", {})
        spec_inputs = info.get("input", {})
        for section in ("required", "optional"):
            for name, spec in spec_inputs.get(section, {}).items():
                if name in skip_inputs:
                    continue
                if name not in inputs:
                    if section == "required":
                        problems.append(Problem(node_id, class_type, name, "is required but not set"))
                    continue
                value = inputs[name]
                if isinstance(value, list):  # a link to another node's output
                    message = _check_link(value, graph, object_info)
                    if message:
                        problems.append(Problem(node_id, class_type, name, message))
                    continue
                message = check_value(value, spec)
                if message:
                    problems.append(Problem(node_id, class_type, name, message))
    return problems


def _check_link(link: list[Any], graph: dict[str, Any], object_info: dict[str, Any]) -> str | None:
    if len(link) != 2 or str(link[0]) not in graph:
        return f"links to missing node {link[0]!r}" if link else "is an empty link"
    source, index = str(link[0]), link[1]
    outputs = object_info.get(graph[source].get("class_type"), {}).get("output")
    if outputs is None:
        return None  # the source node's own check reports an unknown class
    if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < len(outputs):
        return f"links to output {index!r} of node {source!r}, which has outputs 0..{len(outputs) - 1}"
    return None


def _choices(spec: Any) -> list[Any] | None:
    """The allowed values of a choice input (both the list and the COMBO formats), else None."""
    if not isinstance(spec, list) or not spec:
        return None
    kind, options = spec[0], (spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {})
    if isinstance(kind, list):
        return kind
    return options.get("options") if kind == "COMBO" else None


def complete_model_names(graph: Mapping[str, Any], object_info: Mapping[str, Any]) -> None:
    """Let model names go without their extension: "detail-tweaker" -> "detail-tweaker.safetensors".

    A choice value not in the server's list becomes the one listed file with that name and any
    extension; when none or several match, it is left for validation to name the problem.
    """
    for node in graph.values():
        info = object_info.get(node.get("class_type", ""), {}).get("input", {})
        inputs = node.get("inputs", {})
        for name, value in inputs.items():
            spec = info.get("required", {}).get(name) or info.get("optional", {}).get(name)
            choices = _choices(spec)
            if not isinstance(value, str) or not choices or value in choices:
                continue
            matches = [c for c in choices if isinstance(c, str) and c.rpartition(".")[0] == value]
            if len(matches) == 1:
                inputs[name] = matches[0]


def check_value(value: Any, spec: Any) -> str | None:
    """Why `value` does not fit an object_info input spec, or None if it does."""
    if not isinstance(spec, list) or not spec:
        return None
    kind, options = spec[0], (spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {})
    choices = _choices(spec)
    if choices is not None:
        if value in choices:
            return None
        return f"{value!r} is not one of the {len(choices)} allowed values: {_show(choices)}"
    if kind in ("INT", "FLOAT"):
        if isinstance(value, bool) or not isinstance(value, int | float):
            return f"must be a number (got {value!r})"
        if kind == "INT" and float(value) != int(value):
            return f"must be a whole number (got {value!r})"
        low, high = options.get("min"), options.get("max")
        if low is not None and value < low:
            return f"{value!r} is below the minimum {low}" + (
                f" (allowed {low}..{high})" if high is not None else ""
            )
        if high is not None and value > high:
            return f"{value!r} is above the maximum {high}" + (
                f" (allowed {low}..{high})" if low is not None else ""
            )
        return None
    if kind == "STRING" and not isinstance(value, str):
        return f"must be text (got {value!r})"
    if kind == "BOOLEAN" and not isinstance(value, bool):
        return f"must be true or false (got {value!r})"
    return None


def installed_models(object_info: Mapping[str, Any]) -> dict[str, list[str]]:
    """Model files a server has, by kind, read from its loaders' choice lists."""
    found: dict[str, set[str]] = {}
    wanted = {
        ("CheckpointLoaderSimple", "ckpt_name"): "checkpoints",
        ("LoraLoader", "lora_name"): "loras",
        ("UNETLoader", "unet_name"): "diffusion_models",
        ("VAELoader", "vae_name"): "vae",
        ("UpscaleModelLoader", "model_name"): "upscale_models",
        ("DualCLIPLoader", "clip_name1"): "text_encoders",
    }
    for (class_type, input_name), kind in wanted.items():
        choices = _choices(
            object_info.get(class_type, {}).get("input", {}).get("required", {}).get(input_name)
        )
        if choices is not None:
            # Files only: VAELoader also offers built-ins such as "pixel_space".
            found.setdefault(kind, set()).update(str(c) for c in choices if "." in str(c))
    return {kind: sorted(names) for kind, names in found.items()}


def describe_rejection(body: Mapping[str, Any], graph: Mapping[str, Any]) -> str:
    """One message from ComfyUI's 400 answer to POST /prompt, naming each failing node and input."""
    error = body.get("error") or {}
    parts = []
    for node_id, node_error in (body.get("node_errors") or {}).items():
        class_type = node_error.get("class_type") or graph.get(node_id, {}).get("class_type", "?")
        for item in node_error.get("errors", []):
            input_name = (item.get("extra_info") or {}).get("input_name", "")
            detail = item.get("details") or item.get("message", "")
            parts.append(
                str(Problem(str(node_id), class_type, input_name, f"{item.get('message', '')}: {detail}"))
            )
    head = error.get("message", "ComfyUI rejected the workflow") if isinstance(error, dict) else str(error)
    if isinstance(error, dict) and error.get("details") and not parts:
        head += f": {error['details']}"
    return head + ("; " + "; ".join(parts) if parts else "")


def _show(choices: list[Any]) -> str:
    shown = ", ".join(str(c) for c in choices[:_SHOWN_CHOICES])
    return (
        shown + (f", ... ({len(choices) - _SHOWN_CHOICES} more)" if len(choices) > _SHOWN_CHOICES else "")
        if choices
        else "(none installed)"
    )
