"""Uploading a character's training images over HTTP: 50 photos of 1024 px in one multipart
request to Isengard's upload route of a real `atelier serve` (a benchmark, not a test).

Measures, on a fresh data directory:
  atelier    wall time of `POST /isengard/api/characters/{id}/images` with all the files, and the
             server's peak memory growth during it (VmHWM minus VmRSS before);
  reference  the same request to a bare Starlette app under uvicorn that parses the same
             multipart body and hashes each file (sha256): the floor of any upload route
             (HTTP, multipart parsing, spooling), measured the same way in the same run.
It prints both and their ratios. The images are `bench/character_upload.py`'s (PNG and JPEG,
with camera EXIF and orientation tags, as phones send them).

  python bench/character_upload_http.py [--images 50] [--side 1024]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.character_upload import make_training_images
from bench.upscale_memory import status
from tests.procs import free_port, serve

MIB = 1024 * 1024

BARE_APP = """
import hashlib
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route

async def upload(request):
    form = await request.form(max_files=10_000)
    digests = []
    for part in form.getlist("files"):
        digest = hashlib.sha256()
        while chunk := await part.read(1 << 20):
            digest.update(chunk)
        digests.append(digest.hexdigest())
    await form.close()
    return JSONResponse({"uploaded": len(digests)}, status_code=201)

app = Starlette(routes=[Route("/upload", upload, methods=["POST"])])
"""


def post(url: str, paths: list[Path]) -> tuple[float, httpx.Response]:
    files = [("files", (path.name, path.read_bytes(), "application/octet-stream")) for path in paths]
    started = time.perf_counter()
    answer = httpx.post(url, files=files, timeout=600)
    return time.perf_counter() - started, answer


def measured(pid: int, url: str, paths: list[Path]) -> tuple[float, int]:
    before = status(pid)["VmRSS"]
    took, answer = post(url, paths)
    assert answer.status_code == 201, answer.text[:500]
    return took, status(pid)["VmHWM"] - before


def bare_server(folder: Path) -> tuple[subprocess.Popen[bytes], str]:
    (folder / "bare_upload.py").write_text(BARE_APP)
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "bare_upload:app", "--port", str(port), "--log-level", "warning"],
        cwd=folder,
    )
    url = f"http://127.0.0.1:{port}"
    for _ in range(200):
        try:
            httpx.get(url, timeout=1)
            break
        except httpx.TransportError:
            time.sleep(0.05)
    return process, url


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=50)
    parser.add_argument("--side", type=int, default=1024)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        paths = make_training_images(folder / "photos", args.images, args.side)
        total = sum(path.stat().st_size for path in paths)
        print(f"{len(paths)} images of {args.side} px, {total / MIB:.1f} MiB in one multipart request")

        process, url = bare_server(folder)
        try:
            ref_time, ref_memory = measured(process.pid, f"{url}/upload", paths)
        finally:
            process.terminate()
            process.wait(10)

        with serve(folder / "home") as server:
            made = httpx.post(f"{server.url}/isengard/api/characters", json={"name": "Bench"}, timeout=30)
            character = made.json()["id"]
            took, memory = measured(
                server.process.pid, f"{server.url}/isengard/api/characters/{character}/images", paths
            )
            kept = httpx.get(f"{server.url}/isengard/api/characters/{character}/images", timeout=30).json()
        print(
            f"reference (bare Starlette: parse + sha256): {ref_time:6.2f} s, peak +{ref_memory / MIB:5.1f} MiB"
        )
        print(
            f"atelier (check, strip, store, record):    {took:6.2f} s, peak +{memory / MIB:5.1f} MiB "
            f"({kept['count']} images kept, {took / len(paths) * 1000:.0f} ms/image)"
        )
        print(
            f"ratio atelier / reference: time {took / ref_time:.1f}x, peak memory {memory / max(ref_memory, 1):.1f}x"
        )


if __name__ == "__main__":
    main()
