"""Generate an image through a running `atelier serve` (make run) and save the full-size PNG.

.venv/bin/python examples/generate_over_http.py "a lighthouse at dusk" --seed 1 --out lighthouse.png
"""

from __future__ import annotations

import argparse
import base64
from pathlib import Path

import anyio
from mcp import Client


async def main(url: str, prompt: str, seed: int | None, out: Path) -> None:
    async with Client(url) as client:

        async def show(progress: float, total: float | None, message: str | None) -> None:
            print(f"\r{progress:5.1f}/{total or 100:.0f} {message or ''}", end="", flush=True)

        arguments = {"prompt": prompt, "seed": seed, "wait_seconds": 0}
        result = await client.call_tool(
            "generate_image", {k: v for k, v in arguments.items() if v is not None}
        )
        run = result.structured_content
        # A run outlives any one call: keep waiting until it is finished.
        while run["status"] in ("queued", "running"):
            result = await client.call_tool(
                "wait_for_run", {"run_id": run["run_id"], "timeout_seconds": 30}, progress_callback=show
            )
            run = result.structured_content
        print(f"\nrun {run['run_id']}: {run['status']} (seed {run['inputs']['seed']})")
        if run["status"] == "completed":
            image = (await client.read_resource(run["images"][0]["uri"])).contents[0]
            out.write_bytes(base64.b64decode(image.blob))
            print(f"saved {out}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("prompt")
    parser.add_argument("--seed", type=int)
    parser.add_argument("--url", default="http://127.0.0.1:8000/mcp")
    parser.add_argument("--out", type=Path, default=Path("atelier.png"))
    options = parser.parse_args()
    anyio.run(main, options.url, options.prompt, options.seed, options.out)
