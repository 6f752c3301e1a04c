"""Time and peak memory of print-ready files and mockups at full print size (a benchmark, not a test).

One 1024x1024 design from the preview renderer is enlarged as the engine's upscale would
(Lanczos, to the scale `check_reachable` plans: x4.39 -> 4500x4500 for a tee front), then each
job runs in a fresh child process, which reports its wall time and its peak memory (VmHWM)
above what it held after its imports:
  reference   Pillow merely resizing the enlarged design to 4500x5400 and saving it as a PNG
              with its DPI (what any print file costs at least: one full-size image and its PNG);
  canvas      the obvious way: a 4500x5400 RGBA canvas, the design resized and pasted, saved;
  print file  `make_print_file` for the tee front (strip by strip);
  products    tshirt + hoodie: both print files and all eight mockups (1024 px);
  mockups     the eight mockups alone.
The preview's picture is smooth and compresses well; a detailed one (blurred noise, like a
photographic design) is measured too, for the reference and the print file: there PNG
compression dominates.
Wall time is the median of RUNS children, peak the largest; ratios are to the reference of
the same design.

  python bench/pod_print_files.py

Measured on the 2-core dev box (a noisy one: walls vary by ~30% between runs). Preview design:
reference 1.86 s / 173 MiB; canvas 2.04 s (1.10x) / 248 MiB (1.43x); print file 1.05 s (0.56x)
/ 107 MiB (0.62x); products (2 print files + 8 mockups) 3.67 s (1.97x) / 108 MiB (0.63x);
mockups 1.05 s / 31 MiB (0.18x). Detailed design: reference 22.1 s / 197 MiB, 25.4 MiB file;
print file 2.9 s (0.13x) / 165 MiB (0.83x), 32.3 MiB file.
"""

from __future__ import annotations

import io
import json
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

RUNS = 3
MIB = 1024 * 1024
JOBS = ("reference", "canvas", "print file", "products", "mockups")
DETAILED_JOBS = ("reference", "print file")


def vm(name: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key == name:
            return int(value.split()[0]) * 1024
    raise KeyError(name)


def child(job: str, folder: Path, enlarged_name: str) -> None:
    """Run `job` once in this process and print {"wall", "peak"} as JSON."""
    from PIL import Image

    from core.publishing.catalog import load_catalog
    from core.publishing.mockups import make_mockups
    from core.publishing.print_files import make_print_file

    catalog = load_catalog(None)
    tee, hoodie = catalog.get("tshirt"), catalog.get("hoodie")
    area = tee.print_areas["front"]
    enlarged = (folder / enlarged_name).read_bytes()
    design = (folder / "design.png").read_bytes()
    baseline = vm("VmRSS")
    started = time.perf_counter()
    sizes: list[int] = []
    if job == "reference":
        image = Image.open(io.BytesIO(enlarged))
        resized = image.resize((area.width, area.height), Image.Resampling.LANCZOS)
        buffer = io.BytesIO()
        resized.save(buffer, "PNG", dpi=(area.dpi, area.dpi))
        sizes.append(len(buffer.getvalue()))
    elif job == "canvas":
        image = Image.open(io.BytesIO(enlarged)).convert("RGBA")
        canvas = Image.new("RGBA", (area.width, area.height))
        side = min(area.width, area.height)
        canvas.paste(image.resize((side, side), Image.Resampling.LANCZOS), (0, (area.height - side) // 2))
        buffer = io.BytesIO()
        canvas.save(buffer, "PNG", dpi=(area.dpi, area.dpi))
        sizes.append(len(buffer.getvalue()))
    elif job == "print file":
        sizes.append(len(make_print_file(enlarged, area).data))
    elif job in ("products", "mockups"):
        for product in (tee, hoodie):
            if job == "products":
                sizes.append(len(make_print_file(enlarged, product.print_areas["front"]).data))
            sizes.extend(len(data) for _, data in make_mockups(design, product))
    wall = time.perf_counter() - started
    print(json.dumps({"wall": wall, "peak": vm("VmHWM") - baseline, "bytes": sizes}))


def measure(job: str, folder: Path, enlarged_name: str) -> dict[str, float]:
    walls, peaks = [], []
    for _ in range(RUNS):
        out = subprocess.run(
            [sys.executable, __file__, "--child", job, str(folder), enlarged_name],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        figures = json.loads(out)
        walls.append(figures["wall"])
        peaks.append(figures["peak"])
    return {"wall": statistics.median(walls), "peak": max(peaks), "bytes": figures["bytes"]}


def main() -> None:
    from PIL import Image, ImageFilter

    from core.backends.local import render_png
    from core.publishing.catalog import load_catalog
    from core.publishing.print_files import check_reachable

    area = load_catalog(None).get("tshirt").print_areas["front"]
    with tempfile.TemporaryDirectory(prefix="atelier-bench-") as scratch:
        folder = Path(scratch)
        design = render_png("a watercolour fox in a pine forest at dawn", "", 7, 1024, 1024)
        (folder / "design.png").write_bytes(design)
        plan = check_reachable(1024, 1024, area)
        enlarged = Image.open(io.BytesIO(design)).resize((plan.width, plan.height), Image.Resampling.LANCZOS)
        buffer = io.BytesIO()
        enlarged.save(buffer, "PNG", compress_level=1)
        (folder / "enlarged.png").write_bytes(buffer.getvalue())
        print(
            f"design 1024x1024 -> upscale x{plan.scale:.2f} -> {plan.width}x{plan.height} "
            f"({len(buffer.getvalue()) / MIB:.1f} MiB PNG); print area {area.width}x{area.height} at {area.dpi} DPI"
        )
        print(
            f"each job in a fresh process; wall = median of {RUNS}, peak = VmHWM above the process after imports"
        )
        detail = Image.frombytes("RGB", (1024, 1024), random.Random(1).randbytes(1024 * 1024 * 3))
        detail = detail.filter(ImageFilter.GaussianBlur(1)).resize(
            (plan.width, plan.height), Image.Resampling.LANCZOS
        )
        buffer = io.BytesIO()
        detail.save(buffer, "PNG", compress_level=1)
        (folder / "detailed.png").write_bytes(buffer.getvalue())
        del detail, buffer
        print("preview design:")
        report({job: measure(job, folder, "enlarged.png") for job in JOBS})
        print("detailed design:")
        report({job: measure(job, folder, "detailed.png") for job in DETAILED_JOBS})


def report(results: dict[str, dict[str, float]]) -> None:
    reference = results["reference"]
    for job, figures in results.items():
        total = sum(figures["bytes"]) / MIB
        print(
            f"  {job:11} wall {figures['wall']:6.2f} s ({figures['wall'] / reference['wall']:4.2f}x ref)   "
            f"peak {figures['peak'] / MIB:6.0f} MiB ({figures['peak'] / reference['peak']:4.2f}x ref)   "
            f"{len(figures['bytes'])} file(s), {total:.1f} MiB"
        )


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        child(sys.argv[2], Path(sys.argv[3]), sys.argv[4])
    else:
        main()
