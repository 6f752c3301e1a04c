"""The POD Engine contract (../shared/contracts/pod-engine.md) at /pod, walked with the document's
own requests: jobs, generation, batches, cleanup, retries, health, and the socket.io events.

A real uvicorn server on loopback over a real engine (preview renderer). Failed jobs are real
failures: a slow design against a short per-attempt time limit of image runs times out. Jobs make
products; where a test is about the queue rather than the products it uses the tiny catalog
(tests/tiny_catalog.py: the built-in type names with small print areas, made in milliseconds).
tests/test_http_pod_products.py has the products themselves at full print size.
"""

from __future__ import annotations

import io
import re
import time
from pathlib import Path
from typing import Any

import anyio
import pytest
import socketio
from PIL import Image

from core.errors import ProductNotFound
from core.models import RunStatus
from tests.http_served import Served, atelier_http
from tests.scripted_backend import wait_until
from tests.tiny_catalog import tiny_catalog

pytestmark = pytest.mark.anyio

# The document's own requests.
QUICK_START = {
    "prompt": "A futuristic cityscape at sunset",
    "productTypes": ["tshirt", "hoodie"],
    "autoPublish": True,
}
EXAMPLE_1 = {"prompt": "A majestic mountain landscape", "productTypes": ["tshirt"], "autoPublish": True}
JOBS_EXAMPLE = {
    "type": "generate",
    "request": {"prompt": "A beautiful landscape", "productTypes": ["tshirt"], "autoPublish": True},
    "priority": "normal",
    "maxRetries": 3,
}
GENERATE_EXAMPLE = {
    "prompt": "A beautiful landscape",
    "theme": "nature",
    "style": "photorealistic",
    "niche": "outdoor",
    "productTypes": ["tshirt", "hoodie"],
    "count": 1,
    "autoPublish": True,
}
BATCH_EXAMPLE_2 = {
    "items": [
        {"theme": "nature", "style": "minimalist", "productTypes": ["tshirt"]},
        {"theme": "technology", "style": "futuristic", "productTypes": ["hoodie"]},
        {"theme": "abstract", "style": "colorful", "productTypes": ["tshirt", "hoodie"]},
    ],
    "priority": "high",
}
BATCH_JOB_EXAMPLE = {
    "type": "batch",
    "request": {
        "items": [
            {"prompt": "Design 1", "productTypes": ["tshirt"]},
            {"prompt": "Design 2", "productTypes": ["hoodie"]},
        ]
    },
}
CLEANUP_EXAMPLE_5 = {"maxAge": 86400000}

JOB_ID = re.compile(r"^job_[0-9a-z]{26}$")
JOB_KEYS = {
    "id",
    "type",
    "status",
    "priority",
    "progress",
    "request",
    "createdAt",
    "startedAt",
    "completedAt",
    "result",
    "error",
    "retryCount",
    "maxRetries",
    "logs",
}
METRIC_KEYS = {
    "totalJobs",
    "completedJobs",
    "failedJobs",
    "runningJobs",
    "pendingJobs",
    "averageJobTime",
    "successRate",
    "uptime",
    "lastActivity",
}
UNKNOWN = "job_" + "0" * 26
SLOW = {"steps": 50}  # with local_step_ms=200: ten seconds, time enough to look at it
# With these settings a SLOW design times out (a real failure) and a one-step one completes.
FAILING = {"local_step_ms": 50, "run_timeout_s": 0.25, "local_concurrency": 4}


def tiny(tmp_path: Path, **settings: Any) -> dict[str, Any]:
    """`settings` with the tiny catalog, for `atelier_http`."""
    return {"catalog": tiny_catalog(tmp_path), **settings}


def run_id(job_id: str) -> str:
    return job_id.removeprefix("job_")


def job_id_of(run: Any) -> str:
    return f"job_{run.id}"


async def submit(served: Served, path: str = "/pod/api/generate", **body: Any) -> dict[str, Any]:
    response = await served.http.post(path, json=body)
    assert response.status_code == 200, response.text
    submitted = response.json()
    assert JOB_ID.match(submitted["jobId"]) and submitted["job"]["id"] == submitted["jobId"]
    return submitted


async def job(served: Served, job_id: str) -> dict[str, Any]:
    response = await served.http.get(f"/pod/api/jobs/{job_id}")
    assert response.status_code == 200, response.text
    return response.json()


async def finished_job(served: Served, job_id: str) -> dict[str, Any]:
    await served.finished(run_id(job_id))
    return await job(served, job_id)


