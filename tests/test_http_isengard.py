"""The Isengard contract (../shared/contracts/isengard.md) at /isengard, walked with the document's
own requests.

A real uvicorn server on loopback over a real engine (preview renderer); every response is
checked against the shapes, status codes, headers and SSE events a client of the document sees.
Characters and training have their own file, tests/test_http_isengard_training.py.
"""

from __future__ import annotations

import copy
import io
import json
import logging
import re
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from core.models import RunStatus
from tests.http_served import Served, atelier_http

pytestmark = pytest.mark.anyio

# The document's example request for POST /api/generation, verbatim.
EXAMPLE: dict[str, Any] = {
    "config": {
        "prompt": "A portrait photo of johnsmith_person",
        "negative_prompt": "blurry, distorted",
        "width": 1024,
        "height": 1024,
        "steps": 20,
        "guidance_scale": 3.5,
        "seed": None,
        "lora_id": "char-xyz789",
        "lora_strength": 1.0,
        "use_controlnet": False,
        "use_ipadapter": False,
        "use_facedetailer": False,
        "use_upscale": False,
    },
    "count": 1,
}
# The document's example request for POST /api/client-logs, verbatim.
CLIENT_LOGS = {
    "entries": [
        {
            "timestamp": "2025-01-15T10:30:00.000Z",
            "level": "ERROR",
            "message": "Button click failed",
            "event": "ui.error",
            "context": {"page": "/characters", "button": "create"},
        }
    ]
}
STAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
JOB_ID = re.compile(r"^gen-[0-9a-z]{26}$")
UNKNOWN = "gen-" + "0" * 26
JOB_KEYS = {"id", "status", "config", "progress", "error_message", "created_at", "output_paths"}


def request(**config: Any) -> dict[str, Any]:
    """The document's example, with no character and small, fast images unless told otherwise."""
    body = copy.deepcopy(EXAMPLE)
    body["config"].update({"lora_id": None, "width": 64, "height": 64, "steps": 2})
    count = config.pop("count", None)
    body["config"].update(config)
    if count is not None:
        body["count"] = count
    return body


async def start(served: Served, **config: Any) -> dict[str, Any]:
    response = await served.http.post("/isengard/api/generation", json=request(**config))
    assert response.status_code == 201, response.text
    return response.json()


def run_id(job: dict[str, Any]) -> str:
    return job["id"].removeprefix("gen-")


async def sse_events(served: Served, job_id: str) -> list[tuple[str, dict[str, Any]]]:
    """Every event of a job's stream, read as a client does, until the server closes it."""
    events: list[tuple[str, dict[str, Any]]] = []
    name = None
    url = f"/isengard/api/generation/{job_id}/stream"
    async with served.http.stream("GET", url) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["x-correlation-id"]
        async for line in response.aiter_lines():
            if line.startswith("event: "):
                name = line.removeprefix("event: ")
            elif line.startswith("data: "):
                events.append((name or "message", json.loads(line.removeprefix("data: "))))
    return events


# --- health ---------------------------------------------------------------------------------


