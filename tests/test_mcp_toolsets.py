"""ATELIER_TOOLSETS: a user offers the model only some groups of tools, and a wrong name stops start-up."""

from __future__ import annotations

import subprocess
from pathlib import Path

import anyio
import pytest
from mcp import Client, StdioServerParameters

from core.engine import Engine
from core.settings import Settings
from mcp_server.server import build_mcp
from tests.procs import atelier_command, atelier_env
from tests.test_mcp_tools import TOOLS

pytestmark = pytest.mark.anyio

GENERATE = {"generate_image", "transform_image", "upscale_image", "list_workflows", "list_models"}
RUNS = {
    "wait_for_run",
    "get_run",
    "list_runs",
    "cancel_run",
    "retry_run",
    "delete_run",
    "bundle_run",
    "get_status",
}
PUBLISHING = {"publish_products", "unpublish_product"}


async def listed(tmp_path: Path, toolsets: str) -> tuple[set[str], str]:
    """The tools a client lists, and the server's instructions, with ATELIER_TOOLSETS=`toolsets`."""
    settings = Settings.from_env({"ATELIER_TOOLSETS": toolsets}, home=tmp_path / "home", local_step_ms=0)
    async with Engine.open(settings) as engine, Client(build_mcp(engine)) as client:
        with anyio.fail_after(10):
            names = {tool.name for tool in (await client.list_tools()).tools}
            hidden = await client.call_tool("create_character", {"name": "Mara"})
        assert hidden.is_error, "a tool of a toolset that is off must not run"
        instructions = client.instructions or ""
    return names, instructions


async def test_toolsets_list_only_the_chosen_groups(tmp_path: Path) -> None:
    names, instructions = await listed(tmp_path, "generate, RUNS")
    assert names == GENERATE | RUNS
    assert "generate_image" in instructions and "create_character" not in instructions


async def test_products_without_publishing_cannot_publish(tmp_path: Path) -> None:
    names, instructions = await listed(tmp_path, "products")
    assert "create_products" in names and "list_product_types" in names
    assert not names & (PUBLISHING | GENERATE)
    assert "publish_products" not in instructions


async def test_all_and_unset_list_every_tool(tmp_path: Path) -> None:
    settings = Settings.from_env({"ATELIER_TOOLSETS": "all"}, home=tmp_path / "home", local_step_ms=0)
    async with Engine.open(settings) as engine, Client(build_mcp(engine)) as client:
        assert {tool.name for tool in (await client.list_tools()).tools} == TOOLS


async def test_stdio_server_lists_the_chosen_toolsets(tmp_path: Path) -> None:
    command, *args = atelier_command()
    params = StdioServerParameters(
        command=command, args=[*args, "mcp"], env=atelier_env(tmp_path / "home", ATELIER_TOOLSETS="runs")
    )
    with anyio.fail_after(60):
        async with Client(params) as client:
            assert {tool.name for tool in (await client.list_tools()).tools} == RUNS


@pytest.mark.parametrize("command", ["mcp", "serve"])
def test_unknown_toolset_stops_start_up_naming_the_known_ones(tmp_path: Path, command: str) -> None:
    finished = subprocess.run(
        [*atelier_command(), command],
        env=atelier_env(tmp_path / "home", ATELIER_TOOLSETS="generate,shop"),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=30,
    )
    assert finished.returncode == 2
    assert finished.stdout == b"", "nothing may be answered on stdout"
    error = finished.stderr.decode()
    assert "ATELIER_TOOLSETS" in error and "'shop'" in error, error
    for known in ("generate", "runs", "characters", "products", "publishing"):
        assert known in error, error
