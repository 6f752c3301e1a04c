"""Checking character training images: 50 photos of 1024x1024 (a benchmark, not a test).

Makes N photo-like images (PNG and JPEG alternately, with camera EXIF and orientation tags, as
phones send them) in a folder, then measures, each in a fresh child process reading the files
one at a time as an upload does:
  check   `check_training_image` on every file: wall time and peak memory (VmHWM growth);
  decode  the reference: Pillow merely opening and decoding the same files (`load()`), the
          least any check that sees every pixel must do;
  copy    reading the files and hashing their bytes (sha256), the floor of any upload path.
It prints each figure and the check's ratio to the decode reference.

  python bench/character_upload.py [--images 50] [--side 1024] [--dir PATH]

Measured on the 2-core dev box, 50 images of 1024 px (37.8 MiB): copy 0.03 s, decode 0.63 s,
check 1.38 s (28 ms/image, 2.2x decode) with peak memory +13 MiB (1.6x decode). When every
image was re-encoded (PNG at zlib level 6) the check took 8.6 s, 13x decode; cutting metadata
out of the container when the pixels can stay is what brought it down.

`make_training_images(folder, count, side)` is the reusable part: the HTTP upload route's bench
can post the same files.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

MIB = 1024 * 1024


def make_training_images(folder: Path, count: int, side: int = 1024) -> list[Path]:
    """`count` photo-like images of `side` x `side` in `folder`, PNG and JPEG alternately.

    Each has gradients and fine noise (so PNG does not shrink it to nothing, as with photos),
    a camera EXIF block with GPS, and every fourth an orientation tag that turns it. The same
    arguments make the same files.
    """
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    noise_source = random.Random(11)
    small = side // 4
    paths = []
    for index in range(count):
        ramp = Image.linear_gradient("L").rotate(index * 37 % 360).resize((side, side))
        ring = Image.radial_gradient("L").resize((side, side))
        grain = Image.frombytes("L", (small, small), noise_source.randbytes(small * small))
        grain = grain.resize((side, side), Image.Resampling.BILINEAR)
        photo = Image.merge("RGB", (ramp, ring, Image.blend(ramp, grain, 0.5)))
        photo = Image.blend(photo, Image.merge("RGB", (grain, grain, grain)), 0.15)
        exif = Image.Exif()
        exif[0x010F] = "Bench Camera"
        exif[0x8825] = {1: "N", 2: (48.0, 51.0, 30.0)}
        if index % 4 == 3:
            exif[0x0112] = 6
        if index % 2:
            path = folder / f"photo {index:03}.jpg"
            photo.save(path, "JPEG", quality=92, exif=exif)
        else:
            path = folder / f"render {index:03}.png"
            photo.save(path, "PNG", exif=exif)
        paths.append(path)
    return paths


def measure(what: str, folder: Path) -> dict[str, float]:
    """Run one measurement in a fresh process; its seconds and peak memory growth in bytes."""
    child = subprocess.run(
        [sys.executable, __file__, "--measure", what, "--dir", str(folder)],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(child.stdout)


def _child(what: str, folder: Path) -> None:
    # Imported before the baseline: loading modules is not what is measured.
    import PIL.Image
    import PIL.ImageCms
    import PIL.ImageOps
    import PIL.JpegImagePlugin
    import PIL.PngImagePlugin
    import PIL.WebPImagePlugin

    from core.characters.uploads import UploadLimits, check_training_image

    limits = UploadLimits(max_bytes=25_000_000, max_pixels=50_000_000, min_side=256)
    paths = sorted(folder.iterdir())
    stored = 0
    baseline = _peak_rss()
    started = time.perf_counter()
    for path in paths:
        data = path.read_bytes()
        if what == "check":
            stored += len(check_training_image(path.name, data, limits).data)
        elif what == "decode":
            with PIL.Image.open(path) as image:
                image.load()
        else:
            hashlib.sha256(data).hexdigest()
    seconds = time.perf_counter() - started
    print(json.dumps({"seconds": seconds, "peak_growth": _peak_rss() - baseline, "stored": stored}))


def _peak_rss() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc/self/status (Linux only)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=50)
    parser.add_argument("--side", type=int, default=1024)
    parser.add_argument("--dir", type=Path, default=None)
    parser.add_argument("--measure", choices=("check", "decode", "copy"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        _child(args.measure, args.dir)
        return
    with tempfile.TemporaryDirectory(prefix="atelier-upload-bench-", dir=args.dir) as scratch:
        folder = Path(scratch) / "images"
        started = time.perf_counter()
        paths = make_training_images(folder, args.images, args.side)
        made = time.perf_counter() - started
        given = sum(path.stat().st_size for path in paths)
        print(
            f"{len(paths)} images of {args.side}x{args.side} (PNG and JPEG), "
            f"{given / MIB:.1f} MiB, made in {made:.1f} s"
        )
        figures = {what: measure(what, folder) for what in ("copy", "decode", "check")}
    for what, figure in figures.items():
        per_image = figure["seconds"] / len(paths) * 1000
        print(
            f"{what:7} {figure['seconds']:6.2f} s  ({per_image:6.1f} ms/image)  "
            f"peak memory +{figure['peak_growth'] / MIB:5.0f} MiB"
        )
    check, decode = figures["check"], figures["decode"]
    print(f"stored {check['stored'] / MIB:.1f} MiB ({check['stored'] / given:.2f}x the uploaded bytes)")
    print(
        f"check / decode: {check['seconds'] / decode['seconds']:.2f}x time, "
        f"{check['peak_growth'] / max(decode['peak_growth'], 1):.2f}x peak memory"
    )


if __name__ == "__main__":
    main()