async def test_health_ready_and_info_at_the_root_and_under_api(tmp_path: Path) -> None:
    async with atelier_http(tmp_path) as served:
        for prefix in ("/isengard", "/isengard/api"):
            assert (await served.http.get(f"{prefix}/health")).json() == {"status": "healthy"}
            ready = await served.http.get(f"{prefix}/ready")
            assert ready.status_code == 200
            assert ready.json() == {
                "status": "ready",
                "mode": "fast-test",
                "dependencies": {"storage": "ok", "ledger": "ok", "backend": "ok"},
            }

        info = (await served.http.get("/isengard/info")).json()
        assert (info["name"], info["version"], info["mode"]) == ("Isengard API", "0.1.0", "fast-test")
        training = info["training"]
        # The preview trainer (the default); its parameters are checked in the training tests.
        assert (training["method"], training["backend"], training["available"]) == ("lora", "preview", True)
        assert {"steps", "learning_rate", "batch_size", "resolution", "lora_rank"} <= set(
            training["parameters"]
        )

        generation = info["image_generation"]
        assert generation["backend"] == "local"
        assert {"flux-dev", "flux-schnell"} <= set(generation["model_variants"])
        assert not {"upscale", "img2img"} & set(generation["model_variants"])
        assert set(generation["toggles"]) == {
            "use_controlnet",
            "use_ipadapter",
            "use_facedetailer",
            "use_upscale",
        }
        for toggle in generation["toggles"].values():
            assert toggle["supported"] is False and toggle["reason"]
        parameters = generation["parameters"]
        assert set(parameters) == {
            "prompt",
            "negative_prompt",
            "width",
            "height",
            "steps",
            "guidance_scale",
            "seed",
            "lora_strength",
            "count",
        }
        expected = {
            "width": ("int", 64, 4096, 1024, True),
            "height": ("int", 64, 4096, 1024, True),
            "steps": ("int", 1, 150, 20, True),
            "guidance_scale": ("float", 0, 30, 3.5, True),
            "seed": ("int", 0, 2**32 - 1, None, True),
            "count": ("int", 1, 16, 1, True),
            "lora_strength": ("float", 0, 2, 1.0, True),
            "prompt": ("str", 1, 4000, None, True),
        }
        for name, (kind, low, high, default, wired) in expected.items():
            spec = parameters[name]
            if kind != "float":
                assert isinstance(spec["min"], int) and isinstance(spec["max"], int), name
            assert (spec["type"], spec["min"], spec["max"], spec["default"], spec["wired"]) == (
                kind,
                low,
                high,
                default,
                wired,
            ), name
            assert spec["description"]


async def test_ready_is_503_not_ready_in_production_mode_while_comfyui_is_down(tmp_path: Path) -> None:
    async with atelier_http(tmp_path, backend="comfyui", comfyui_urls="http://127.0.0.1:9") as served:
        response = await served.http.get("/isengard/ready")
        assert response.status_code == 503
        body = response.json()
        assert (body["status"], body["mode"]) == ("not_ready", "production")
        assert body["dependencies"]["storage"] == "ok" and body["dependencies"]["ledger"] == "ok"
        assert body["dependencies"]["backend"].startswith("error: ")
        assert (await served.http.get("/isengard/health")).json() == {"status": "healthy"}
        info = (await served.http.get("/isengard/api/info")).json()
        assert (info["mode"], info["image_generation"]["backend"]) == ("production", "comfyui")


# --- generation -----------------------------------------------------------------------------


async def test_the_documents_example_is_404_for_its_character_and_without_one_it_completes(
    tmp_path: Path,
) -> None:
    async with atelier_http(tmp_path) as served:
        refused = await served.http.post("/isengard/api/generation", json=EXAMPLE)
        assert refused.status_code == 404
        assert refused.json()["detail"].startswith("Character char-xyz789 not found")
        assert (await served.http.get("/isengard/api/generation")).json() == []

        body = copy.deepcopy(EXAMPLE)
        body["config"]["lora_id"] = None
        response = await served.http.post("/isengard/api/generation", json=body)
        assert response.status_code == 201, response.text
        job = response.json()
        assert set(job) >= JOB_KEYS
        assert JOB_ID.match(job["id"])
        assert job["status"] in ("queued", "running")
        assert STAMP.match(job["created_at"]) and job["error_message"] is None
        assert isinstance(job["progress"], int) and 0 <= job["progress"] < 100
        sent = body["config"]
        assert {k: v for k, v in job["config"].items() if k != "seed"} == {
            k: v for k, v in sent.items() if k != "seed"
        }
        seed = job["config"]["seed"]
        assert isinstance(seed, int) and 0 <= seed < 2**32  # null became the seed the run uses

        await served.finished(run_id(job))
        done = (await served.http.get(f"/isengard/api/generation/{job['id']}")).json()
        assert (done["status"], done["progress"], done["error_message"]) == ("completed", 100, None)
        assert done["config"] == job["config"]
        assert STAMP.match(done["completed_at"]) and STAMP.match(done["started_at"])
        assert done["output_paths"] == [f"{job['id']}-0.png"]
        image = await served.http.get(f"/isengard/api/generation/output/{done['output_paths'][0]}")
        assert image.status_code == 200 and image.headers["content-type"] == "image/png"
        assert Image.open(io.BytesIO(image.content)).size == (1024, 1024)
        assert (await served.engine.get_run(run_id(job))).inputs["cfg"] == 3.5


