"""Isengard's characters and LoRA training (../shared/contracts/isengard.md) at /isengard, over HTTP.

A real uvicorn server on loopback over a real engine (preview renderer, preview trainer): the
whole flow a client of the document walks (create a character, upload real PNG and JPEG files as
multipart, train, follow the SSE stream, generate with `lora_id`), bad uploads each refused with
its reason, and the answers around it (cancel, conflicts, 404s, the list filter, `/info`).
"""

from __future__ import annotations

import json
import re
import struct
import zlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.character_images import distance, mean_colour, photo
from tests.http_served import Served, atelier_http

pytestmark = pytest.mark.anyio

RED = (200, 60, 40)
STAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
CHARACTER_KEYS = {
    "id",
    "name",
    "description",
    "trigger_word",
    "created_at",
    "updated_at",
    "image_count",
    "lora_path",
    "lora_trained_at",
}
TRAINING_KEYS = {
    "id",
    "character_id",
    "status",
    "config",
    "progress",
    "current_step",
    "total_steps",
    "error_message",
    "created_at",
    "started_at",
    "completed_at",
    "output_path",
}
UNKNOWN_CHARACTER = "char-000000000000"
UNKNOWN_TRAINING = "train-" + "0" * 26
# The document's example training config (its `method` aside).
DOCUMENT_CONFIG = {
    "steps": 1000,
    "learning_rate": 0.0001,
    "batch_size": 1,
    "resolution": 1024,
    "lora_rank": 16,
    "optimizer": "adamw8bit",
    "scheduler": "cosine",
    "precision": "bf16",
}


async def create(served: Served, name: str = "Mara", **fields: Any) -> dict[str, Any]:
    response = await served.http.post("/isengard/api/characters", json={"name": name, **fields})
    assert response.status_code == 201, response.text
    return response.json()


async def upload(served: Served, character_id: str, files: list[tuple[str, bytes]], **extra: Any) -> Any:
    parts = [("files", (name, data, "application/octet-stream")) for name, data in files]
    return await served.http.post(f"/isengard/api/characters/{character_id}/images", files=parts, **extra)


async def train(served: Served, character_id: str, **config: Any) -> dict[str, Any]:
    body = {"character_id": character_id, "config": {"method": "lora", **config}}
    response = await served.http.post("/isengard/api/training", json=body)
    assert response.status_code == 201, response.text
    return response.json()


async def finished(served: Served, job: dict[str, Any]) -> dict[str, Any]:
    await served.finished(job["id"].split("-", 1)[1], within=60)
    return (await served.http.get(f"/isengard/api/training/{job['id']}")).json()


async def sse(served: Served, url: str) -> AsyncIterator[tuple[str, dict[str, Any]]]:
    """A job's stream as a client reads it, event by event, until the server closes it."""
    name = None
    async with served.http.stream("GET", url) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        async for line in response.aiter_lines():
            if line.startswith("event: "):
                name = line.removeprefix("event: ")
            elif line.startswith("data: "):
                yield name or "message", json.loads(line.removeprefix("data: "))


