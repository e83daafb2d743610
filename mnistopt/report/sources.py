"""What the figures read: the project's own files, each through the reader its writer provides.

Runs through `train.load_run` (metrics.json), models through `crosscheck.model_logits` (the
native model, or the lean runtime for .onnx / .tflite), benchmark reports through
`bench.report.load_json` (schema mnistopt.bench/1). A file given by the user that is none of
these fails with one line naming it; files found by looking around the workspace are skipped
when they are not what is looked for.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from ..errors import ConfigError, MnistoptError
from .numbers import softmax

# Keys the curves figure reads from metrics.json; `mnistopt train` writes them all.
CURVE_KEYS = ("framework", "arch", "params", "history", "test_accuracy", "train_seconds")


def predictions(images: np.ndarray, run: str | os.PathLike | None = None,
                model: str | os.PathLike | None = None) -> tuple[np.ndarray, str]:
    """Class probabilities (N, 10) for uint8 images, and a label naming where they came from."""
    from ..crosscheck.logits import model_logits

    logits, info = model_logits(model if model is not None else run, images)
    return softmax(logits.astype(np.float64)).astype(np.float32), info["label"]


def _runs(root: Path) -> list[Path]:
    """Finished run directories under `root`; hidden ones are runs still being written."""
    return sorted(p.parent for p in root.glob("*/metrics.json") if not p.parent.name.startswith("."))


def default_run(root: Path) -> Path | None:
    """The run the docs are drawn from: torch-seed if trained, else any finished run."""
    for name in ("torch-seed", "torch-edge", "keras-seed", "tf-seed"):
        if (root / name / "metrics.json").is_file():
            return root / name
    runs = _runs(root)
    return runs[0] if runs else None


def torch_run(run: Path | None, root: Path):
    """(Run, label): `run` if it is a PyTorch run, else the workspace's torch-seed (or any
    torch-* run); None when there is none."""
    from ..train import load_run

    cands = ([Path(run)] if run is not None and (Path(run) / "metrics.json").is_file() else [])
    cands += [p for p in [root / "torch-seed"] + _runs(root)
              if p.name.startswith("torch-") and (p / "metrics.json").is_file()]
    for p in cands:
        r = load_run(p)
        if r.framework == "torch":
            return r, f"{r.framework}/{r.arch} ({p.name})"
    return None


def curve_runs(root: Path) -> list[dict]:
    """metrics.json of every finished run under `root`, with the keys the curves need."""
    from ..train import load_run

    out = []
    for p in _runs(root):
        m = load_run(p).metrics
        missing = [k for k in CURVE_KEYS if k not in m]
        h = m.get("history")
        if not missing and not (isinstance(h, list) and h and all(
                isinstance(e, dict) and "epoch" in e and "val_accuracy" in e for e in h)):
            missing = ["history[].epoch/val_accuracy"]
        if missing:
            raise ConfigError(f"{p / 'metrics.json'}: lacks {', '.join(missing)} (not written by "
                              "this mnistopt's 'train'; re-train it or move it out of the workspace)")
        out.append(m)
    return out


def read_bench(path: Path) -> dict:
    """A benchmark report with at least one measured model; ConfigError for anything else."""
    from ..bench.report import load_json

    rep = load_json(path)
    if not bench_rows(rep):
        raise ConfigError(f"{path}: no model with both a batch-1 latency and an accuracy")
    return rep


def bench_rows(rep: dict) -> list[dict]:
    """One row per model of a mnistopt.bench report that has an accuracy and a batch-1 p50."""
    from ..bench.report import ok_records, p50

    return [{"name": r["id"], "latency_ms": p50(r) / 1000, "accuracy": float(r["accuracy"]),
             "batch": 1, "backend": r.get("backend"), "quant": r.get("quant"),
             "latency_source": r.get("latency_source"), "file_bytes": r.get("file_bytes")}
            for r in ok_records(rep["results"]) if p50(r)]


def default_bench(reports: Path) -> Path | None:
    """The newest benchmark report under reports/ that holds a measured model."""
    files = sorted(reports.glob("**/*.json"), key=lambda p: p.stat().st_mtime, reverse=True)
    for p in files:
        try:
            # Other JSON lives there too (parity matrices, MCU reports): skipped, not an error.
            if json.loads(p.read_text()).get("schema", "").startswith("mnistopt.bench/"):
                read_bench(p)
                return p
        except (OSError, ValueError, AttributeError, MnistoptError):
            continue
    return None