async def test_count_makes_that_many_images_named_as_files_and_only_those_names_are_served(
    tmp_path: Path,
) -> None:
    async with atelier_http(tmp_path) as served:
        job = await start(served, width=96, height=64, seed=42, count=3)
        assert job["config"]["seed"] == 42
        await served.finished(run_id(job))
        done = (await served.http.get(f"/isengard/api/generation/{job['id']}")).json()
        names = done["output_paths"]
        assert names == [f"{job['id']}-{index}.png" for index in range(3)]
        images = []
        for name in names:
            assert "/" not in name
            response = await served.http.get(f"/isengard/api/generation/output/{name}")
            assert response.status_code == 200
            assert Image.open(io.BytesIO(response.content)).size == (96, 64)
            images.append(response.content)
        assert len(set(images)) == 3

        for bad in (
            f"{job['id']}-3.png",
            f"{job['id']}-0.jpg",
            f"{job['id']}-00.png",
            f"{UNKNOWN}-0.png",
            "image-01.png",
            f"{job['id']}-0.png.",
            "..%2F..%2Fledger.sqlite3",
            "%2e%2e%2fledger.sqlite3",
            f"..%2F{run_id(job)}%2Fimage-01.png",
        ):
            response = await served.http.get(f"/isengard/api/generation/output/{bad}")
            assert response.status_code == 404, bad
            assert "detail" in response.json(), bad
        traversal = await served.http.get("/isengard/api/generation/output/../../../ledger.sqlite3")
        assert traversal.status_code == 404 and b"SQLite" not in traversal.content


async def test_list_get_and_cancel(tmp_path: Path) -> None:
    async with atelier_http(tmp_path, local_step_ms=200, local_concurrency=1) as served:
        first = await start(served, steps=50)
        second = await start(served, steps=50, prompt="a lighthouse")
        listed = (await served.http.get("/isengard/api/generation")).json()
        assert [job["id"] for job in listed] == [second["id"], first["id"]]  # newest first
        assert listed[0]["status"] == "queued" and listed[0]["config"]["prompt"] == "a lighthouse"
        assert listed[0]["completed_at"] is None and listed[0]["output_paths"] == []
        assert [j["id"] for j in (await served.http.get("/isengard/api/generation?limit=1")).json()] == [
            second["id"]
        ]
        for bad in ("0", "201", "abc"):
            response = await served.http.get(f"/isengard/api/generation?limit={bad}")
            assert response.status_code == 400 and "limit" in response.json()["detail"]

        cancelled = await served.http.post(f"/isengard/api/generation/{first['id']}/cancel")
        assert cancelled.status_code == 200
        assert cancelled.json()["status"] == "cancelled" and cancelled.json()["id"] == first["id"]
        assert (await served.engine.get_run(run_id(first))).status is RunStatus.CANCELLED
        again = await served.http.post(f"/isengard/api/generation/{first['id']}/cancel")
        assert again.status_code == 400
        assert again.json() == {"detail": "Cannot cancel job in cancelled state"}
        await served.http.post(f"/isengard/api/generation/{second['id']}/cancel")

    async with atelier_http(tmp_path / "fast") as served:
        job = await start(served)
        await served.finished(run_id(job))
        response = await served.http.post(f"/isengard/api/generation/{job['id']}/cancel")
        assert response.status_code == 400
        assert response.json() == {"detail": "Cannot cancel job in completed state"}
        for missing in (UNKNOWN, "abc123", "gen-abc123", run_id(job), "train-abc123"):
            for method, path in (
                ("GET", missing),
                ("POST", f"{missing}/cancel"),
                ("GET", f"{missing}/stream"),
            ):
                response = await served.http.request(method, f"/isengard/api/generation/{path}")
                assert response.status_code == 404, (method, path)
                assert response.json() == {"detail": f"Generation job {missing} not found"}


