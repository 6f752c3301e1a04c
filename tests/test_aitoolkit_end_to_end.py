"""Training with ai-toolkit through a real `atelier serve`, with the fake ai-toolkit as its real
subprocess: progress over Isengard's SSE and MCP notifications, and `kill -9` of Atelier
mid-training -> the next start stops the orphaned trainer, resumes from the last checkpoint and
registers the LoRA exactly once."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import sys
from pathlib import Path

import anyio
import httpx
import pytest
from mcp import Client

from tests.character_images import photo
from tests.procs import serve

pytestmark = pytest.mark.anyio

FAKE = Path(__file__).parent / "fakes" / "aitoolkit.py"


def aitoolkit_env(tmp_path: Path, step_s: float) -> tuple[dict[str, str], Path]:
    folder = tmp_path / "ai-toolkit"
    folder.mkdir(exist_ok=True)
    shutil.copyfile(FAKE, folder / "run.py")
    record = tmp_path / "trainer-record.txt"
    env = {
        "ATELIER_TRAINER": "aitoolkit",
        "ATELIER_AITOOLKIT_DIR": str(folder),
        "ATELIER_AITOOLKIT_PYTHON": sys.executable,
        "ATELIER_AITOOLKIT_GRACE_S": "2",
        "FAKE_AITOOLKIT_STEP_S": str(step_s),
        "FAKE_AITOOLKIT_RECORD": str(record),
    }
    return env, record


async def character_with_images(http: httpx.AsyncClient) -> str:
    made = await http.post("/isengard/api/characters", json={"name": "Mara", "description": "explorer"})
    assert made.status_code == 201, made.text
    character_id = made.json()["id"]
    files = [("files", (f"mara-{i}.png", photo(i), "image/png")) for i in range(3)]
    uploaded = await http.post(f"/isengard/api/characters/{character_id}/images", files=files)
    assert uploaded.status_code == 201 and uploaded.json()["total_images"] == 3, uploaded.text
    return character_id


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (ProcessLookupError, FileNotFoundError):
        return False
    return stat[stat.rfind(")") + 2] != "Z"


def lora_versions(home: Path) -> list[tuple[str, int]]:
    conn = sqlite3.connect(home / "ledger.sqlite3")
    try:
        return conn.execute("SELECT character_id, version FROM lora_versions").fetchall()
    finally:
        conn.close()


async def test_progress_reaches_isengard_sse_with_step_and_loss(tmp_path: Path) -> None:
    env, _ = aitoolkit_env(tmp_path, step_s=0.02)
    with serve(tmp_path / "home", env=env) as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
            character_id = await character_with_images(http)
            job = await http.post(
                "/isengard/api/training",
                json={"character_id": character_id, "config": {"method": "lora", "steps": 40}},
            )
            assert job.status_code == 201, job.text
            job_id = job.json()["id"]
            events: list[tuple[str, dict]] = []
            async with http.stream("GET", f"/isengard/api/training/{job_id}/stream") as stream:
                name = ""
                async for line in stream.aiter_lines():
                    if line.startswith("event:"):
                        name = line.split(":", 1)[1].strip()
                    elif line.startswith("data:"):
                        events.append((name, json.loads(line.split(":", 1)[1])))
                        if name == "complete":
                            break
            progress = [data for kind, data in events if kind == "progress" and data.get("current_step")]
            assert len(progress) >= 3
            steps = [data["current_step"] for data in progress]
            assert steps == sorted(steps) and steps[-1] <= 40
            assert all(data["total_steps"] == 40 and data["job_type"] == "training" for data in progress)
            assert all(data["message"] == f"Step {data['current_step']}/40" for data in progress)
            assert any(isinstance(data.get("loss"), float) for data in progress), progress[-1]
            assert events[-1][0] == "complete" and events[-1][1]["status"] == "completed"
            character = (await http.get(f"/isengard/api/characters/{character_id}")).json()
            assert character["lora_path"] and character["lora_trained_at"]


async def test_progress_reaches_mcp_notifications_with_step_and_loss(tmp_path: Path) -> None:
    env, _ = aitoolkit_env(tmp_path, step_s=0.02)
    with serve(tmp_path / "home", env=env) as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
            character_id = await character_with_images(http)
        seen: list[tuple[float, float | None, str | None]] = []

        async def on_progress(progress: float, total: float | None, message: str | None) -> None:
            seen.append((progress, total, message))

        async with Client(f"{server.url}/mcp") as client:
            result = await client.call_tool(
                "train_character",
                {"character": character_id, "steps": 40, "wait_seconds": 60},
                progress_callback=on_progress,
            )
        assert not result.is_error, result.content
        assert len(seen) >= 3
        assert any(message and "loss" in message and "/40" in message for _, _, message in seen), seen[-3:]
        assert [p for p, _, _ in seen] == sorted(p for p, _, _ in seen)


async def test_kill_9_mid_training_resumes_from_the_last_checkpoint_and_completes_once(
    tmp_path: Path,
) -> None:
    home = tmp_path / "home"
    env, record = aitoolkit_env(tmp_path, step_s=0.05)
    with serve(home, env=env) as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
            character_id = await character_with_images(http)
            job = await http.post(
                "/isengard/api/training",
                json={
                    "character_id": character_id,
                    "config": {"method": "lora", "steps": 120, "save_every": 20},
                },
            )
            assert job.status_code == 201, job.text
            job_id = job.json()["id"]
            with anyio.fail_after(30):
                while (await http.get(f"/isengard/api/training/{job_id}")).json()["current_step"] < 50:
                    await anyio.sleep(0.1)
        server.kill_hard()
    [first_start] = record.read_text().split("\n")[:1]
    orphan = int(first_start.split()[2])
    assert first_start.startswith("start 0 ")

    with serve(home, env=env) as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
            with anyio.fail_after(60):
                while (done := (await http.get(f"/isengard/api/training/{job_id}")).json())["status"] not in (
                    "completed",
                    "failed",
                    "cancelled",
                ):
                    await anyio.sleep(0.2)
            assert done["status"] == "completed", done
            logs = (await http.get(f"/isengard/api/jobs/{job_id}/logs")).text
    assert not alive(orphan)  # the trainer a crashed Atelier left behind was stopped
    starts = [line.split() for line in record.read_text().splitlines() if line.startswith("start")]
    assert len(starts) == 2 and int(starts[1][1]) >= 40  # resumed from a checkpoint, not from step 0
    assert "resum" in logs.lower()
    assert lora_versions(home) == [(character_id, 1)]  # registered exactly once
