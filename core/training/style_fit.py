"""The preview trainer's model: a colour palette and a tone curve fitted to a character's pixels.

What is learnt, step by step (pure Python; a step touches a few hundred pixels):
  palette     k colours found by online mini-batch k-means (Sculley 2010: each centre moves
              toward each pixel it wins by 1/its win count) in YCbCr, where distances follow
              brightness and hue better than in RGB. Starts as a grey ramp; a colour no pixel
              has chosen restarts on the batch's worst-served pixel.
  tone curve  each RGB channel's quantile function at `KNOTS` levels, fitted by Adam on the
              pinball (quantile) loss, whose gradient at level p is (share of the batch below
              the knot) - p. Starts as the identity. Saved resampled to 256 entries: value at
              level i/255, so mapping a picture's own ranks through it matches its histogram
              to the character's.
  mean, std   of the sampled pixels, exact.

The loss reported is the batch's k-means distortion plus its mean pinball loss, smoothed; it
falls as the palette and curve move from their neutral start onto the character's colours.
Everything here is deterministic: the same pixels and parameters give the same bytes.
"""

from __future__ import annotations

import math
import random
import struct
from array import array
from bisect import bisect_left
from collections.abc import Mapping
from dataclasses import dataclass

from core.training.safetensors import Tensor

PALETTE_SIZE = 6
KNOTS = 64
CURVE_ENTRIES = 256
# Pixels taken from each image of a step's batch.
PIXELS_PER_IMAGE = 64
# Smoothing of the reported loss (the batch loss alone jumps with the batch's content).
_EMA = 0.9
_BETA1, _BETA2, _EPS = 0.9, 0.999, 1e-8


@dataclass(slots=True)
class Pixels:
    """One image's sampled pixels, shuffled once: RGB and YCbCr, each channel 0..1."""

    rgb: tuple[array, array, array]
    ycc: tuple[array, array, array]

    def __len__(self) -> int:
        return len(self.rgb[0])


