"""Tool definitions a model's context can afford: the SDK's schemas, less what no reader needs.

A host puts every tool's definition (name, description, input and output schema, annotations)
in the model's context on every turn, so each byte is paid for again and again. The SDK derives
the schemas from the tool functions' types, which is kept: the types stay the one source of
truth, and the SDK still validates every call against the full pydantic model. Only what is
*advertised* is made smaller, in ways that say the same thing to a model:

- Input schemas: no `title`s (each repeats the property's name), and an optional argument is
  advertised as its value's schema alone, not `anyOf: [value, null]` with `default: null`:
  leaving it out is how a caller takes the default. Null is still accepted, as before.
- Output schemas: the structured content is self-describing JSON (field names a model reads,
  next to a text summary), so the schema keeps what a client can check cheaply, that it is an
  object and which fields it always has, and drops the per-field types, descriptions and the
  `$defs` that repeated the run and character models in every tool that returns one.
- Descriptions: the docstring without its source indentation.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any

_NULL = {"type": "null"}


def compact_input(schema: Mapping[str, Any]) -> dict[str, Any]:
    """`schema` (a tool's arguments, as pydantic writes it) as the tool advertises it."""
    compact: dict[str, Any] = {"type": "object", "properties": {}}
    for name, prop in schema.get("properties", {}).items():
        compact["properties"][name] = _compact_property(prop)
    if schema.get("required"):
        compact["required"] = list(schema["required"])
    if "$defs" in schema:
        compact["$defs"] = {name: _untitled(value) for name, value in schema["$defs"].items()}
    return compact


def compact_output(schema: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """An output schema that promises an object and the fields it always has (see the module)."""
    if schema is None:
        return None
    compact: dict[str, Any] = {"type": "object"}
    if schema.get("required"):
        compact["required"] = list(schema["required"])
    return compact


def compact_description(text: str) -> str:
    """A docstring as a model reads it: no source indentation, no trailing blank lines."""
    return inspect.cleandoc(text)


def _compact_property(prop: Mapping[str, Any]) -> dict[str, Any]:
    prop = _untitled(prop)
    branches = prop.get("anyOf")
    if branches and _NULL in branches:
        values = [branch for branch in branches if branch != _NULL]
        if len(values) == 1:
            beside = {key: value for key, value in prop.items() if key != "anyOf"}
            if "default" in beside and beside["default"] is None:
                del beside["default"]
            return {**values[0], **beside}
    return prop


def _untitled(schema: Any) -> Any:
    """`schema` without `title` keys, at every depth (a property *named* title is kept)."""
    if isinstance(schema, list):
        return [_untitled(item) for item in schema]
    if not isinstance(schema, Mapping):
        return schema
    cleaned: dict[str, Any] = {}
    for key, value in schema.items():
        if key == "title" and isinstance(value, str):
            continue
        if key == "properties" and isinstance(value, Mapping):
            cleaned[key] = {name: _untitled(sub) for name, sub in value.items()}
        else:
            cleaned[key] = _untitled(value)
    return cleaned
