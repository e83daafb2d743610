"""Helpers for the web target's tests: photo-like digits, a stand-in asset cache, and the
browser target exercised through the real target registry with its page step faked.

Photos are what `mnistopt.runtime.preprocess.open_image` hands `to_mnist`: float32 gray levels
k/255 (numpy only, seeded). They vary what a phone photo of a written digit varies: size and
aspect of the picture, pen width (thin pens make `to_mnist` thicken the strokes), paper
polarity, uneven light, grain, and where the digit sits.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

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


def from_mnist(digit: np.ndarray, rng: np.random.Generator, side: int = 160) -> np.ndarray:
    """An MNIST digit (28x28 uint8, white on black) as a photo of ink on paper, (side, side)."""
    scale = side / 28
    yy, xx = (np.mgrid[0:side, 0:side] + 0.5) / scale - 0.5
    y0, x0 = np.clip(np.floor(yy).astype(int), 0, 27), np.clip(np.floor(xx).astype(int), 0, 27)
    y1, x1, fy, fx = np.minimum(y0 + 1, 27), np.minimum(x0 + 1, 27), yy - np.floor(yy), xx - np.floor(xx)
    d = digit.astype(np.float64) / 255
    ink = (d[y0, x0] * (1 - fy) * (1 - fx) + d[y0, x1] * (1 - fy) * fx
           + d[y1, x0] * fy * (1 - fx) + d[y1, x1] * fy * fx)  # bilinear upscaling
    u, v = np.mgrid[0:side, 0:side] / side
    light = rng.uniform(0.75, 0.95) + rng.uniform(-0.12, 0.12) * u + rng.uniform(-0.12, 0.12) * v
    paper = np.clip(light + rng.normal(0, 0.02, (side, side)), 0, 1)
    g = paper * (1 - ink) + rng.uniform(0.05, 0.25) * ink
    return (np.round(np.clip(g, 0, 1) * 255) / 255).astype(np.float32)


def fake_cache(root: Path) -> Path:
    """A complete-looking onnxruntime-web cache of stand-in files (for tests that serve the
    page without running a model)."""
    from mnistopt.web import assets as A

    d = A.asset_dir(root)
    d.mkdir(parents=True)
    files = {}
    for name in A.FILES.values():
        data = f"// stand-in for {name}\n".encode()
        (d / name).write_bytes(data)
        files[name] = {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    (d / A.MANIFEST).write_text(json.dumps({"layout": A.LAYOUT, "version": A.VERSION,
                                            "files": files}))
    return root


def exercise_browser(name, tmp_path, monkeypatch):
    """The browser target on the contract's items (ONNX, TFLite, native), its page faked.

    For test_targets.py's EXERCISE table (whose `items` and `quick` it uses)."""
    from test_targets import items, quick

    from mnistopt.targets import get_target
    from mnistopt.web import bench

    ran = []

    def measure(paths, **kw):
        ran.extend(Path(p).name for p in paths)
        return [{"accuracy": 0.99, "n_images": 100, "samples_us": {1: [50.0, 60.0, 70.0]},
                 "threads": 1, "via": "fake page", "eval_seconds": 0.1,
                 "browser": {"cross_origin_isolated": True},
                 "parity": {"passed": True, "failures": [], "top1_agreement": 1.0}}
                for _ in paths]

    monkeypatch.setattr(bench, "measure", measure)
    monkeypatch.setattr("mnistopt.web.browser.chromium_path", lambda: Path("/usr/bin/true"))
    recs = get_target(name).run(items(tmp_path), quick())
    assert ran == ["a-torch-fp32.onnx"]  # TFLite and native models are not the browser's
    assert recs[0]["latency"]["1"]["p50_us"] == 60.0 and recs[0]["parity"]["passed"]
    assert [r.get("error_type") for r in recs[1:]] == ["Unsupported", "Unsupported"]
    return recs