async def test_health_info_and_metrics_of_a_fresh_engine(tmp_path: Path) -> None:
    async with atelier_http(tmp_path) as served:
        before = int(time.time() * 1000)
        health = await served.http.get("/pod/health")
        assert health.status_code == 200
        body = health.json()
        assert body["status"] == "healthy"
        assert body["services"] == {"comfyui": True, "printify": False, "shopify": False, "storefront": True}
        assert set(body["metrics"]) == METRIC_KEYS and isinstance(body["uptime"], int)

        info = (await served.http.get("/pod/api/info")).json()
        assert info["name"] == "POD Engine" and isinstance(info["version"], str)
        assert info["config"] == {
            "maxConcurrent": served.settings.local_concurrency,
            "maxRetries": served.settings.max_attempts - 1,
            "persistenceEnabled": True,
            "monitoringEnabled": True,
        }

        metrics = (await served.http.get("/pod/api/metrics")).json()
        assert set(metrics) == METRIC_KEYS
        assert {k: metrics[k] for k in METRIC_KEYS - {"uptime", "lastActivity"}} == {
            "totalJobs": 0,
            "completedJobs": 0,
            "failedJobs": 0,
            "runningJobs": 0,
            "pendingJobs": 0,
            "averageJobTime": 0,
            "successRate": 100.0,
        }
        assert 0 <= metrics["uptime"] < 60_000
        assert before - 60_000 < metrics["lastActivity"] <= int(time.time() * 1000)


async def test_quick_start_generate_then_check_the_job(tmp_path: Path) -> None:
    async with atelier_http(tmp_path) as served:
        submitted = await submit(served, **QUICK_START)
        first = submitted["job"]
        assert set(first) == JOB_KEYS
        assert (first["type"], first["priority"], first["retryCount"], first["maxRetries"]) == (
            "generate",
            "normal",
            0,
            served.settings.max_attempts - 1,
        )
        assert first["status"] in ("pending", "running", "completed")
        assert first["request"] == QUICK_START
        assert abs(first["createdAt"] - time.time() * 1000) < 60_000

        done = await finished_job(served, submitted["jobId"])
        assert done["status"] == "completed" and done["progress"] == 100 and done["error"] is None
        assert done["createdAt"] <= done["startedAt"] <= done["completedAt"]
        result = done["result"]
        assert result["success"] is True and result["errors"] == []
        assert sorted((p["platform"], p["type"]) for p in result["products"]) == [
            ("storefront", "hoodie"),
            ("storefront", "tshirt"),
        ]
        assert isinstance(result["totalTime"], int) and result["totalTime"] >= 0
        [image] = result["generatedImages"]
        assert image["id"] == f"img_{run_id(done['id'])}_1"
        assert image["prompt"] == QUICK_START["prompt"]
        assert image["url"] == f"{served.url}/pod/api/files/{done['id']}/design-01.png"
        png = await served.http.get(image["url"])
        assert png.status_code == 200 and png.headers["content-type"] == "image/png"
        assert Image.open(io.BytesIO(png.content)).size == (1024, 1024)

        types = [line["type"] for line in done["logs"]]
        assert types[0] == "INFO" and types[-1] == "SUCCESS"
        assert all(isinstance(line["timestamp"], int) and line["message"] for line in done["logs"])
        # The bare run id names the same job.
        assert (await job(served, run_id(done["id"])))["id"] == done["id"]


async def test_example_1_and_the_post_api_jobs_example(tmp_path: Path) -> None:
    async with atelier_http(tmp_path, **tiny(tmp_path)) as served:
        simple = await submit(served, **EXAMPLE_1)
        assert (await finished_job(served, simple["jobId"]))["status"] == "completed"

        submitted = await submit(served, "/pod/api/jobs", **JOBS_EXAMPLE)
        assert submitted["job"]["maxRetries"] == 3 and submitted["job"]["type"] == "generate"
        assert (await served.engine.get_run(run_id(submitted["jobId"]))).max_attempts == 4
        done = await finished_job(served, submitted["jobId"])
        assert done["request"] == JOBS_EXAMPLE["request"]
        assert done["result"]["errors"] == []
        assert [(p["type"], p["status"]) for p in done["result"]["products"]] == [("tshirt", "published")]

        three = await submit(served, "/pod/api/jobs", type="generate", request={**EXAMPLE_1, "count": 3})
        result = (await finished_job(served, three["jobId"]))["result"]
        images = result["generatedImages"]
        assert [i["id"] for i in images] == [f"img_{run_id(three['jobId'])}_{n}" for n in (1, 2, 3)]
        assert len({(await served.http.get(i["url"])).content for i in images}) == 3
        assert len(result["products"]) == 3  # one tshirt per design


async def test_prompt_is_composed_from_theme_style_and_niche_deterministically(tmp_path: Path) -> None:
    async with atelier_http(tmp_path, **tiny(tmp_path)) as served:
        asked = {"theme": "nature", "style": "photorealistic", "niche": "outdoor", "productTypes": ["tshirt"]}
        prompts = []
        for body in (asked, asked, {"theme": "abstract", "productTypes": ["hoodie"]}, GENERATE_EXAMPLE):
            submitted = await submit(served, **body)
            done = await finished_job(served, submitted["jobId"])
            prompts.append(done["result"]["generatedImages"][0]["prompt"])
        assert prompts[0] == prompts[1]  # the same theme, style and niche: the same prompt
        assert all(word in prompts[0] for word in ("photorealistic", "nature", "outdoor"))
        assert "abstract" in prompts[2]
        assert prompts[3] == GENERATE_EXAMPLE["prompt"]  # a prompt is used as is


