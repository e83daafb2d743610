"""A trial's int8 file on the search's target: the cost figures its budgets and objective use.

Accuracy is not taken from here: trials are scored by the export's own validation on the
validation images. Where a target can evaluate on given images (or on a few), it is asked to,
so a trial never spends time on, or learns anything from, the test set.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..errors import MnistoptError
from .budget import Target

MCU_IMAGES = 100  # TFLite Micro's reference kernels are slow; the arena needs one image
ARM_IMAGES = 50


def _contract():
    """`mnistopt.targets` (the target contract) where this version has it, else None."""
    try:
        import mnistopt.targets as targets

        targets.get_target  # noqa: B018  (a lazy name: resolving it proves the module is whole)
        return targets
    except (ImportError, AttributeError):
        return None


def measure(path: Path, target: Target, val: tuple[np.ndarray, np.ndarray], work: Path,
            iters: int = 300) -> dict:
    """{'latency': µs, 'size': bytes, ...} or {'error': one line} for the artifact at `path`."""
    figures = {"size": float(Path(path).stat().st_size)}
    try:
        t = _contract()
        rec = _via_contract(t, path, target, val, work, iters) if t else _direct(path, target, val, work, iters)
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


def _val_npz(val, work: Path) -> Path:
    """The validation images as the bench's worker reads them, written once per search."""
    from ..fsutil import atomic_path

    path = work / f".val-{len(val[1])}.npz"
    if not path.is_file():
        with atomic_path(path, suffix=".npz") as tmp:
            np.savez(tmp, x_test=val[0], y_test=val[1])
    return path


def _via_contract(t, path, target: Target, val, work: Path, iters: int) -> dict:
    import dataclasses

    settings = {"batch_sizes": [1], "iters": iters, "warmup": 30, "budget_s": 2.0,
                "coldstart": False, "progress": False}
    if "images" in {f.name for f in dataclasses.fields(t.Settings)}:
        settings["images"] = _val_npz(val, work)
    opts = {"mcu": ("limit=1", "compare=false"), "arm": (f"limit={ARM_IMAGES}",)}.get(target.kind, ())
    spec = f"{target.kind}:{target.detail}" if target.detail else target.kind
    if target.kind == "arm" and not target.detail:
        spec = "arm:emulate" if os.uname().machine not in ("aarch64", "arm64") else "arm"
    [rec] = t.get_target(spec, None, opts).run([t.artifact_item(Path(path))], t.Settings(**settings))
    return rec


def _direct(path, target: Target, val, work: Path, iters: int) -> dict:
    """Today's bench and TFLite Micro, called on validation images."""
    if target.kind == "mcu":
        from ..mcu.micro import evaluate

        rep = evaluate(path, images=val[0][:MCU_IMAGES], labels=val[1][:MCU_IMAGES],
                       devices=[target.detail], compare=False, progress=False)
        return {"mcu": {"arena_bytes": rep.arena_bytes, "flash_bytes": rep.flash_bytes}}
    from ..bench.core import Options, artifact_item, run_child

    if target.kind == "arm":
        from ..arm.target import ArmOptions, run

        opts = Options(device="arm", batch_sizes=[1], iters=iters, progress=False,
                       arm=ArmOptions(target=target.detail, limit=ARM_IMAGES))
        [rec] = run([artifact_item(Path(path))], opts)
        return rec
    import tempfile

    opts = Options(batch_sizes=[1], warmup=30, iters=iters, budget_s=2.0, coldstart=False, progress=False)
    with tempfile.TemporaryDirectory(prefix="mnistopt-search-") as tmp:
        return run_child(artifact_item(Path(path)), opts, _val_npz(val, work), Path(tmp))