async def test_stream_sends_progress_events_then_complete(tmp_path: Path) -> None:
    async with atelier_http(tmp_path, local_step_ms=20) as served:
        job = await start(served, steps=10)
        events = await sse_events(served, job["id"])
        names = [name for name, _ in events]
        assert names[-1] == "complete" and set(names[:-1]) == {"progress"}
        progress = [data for name, data in events if name == "progress"]
        steps = [data["current_step"] for data in progress if data["status"] == "running"]
        assert len(steps) >= 3 and steps == sorted(steps) and steps[-1] > steps[0]
        for data in progress:
            assert set(data) == {
                "job_id",
                "job_type",
                "status",
                "progress",
                "message",
                "current_step",
                "total_steps",
            }
            assert (data["job_id"], data["job_type"]) == (job["id"], "generation")
            assert data["status"] in ("queued", "running") and isinstance(data["progress"], int)
            assert 0 <= data["progress"] < 100 and data["total_steps"] == 10
        for data in progress:
            if data["current_step"] > 0:
                step = data["current_step"]
                assert (data["message"], data["progress"]) == (f"Step {step}/10", step * 10)
        final = events[-1][1]
        assert {k: final[k] for k in ("job_id", "job_type", "status", "progress", "message")} == {
            "job_id": job["id"],
            "job_type": "generation",
            "status": "completed",
            "progress": 100,
            "message": "Generation complete",
        }
        assert final["error"] is None and final["output_paths"] == [f"{job['id']}-0.png"]

        # A job that is already final: just its complete event.
        assert [name for name, _ in await sse_events(served, job["id"])] == ["complete"]


async def test_stream_ends_with_complete_for_cancelled_and_failed_jobs(tmp_path: Path) -> None:
    async with atelier_http(tmp_path, local_step_ms=50) as served:
        job = await start(served, steps=100)
        seen: list[tuple[str, dict[str, Any]]] = []
        cancelled = False
        async with served.http.stream("GET", f"/isengard/api/generation/{job['id']}/stream") as response:
            name = None
            async for line in response.aiter_lines():
                if line.startswith("event: "):
                    name = line.removeprefix("event: ")
                elif line.startswith("data: "):
                    data = json.loads(line.removeprefix("data: "))
                    seen.append((name or "", data))
                    if data["status"] == "running" and data["current_step"] >= 2 and not cancelled:
                        cancel = await served.http.post(f"/isengard/api/generation/{job['id']}/cancel")
                        assert cancel.status_code == 200
                        cancelled = True
        name, final = seen[-1]
        assert (name, final["status"], final["message"]) == ("complete", "cancelled", "Generation cancelled")
        assert final["progress"] < 100 and final["error"] is None

        # A run that fails (its per-attempt time limit, set over the engine): complete, status failed.
        failing = await served.engine.submit_image(
            {"prompt": "too slow", "width": 64, "height": 64, "steps": 100}, timeout_s=0.2, max_attempts=1
        )
        events = await sse_events(served, f"gen-{failing.id}")
        name, final = events[-1]
        assert (name, final["status"]) == ("complete", "failed")
        assert "timed out" in final["error"] and final["message"] == f"Generation failed: {final['error']}"
        job = (await served.http.get(f"/isengard/api/generation/gen-{failing.id}")).json()
        assert job["status"] == "failed" and "timed out" in job["error_message"]