async def test_batch_example_2_results_per_item(tmp_path: Path) -> None:
    async with atelier_http(tmp_path, **tiny(tmp_path)) as served:
        submitted = await submit(served, "/pod/api/generate/batch", **BATCH_EXAMPLE_2)
        assert (submitted["job"]["type"], submitted["job"]["priority"]) == ("batch", "high")
        assert submitted["job"]["request"] == {"items": BATCH_EXAMPLE_2["items"]}

        done = await finished_job(served, submitted["jobId"])
        assert done["status"] == "completed" and done["progress"] == 100
        result = done["result"]
        assert (result["total"], result["errors"]) == (3, [])
        prompts = [r["generatedImages"][0]["prompt"] for r in result["results"]]
        for prompt, words in zip(
            prompts,
            (("minimalist", "nature"), ("futuristic", "technology"), ("colorful", "abstract")),
            strict=True,
        ):
            assert all(word in prompt for word in words), prompt
        # Each item is made into its own products, published on the storefront (autoPublish's default).
        for item, asked in zip(result["results"], BATCH_EXAMPLE_2["items"], strict=True):
            assert item["success"] is True and item["errors"] == []
            assert [(p["platform"], p["type"], p["status"]) for p in item["products"]] == [
                ("storefront", kind, "published") for kind in asked["productTypes"]
            ]
            png = await served.http.get(item["generatedImages"][0]["url"])
            assert png.status_code == 200 and png.content.startswith(b"\x89PNG")
            for product in item["products"]:
                page = await served.http.get(product["url"])
                assert page.status_code == 200 and product["title"] in page.text
        assert "SUCCESS" in [line["type"] for line in done["logs"]]

        # The batch is one job; its items are jobs of their own, inside it.
        listed = (await served.http.get("/pod/api/jobs")).json()
        assert [j["id"] for j in listed] == [done["id"]]
        child_url = result["results"][1]["generatedImages"][0]["url"]
        child_id = child_url.split("/api/files/")[1].split("/")[0]
        child = await job(served, child_id)
        assert child["type"] == "generate" and child["request"] == BATCH_EXAMPLE_2["items"][1]
        assert child["priority"] == "high"
        assert child["result"] == result["results"][1]


async def test_a_batch_with_a_failed_item_reports_it_and_retry_reruns_it(tmp_path: Path) -> None:
    async with atelier_http(tmp_path, **tiny(tmp_path, **FAILING)) as served:
        items = [
            {"prompt": "Design 1", "productTypes": ["tshirt"], "steps": 1},
            {"prompt": "Design 2", "productTypes": ["hoodie"], **SLOW},
        ]
        submitted = await submit(
            served, "/pod/api/jobs", type="batch", request={"items": items}, maxRetries=0
        )
        assert submitted["job"]["maxRetries"] == 0
        done = await finished_job(served, submitted["jobId"])
        assert done["status"] == "failed" and "timed out" in done["error"]
        result = done["result"]
        assert result["total"] == 2
        first, second = result["results"]
        assert first["success"] is True and [p["type"] for p in first["products"]] == ["tshirt"]
        assert (second["success"], second["generatedImages"], second["products"]) == (False, [], [])
        why = "design 1 ('Design 2') was not generated: timed out after 0.25 s"
        assert second["errors"] == [why]
        assert result["errors"] == [f"item 2: {why}"]
        assert done["logs"][-1]["type"] == "ERROR"

        retried = await served.http.post(f"/pod/api/jobs/{done['id']}/retry")
        assert retried.json() == {"success": True}
        assert (await job(served, done["id"]))["status"] in ("pending", "running")
        again = await finished_job(served, done["id"])
        assert again["status"] == "failed" and again["result"]["errors"] == [f"item 2: {why}"]
        # The item that had made its products kept them; only the failed one ran again.
        assert again["result"]["results"][0] == first


async def test_post_api_jobs_batch_example(tmp_path: Path) -> None:
    async with atelier_http(tmp_path, **tiny(tmp_path)) as served:
        submitted = await submit(served, "/pod/api/jobs", **BATCH_JOB_EXAMPLE)
        assert submitted["job"]["type"] == "batch"
        done = await finished_job(served, submitted["jobId"])
        assert done["request"] == BATCH_JOB_EXAMPLE["request"]
        results = done["result"]["results"]
        assert [r["generatedImages"][0]["prompt"] for r in results] == ["Design 1", "Design 2"]
        # No autoPublish: the document's default is true.
        assert [[(p["type"], p["status"]) for p in r["products"]] for r in results] == [
            [("tshirt", "published")],
            [("hoodie", "published")],
        ]


class Listener:
    """A socket.io client recording every event the POD channel sends."""

    def __init__(self) -> None:
        self.client = socketio.AsyncClient(reconnection=False)
        self.events: list[tuple[str, Any]] = []
        for name in ("job:update", "job:progress", "metrics", "log"):
            self.client.on(name, self._recorder(name))

    def _recorder(self, name: str) -> Any:
        async def record(data: Any) -> None:
            self.events.append((name, data))

        return record

    def of(self, name: str, job_id: str | None = None) -> list[Any]:
        return [
            data
            for kind, data in self.events
            if kind == name and (job_id is None or (isinstance(data, dict) and data.get("id") == job_id))
        ]