def png_claiming(width: int, height: int) -> bytes:
    """A small PNG file whose header says `width` x `height` (a decompression bomb's shape)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    rows = zlib.compress(b"\x00" * (width + 1) * 4)
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", rows) + chunk(b"IEND", b"")


# --- the whole flow ---------------------------------------------------------------------------


async def test_create_upload_train_stream_and_generate_by_character(tmp_path: Path) -> None:
    async with atelier_http(tmp_path, preview_train_step_ms=2) as served:
        mara = await create(served, "Mara", description="a red-haired explorer")
        assert set(mara) == CHARACTER_KEYS
        assert re.fullmatch(r"char-[0-9a-z]{12}", mara["id"])
        assert (mara["trigger_word"], mara["image_count"], mara["lora_path"], mara["lora_trained_at"]) == (
            "mara_person",
            0,
            None,
            None,
        )
        assert STAMP.match(mara["created_at"]) and STAMP.match(mara["updated_at"])

        files = [(f"mara-{i}.png", photo(i, tint=RED)) for i in range(3)]
        files += [(f"mara-{i}.jpg", photo(i, tint=RED, fmt="JPEG")) for i in range(3, 6)]
        response = await upload(served, mara["id"], files)
        assert response.status_code == 201, response.text
        assert response.json() == {
            "uploaded": [name for name, _ in files],
            "rejected": [],
            "total_images": 6,
        }
        listed = (await served.http.get(f"/isengard/api/characters/{mara['id']}/images")).json()
        assert listed == {"images": [name for name, _ in files], "count": 6}
        served_png = await served.http.get(f"/isengard/api/characters/{mara['id']}/images/mara-0.png")
        served_jpeg = await served.http.get(f"/isengard/api/characters/{mara['id']}/images/mara-3.jpg")
        assert served_png.status_code == 200 and served_png.headers["content-type"] == "image/png"
        assert served_jpeg.headers["content-type"] == "image/jpeg"
        assert served_jpeg.content.startswith(b"\xff\xd8\xff")
        assert distance(mean_colour(served_png.content), mean_colour(files[0][1])) < 2

        job = await train(served, mara["id"], steps=400, learning_rate=0.005, batch_size=4, resolution=512)
        assert set(job) == TRAINING_KEYS
        assert re.fullmatch(r"train-[0-9a-z]{26}", job["id"])
        assert (job["character_id"], job["status"], job["total_steps"]) == (mara["id"], job["status"], 400)
        assert job["status"] in ("queued", "running") and job["output_path"] is None
        assert job["config"]["method"] == "lora" and job["config"]["steps"] == 400
        # Every parameter used is echoed, the trainer's defaults filled in.
        assert {"learning_rate", "batch_size", "resolution", "lora_rank"} <= set(job["config"])

        events = [event async for event in sse(served, f"/isengard/api/training/{job['id']}/stream")]
        names = [name for name, _ in events]
        assert names[-1] == "complete" and names.count("complete") == 1
        assert set(names[:-1]) == {"progress"}
        stepping = [data for name, data in events if name == "progress" and data["current_step"] > 0]
        assert stepping, names
        for data in stepping:
            assert (data["job_id"], data["job_type"], data["status"]) == (job["id"], "training", "running")
            step = data["current_step"]
            assert data["total_steps"] == 400
            assert data["message"] == f"Step {step}/400"
            assert data["progress"] == step * 100 // 400
            assert isinstance(data["loss"], float) and data["loss"] >= 0
        steps = [data["current_step"] for data in stepping]
        assert steps == sorted(steps)
        final = events[-1][1]
        assert {k: final[k] for k in ("job_id", "job_type", "status", "progress", "message")} == {
            "job_id": job["id"],
            "job_type": "training",
            "status": "completed",
            "progress": 100,
            "message": "Training complete",
        }

        done = (await served.http.get(f"/isengard/api/training/{job['id']}")).json()
        assert (done["status"], done["progress"], done["current_step"], done["error_message"]) == (
            "completed",
            100,
            400,
            None,
        )
        assert STAMP.match(done["started_at"]) and STAMP.match(done["completed_at"])
        assert final["output_path"] == done["output_path"]
        lora = Path(done["output_path"])
        assert lora.is_file() and lora.suffix == ".safetensors"
        assert lora.is_relative_to(served.settings.home)
        trained = (await served.http.get(f"/isengard/api/characters/{mara['id']}")).json()
        assert trained["lora_path"] == done["output_path"] and STAMP.match(trained["lora_trained_at"])
        logs = await served.http.get(f"/isengard/api/jobs/{job['id']}/logs")
        assert logs.status_code == 200 and logs.headers["content-type"].startswith("text/plain")
        lines = [json.loads(line) for line in logs.text.splitlines()]
        assert lines and {line["job_id"] for line in lines} == {job["id"]}
        assert any("trained Mara LoRA v1" in line["message"] for line in lines)

        # The same seed with and without the character: with it, the colours move toward hers.
        asked = {
            "prompt": "a portrait on a beach at dawn",
            "seed": 7,
            "width": 256,
            "height": 256,
            "steps": 2,
        }
        images = {}
        for lora_id in (None, mara["id"]):
            body = {"config": {**asked, "lora_id": lora_id, "lora_strength": 1.0}}
            response = await served.http.post("/isengard/api/generation", json=body)
            assert response.status_code == 201, response.text
            made = response.json()
            assert made["config"]["lora_id"] == lora_id and made["config"]["prompt"] == asked["prompt"]
            await served.finished(made["id"].removeprefix("gen-"))
            made = (await served.http.get(f"/isengard/api/generation/{made['id']}")).json()
            assert made["status"] == "completed", made["error_message"]
            image = await served.http.get(f"/isengard/api/generation/output/{made['output_paths'][0]}")
            assert image.status_code == 200
            images[lora_id] = image.content
        training_mean = mean_colour(files[0][1])
        assert distance(mean_colour(images[mara["id"]]), training_mean) < 0.8 * distance(
            mean_colour(images[None]), training_mean
        )


# --- uploads ------------------------------------------------------------------------------------


async def test_bad_uploads_are_each_rejected_with_their_reason_and_nothing_of_them_is_stored(
    tmp_path: Path,
) -> None:
    async with atelier_http(tmp_path, max_input_bytes=200_000) as served:
        mara = await create(served)
        good = photo(1, tint=RED)
        files = [
            ("good.png", good),
            ("notes.png", b"Dear diary, today I renamed a text file to .png.\n" * 20),
            ("cut.png", photo(2, tint=RED)[:30_000]),
            ("bomb.png", png_claiming(20_000, 20_000)),
            ("tiny.png", photo(3, size=200)),
            ("huge.png", photo(4, size=1024)),
            ("again.png", good),
            ("logo.svg", b'<svg xmlns="http://www.w3.org/2000/svg" width="300" height="300"><rect/></svg>'),
            ("../x.png", photo(5, tint=RED)),
            ("also-good.jpg", photo(6, tint=RED, fmt="JPEG")),
        ]
        assert len(files[5][1]) > 200_000  # over ATELIER_MAX_INPUT_BYTES
        response = await upload(served, mara["id"], files)
        assert response.status_code == 201, response.text
        body = response.json()
        assert body["uploaded"] == ["good.png", "also-good.jpg"] and body["total_images"] == 2
        reasons = {item["filename"]: item["reason"] for item in body["rejected"]}
        assert len(body["rejected"]) == 8
        assert "text, not an image" in reasons["notes.png"]
        assert "truncated or corrupt" in reasons["cut.png"]
        assert "pixels" in reasons["bomb.png"] and "scale it down" in reasons["bomb.png"]
        assert "at least 256 pixels" in reasons["tiny.png"]
        assert "the limit is 200,000 bytes" in reasons["huge.png"]
        assert "duplicate" in reasons["again.png"]
        assert "SVG is not accepted" in reasons["logo.svg"]
        assert "directories" in reasons["../x.png"]

        listed = (await served.http.get(f"/isengard/api/characters/{mara['id']}/images")).json()
        assert listed == {"images": ["good.png", "also-good.jpg"], "count": 2}
        stored = list((served.settings.characters_dir / mara["id"] / "images").iterdir())
        assert len(stored) == 2
        assert not (served.settings.characters_dir / "x.png").exists()
        assert (await served.http.get(f"/isengard/api/characters/{mara['id']}")).json()["image_count"] == 2

        # The same file again, in a later upload: a duplicate of what is stored.
        again = (await upload(served, mara["id"], [("copy.png", good)])).json()
        assert again["uploaded"] == [] and "already stored as good.png" in again["rejected"][0]["reason"]
        assert (await served.http.get("/isengard/health")).json() == {"status": "healthy"}


async def test_an_upload_needs_files_and_its_captions_match_them(tmp_path: Path) -> None:
    async with atelier_http(tmp_path) as served:
        mara = await create(served)
        url = f"/isengard/api/characters/{mara['id']}/images"
        empty = await served.http.post(url, data={"note": "no files here"})
        assert empty.status_code == 400 and "No files" in empty.json()["detail"]
        as_json = await served.http.post(url, json={"files": []})
        assert as_json.status_code == 400
        malformed = await served.http.post(
            url, content=b"--x\r\nnot a part", headers={"Content-Type": "multipart/form-data"}
        )
        assert malformed.status_code == 400 and "multipart" in malformed.json()["detail"]
        text_part = await upload(served, mara["id"], [("a.png", photo(1))], data={"files": "not a file"})
        assert text_part.status_code == 201
        assert text_part.json()["uploaded"] == ["a.png"]
        assert "not a file" in text_part.json()["rejected"][0]["reason"]
        await served.http.delete(f"{url}/a.png")
        mismatch = await upload(
            served, mara["id"], [("a.png", photo(1)), ("b.png", photo(2))], data={"captions": "one"}
        )
        assert mismatch.status_code == 400 and "captions" in mismatch.json()["detail"]
        captioned = await upload(
            served,
            mara["id"],
            [("a.png", photo(1)), ("b.png", photo(2))],
            data={"captions": ["on a hill", "smiling"]},
        )
        assert captioned.status_code == 201 and captioned.json()["uploaded"] == ["a.png", "b.png"]
        character = await served.engine.characters.get(mara["id"])
        assert [image.caption for image in character.images] == ["on a hill", "smiling"]


async def test_an_upload_over_the_upload_cap_is_413_without_being_read_whole(tmp_path: Path) -> None:
    async with atelier_http(tmp_path, max_upload_bytes=1_000_000) as served:
        mara = await create(served)
        # A declared length over the cap: refused before the body is read.
        declared = await upload(served, mara["id"], [("big.png", b"\x89PNG" + b"\0" * 1_200_000)])
        assert declared.status_code == 413
        assert "ATELIER_MAX_UPLOAD_BYTES" in declared.json()["detail"]
        assert declared.headers["x-correlation-id"]

        async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: counted as it streams
            boundary = b"--cut\r\n"
            yield boundary + b'Content-Disposition: form-data; name="files"; filename="a.png"\r\n\r\n'
            for _ in range(30):
                yield b"\0" * 50_000

        streamed = await served.http.post(
            f"/isengard/api/characters/{mara['id']}/images",
            content=chunks(),
            headers={"Content-Type": "multipart/form-data; boundary=cut"},
        )
        assert streamed.status_code == 413 and "ATELIER_MAX_UPLOAD_BYTES" in streamed.json()["detail"]
        assert (await served.http.get(f"/isengard/api/characters/{mara['id']}/images")).json()["count"] == 0

        # Under the cap (and over the JSON cap's share of it), an upload is taken.
        fine = await upload(served, mara["id"], [(f"m{i}.png", photo(i, tint=RED)) for i in range(5)])
        assert fine.status_code == 201 and len(fine.json()["uploaded"]) == 5


# --- characters ---------------------------------------------------------------------------------


async def test_characters_are_listed_changed_and_deleted_and_unknown_ones_are_404(tmp_path: Path) -> None:
    async with atelier_http(tmp_path) as served:
        john = await create(
            served, "John Smith", description="Test character", trigger_word="johnsmith_person"
        )
        mara = await create(served, "Mara")
        assert john["description"] == "Test character" and mara["description"] is None
        listed = (await served.http.get("/isengard/api/characters")).json()
        assert [c["id"] for c in listed] == [john["id"], mara["id"]]
        assert all(set(c) == CHARACTER_KEYS for c in listed)

        taken = await served.http.post("/isengard/api/characters", json={"name": "john smith"})
        assert taken.status_code == 409 and "already exists" in taken.json()["detail"]
        bad_word = await served.http.post(
            "/isengard/api/characters", json={"name": "X", "trigger_word": "Not OK"}
        )
        assert bad_word.status_code == 400 and "trigger_word" in bad_word.json()["detail"]

        patched = await served.http.patch(
            f"/isengard/api/characters/{john['id']}",
            json={"name": "Updated Name", "description": "Updated description"},
        )
        assert patched.status_code == 200
        changed = patched.json()
        assert (changed["name"], changed["description"], changed["trigger_word"]) == (
            "Updated Name",
            "Updated description",
            "johnsmith_person",
        )
        assert changed["updated_at"] >= john["updated_at"]
        assert (
            await served.http.patch(f"/isengard/api/characters/{john['id']}", json={"colour": "red"})
        ).status_code == 400

        await upload(served, mara["id"], [("a.png", photo(1))])
        gone = await served.http.delete(f"/isengard/api/characters/{mara['id']}/images/a.png")
        assert gone.status_code == 204
        assert (await served.http.get(f"/isengard/api/characters/{mara['id']}/images")).json() == {
            "images": [],
            "count": 0,
        }

        deleted = await served.http.delete(f"/isengard/api/characters/{john['id']}")
        assert deleted.status_code == 204 and deleted.content == b""
        for method, path in [
            ("GET", f"/api/characters/{john['id']}"),
            ("PATCH", f"/api/characters/{john['id']}"),
            ("DELETE", f"/api/characters/{john['id']}"),
            ("GET", f"/api/characters/{UNKNOWN_CHARACTER}/images"),
            ("GET", f"/api/characters/{UNKNOWN_CHARACTER}/images/a.png"),
            ("DELETE", f"/api/characters/{UNKNOWN_CHARACTER}/images/a.png"),
            ("POST", f"/api/characters/{UNKNOWN_CHARACTER}/images"),
            ("GET", "/api/characters/Mara"),  # a name is not an id here
            ("GET", "/api/characters/char-ABC"),
        ]:
            response = await served.http.request(
                method, f"/isengard{path}", json={} if method == "PATCH" else None
            )
            assert response.status_code == 404, (method, path, response.text)
            assert re.fullmatch(r"Character \S+ not found", response.json()["detail"]), response.text
        for method in ("GET", "DELETE"):
            missing = await served.http.request(
                method, f"/isengard/api/characters/{mara['id']}/images/nope.png"
            )
            assert missing.status_code == 404 and missing.json() == {"detail": "Image nope.png not found"}


# --- training -------------------------------------------------------------------------------------


async def test_training_refusals_cancel_and_conflicts(tmp_path: Path) -> None:
    async with atelier_http(tmp_path, preview_train_step_ms=5) as served:
        mara = await create(served)
        no_images = await served.http.post("/isengard/api/training", json={"character_id": mara["id"]})
        assert no_images.status_code == 400
        assert no_images.json()["detail"].startswith("No training images uploaded for this character")
        unknown = await served.http.post("/isengard/api/training", json={"character_id": UNKNOWN_CHARACTER})
        assert unknown.status_code == 404 and unknown.json() == {
            "detail": f"Character {UNKNOWN_CHARACTER} not found"
        }
        await upload(served, mara["id"], [(f"m{i}.png", photo(i, tint=RED)) for i in range(3)])
        long = await train(served, mara["id"], steps=20_000)  # POSTs to /api/training: at most 5 a minute
        again = await served.http.post("/isengard/api/training", json={"character_id": mara["id"]})
        assert again.status_code == 409 and long["id"] in again.json()["detail"]
        busy = await served.http.delete(f"/isengard/api/characters/{mara['id']}")
        assert busy.status_code == 409
        assert (
            "cancel" in busy.json()["detail"]
            and f"/api/training/{long['id']}/cancel" in busy.json()["detail"]
        )
        assert (await served.http.get(f"/isengard/api/characters/{mara['id']}")).status_code == 200

        cancelled = await served.http.post(f"/isengard/api/training/{long['id']}/cancel")
        assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
        twice = await served.http.post(f"/isengard/api/training/{long['id']}/cancel")
        assert twice.status_code == 400 and twice.json() == {"detail": "Cannot cancel job in cancelled state"}
        events = [event async for event in sse(served, f"/isengard/api/training/{long['id']}/stream")]
        assert [name for name, _ in events] == ["complete"]
        assert (events[0][1]["status"], events[0][1]["message"]) == ("cancelled", "Training cancelled")

        short = await train(served, mara["id"], steps=10)
        done = await finished(served, short)
        assert done["status"] == "completed"
        completed = await served.http.post(f"/isengard/api/training/{short['id']}/cancel")
        assert completed.status_code == 400 and completed.json() == {
            "detail": "Cannot cancel job in completed state"
        }

        for path in (
            f"/api/training/{UNKNOWN_TRAINING}",
            f"/api/training/{UNKNOWN_TRAINING}/stream",
            "/api/training/gen-x",
        ):
            assert (await served.http.get(f"/isengard{path}")).status_code == 404
        assert (
            await served.http.post(f"/isengard/api/training/{UNKNOWN_TRAINING}/cancel")
        ).status_code == 404
        assert (await served.http.get(f"/isengard/api/jobs/{UNKNOWN_TRAINING}/logs")).json() == {
            "detail": "Job logs not found"
        }

        deleted = await served.http.delete(f"/isengard/api/characters/{mara['id']}")
        assert deleted.status_code == 204
        assert not (served.settings.characters_dir / mara["id"]).exists()
        # The finished job stays, its file gone with the character.
        assert (await served.http.get(f"/isengard/api/training/{short['id']}")).json()["output_path"] is None


async def test_training_list_filters_by_character(tmp_path: Path) -> None:
    async with atelier_http(tmp_path, preview_train_step_ms=0) as served:
        jobs: dict[str, list[dict[str, Any]]] = {}
        for name in ("Mara", "Ivo"):
            character = await create(served, name)
            images = [(f"{name}-{i}.png", photo(i + len(name))) for i in range(2)]
            await upload(served, character["id"], images)
            jobs[character["id"]] = [await finished(served, await train(served, character["id"], steps=10))]
        # The document's own example config is taken as it is, and echoed.
        job = await finished(served, await train(served, character["id"], **DOCUMENT_CONFIG))
        assert job["status"] == "completed" and job["config"] == {"method": "lora", **DOCUMENT_CONFIG}
        jobs[character["id"]].insert(0, job)  # newest first

        everything = (await served.http.get("/isengard/api/training")).json()
        assert sorted(job["id"] for job in everything) == sorted(j["id"] for js in jobs.values() for j in js)
        for character_id, expected in jobs.items():
            params = {"character_id": character_id}
            assert (await served.http.get("/isengard/api/training", params=params)).json() == expected
        params = {"character_id": UNKNOWN_CHARACTER}
        assert (await served.http.get("/isengard/api/training", params=params)).json() == []


async def test_generation_by_a_character_without_a_lora_is_400_naming_it(tmp_path: Path) -> None:
    async with atelier_http(tmp_path) as served:
        mara = await create(served)
        config = {"prompt": "Mara on a beach", "width": 64, "height": 64, "steps": 1}
        untrained = await served.http.post(
            "/isengard/api/generation", json={"config": {**config, "lora_id": mara["id"]}}
        )
        assert untrained.status_code == 400
        assert "Mara has no trained LoRA yet" in untrained.json()["detail"]
        unknown = await served.http.post(
            "/isengard/api/generation", json={"config": {**config, "lora_id": UNKNOWN_CHARACTER}}
        )
        assert unknown.status_code == 404 and unknown.json() == {
            "detail": f"Character {UNKNOWN_CHARACTER} not found"
        }
        too_strong = await served.http.post(
            "/isengard/api/generation", json={"config": {**config, "lora_id": mara["id"], "lora_strength": 3}}
        )
        assert too_strong.status_code == 400 and "lora_strength" in too_strong.json()["detail"]


async def test_info_shows_the_trainers_declared_parameters(tmp_path: Path) -> None:
    async with atelier_http(tmp_path) as served:
        training = (await served.http.get("/isengard/info")).json()["training"]
        declared = served.engine.training.parameters()
        assert (training["method"], training["backend"], training["base_model"]) == (
            "lora",
            "preview",
            declared["base_model"],
        )
        assert "not a diffusion LoRA" in training["reason"]
        assert set(training["parameters"]) == set(declared["parameters"])
        for name, spec in declared["parameters"].items():
            shown = training["parameters"][name]
            assert (shown["type"], shown["default"], shown["wired"], shown["description"]) == (
                spec["type"],
                spec["default"],
                spec["wired"],
                spec["description"],
            ), name
            assert (shown["min"], shown["max"]) == (spec.get("min"), spec.get("max")), name
            assert shown["options"] == spec.get("choices"), name
        # The preview trainer uses steps and learning rate; it has no LoRA rank to use.
        assert training["parameters"]["steps"]["wired"] is True
        assert training["parameters"]["lora_rank"]["wired"] is False
        # A config is checked against that declaration (before the character is looked up).
        bad = await served.http.post(
            "/isengard/api/training",
            json={
                "character_id": UNKNOWN_CHARACTER,
                "config": {"method": "dreambooth", "steps": 0, "learning_rate": "0.001", "colour": "red"},
            },
        )
        assert bad.status_code == 400
        # Each bad field named; a number sent as text is refused, not read.
        for field in ("method", "steps", "learning_rate", "colour"):
            assert f"config.{field}" in bad.json()["detail"]

        schema = (await served.http.get("/isengard/openapi.json")).json()["components"]["schemas"]
        assert (
            schema["TrainingConfig"]["properties"]["steps"]["anyOf"][0]["maximum"]
            == declared["parameters"]["steps"]["max"]
        )