async def test_toggles_are_refused_naming_the_toggle(tmp_path: Path) -> None:
    async with atelier_http(tmp_path) as served:
        for toggle in ("use_controlnet", "use_ipadapter", "use_facedetailer", "use_upscale"):
            response = await served.http.post("/isengard/api/generation", json=request(**{toggle: True}))
            assert response.status_code == 400, toggle
            detail = response.json()["detail"]
            assert detail.startswith(f"{toggle} is not supported: ") and len(detail) > 40
        both = await served.http.post(
            "/isengard/api/generation", json=request(use_controlnet=True, use_upscale=True)
        )
        assert both.status_code == 400
        assert "use_controlnet" in both.json()["detail"] and "use_upscale" in both.json()["detail"]
        assert (await served.http.get("/isengard/api/generation")).json() == []


@pytest.mark.parametrize(
    ("body", "mentions"),
    [
        (b'{"config": {"prompt": "unterminated', "not valid JSON"),
        (b"[1, 2]", "dictionary"),
        (b"{}", "config"),
        (b'{"config": {"width": 512}}', "config.prompt"),
        (b'{"config": {"prompt": ""}}', "config.prompt"),
        (b'{"config": {"prompt": "x", "width": 100}}', "config.width"),
        (b'{"config": {"prompt": "x", "height": 8192}}', "config.height"),
        (b'{"config": {"prompt": "x", "steps": 0}}', "config.steps"),
        (b'{"config": {"prompt": "x", "guidance_scale": 31}}', "config.guidance_scale"),
        (b'{"config": {"prompt": "x", "seed": -1}}', "config.seed"),
        (b'{"config": {"prompt": "x", "seed": "twelve"}}', "config.seed"),
        (b'{"config": {"prompt": "x", "use_upscale": "maybe"}}', "config.use_upscale"),
        (b'{"config": {"prompt": "x", "colour": "red"}}', "config.colour"),
        (b'{"config": {"prompt": "x"}, "count": 17}', "count"),
        (b'{"config": {"prompt": "x"}, "count": 0}', "count"),
    ],
)
async def test_bad_generation_requests_are_400_with_a_detail(
    tmp_path: Path, body: bytes, mentions: str
) -> None:
    async with atelier_http(tmp_path) as served:
        response = await served.http.post(
            "/isengard/api/generation", content=body, headers={"Content-Type": "application/json"}
        )
        assert response.status_code == 400, response.text
        detail = response.json()["detail"]
        assert isinstance(detail, str) and mentions in detail
        assert (await served.http.get("/isengard/api/generation")).json() == []


async def test_oversized_body_is_413_and_unknown_routes_are_404_in_the_envelope(tmp_path: Path) -> None:
    async with atelier_http(tmp_path, max_input_bytes=10_000) as served:
        huge = request(prompt="x" * (served.settings.max_request_bytes + 10))
        response = await served.http.post(
            "/isengard/api/generation", json=huge, headers={"X-Correlation-ID": "big-one"}
        )
        assert response.status_code == 413 and "larger than" in response.json()["detail"]
        assert response.headers["x-correlation-id"] == "big-one"

        async def chunks():  # no Content-Length: the cap still holds
            for _ in range(40):
                yield b"x" * 50_000

        streamed = await served.http.post("/isengard/api/client-logs", content=chunks())
        assert streamed.status_code == 413 and "detail" in streamed.json()

        nowhere = await served.http.get("/isengard/nowhere")
        assert nowhere.status_code == 404
        assert nowhere.json() == {"detail": "no such endpoint: GET /isengard/nowhere"}
        assert nowhere.headers["x-correlation-id"]
        wrong_method = await served.http.delete("/isengard/api/generation")
        assert wrong_method.status_code == 405 and "detail" in wrong_method.json()


# --- rate limits, characters, training -------------------------------------------------------


