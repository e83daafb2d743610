"""Photo-like digit images for the browser preprocessing tests (numpy only, seeded).

Each image is what `mnistopt.runtime.preprocess.open_image` hands `to_mnist`: float32 gray
levels k/255. They vary what a phone photo of a written digit varies: size and aspect of the
picture, pen width (thin pens make `to_mnist` thicken the strokes), paper polarity, uneven
light, grain, blur, and where the digit sits.
"""

from __future__ import annotations

import numpy as np

# Digits as polylines in a unit box (x right, y down).
STROKES = {
    "0": [[(0.5 + 0.3 * np.cos(t), 0.5 + 0.42 * np.sin(t)) for t in np.linspace(0, 2 * np.pi, 40)]],
    "1": [[(0.42, 0.22), (0.55, 0.08), (0.55, 0.92)]],
    "4": [[(0.62, 0.92), (0.62, 0.08), (0.18, 0.66), (0.82, 0.66)]],
    "7": [[(0.18, 0.1), (0.82, 0.1), (0.4, 0.92)]],
    "2": [[(0.2, 0.28), (0.35, 0.1), (0.65, 0.1), (0.78, 0.3), (0.7, 0.5), (0.2, 0.9), (0.82, 0.9)]],
}


def _ink(h: int, w: int, strokes, box, width: float) -> np.ndarray:
    """Anti-aliased ink coverage (0..1) of polylines mapped into `box` = (x0, y0, x1, y1)."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64) + 0.5
    x0, y0, x1, y1 = box
    dist = np.full((h, w), np.inf)
    for line in strokes:
        pts = [(x0 + px * (x1 - x0), y0 + py * (y1 - y0)) for px, py in line]
        for (ax, ay), (bx, by) in zip(pts, pts[1:]):
            dx, dy = bx - ax, by - ay
            t = np.clip(((xx - ax) * dx + (yy - ay) * dy) / max(dx * dx + dy * dy, 1e-9), 0, 1)
            dist = np.minimum(dist, np.hypot(xx - ax - t * dx, yy - ay - t * dy))
    return np.clip(width / 2 + 0.5 - dist, 0.0, 1.0)


def photo(digit: str, h: int, w: int, rng: np.random.Generator, *, width: float | None = None,
          dark_on_light: bool = True) -> np.ndarray:
    """One picture of `digit`, float32 (h, w) in k/255 steps."""
    side = min(h, w) * rng.uniform(0.45, 0.8)
    cx, cy = w * rng.uniform(0.4, 0.6), h * rng.uniform(0.4, 0.6)
    box = (cx - side * 0.4, cy - side / 2, cx + side * 0.4, cy + side / 2)
    width = width if width is not None else side * rng.uniform(0.04, 0.16)
    ink = _ink(h, w, STROKES[digit], box, max(width, 1.0))
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    light = rng.uniform(0.7, 0.95) + rng.uniform(-0.15, 0.15) * xx + rng.uniform(-0.15, 0.15) * yy
    paper = np.clip(light + rng.normal(0, 0.02, (h, w)), 0, 1)
    pen = rng.uniform(0.05, 0.3)
    g = paper * (1 - ink) + pen * ink
    if not dark_on_light:
        g = 1 - g
    return (np.round(np.clip(g, 0, 1) * 255) / 255).astype(np.float32)


def photo_set(seed: int = 0) -> list[tuple[str, np.ndarray]]:
    """(digit, image) pairs covering the branches of `to_mnist` (sizes below and above 32 and
    64 pixels, thin and thick pens, both polarities)."""
    rng = np.random.default_rng(seed)
    shapes = [(30, 30), (40, 56), (64, 64), (90, 70), (120, 160), (200, 150), (256, 256),
              (256, 180)]
    out = []
    for i, (h, w) in enumerate(shapes):
        for digit in STROKES:
            thin = 1.2 if (i + len(out)) % 3 == 0 else None
            out.append((digit, photo(digit, h, w, rng, width=thin, dark_on_light=(i % 4 != 3))))
    return out