async def test_socketio_job_update_progress_log_and_metrics(tmp_path: Path) -> None:
    async with atelier_http(tmp_path, **tiny(tmp_path, local_step_ms=10)) as served:
        listener = Listener()
        await listener.client.connect(served.url, socketio_path="/pod/socket.io")
        try:
            await wait_until(lambda: listener.of("metrics"), what="metrics on connect")
            assert set(listener.of("metrics")[0]) == METRIC_KEYS

            submitted = await submit(served, **QUICK_START, steps=10)
            job_id = submitted["jobId"]
            await wait_until(
                lambda: any(u["status"] == "completed" for u in listener.of("job:update", job_id)),
                timeout=30,
                what="job:update completed",
            )
            updates = listener.of("job:update", job_id)
            assert [u["status"] for u in updates] == ["pending", "running", "completed"]
            assert updates[0]["progress"] == 0 and updates[-1]["progress"] == 100

            progress = [p["progress"] for p in listener.of("job:progress", job_id)]
            assert progress and progress == sorted(progress) and progress[-1] == 100
            assert all(isinstance(p, int) and 0 <= p <= 100 for p in progress)

            await wait_until(lambda: len(listener.of("log")) >= 3, what="log events")
            lines = [
                (line["type"], line["message"]) for line in listener.of("log") if job_id in line["message"]
            ]
            assert [kind for kind, _ in lines] == ["INFO", "INFO", "SUCCESS"]
            assert "submitted" in lines[0][1] and "started" in lines[1][1] and "completed" in lines[2][1]
            assert all(isinstance(line["timestamp"], int) for line in listener.of("log"))

            # Metrics also come periodically, and count the job.
            seen = len(listener.of("metrics"))
            await wait_until(lambda: len(listener.of("metrics")) > seen, timeout=8, what="periodic metrics")
            assert listener.of("metrics")[-1]["completedJobs"] == 1
        finally:
            await listener.client.disconnect()


