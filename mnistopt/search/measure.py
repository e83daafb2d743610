"""A trial's int8 file on the search's target (`mnistopt.targets`): the cost figures its
budgets and objective use.

Accuracy is not taken from here: trials are scored by the export's own validation on the
validation images. A target's own accuracy pass runs on the test set, so it is kept off it:
the cpu child is given the validation images, arm and mcu evaluate a single image (their
figures, latency and arena, do not depend on how many).
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import fields
from pathlib import Path

import numpy as np

from ..errors import MnistoptError
from .budget import Target


def measure(path: Path, target: Target, val: tuple[np.ndarray, np.ndarray], work: Path,
            iters: int = 2000) -> dict:
    """{'latency': µs, 'size': bytes, ...} or {..., 'error': one line} for the file at `path`."""
    figures = {"size": float(Path(path).stat().st_size)}
    try:
        rec = _record(Path(path), target, val, work, iters)
    except MnistoptError as exc:
        return {**figures, "error": str(exc)}
    if rec.get("error"):
        return {**figures, "error": str(rec["error"]).splitlines()[0]}
    if target.kind == "mcu":
        m = rec["mcu"]
        figures.update(arena=float(m["arena_bytes"]), flash=float(m["flash_bytes"]))
    else:
        figures["latency"] = float(rec["latency"]["1"]["p50_us"])
    return figures


def _record(path: Path, target: Target, val, work: Path, iters: int) -> dict:
    from ..targets import Settings, artifact_item, get_target

    # Many short calls: a batch-1 call of a small net takes ~20 µs, and a p50 over 2,000 of
    # them (40 ms) barely moves when another process wakes up.
    settings = dict(batch_sizes=[1], iters=iters, warmup=200, budget_s=2.0, coldstart=False, progress=False)
    item = artifact_item(path)
    images = "images" in {f.name for f in fields(Settings)}
    if images:
        settings["images"] = val_npz(val, work)
    elif target.kind == "cpu":  # the child takes any image file; give it the validation images
        from ..targets.local import run_child

        with tempfile.TemporaryDirectory(prefix="mnistopt-search-") as tmp:
            res = run_child(item, Settings(**settings), "cpu", val_npz(val, work), Path(tmp))
        return {"latency": res.get("latency", {}), "error": res.get("error")}
    spec = str(target)
    if target.kind == "arm" and not target.detail:
        spec = "arm" if os.uname().machine in ("aarch64", "arm64") else "arm:emulate"
    opts = () if images or target.kind == "cpu" else ("limit=1",)
    if target.kind == "mcu":
        opts += ("compare=false",)
    [rec] = get_target(spec, None, opts).run([item], Settings(**settings))
    return rec


def val_npz(val, work: Path) -> Path:
    """The validation images as the targets' workers read them, written once per search."""
    from ..fsutil import atomic_path

    path = work / f".val-{len(val[1])}.npz"
    if not path.is_file():
        with atomic_path(path, suffix=".npz") as tmp:
            np.savez(tmp, x_test=val[0], y_test=val[1])
    return path
