"""`atelier serve` as a user starts it: /health, MCP over Streamable HTTP, and its guard rails."""

from __future__ import annotations

import subprocess
from pathlib import Path

import anyio
import httpx
import pytest
from mcp import Client

from tests.procs import atelier_command, atelier_env, serve

pytestmark = pytest.mark.anyio


async def test_serve_answers_health_and_mcp_over_http(tmp_path: Path) -> None:
    with serve(tmp_path / "home") as server:
        health = httpx.get(f"{server.url}/health").json()
        assert health["status"] == "ok"
        assert health["backends"]["local"]["up"] is True

        with anyio.fail_after(30):
            async with Client(f"{server.url}/mcp") as client:
                names = {tool.name for tool in (await client.list_tools()).tools}
                assert "generate_image" in names
                result = await client.call_tool(
                    "generate_image", {"prompt": "harbour lights", "width": 64, "height": 64, "seed": 4}
                )
                assert result.structured_content["status"] == "completed"
                # Over HTTP, the server's file layout stays private.
                assert result.structured_content["images"][0]["path"] is None

        runs = httpx.get(f"{server.url}/health").json()["runs"]
        assert runs["completed"] == 1


def test_serve_rejects_requests_for_another_host_name(tmp_path: Path) -> None:
    """DNS-rebinding protection: a page on another origin cannot drive the local MCP server."""
    with serve(tmp_path / "home") as server:
        response = httpx.post(
            f"{server.url}/mcp",
            headers={
                "Host": "attacker.example",
                "Content-Type": "application/json",
                "Accept": "application/json",
            },
            json={"jsonrpc": "2.0", "id": 1, "method": "ping"},
        )
        assert response.status_code in (400, 403, 421)


def test_serve_refuses_non_loopback_bind_without_token(tmp_path: Path) -> None:
    # Refused before anything binds: no traffic leaves loopback.
    process = subprocess.run(
        [*atelier_command(), "serve", "--host", "0.0.0.0", "--port", "8999"],
        env=atelier_env(tmp_path / "home"),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert process.returncode == 2
    assert "ATELIER_API_TOKEN" in process.stderr


def test_serve_with_token_requires_bearer_on_every_route(tmp_path: Path) -> None:
    with serve(tmp_path / "home", env={"ATELIER_API_TOKEN": "s3cret-token"}) as server:
        assert httpx.get(f"{server.url}/health").status_code == 401
        assert httpx.get(f"{server.url}/health", headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert httpx.post(f"{server.url}/mcp", json={}).status_code == 401
        ok = httpx.get(f"{server.url}/health", headers={"Authorization": "Bearer s3cret-token"})
        assert ok.status_code == 200
        assert "s3cret-token" not in ok.text


async def test_cli_generate_runs_on_the_server_that_owns_the_data_directory(tmp_path: Path) -> None:
    home = tmp_path / "home"
    with serve(home) as server:
        cli = subprocess.run(
            [*atelier_command(), "generate", "paper boats", "--width", "64", "--height", "64", "--seed", "9"],
            env=atelier_env(home),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert cli.returncode == 0, cli.stderr
        path = Path(cli.stdout.strip().splitlines()[-1])
        assert path.is_file() and path.is_relative_to(home)
        assert httpx.get(f"{server.url}/health").json()["runs"]["completed"] == 1


def test_serve_mounts_every_contract_and_one_at_the_root_on_request(tmp_path: Path) -> None:
    with serve(tmp_path / "home", args=["--root-contract", "pod"]) as server:
        for prefix in ("adgen", "comfygen", "pod", "isengard", "desktop"):
            response = httpx.get(f"{server.url}/{prefix}/openapi.json")
            assert response.status_code == 200, prefix
            assert response.json()["paths"], prefix
        root = httpx.get(f"{server.url}/health").json()
        assert root["status"] == "healthy" and "services" in root  # POD Engine's health, at /
        assert httpx.get(f"{server.url}/api/info").json()["name"] == "POD Engine"
        assert httpx.get(f"{server.url}/adgen/health").json() == {"ok": True}