async def test_the_21st_generation_within_a_minute_is_429_with_retry_after(tmp_path: Path) -> None:
    async with atelier_http(tmp_path) as served:
        for _ in range(20):
            await start(served, steps=1)
        response = await served.http.post("/isengard/api/generation", json=request(steps=1))
        assert response.status_code == 429
        detail = response.json()["detail"]
        match = re.fullmatch(r"Rate limit exceeded\. Try again in (\d+) seconds\.", detail)
        assert match, detail
        assert response.headers["retry-after"] == match.group(1) and 1 <= int(match.group(1)) <= 60
        assert len((await served.http.get("/isengard/api/generation?limit=50")).json()) == 20
        # Other endpoints are not limited by it.
        assert (await served.http.get("/isengard/health")).status_code == 200

        # Training and uploads keep their own limits (5/min, 30/min), counted for invalid requests too.
        statuses = [(await served.http.post("/isengard/api/training", json={})).status_code for _ in range(6)]
        assert statuses == [400] * 5 + [429]
        uploads = [
            (await served.http.post("/isengard/api/characters/char-1/images")).status_code for _ in range(31)
        ]
        assert uploads == [404] * 30 + [429]


# --- logs and correlation ids ---------------------------------------------------------------


async def test_job_logs_are_jsonl(tmp_path: Path) -> None:
    async with atelier_http(tmp_path) as served:
        job = await start(served)
        await served.finished(run_id(job))
        response = await served.http.get(f"/isengard/api/jobs/{job['id']}/logs")
        assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
        lines = [json.loads(line) for line in response.text.splitlines()]
        assert len(lines) >= 3
        for line in lines:
            assert set(line) == {"timestamp", "level", "message", "job_id"}
            assert STAMP.match(line["timestamp"]) and line["job_id"] == job["id"]
            assert line["level"] in ("INFO", "WARNING", "ERROR")
        messages = [line["message"] for line in lines]
        assert messages[0].startswith("queued") and "started" in messages
        assert messages[-1] == "completed with 1 image(s)"

        for missing in (UNKNOWN, "train-abc123", "gen-../../x", run_id(job)):
            response = await served.http.get(f"/isengard/api/jobs/{missing}/logs")
            assert response.status_code == 404, missing
            assert response.json() == {"detail": "Job logs not found"}


async def test_client_logs_reach_the_server_log_with_the_correlation_id(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="atelier.client")
    async with atelier_http(tmp_path) as served:
        response = await served.http.post(
            "/isengard/api/client-logs", json=CLIENT_LOGS, headers={"X-Correlation-ID": "ui-4711"}
        )
        assert response.status_code == 204 and response.content == b""
        assert response.headers["x-correlation-id"] == "ui-4711"
        [record] = [r for r in caplog.records if r.name == "atelier.client"]
        assert record.levelno == logging.ERROR
        assert "Button click failed" in record.getMessage() and "ui-4711" in record.getMessage()
        assert "ui.error" in record.getMessage()
        assert record.correlation_id == "ui-4711"  # type: ignore[attr-defined]
        assert record.client_context == {"page": "/characters", "button": "create"}  # type: ignore[attr-defined]

        caplog.clear()
        levels = {
            "debug": logging.DEBUG,
            "Info": logging.INFO,
            "WARN": logging.WARNING,
            "warning": logging.WARNING,
        }
        entries = [{"timestamp": "t", "level": level, "message": f"line\nforged {level}"} for level in levels]
        assert (
            await served.http.post("/isengard/api/client-logs", json={"entries": entries})
        ).status_code == 204
        records = [r for r in caplog.records if r.name == "atelier.client"]
        assert [r.levelno for r in records] == list(levels.values())
        assert all("\n" not in r.getMessage() for r in records)

        too_many = {"entries": [CLIENT_LOGS["entries"][0]] * 101}
        too_long = {"entries": [{**CLIENT_LOGS["entries"][0], "message": "x" * 2001}]}
        no_level = {"entries": [{"timestamp": "t", "level": "LOUD", "message": "x"}]}
        no_message = {"entries": [{"timestamp": "t", "level": "INFO"}]}
        for body, mentions in (
            (too_many, "entries"),
            (too_long, "message"),
            (no_level, "level"),
            (no_message, "message"),
            ({}, "entries"),
        ):
            response = await served.http.post("/isengard/api/client-logs", json=body)
            assert response.status_code == 400, body
            assert mentions in response.json()["detail"]
        exactly = {"entries": [{**CLIENT_LOGS["entries"][0], "message": "x" * 2000}] * 100}
        assert (await served.http.post("/isengard/api/client-logs", json=exactly)).status_code == 204


