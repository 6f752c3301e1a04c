"""Tool arguments, checked before a tool runs and refused in Atelier's own words.

The SDK validates a call's arguments against the tool function's signature and, when they do
not fit, reports pydantic's own multi-line text (error codes, `input_value=`, a documentation
URL) and ignores arguments the tool does not have. `CheckedTool` is the SDK's `Tool` with that
one step done first: every bad or unknown argument gets a line `field: problem (got value)`
that names the allowed values, the same sentence the engine gives for the same field. It is
handed to `MCPServer(tools=[...])`; nothing of the SDK is patched.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from functools import cached_property
from typing import Any

from mcp.server.mcpserver import Context
from mcp.server.mcpserver.exceptions import ToolError
from mcp.server.mcpserver.tools import Tool
from pydantic import ValidationError

from core.errors import FieldProblem, InvalidInput
from core.models import FIELD_RULES, field_problem
from mcp_server.tool_schema import compact_output


class CheckedTool(Tool):
    """An MCP tool whose argument errors name every bad field and its allowed values."""

    # False for a tool whose fields share names with image requests but not their ranges
    # (train_character's `steps`): its words then come from its own schema only.
    engine_rules: bool = True

    @cached_property
    def output_schema(self) -> dict[str, Any] | None:
        """The output schema as listed: compact (see `tool_schema`). Results are still checked
        against the full model before they are sent."""
        return compact_output(self.fn_metadata.output_schema)

    async def run(
        self, arguments: dict[str, Any], context: Context[Any, Any], convert_result: bool = False
    ) -> Any:
        problems = argument_problems(
            self.parameters, arguments, self.fn_metadata.validate_arguments, engine_rules=self.engine_rules
        )
        if problems:
            raise ToolError(f"Error executing tool {self.name}: {lines(problems)}")
        return await super().run(arguments, context, convert_result)


def lines(problems: InvalidInput | list[FieldProblem]) -> str:
    """Problems one to a line, as a tool error shows them."""
    listed = problems.problems if isinstance(problems, InvalidInput) else problems
    return "\n".join(str(problem) for problem in listed)


def argument_problems(
    schema: Mapping[str, Any],
    arguments: Mapping[str, Any],
    validate: Callable[[dict[str, Any]], object],
    *,
    engine_rules: bool = True,
) -> list[FieldProblem]:
    """What is wrong with `arguments` for a tool with input `schema`: unknown names, then bad values."""
    properties: Mapping[str, Any] = schema.get("properties", {})
    takes = f"it takes {', '.join(properties)}" if properties else "it takes no arguments"
    problems = [
        # A name that is not a plain word ("prompt ", "", "../x") is quoted, or it could not be seen.
        FieldProblem(
            name if name.isidentifier() else repr(name), f"is not a parameter of this tool ({takes})"
        )
        for name in arguments
        if name not in properties
    ]
    try:
        validate(dict(arguments))
    except ValidationError as exc:
        known = FIELD_RULES if engine_rules else {}
        rules = {name: known.get(name) or rule_for(prop) for name, prop in properties.items()}
        seen = {problem.field for problem in problems}
        for error in exc.errors():
            problem = field_problem(error, rules)
            if problem.field not in seen:
                seen.add(problem.field)
                problems.append(problem)
    return problems


def rule_for(prop: Mapping[str, Any]) -> str:
    """What a value must be, in words, from the JSON schema a tool advertises for it."""
    branches = [b for b in prop.get("anyOf", [prop]) if b.get("type") != "null"]
    # Constraints may sit beside `anyOf` or inside its non-null branch.
    merged: dict[str, Any] = {**(branches[0] if len(branches) == 1 else {}), **prop}
    kind = merged.get("type")
    low, high = merged.get("minimum"), merged.get("maximum")
    span = f"{low}..{high}" if low is not None and high is not None else None
    if "enum" in merged:
        return "must be one of " + ", ".join(str(value) for value in merged["enum"])
    if kind == "integer":
        every = merged.get("multipleOf")
        head = f"must be a multiple of {every}" if every else "must be an integer"
        return f"{head} in {span}" if span else head
    if kind == "number":
        return f"must be a number in {span}" if span else "must be a number"
    if kind == "boolean":
        return "must be true or false"
    if kind == "array":
        most = merged.get("maxItems")
        return f"must be a list of at most {most} strings" if most else "must be a list of strings"
    if kind == "string":
        shortest, longest = merged.get("minLength"), merged.get("maxLength")
        if shortest and longest:
            return f"must be text of {shortest}..{longest} characters"
        if longest:
            return f"must be text of at most {longest} characters"
        return "must be non-empty text" if shortest else "must be text"
    return "has the wrong type"