async def test_socketio_batch_progress_is_aggregated_and_items_stay_inside(tmp_path: Path) -> None:
    async with atelier_http(tmp_path, **tiny(tmp_path, local_step_ms=20, local_concurrency=1)) as served:
        listener = Listener()
        await listener.client.connect(served.url, socketio_path="/pod/socket.io", transports=["websocket"])
        try:
            items = [{"prompt": f"Design {n}", "productTypes": ["tshirt"], "steps": 10} for n in (1, 2)]
            submitted = await submit(served, "/pod/api/generate/batch", items=items)
            job_id = submitted["jobId"]
            await wait_until(
                lambda: any(u["status"] == "completed" for u in listener.of("job:update", job_id)),
                what="batch completed",
            )
            assert [u["status"] for u in listener.of("job:update", job_id)][-1] == "completed"
            progress = [p["progress"] for p in listener.of("job:progress", job_id)]
            assert progress == sorted(progress)
            # Each item is 3 steps (its design, its tshirt, its listing): the batch moves in sixths.
            assert set(progress) <= {100 * k // 6 for k in range(7)}, progress
            assert len({p for p in progress if 0 < p < 100}) >= 2, progress
            # Only the batch is reported: its items are inside it.
            assert {u["id"] for u in listener.of("job:update")} == {job_id}
            assert {p["id"] for p in listener.of("job:progress")} == {job_id}
        finally:
            await listener.client.disconnect()


async def test_socketio_at_the_root_and_no_cross_origin_browsers(tmp_path: Path) -> None:
    async with atelier_http(tmp_path, root_contract="pod") as served:
        assert (await served.http.get("/health")).json()["status"] == "healthy"
        assert (await served.http.get("/pod/health")).json()["status"] == "healthy"
        at_root = Listener()
        await at_root.client.connect(served.url, transports=["websocket"])  # path /socket.io
        try:
            await wait_until(lambda: at_root.of("metrics"), what="metrics at /socket.io")
            submitted = await submit(served, "/api/generate", **EXAMPLE_1)
            await wait_until(
                lambda: any(u["status"] == "completed" for u in at_root.of("job:update", submitted["jobId"])),
                what="job:update at the root",
            )
        finally:
            await at_root.client.disconnect()

        # Another origin is refused, a page on another port of loopback included (it is same-site,
        # not same-origin) unless ATELIER_ALLOWED_ORIGINS names it (test_http_origin_policy.py).
        for origin in ("http://evil.example", "http://localhost:5173"):
            stranger = Listener()
            with pytest.raises(socketio.exceptions.ConnectionError):
                await stranger.client.connect(
                    served.url, socketio_path="/pod/socket.io", headers={"Origin": origin}
                )


async def test_status_filters_priorities_and_limit(tmp_path: Path) -> None:
    # The queue's order shows best in image runs (another door's runs are jobs here too): a
    # products job runs in the publishing lane while its designs wait in the renderer's queue.
    async with atelier_http(tmp_path, local_step_ms=200, local_concurrency=1) as served:
        engine = served.engine
        busy = job_id_of(await engine.submit_image({"prompt": "busy", **SLOW}))
        for _ in range(200):  # the busy job takes the only slot
            if (await job(served, busy))["status"] == "running":
                break
            await anyio.sleep(0.02)
        low = job_id_of(await engine.submit_image({"prompt": "low", "steps": 1}, priority="low"))
        urgent = job_id_of(await engine.submit_image({"prompt": "urgent", "steps": 1}, priority="urgent"))

        async def ids(query: str) -> list[str]:
            response = await served.http.get(f"/pod/api/jobs{query}")
            assert response.status_code == 200, response.text
            return [j["id"] for j in response.json()]

        assert await ids("?status=running") == [busy]
        pending = (await served.http.get("/pod/api/jobs?status=pending")).json()
        assert [(j["id"], j["priority"], j["startedAt"]) for j in pending] == [
            (urgent, "urgent", None),
            (low, "low", None),
        ]
        assert await ids("") == [urgent, low, busy]
        assert await ids("?limit=1") == [urgent]
        assert await ids("?status=completed") == [] and await ids("?status=failed") == []

        # Cancelling the busy job lets the queue move: urgent before low.
        assert (await served.http.post(f"/pod/api/jobs/{busy}/cancel")).json() == {"success": True}
        first, second = await finished_job(served, urgent), await finished_job(served, low)
        assert first["startedAt"] < second["startedAt"]
        assert await ids("?status=cancelled") == [busy]
        assert await ids("?status=completed") == [urgent, low]


async def test_cancel_and_retry_rules(tmp_path: Path) -> None:
    async with atelier_http(tmp_path, local_step_ms=200) as served:
        slow = await submit(served, **EXAMPLE_1, **SLOW)
        job_id = slow["jobId"]
        cancelled = await served.http.post(f"/pod/api/jobs/{job_id}/cancel")
        assert cancelled.status_code == 200 and cancelled.json() == {"success": True}
        assert (await job(served, job_id))["status"] == "cancelled"
        again = await served.http.post(f"/pod/api/jobs/{job_id}/cancel")
        assert again.status_code == 400 and again.json() == {"error": "Cannot cancel job: it is cancelled"}

        retried = await served.http.post(f"/pod/api/jobs/{job_id}/retry")
        assert retried.status_code == 200 and retried.json() == {"success": True}
        assert (await job(served, job_id))["status"] in ("pending", "running")
        busy = await served.http.post(f"/pod/api/jobs/{job_id}/retry")
        assert busy.status_code == 400 and busy.json()["error"].startswith("Cannot retry job: it is ")
        assert (await served.http.post(f"/pod/api/jobs/{job_id}/cancel")).json() == {"success": True}

        quick = await submit(served, **EXAMPLE_1, steps=1)
        await finished_job(served, quick["jobId"])
        finished = await served.http.post(f"/pod/api/jobs/{quick['jobId']}/cancel")
        assert finished.status_code == 400 and finished.json() == {
            "error": "Cannot cancel job: it is completed"
        }
        done = await served.http.post(f"/pod/api/jobs/{quick['jobId']}/retry")
        assert done.status_code == 400
        assert done.json() == {
            "error": "Cannot retry job: it is completed; only failed or cancelled jobs can be retried"
        }


async def test_cancelling_a_batch_cancels_its_items(tmp_path: Path) -> None:
    async with atelier_http(tmp_path, **tiny(tmp_path, local_step_ms=200, local_concurrency=1)) as served:
        items = [{"prompt": f"Design {n}", "productTypes": ["tshirt"], **SLOW} for n in (1, 2)]
        submitted = await submit(served, "/pod/api/generate/batch", items=items)
        response = await served.http.post(f"/pod/api/jobs/{submitted['jobId']}/cancel")
        assert response.status_code == 200 and response.json() == {"success": True}
        done = await finished_job(served, submitted["jobId"])
        assert done["status"] == "cancelled"
        result = done["result"]
        assert (result["total"], result["errors"]) == (2, [])
        assert [(r["success"], r["errors"]) for r in result["results"]] == [
            (False, ["the job was cancelled"]),
            (False, ["the job was cancelled"]),
        ]
        # Their designs were cancelled with them: nothing is left rendering.
        everything = (await served.engine.list_runs(limit=50)).items
        assert len(everything) == 5 and {r.status for r in everything} == {RunStatus.CANCELLED}
        again = await served.http.post(f"/pod/api/jobs/{submitted['jobId']}/cancel")
        assert again.status_code == 400 and again.json() == {"error": "Cannot cancel job: it is cancelled"}


async def test_example_6_retry_failed_jobs(tmp_path: Path) -> None:
    async with atelier_http(tmp_path, **FAILING) as served:
        request = {**EXAMPLE_1, **SLOW}
        submitted = await submit(served, "/pod/api/jobs", type="generate", request=request, maxRetries=1)
        failed = await finished_job(served, submitted["jobId"])
        assert failed["status"] == "failed" and failed["result"] is None
        assert (
            failed["error"]
            == "design 1 ('A majestic mountain landscape') was not generated: timed out after 0.25 s"
        )
        assert (failed["retryCount"], failed["maxRetries"]) == (1, 1)
        types = [line["type"] for line in failed["logs"]]
        assert "WARNING" in types and types[-1] == "ERROR"

        # The document's loop: list the failed jobs, retry each.
        failed_jobs = (await served.http.get("/pod/api/jobs?status=failed")).json()
        assert [j["id"] for j in failed_jobs] == [submitted["jobId"]]
        for each in failed_jobs:
            response = await served.http.post(f"/pod/api/jobs/{each['id']}/retry")
            assert response.json() == {"success": True}
        again = await job(served, submitted["jobId"])
        assert again["status"] in ("pending", "running") and again["error"] is None
        assert (await served.http.get("/pod/api/jobs?status=failed")).json() == []
        assert (await finished_job(served, submitted["jobId"]))["status"] == "failed"


async def test_health_is_degraded_when_most_jobs_fail(tmp_path: Path) -> None:
    async with atelier_http(tmp_path, **tiny(tmp_path, **FAILING)) as served:
        good = await submit(served, "/pod/api/generate/batch", items=[{**EXAMPLE_1, "steps": 1}])
        bad = [
            await submit(served, "/pod/api/generate/batch", items=[{**EXAMPLE_1, **SLOW}], maxRetries=0)
            for _ in range(10)
        ]
        for submitted in (good, *bad):
            await served.finished(run_id(submitted["jobId"]))
        health = await served.http.get("/pod/health")
        assert health.status_code == 200
        body = health.json()
        assert body["status"] == "degraded" and body["services"]["comfyui"] is True
        metrics = body["metrics"]
        assert (metrics["completedJobs"], metrics["failedJobs"], metrics["totalJobs"]) == (1, 10, 11)
        assert metrics["successRate"] == 9.09
        assert metrics["averageJobTime"] >= 0 and metrics["pendingJobs"] == metrics["runningJobs"] == 0
        assert (await served.http.get("/pod/api/metrics")).json()["successRate"] == 9.09


async def test_health_is_unhealthy_when_comfyui_is_down(tmp_path: Path) -> None:
    async with atelier_http(tmp_path, backend="comfyui", comfyui_urls="http://127.0.0.1:9") as served:
        health = await served.http.get("/pod/health")
        assert health.status_code == 503
        body = health.json()
        assert body["status"] == "unhealthy"
        assert body["services"] == {"comfyui": False, "printify": False, "shopify": False, "storefront": True}
        # Jobs wait for a server: they stay pending, and can be cancelled and retried. (An image
        # run shows it plainly; a products job runs in its own lane, its design is what waits.)
        job_id = job_id_of(await served.engine.submit_image({"prompt": QUICK_START["prompt"]}))
        assert (await job(served, job_id))["status"] == "pending"
        assert (await served.http.get("/pod/api/metrics")).json()["pendingJobs"] == 1
        for _ in range(26):  # two log lines each
            assert (await served.http.post(f"/pod/api/jobs/{job_id}/cancel")).json() == {"success": True}
            assert (await served.http.post(f"/pod/api/jobs/{job_id}/retry")).json() == {"success": True}
        whole = (await job(served, job_id))["logs"]
        assert len(whole) > 50
        [listed] = (await served.http.get("/pod/api/jobs")).json()
        assert listed["logs"] == whole[-50:]  # the list keeps each job's last 50 lines
        assert (await served.http.post(f"/pod/api/jobs/{job_id}/cancel")).json() == {"success": True}


async def test_example_5_cleanup(tmp_path: Path) -> None:
    async with atelier_http(tmp_path, **tiny(tmp_path, **FAILING)) as served:
        batch = "/pod/api/generate/batch"
        drafts = {**EXAMPLE_1, "autoPublish": False}  # a published product's job is kept (see below)
        completed = await submit(served, batch, items=[{**drafts, "steps": 1}])
        failed = await submit(served, batch, items=[{**drafts, **SLOW}], maxRetries=0)
        cancelled = await submit(served, batch, items=[{**drafts, **SLOW}])
        await served.http.post(f"/pod/api/jobs/{cancelled['jobId']}/cancel")
        done = await finished_job(served, completed["jobId"])
        await served.finished(run_id(failed["jobId"]))

        response = await served.http.post("/pod/api/jobs/cleanup", json=CLEANUP_EXAMPLE_5)
        assert response.status_code == 200 and response.json() == {"cleared": 0}
        assert (await served.http.post("/pod/api/jobs/cleanup")).json() == {"cleared": 0}  # default 24 h

        assert (await served.http.post("/pod/api/jobs/cleanup", json={"maxAge": 0})).json() == {"cleared": 2}
        listed = (await served.http.get("/pod/api/jobs")).json()
        assert [j["id"] for j in listed] == [cancelled["jobId"]]
        assert (await served.http.get(f"/pod/api/jobs/{completed['jobId']}")).status_code == 404
        [item] = done["result"]["results"]
        image = await served.http.get(item["generatedImages"][0]["url"])
        assert image.status_code == 404 and "error" in image.json()
        [product] = item["products"]  # a draft: it existed only in Atelier, and went with its job
        with pytest.raises(ProductNotFound):
            await served.engine.products.get(product["atelierProductId"])
        # Each job went with its items and their designs: what is left is the cancelled job's.
        left = (await served.engine.list_runs(limit=50)).items
        assert {r.status for r in left} == {RunStatus.CANCELLED}
        assert run_id(cancelled["jobId"]) in {r.id for r in left}


async def test_custom_jobs_take_design_images_and_say_what_is_missing(tmp_path: Path) -> None:
    async with atelier_http(tmp_path) as served:
        response = await served.http.post(
            "/pod/api/jobs", json={"type": "custom", "request": {"script": "anything"}}
        )
        assert response.status_code == 400
        message = response.json()["error"]
        assert "request.designs: is required" in message and "request.productTypes: is required" in message
        assert "request.script: is not a field of this request" in message
        assert (await served.http.get("/pod/api/jobs")).json() == []


# (path, body, what the message names): each a 400 {"error": ...} that leaves no job behind.
BAD_REQUESTS = [
    ("/pod/api/generate", b'{"prompt": "unterminated', "not valid JSON"),
    ("/pod/api/generate", b"[1, 2]", "dictionary"),
    ("/pod/api/generate", b'{"prompt": "x"}', "productTypes: is required"),
    ("/pod/api/generate", b'{"prompt": "x", "productTypes": ["cap"]}', "'cap' is not a product type"),
    ("/pod/api/generate", b'{"prompt": "x", "productTypes": []}', "productTypes"),
    ("/pod/api/generate", b'{"prompt": "x", "productTypes": "tshirt"}', "productTypes"),
    ("/pod/api/generate", b'{"prompt": "x", "productTypes": ["tshirt"], "count": 0}', "count"),
    ("/pod/api/generate", b'{"prompt": "x", "productTypes": ["tshirt"], "count": 17}', "count"),
    ("/pod/api/generate", b'{"prompt": "x", "productTypes": ["tshirt"], "count": "3"}', "count"),
    (
        "/pod/api/generate",
        b'{"prompt": "x", "productTypes": ["tshirt"], "autoPublish": "yes"}',
        "autoPublish",
    ),
    ("/pod/api/generate", b'{"style": "bold", "productTypes": ["tshirt"]}', "prompt, or a theme"),
    ("/pod/api/generate", b'{"prompt": "x", "productTypes": ["tshirt"], "colour": "red"}', "colour"),
    ("/pod/api/generate", b'{"prompt": "x", "productTypes": ["tshirt"], "width": 7}', "width"),
    ("/pod/api/jobs", b'{"request": {}}', "type: is required"),
    ("/pod/api/jobs", b'{"type": "publish", "request": {}}', "type"),
    ("/pod/api/jobs", b'{"type": "generate"}', "request: is required"),
    (
        "/pod/api/jobs",
        b'{"type": "generate", "request": {"prompt": "x"}}',
        "request.productTypes: is required",
    ),
    ("/pod/api/jobs", b'{"type": "generate", "request": "a cat"}', "request"),
    ("/pod/api/jobs", b'{"type": "batch", "request": {"items": []}}', "request.items"),
    (
        "/pod/api/jobs",
        b'{"type": "batch", "request": {"items": [{"prompt": "x"}]}}',
        "request.items.0.productTypes",
    ),
    (
        "/pod/api/jobs",
        b'{"type": "generate", "request": {"prompt": "x", "productTypes": ["tshirt"]}, "priority": "asap"}',
        "priority",
    ),
    (
        "/pod/api/jobs",
        b'{"type": "generate", "request": {"prompt": "x", "productTypes": ["tshirt"]}, "maxRetries": 20}',
        "maxRetries",
    ),
    (
        "/pod/api/jobs",
        b'{"type": "generate", "request": {"prompt": "x", "productTypes": ["tshirt"]}, "maxRetries": -1}',
        "maxRetries",
    ),
    ("/pod/api/generate/batch", b'{"priority": "high"}', "items: is required"),
    (
        "/pod/api/generate/batch",
        b'{"items": [{"theme": "x", "productTypes": ["tshirt"], "steps": 0}]}',
        "items.0.steps",
    ),
    ("/pod/api/jobs/cleanup", b'{"maxAge": -1}', "maxAge"),
    ("/pod/api/jobs/cleanup", b'{"maxAge": "1 day"}', "maxAge"),
]


async def test_bad_requests_are_400_in_the_error_envelope(tmp_path: Path) -> None:
    async with atelier_http(tmp_path) as served:
        for path, body, mentions in BAD_REQUESTS:
            response = await served.http.post(
                path, content=body, headers={"Content-Type": "application/json"}
            )
            assert response.status_code == 400, (path, body, response.text)
            payload = response.json()
            assert set(payload) == {"error"} and mentions in payload["error"], (body, payload)
        assert (await served.http.get("/pod/api/jobs")).json() == []
        assert await served.engine.count_runs() == 0


async def test_bad_queries_unknown_jobs_files_and_routes(tmp_path: Path) -> None:
    async with atelier_http(tmp_path) as served:
        for query in ("?status=done", "?status=PENDING", "?limit=0", "?limit=201", "?limit=ten"):
            response = await served.http.get(f"/pod/api/jobs{query}")
            assert response.status_code == 400 and set(response.json()) == {"error"}, query

        for given in (UNKNOWN, "0" * 26, "job_1234567890_abc123", "nope"):
            for method, path in (
                ("GET", f"/pod/api/jobs/{given}"),
                ("POST", f"/pod/api/jobs/{given}/cancel"),
                ("POST", f"/pod/api/jobs/{given}/retry"),
                ("GET", f"/pod/api/files/{given}/image-01.png"),
            ):
                response = await served.http.request(method, path)
                assert response.status_code == 404, (method, path)
                assert response.json() == {"error": f"Job {given} not found"}

        submitted = await submit(served, **EXAMPLE_1, width=64, height=64)
        done = await finished_job(served, submitted["jobId"])
        for name in ("..%2F..%2Fledger.sqlite3", ".env", "image-09.png", "design-02.png", "..", "run.json"):
            response = await served.http.get(f"/pod/api/files/{done['id']}/{name}")
            assert response.status_code in (400, 404), name
            assert "error" in response.json()
        assert (served.settings.home / "ledger.sqlite3").exists()

        missing = await served.http.get("/pod/api/nowhere")
        assert missing.status_code == 404 and missing.json() == {
            "error": "no such endpoint: GET /pod/api/nowhere"
        }
        wrong = await served.http.delete("/pod/api/jobs")
        assert wrong.status_code == 405 and set(wrong.json()) == {"error"}


async def test_oversized_body_is_413(tmp_path: Path) -> None:
    async with atelier_http(tmp_path, max_input_bytes=10_000) as served:
        huge = {**QUICK_START, "prompt": "x" * (served.settings.max_request_bytes + 10)}
        response = await served.http.post("/pod/api/generate", json=huge)
        assert response.status_code == 413 and "larger than" in response.json()["error"]

        async def chunks() -> Any:  # no Content-Length: the cap still holds
            for _ in range(40):
                yield b"x" * 50_000

        streamed = await served.http.post("/pod/api/jobs", content=chunks())
        assert streamed.status_code == 413 and set(streamed.json()) == {"error"}


async def test_runs_made_over_mcp_or_the_engine_are_jobs_here(tmp_path: Path) -> None:
    from mcp import Client

    async with atelier_http(tmp_path) as served, Client(f"{served.url}/mcp") as client:
        made = await client.call_tool(
            "generate_image", {"prompt": "harbour at dawn", "width": 64, "height": 64}
        )
        mcp_run = made.structured_content["run_id"]
        await served.finished(mcp_run)
        batch = await served.engine.submit_batch([{"prompt": "a", "steps": 1}, {"prompt": "b", "steps": 1}])
        await served.finished(batch.id)

        listed = (await served.http.get("/pod/api/jobs")).json()
        assert [j["id"] for j in listed] == [f"job_{batch.id}", f"job_{mcp_run}"]
        from_batch, from_mcp = listed
        assert (from_mcp["type"], from_mcp["status"], from_mcp["request"]) == (
            "generate",
            "completed",
            {"prompt": "harbour at dawn", "count": 1},
        )
        assert from_mcp["result"]["errors"] == [] and from_mcp["result"]["success"] is True
        image = await served.http.get(from_mcp["result"]["generatedImages"][0]["url"])
        assert Image.open(io.BytesIO(image.content)).size == (64, 64)
        assert from_batch["type"] == "batch" and from_batch["result"]["total"] == 2
        assert from_batch["request"] == {"items": [{"prompt": "a", "count": 1}, {"prompt": "b", "count": 1}]}
        assert (await served.engine.get_run(mcp_run)).status is RunStatus.COMPLETED
        assert (await served.http.get("/pod/api/metrics")).json()["completedJobs"] == 2


async def test_openapi_lists_every_endpoint(tmp_path: Path) -> None:
    async with atelier_http(tmp_path) as served:
        document = (await served.http.get("/pod/openapi.json")).json()
        assert document["openapi"].startswith("3.")
        operations = {(method.upper(), path) for path, item in document["paths"].items() for method in item}
        assert operations >= {
            ("GET", "/health"),
            ("GET", "/api/info"),
            ("GET", "/api/metrics"),
            ("POST", "/api/jobs"),
            ("GET", "/api/jobs"),
            ("GET", "/api/jobs/{id}"),
            ("POST", "/api/jobs/{id}/cancel"),
            ("POST", "/api/jobs/{id}/retry"),
            ("POST", "/api/jobs/cleanup"),
            ("POST", "/api/generate"),
            ("POST", "/api/generate/batch"),
            ("GET", "/api/files/{id}/{filename}"),
            ("GET", "/socket.io/"),
        }
        docs = await served.http.get("/pod/docs")
        assert docs.status_code == 200 and "text/html" in docs.headers["content-type"]