async def test_correlation_ids_are_echoed_generated_and_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="atelier.isengard")
    async with atelier_http(tmp_path) as served:
        given = await served.http.get("/isengard/api/generation", headers={"X-Correlation-ID": "req-42"})
        assert given.headers["x-correlation-id"] == "req-42"

        generated = await served.http.get("/isengard/health")
        first = generated.headers["x-correlation-id"]
        assert re.fullmatch(r"[0-9a-f]{32}", first)
        assert (await served.http.get("/isengard/health")).headers["x-correlation-id"] != first

        for bad in ("has space", "x" * 129, "tab\there"):
            response = await served.http.get("/isengard/health", headers={"X-Correlation-ID": bad})
            assert re.fullmatch(r"[0-9a-f]{32}", response.headers["x-correlation-id"]), bad
        longest = "y" * 128
        assert (await served.http.get("/isengard/health", headers={"X-Correlation-ID": longest})).headers[
            "x-correlation-id"
        ] == longest

        for method, path, body in (
            ("GET", f"/isengard/api/generation/{UNKNOWN}", None),
            ("POST", "/isengard/api/generation", {"config": {}}),
            ("GET", "/isengard/missing", None),
            ("GET", "/isengard/api/characters/char-000000000000", None),
        ):
            response = await served.http.request(
                method, path, json=body, headers={"X-Correlation-ID": "err-1"}
            )
            assert response.status_code >= 400 and response.headers["x-correlation-id"] == "err-1", path

        job = await start(served)
        await served.http.post(
            "/isengard/api/generation", json=request(), headers={"X-Correlation-ID": "post-7"}
        )
        lines = {r.getMessage(): r for r in caplog.records if r.name == "atelier.isengard"}
        line = "GET /isengard/api/generation -> 200 (correlation id req-42)"
        assert line in lines and lines[line].correlation_id == "req-42"  # type: ignore[attr-defined]
        assert "POST /isengard/api/generation -> 201 (correlation id post-7)" in lines
        assert "GET /isengard/missing -> 404 (correlation id err-1)" in lines
        assert JOB_ID.match(job["id"])


# --- cross-door and OpenAPI -----------------------------------------------------------------


async def test_runs_from_other_doors_are_listed_as_jobs(tmp_path: Path) -> None:
    async with atelier_http(tmp_path) as served:
        engine_run = await served.engine.submit_image(
            {"prompt": "harbour at dawn", "width": 64, "height": 80, "steps": 3, "cfg": 6.5, "seed": 7}
        )
        adgen = await served.http.post(
            "/adgen/generate", json={"prompt": "a red bicycle", "width": 64, "height": 64, "steps": 2}
        )
        batch = await served.engine.submit_batch(
            [
                {"prompt": "one", "width": 64, "height": 64, "steps": 1},
                {"prompt": "two", "width": 64, "height": 64},
            ]
        )
        for made in (engine_run.id, adgen.json()["run_id"], batch.id):
            await served.finished(made)

        listed = {job["id"]: job for job in (await served.http.get("/isengard/api/generation")).json()}
        assert list(listed) == [f"gen-{batch.id}", f"gen-{adgen.json()['run_id']}", f"gen-{engine_run.id}"]
        mine = listed[f"gen-{engine_run.id}"]
        assert mine["status"] == "completed" and mine["progress"] == 100
        assert mine["config"] == {
            "prompt": "harbour at dawn",
            "negative_prompt": "",
            "width": 64,
            "height": 80,
            "steps": 3,
            "guidance_scale": 6.5,
            "seed": 7,
            "lora_id": None,
            "lora_strength": 1.0,
            "use_controlnet": False,
            "use_ipadapter": False,
            "use_facedetailer": False,
            "use_upscale": False,
        }
        image = await served.http.get(f"/isengard/api/generation/output/{mine['output_paths'][0]}")
        assert Image.open(io.BytesIO(image.content)).size == (64, 80)
        assert listed[f"gen-{adgen.json()['run_id']}"]["config"]["prompt"] == "a red bicycle"

        grouped = listed[f"gen-{batch.id}"]
        assert grouped["status"] == "completed" and grouped["config"]["prompt"] == "one"
        assert len(grouped["output_paths"]) == 2
        for name in grouped["output_paths"]:
            assert (await served.http.get(f"/isengard/api/generation/output/{name}")).status_code == 200
        logs = await served.http.get(f"/isengard/api/jobs/gen-{batch.id}/logs")
        assert any(json.loads(line)["message"].startswith("item gen-") for line in logs.text.splitlines())