def sample_pixels(data: bytes, index: int) -> Pixels:
    """`data` (an image's RGB bytes, 3 a pixel) as `Pixels`, shuffled by a seed fixed per image."""
    order = list(range(len(data) // 3))
    random.Random(index).shuffle(order)
    channels = [array("f", (data[3 * i + c] / 255 for i in order)) for c in range(3)]
    r, g, b = channels
    y = array("f", (0.299 * rr + 0.587 * gg + 0.114 * bb for rr, gg, bb in zip(r, g, b, strict=True)))
    cb = array("f", (0.5 + 0.564 * (bb - yy) for bb, yy in zip(b, y, strict=True)))
    cr = array("f", (0.5 + 0.713 * (rr - yy) for rr, yy in zip(r, y, strict=True)))
    return Pixels((r, g, b), (y, cb, cr))


class StyleFit:
    """The state of one fit: palette, curve, optimiser moments, step count (see the module)."""

    def __init__(self, images: list[Pixels], *, batch_images: int, learning_rate: float, steps: int) -> None:
        self.images = images
        self.batch_images = min(batch_images, len(images))
        self.learning_rate = learning_rate
        self.steps = steps
        self.step = 0
        self.centres = [[(i + 0.5) / PALETTE_SIZE, 0.5, 0.5] for i in range(PALETTE_SIZE)]
        self.wins = [0.0] * PALETTE_SIZE
        self.levels = [(i + 0.5) / KNOTS for i in range(KNOTS)]
        self.curve = [list(self.levels) for _ in range(3)]
        self.moment1 = [[0.0] * KNOTS for _ in range(3)]
        self.moment2 = [[0.0] * KNOTS for _ in range(3)]
        self.smoothed = 0.0

    @property
    def loss(self) -> float:
        """The smoothed loss, corrected for its zero start (as Adam corrects its moments)."""
        return self.smoothed / (1 - _EMA**self.step) if self.step else math.nan

    def advance(self, count: int) -> list[float]:
        """Take `count` steps; the loss after each."""
        losses = []
        for _ in range(count):
            self.step += 1
            batch = self._batch(self.step)
            raw = self._palette_step(batch[1]) + self._curve_step(batch[0])
            self.smoothed = _EMA * self.smoothed + (1 - _EMA) * raw
            losses.append(self.loss)
        return losses

    def _batch(self, step: int) -> tuple[list[list[float]], list[tuple[float, float, float]]]:
        """Step `step`'s pixels: `batch_images` images in turn, the next slice of each."""
        rgb: list[list[float]] = [[], [], []]
        ycc: list[tuple[float, float, float]] = []
        count = len(self.images)
        for slot in range((step - 1) * self.batch_images, step * self.batch_images):
            pixels = self.images[slot % count]
            start = (slot // count * PIXELS_PER_IMAGE) % max(1, len(pixels) - PIXELS_PER_IMAGE + 1)
            end = start + PIXELS_PER_IMAGE
            for channel in range(3):
                rgb[channel].extend(pixels.rgb[channel][start:end])
            ycc.extend(zip(*(pixels.ycc[c][start:end] for c in range(3)), strict=True))
        return rgb, ycc

    def _palette_step(self, batch: list[tuple[float, float, float]]) -> float:
        """One online k-means pass over `batch`; its mean squared distance to the nearest colour."""
        centres, wins, total = self.centres, self.wins, 0.0
        farthest, outlier = -1.0, batch[0]
        for y, cb, cr in batch:
            best, nearest = math.inf, 0
            for index, (cy, ccb, ccr) in enumerate(centres):
                distance = (y - cy) ** 2 + (cb - ccb) ** 2 + (cr - ccr) ** 2
                if distance < best:
                    best, nearest = distance, index
            total += best
            if best > farthest:
                farthest, outlier = best, (y, cb, cr)
            wins[nearest] += 1
            rate, centre = 1 / wins[nearest], centres[nearest]
            centre[0] += rate * (y - centre[0])
            centre[1] += rate * (cb - centre[1])
            centre[2] += rate * (cr - centre[2])
        # A colour no pixel has chosen yet is wasted: restart it on the worst-served pixel.
        for index in range(PALETTE_SIZE):
            if wins[index] == 0:
                centres[index] = list(outlier)
                break
        return total / len(batch)

    def _curve_step(self, batch: list[list[float]]) -> float:
        """One Adam step of each channel's knots on the batch's pinball loss; that loss, mean."""
        # Cosine decay to a tenth, so the curve settles instead of jittering with the batches.
        progress = min(1.0, self.step / max(1, self.steps))
        rate = self.learning_rate * (0.1 + 0.45 * (1 + math.cos(math.pi * progress)))
        correct1, correct2 = 1 - _BETA1**self.step, 1 - _BETA2**self.step
        total = 0.0
        for channel in range(3):
            values = sorted(batch[channel])
            count = len(values)
            prefix = [0.0]
            for value in values:
                prefix.append(prefix[-1] + value)
            knots, m1, m2 = self.curve[channel], self.moment1[channel], self.moment2[channel]
            for i, level in enumerate(self.levels):
                knot = knots[i]
                below = bisect_left(values, knot)
                total += (
                    (1 - level) * (below * knot - prefix[below])
                    + level * (prefix[count] - prefix[below] - (count - below) * knot)
                ) / count
                gradient = below / count - level
                m1[i] = _BETA1 * m1[i] + (1 - _BETA1) * gradient
                m2[i] = _BETA2 * m2[i] + (1 - _BETA2) * gradient * gradient
                knots[i] = knot - rate * (m1[i] / correct1) / (math.sqrt(m2[i] / correct2) + _EPS)
        return total / (3 * KNOTS)

    # --- the saved style and the checkpoint ------------------------------------------------------

    def style_tensors(self) -> dict[str, Tensor]:
        """The learnt style: palette (RGB, by brightness), its weights, tone curve, mean, std."""
        order = sorted(range(PALETTE_SIZE), key=lambda i: self.centres[i][0])
        palette = [component for i in order for component in _rgb(self.centres[i])]
        seen = sum(self.wins) or 1.0
        curves = [value for channel in range(3) for value in self._resampled(channel)]
        mean, std = self._moments()
        return {
            "palette": _f32((PALETTE_SIZE, 3), palette),
            "palette_weight": _f32((PALETTE_SIZE,), [self.wins[i] / seen for i in order]),
            "tone_curve": _f32((3, CURVE_ENTRIES), curves),
            "mean": _f32((3,), mean),
            "std": _f32((3,), std),
        }

    def checkpoint_tensors(self) -> dict[str, Tensor]:
        """Everything `restore` needs to carry on from this step as if never stopped."""
        flat = [value for row in (*self.curve, *self.moment1, *self.moment2) for value in row]
        return {
            "centres": _f64((PALETTE_SIZE, 3), [v for centre in self.centres for v in centre]),
            "wins": _f64((PALETTE_SIZE,), self.wins),
            "curve_and_moments": _f64((9, KNOTS), flat),
            "counters": _f64((2,), [float(self.step), self.smoothed]),
        }

    def restore(self, tensors: Mapping[str, Tensor]) -> None:
        """Take up a checkpoint written by `checkpoint_tensors` (ValueError if it is not one)."""
        try:
            centres = _values(tensors["centres"], (PALETTE_SIZE, 3))
            wins = _values(tensors["wins"], (PALETTE_SIZE,))
            flat = _values(tensors["curve_and_moments"], (9, KNOTS))
            step, smoothed = _values(tensors["counters"], (2,))
        except KeyError as missing:
            raise ValueError(f"the checkpoint has no {missing} tensor") from None
        rows = [flat[i * KNOTS : (i + 1) * KNOTS] for i in range(9)]
        self.centres = [centres[i * 3 : i * 3 + 3] for i in range(PALETTE_SIZE)]
        self.wins = wins
        self.curve, self.moment1, self.moment2 = rows[0:3], rows[3:6], rows[6:9]
        self.step, self.smoothed = int(step), smoothed

    def _resampled(self, channel: int) -> list[float]:
        """The channel's quantile function at levels 0, 1/255, ..., 1: monotone, within 0..1."""
        knots, running = [], 0.0
        for knot in self.curve[channel]:
            running = max(running, min(1.0, max(0.0, knot)))
            knots.append(running)
        out = []
        for entry in range(CURVE_ENTRIES):
            position = entry / (CURVE_ENTRIES - 1) * KNOTS - 0.5  # knot i sits at level (i+0.5)/KNOTS
            low = min(KNOTS - 1, max(0, math.floor(position)))
            high = min(KNOTS - 1, low + 1)
            t = min(1.0, max(0.0, position - low))
            out.append(knots[low] + (knots[high] - knots[low]) * t)
        return out

    def _moments(self) -> tuple[list[float], list[float]]:
        mean, std = [], []
        for channel in range(3):
            count = sum(len(p) for p in self.images)
            mu = sum(math.fsum(p.rgb[channel]) for p in self.images) / count
            spread = sum(math.fsum((v - mu) ** 2 for v in p.rgb[channel]) for p in self.images) / count
            mean.append(mu)
            std.append(math.sqrt(spread))
        return mean, std


def _rgb(ycc: list[float]) -> tuple[float, float, float]:
    y, cb, cr = ycc[0], ycc[1] - 0.5, ycc[2] - 0.5
    r, b = y + 1.402 * cr, y + 1.772 * cb
    g = (y - 0.299 * r - 0.114 * b) / 0.587
    return tuple(min(1.0, max(0.0, v)) for v in (r, g, b))  # type: ignore[return-value]


def _f32(shape: tuple[int, ...], values: list[float]) -> Tensor:
    return ("F32", shape, struct.pack(f"<{len(values)}f", *values))


def _f64(shape: tuple[int, ...], values: list[float]) -> Tensor:
    return ("F64", shape, struct.pack(f"<{len(values)}d", *values))


def _values(tensor: Tensor, shape: tuple[int, ...]) -> list[float]:
    dtype, actual, data = tensor
    if dtype != "F64" or tuple(actual) != shape:
        raise ValueError(f"a checkpoint tensor is {dtype}{list(actual)}, not F64{list(shape)}")
    return list(struct.unpack(f"<{len(data) // 8}d", data))
