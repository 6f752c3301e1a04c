"""Preview training speed at 0 ms/step: 1,000 steps on 20 photo-like 1024 px JPEGs (a benchmark, not a test).

Figures, each the median of several rounds:
  reference  decoding every image once and making its thumbnail, as the trainer reads them
             (Pillow's JPEG draft mode, then a box filter): the least any trainer must spend;
  training   `PreviewTrainer.train` end to end (reading the images, 1,000 steps with a
             checkpoint every 100, writing the style file): wall time and steps/s;
  ratio      training / reference.

  python bench/preview_training.py [--images 20] [--side 1024] [--steps 1000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import time
from pathlib import Path

import anyio
from PIL import Image

from core.training import TrainingImage, TrainingJob
from core.training.parameters import check_parameters
from core.training.preview import THUMBNAIL_DIVISOR, PreviewTrainer


def make_images(folder: Path, count: int, side: int) -> tuple[TrainingImage, ...]:
    """`count` photo-like JPEGs: a tinted gradient at a random angle, a patch, film grain."""
    images = []
    for index in range(count):
        rng = random.Random(index)
        gradient = Image.linear_gradient("L").rotate(rng.uniform(0, 360)).resize((side, side))
        grain = Image.effect_noise((side, side), 30)
        tint = [rng.randrange(40, 200) for _ in range(3)]
        channels = [
            Image.blend(gradient.point(lambda v, t=t: min(255, t + v // 3)), grain, 0.2) for t in tint
        ]
        picture = Image.merge("RGB", channels)
        picture.paste(
            tuple(rng.randrange(256) for _ in range(3)), (side // 4, side // 4, side // 2, side // 2)
        )
        path = folder / f"photo-{index:02d}.jpg"
        picture.save(path, quality=90)
        images.append(TrainingImage(path, f"a photo of bench_tok, {index}"))
    return tuple(images)


def reference(images: tuple[TrainingImage, ...], side: int) -> float:
    """Seconds to decode and thumbnail every image once."""
    started = time.perf_counter()
    for image in images:
        with Image.open(image.path) as opened:
            opened.draft("RGB", (side, side))
            thumbnail = opened.convert("RGB")
        thumbnail.thumbnail((side, side), Image.Resampling.BOX)
    return time.perf_counter() - started


async def training(images: tuple[TrainingImage, ...], steps: int, workdir: Path) -> float:
    """Seconds for one preview training of `steps` steps, from a fresh folder."""
    trainer = PreviewTrainer(step_ms=0)
    params = check_parameters(trainer.parameters(), {"steps": steps, "resolution": 1024})
    job = TrainingJob("run-bench", 1, "char-bench", "bench-v1", "bench_tok", images, params, workdir)
    started = time.perf_counter()
    await trainer.train(job, lambda progress: None)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--images", type=int, default=20)
    parser.add_argument("--side", type=int, default=1024)
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="atelier-bench-") as scratch:
        folder = Path(scratch)
        images = make_images(folder, args.images, args.side)
        thumbnail_side = 1024 // THUMBNAIL_DIVISOR
        references, trainings = [], []
        for round_ in range(args.rounds):
            references.append(reference(images, thumbnail_side))
            workdir = folder / f"run-{round_}"
            workdir.mkdir()
            trainings.append(anyio.run(training, images, args.steps, workdir))
    ref, train = statistics.median(references), statistics.median(trainings)
    print(f"{args.images} JPEGs of {args.side} px, {args.steps} steps, median of {args.rounds} rounds")
    print(f"reference (decode + thumbnail each image once): {ref * 1000:8.1f} ms")
    print(
        f"preview training at 0 ms/step:                  {train * 1000:8.1f} ms  ({args.steps / train:,.0f} steps/s)"
    )
    print(f"ratio training / reference:                     {train / ref:8.1f}x")


if __name__ == "__main__":
    main()
