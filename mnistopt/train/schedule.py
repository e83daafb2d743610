"""The learning-rate schedule shared by the Keras and TensorFlow trainers (torch uses OneCycleLR).

"onecycle" is the shape of torch's ``OneCycleLR`` defaults: start at peak/25, rise linearly to
the peak over the first 30 % of the steps, then follow a cosine down to peak/1e4. A short
warm-up lets Adam's moment estimates settle before the big steps; the long decay is what
buys the last tenths of a percent on MNIST.
"""

from __future__ import annotations

import math

PCT_START, DIV_FACTOR, FINAL_DIV = 0.3, 25.0, 1e4


def lr_at(step: int, total: int, peak: float, schedule: str = "onecycle") -> float:
    """Learning rate for optimizer step `step` (0-based) of `total`."""
    if schedule == "constant":
        return peak
    start, end = peak / DIV_FACTOR, peak / DIV_FACTOR / FINAL_DIV
    warm = max(1, int(PCT_START * total))
    if step < warm:
        return start + (peak - start) * step / warm
    t = min(1.0, (step - warm) / max(1, total - warm))
    return end + (peak - end) * (1 + math.cos(math.pi * t)) / 2