async def test_openapi_lists_every_documented_endpoint(tmp_path: Path) -> None:
    async with atelier_http(tmp_path) as served:
        document = (await served.http.get("/isengard/openapi.json")).json()
        assert document["openapi"].startswith("3.")
        operations = {(method.upper(), path) for path, item in document["paths"].items() for method in item}
        assert operations >= {
            ("GET", "/health"),
            ("GET", "/api/health"),
            ("GET", "/ready"),
            ("GET", "/info"),
            ("GET", "/api/characters"),
            ("POST", "/api/characters"),
            ("GET", "/api/characters/{id}"),
            ("PATCH", "/api/characters/{id}"),
            ("DELETE", "/api/characters/{id}"),
            ("POST", "/api/characters/{id}/images"),
            ("GET", "/api/characters/{id}/images"),
            ("GET", "/api/characters/{id}/images/{filename}"),
            ("DELETE", "/api/characters/{id}/images/{filename}"),
            ("GET", "/api/training"),
            ("POST", "/api/training"),
            ("GET", "/api/training/{id}"),
            ("GET", "/api/training/{id}/stream"),
            ("POST", "/api/training/{id}/cancel"),
            ("GET", "/api/generation"),
            ("POST", "/api/generation"),
            ("GET", "/api/generation/{id}"),
            ("GET", "/api/generation/{id}/stream"),
            ("POST", "/api/generation/{id}/cancel"),
            ("GET", "/api/generation/output/{filename}"),
            ("GET", "/api/jobs/{id}/logs"),
            ("POST", "/api/client-logs"),
        }
        assert not any(
            "501" in op["responses"] for item in document["paths"].values() for op in item.values()
        )
        upload = document["paths"]["/api/characters/{id}/images"]["post"]
        assert "multipart/form-data" in upload["requestBody"]["content"]
        assert "429" in document["paths"]["/api/generation"]["post"]["responses"]
        docs = await served.http.get("/isengard/docs")
        assert docs.status_code == 200 and "text/html" in docs.headers["content-type"]


async def test_root_contract_serves_isengard_at_the_root(tmp_path: Path) -> None:
    async with atelier_http(tmp_path, root_contract="isengard") as served:
        for path in ("/health", "/api/health"):
            response = await served.http.get(path, headers={"X-Correlation-ID": "root-1"})
            assert (
                response.json() == {"status": "healthy"} and response.headers["x-correlation-id"] == "root-1"
            )
        response = await served.http.post("/api/generation", json=request())
        assert response.status_code == 201
        job = response.json()
        assert (await served.http.get(f"/isengard/api/generation/{job['id']}")).json()["id"] == job["id"]
        statuses = [(await served.http.post("/api/training", json={})).status_code for _ in range(6)]
        assert statuses == [400] * 5 + [429]
