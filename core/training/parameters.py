"""A training request's parameters checked against its trainer's declaration."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from core.errors import FieldProblem, InvalidInput
from core.training import TrainerParameter

# The parameters every trainer takes, under the names Isengard's training config uses. A trainer
# declares them through `standard_parameters`, saying which it really uses, and adds its own.
_STANDARD = (
    TrainerParameter("steps", "int", 1000, "Number of training steps", 1, 20000),
    TrainerParameter("learning_rate", "float", 1e-4, "Learning rate", 1e-6, 1e-2),
    TrainerParameter("batch_size", "int", 1, "Images per training step", 1, 16),
    TrainerParameter("resolution", "int", 1024, "Training resolution (longest side, pixels)", 256, 2048),
    TrainerParameter("lora_rank", "int", 16, "LoRA rank (network dimension)", 1, 128),
    TrainerParameter(
        "optimizer", "str", "adamw8bit", "Optimizer", choices=("adamw8bit", "adamw", "adafactor", "prodigy")
    ),
    TrainerParameter(
        "scheduler", "str", "flowmatch", "Noise scheduler", choices=("flowmatch", "ddpm", "cosine")
    ),
    TrainerParameter("precision", "str", "bf16", "Training precision", choices=("bf16", "fp16", "fp32")),
)


def standard_parameters(wired: set[str], **defaults: Any) -> dict[str, TrainerParameter]:
    """The standard parameters, `wired` only where the trainer uses them, with its own defaults."""
    declared = {}
    for spec in _STANDARD:
        changes: dict[str, Any] = {"wired": spec.name in wired}
        if spec.name in defaults:
            changes["default"] = defaults[spec.name]
        declared[spec.name] = replace(spec, **changes)
    return declared


def check_parameters(declared: Mapping[str, TrainerParameter], given: Mapping[str, Any]) -> dict[str, Any]:
    """Every declared parameter with its value (given or default); `InvalidInput` names each bad one.

    Values must have the declared type (an integer is accepted for a float; a string that looks
    like a number is not, since ai-toolkit would silently take it as something else).
    """
    problems: list[FieldProblem] = []
    for name in given:
        if name not in declared:
            known = ", ".join(sorted(declared))
            problems.append(FieldProblem(name, f"is not a parameter of this trainer (it takes {known})"))
    values: dict[str, Any] = {}
    for name, spec in declared.items():
        value = given.get(name)
        if value is None:
            values[name] = spec.default
            continue
        problem = _problem(spec, value)
        if problem:
            problems.append(FieldProblem(name, problem))
        else:
            values[name] = (
                float(value) if spec.type == "float" else int(value) if spec.type == "int" else value
            )
    if problems:
        raise InvalidInput.of(problems)
    return values


def _problem(spec: TrainerParameter, value: Any) -> str | None:
    shown = repr(value) if len(repr(value)) <= 40 else repr(value)[:40] + "..."
    if spec.type == "bool":
        return None if isinstance(value, bool) else f"must be true or false (got {shown})"
    if spec.type == "str":
        if not isinstance(value, str):
            return f"must be text (got {shown})"
        if spec.choices and value not in spec.choices:
            return f"must be one of {', '.join(spec.choices)} (got {shown})"
        return None
    number_ok = isinstance(value, int | float) and not isinstance(value, bool)
    is_int = isinstance(value, int) and not isinstance(value, bool)
    if spec.type == "int" and not is_int and not (number_ok and float(value).is_integer()):
        return f"must be an integer{_range(spec)} (got {shown})"
    if not number_ok or not math.isfinite(value):
        return f"must be a number{_range(spec)} (got {shown})"
    if (spec.minimum is not None and value < spec.minimum) or (
        spec.maximum is not None and value > spec.maximum
    ):
        return f"must be {'an integer' if spec.type == 'int' else 'a number'}{_range(spec)} (got {shown})"
    return None


def _range(spec: TrainerParameter) -> str:
    if spec.minimum is None or spec.maximum is None:
        return ""
    return f" in {spec.minimum:g}..{spec.maximum:g}"
