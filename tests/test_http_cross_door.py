"""One engine behind every door: a run made over MCP is the same run in each REST contract,
a cancel over REST is what MCP reports next, and a run made over REST is one MCP can read.
"""

from __future__ import annotations

import base64
from pathlib import Path

import anyio
import pytest
from mcp import Client

from tests.http_served import atelier_http

pytestmark = pytest.mark.anyio

SLOW = {"prompt": "lighthouse in a storm", "width": 64, "height": 64, "steps": 60, "seed": 7}


async def test_made_over_mcp_seen_and_cancelled_over_rest_reflected_in_mcp(tmp_path: Path) -> None:
    async with atelier_http(tmp_path, local_step_ms=100) as served, Client(f"{served.url}/mcp") as client:
        made = await client.call_tool("generate_image", {**SLOW, "wait_seconds": 0})
        assert not made.is_error, made.content
        run_id = made.structured_content["run_id"]
        seq = (await served.engine.get_run(run_id)).seq
        http = served.http

        # The same run, in each contract's own words.
        adgen = (await http.get(f"/adgen/runs/{run_id}")).json()
        assert adgen["status"] in ("PENDING", "RUNNING") and adgen["inputs"]["prompt"] == SLOW["prompt"]
        comfygen = (await http.get(f"/comfygen/generate/{run_id}")).json()
        assert comfygen["id"] == run_id and comfygen["status"] in ("queued", "running")
        pod = (await http.get(f"/pod/api/jobs/job_{run_id}")).json()
        assert pod["id"] == f"job_{run_id}" and pod["status"] in ("pending", "running")
        isengard = (await http.get(f"/isengard/api/generation/gen-{run_id}")).json()
        assert isengard["id"] == f"gen-{run_id}" and isengard["config"]["prompt"] == SLOW["prompt"]
        desktop = (await http.get(f"/desktop/api/history/{seq}")).json()
        assert desktop["success"] is True and desktop["data"]["prompt"] == SLOW["prompt"]

        # Cancelled over REST ...
        cancelled = (await http.post(f"/adgen/runs/{run_id}/cancel")).json()
        assert cancelled["status"] == "CANCELLED"

        # ... is what MCP and every other door report next.
        seen = await client.call_tool("get_run", {"run_id": run_id})
        assert seen.structured_content["status"] == "cancelled"
        assert (await http.get(f"/pod/api/jobs/job_{run_id}")).json()["status"] == "cancelled"
        assert (await http.get(f"/isengard/api/generation/gen-{run_id}")).json()["status"] == "cancelled"
        comfygen = (await http.get(f"/comfygen/generate/{run_id}")).json()
        assert comfygen["status"] == "failed" and comfygen["error"] == "cancelled"


async def test_made_over_rest_is_read_over_mcp_with_its_image(tmp_path: Path) -> None:
    async with atelier_http(tmp_path) as served, Client(f"{served.url}/mcp") as client:
        response = await served.http.post(
            "/comfygen/generate",
            json={"prompt": "a sunset over mountains", "width": 64, "height": 64, "steps": 2},
        )
        assert response.status_code == 202
        run_id = response.json()["id"]
        with anyio.fail_after(20):
            while (await served.http.get(f"/comfygen/generate/{run_id}")).json()["status"] != "completed":
                await anyio.sleep(0.02)

        seen = await client.call_tool("get_run", {"run_id": run_id})
        assert seen.structured_content["status"] == "completed"
        [image] = seen.structured_content["images"]
        resource = await client.read_resource(image["uri"])
        served_file = await served.http.get(f"/adgen/runs/{run_id}/files/{image['filename']}")
        assert served_file.status_code == 200
        assert base64.b64decode(resource.contents[0].blob) == served_file.content
