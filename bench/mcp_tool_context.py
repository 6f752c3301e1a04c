"""What Atelier's tool definitions cost a model's context: `tools/list` of `atelier mcp`, in bytes.

A host puts every listed tool (name, description, input and output schemas, annotations) in the
model's context. This lists them over stdio from a real `atelier mcp` on a fresh data directory,
as a host would, and prints each tool's size (compact JSON, as on the wire), the total and the
average per tool, the size of each toolset (`ATELIER_TOOLSETS`), and, as the reference measured
in the same run, what the SDK would list for the same tool functions left as it derives them.
It exits non-zero when the average is over the goal (issue 13: <= 1.2 KB per tool).

  python bench/mcp_tool_context.py [--goal 1200]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import anyio

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from core.engine import Engine  # noqa: E402
from core.settings import Settings  # noqa: E402
from mcp_server import toolsets  # noqa: E402
from mcp_server.server import tools  # noqa: E402

HELLO = {
    "protocolVersion": "2025-06-18",
    "capabilities": {},
    "clientInfo": {"name": "tool-context-bench", "version": "1"},
}


def size(value: Any) -> int:
    """Bytes of `value` as compact JSON, as the wire carries it."""
    return len(json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode())


def listed_over_stdio(home: str) -> list[dict[str, Any]]:
    """The tools `atelier mcp` lists, as the JSON a host receives."""
    script = Path(sys.executable).parent / "atelier"
    command = [str(script), "mcp"] if script.exists() else [sys.executable, "-m", "mcp_server.cli", "mcp"]
    env = {**os.environ, "ATELIER_HOME": home}
    env.pop("ATELIER_TOOLSETS", None)
    process = subprocess.Popen(
        command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env
    )
    assert process.stdin and process.stdout
    try:
        for message in (
            {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": HELLO},
            {"jsonrpc": "2.0", "method": "notifications/initialized"},
            {"jsonrpc": "2.0", "id": 2, "method": "tools/list"},
        ):
            process.stdin.write((json.dumps(message) + "\n").encode())
        process.stdin.flush()
        while True:
            line = process.stdout.readline()
            if not line:
                raise SystemExit("atelier mcp ended before answering tools/list")
            answer = json.loads(line)
            if answer.get("id") == 2:
                return answer["result"]["tools"]
    finally:
        process.kill()
        process.wait()


async def sdk_reference(home: str) -> tuple[dict[str, int], dict[str, list[str]]]:
    """Per tool, the size the SDK's own derivation would list (docstring, full pydantic schemas,
    every annotation hint); and the tools of each toolset."""
    settings = Settings.from_env({}, home=Path(home))
    async with Engine.open(settings) as engine:
        groups = {
            name: [t.name for t in tools(engine, (name,), expose_paths=True)] for name in toolsets.TOOLSETS
        }
        reference = {}
        for tool in tools(engine, toolsets.TOOLSETS, expose_paths=True):
            full: dict[str, Any] = {
                "name": tool.name,
                "description": tool.fn.__doc__ or "",
                "inputSchema": tool.fn_metadata.arg_model.model_json_schema(by_alias=True),
                "annotations": (
                    tool.annotations.model_dump(by_alias=True, exclude_none=True) if tool.annotations else {}
                ),
            }
            if tool.fn_metadata.output_schema is not None:
                full["outputSchema"] = tool.fn_metadata.output_schema
            reference[tool.name] = size(full)
    return reference, groups


def main(goal: int) -> int:
    with tempfile.TemporaryDirectory() as home:
        listed = listed_over_stdio(str(Path(home) / "served"))
        reference, groups = anyio.run(sdk_reference, str(Path(home) / "reference"))
    sizes = {tool["name"]: size(tool) for tool in listed}
    total, count = size(listed), len(listed)
    average = total / count
    ref_total = sum(reference.values())
    print(f"MCP tools/list of `atelier mcp` (stdio), {count} tools, compact JSON bytes")
    print(f"  {'tool':24} {'listed':>7} {'SDK-derived':>12}")
    for name, bytes_ in sorted(sizes.items(), key=lambda item: -item[1]):
        print(f"  {name:24} {bytes_:7} {reference.get(name, 0):12}")
    print("  per toolset (ATELIER_TOOLSETS):")
    for name, members in groups.items():
        part = sum(sizes.get(member, 0) for member in members)
        print(f"    {name:12} {len(members):2} tools {part:7} bytes")
    print(
        f"  total     {total:7} bytes   (SDK-derived reference {ref_total} bytes, x{total / ref_total:.2f})"
    )
    print(f"  average   {average:7.0f} bytes per tool   (goal <= {goal})")
    if average > goal:
        print(f"MISSED: {average:.0f} bytes per tool is over {goal}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--goal", type=int, default=1200, help="most bytes per tool on average")
    sys.exit(main(parser.parse_args().goal))
