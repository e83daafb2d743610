"""Runtime-only benchmark worker: accuracy, latency and logits of exported files.

    python -m mnistopt.targets.worker --data TEST.npz --out RESULT.json \\
        [--logits-dir DIR] [--batch-sizes 1,32] [--warmup W] [--iters N] [--threads T] \\
        [--limit N] ARTIFACT...

Imports numpy, the standard library and `mnistopt.runtime` only (onnxruntime / ai_edge_litert),
so it runs unchanged on a device (aarch64 under qemu or over SSH). The host's cpu/gpu target
opens files with the same `Artifact` and times them with the same statistics (`stats.py`), so
figures from both places compare.

TEST.npz holds uint8 images (N, 28, 28) and labels (N,) under x_test/y_test (or x/y).
RESULT.json: {"schema": "mnistopt.bench.worker/1", "environment": {...}, "results": [...]};
one result per artifact, with "error" instead of figures when that artifact failed (exit 1).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from ..errors import ModelLoadError
from ..fsutil import write_json
from .env import environment
from .stats import accuracy, latency_at, parse_batch_sizes

SCHEMA = "mnistopt.bench.worker/1"
FORMATS = {".onnx": "onnx", ".tflite": "tflite", ".xml": "ir"}
RUNTIMES = {"onnx": "onnxruntime", "tflite": "litert", "ir": "openvino-ir"}


class Artifact:
    """An exported file opened once through `mnistopt.runtime`: `prepare(images)` outside the
    clock (dtype, int8 quantization, layout, device copy), `run(prepared)` timed (the backend
    call plus output dequantization: what an application waits for)."""

    via = "mnistopt.runtime"

    def __init__(self, path, threads: int | None = None, device: str = "cpu",
                 backend: str | None = None, options: dict | None = None):
        from ..artifact import read_sidecar
        from ..runtime import load

        self.path = Path(path)
        self.format = FORMATS.get(self.path.suffix.lower())
        if self.format is None:
            raise ModelLoadError(f"{self.path}: not an .onnx or .tflite file")
        # backend/options: a runtime backend other than the format's default (the peers').
        self.runtime = backend or RUNTIMES[self.format]
        self.meta = read_sidecar(self.path)
        self.device = device
        self.clf = load(self.path, threads=threads, device="cuda" if device == "gpu" else device,
                        backend=backend, options=options)
        self.threads = self.clf.threads
        self.providers = list(getattr(self.clf, "providers", []))

    def threads_for(self, batch: int) -> int:
        """Threads a call of `batch` images runs on (the runtime's choice unless set)."""
        return self.clf.backend.threads_for(batch)

    def deciding(self, batch: int) -> bool:
        """Whether the runtime is still timing its choices for calls of `batch` images."""
        return self.clf.backend.deciding(batch)

    def streams_for(self, batch: int) -> int:
        """Requests a call of `batch` images runs as at once (OpenVINO's streams; else 1)."""
        fn = getattr(self.clf.backend, "streams_for", None)
        return fn(batch) if fn else 1

    def prepare(self, images: np.ndarray):
        return self.clf.prepare(np.ascontiguousarray(images))

    def run(self, prepared) -> np.ndarray:
        return self.clf.logits_prepared(prepared)

    def logits(self, images: np.ndarray, chunk: int = 500) -> np.ndarray:
        out = [self.run(self.prepare(images[i:i + chunk])) for i in range(0, len(images), chunk)]
        return np.concatenate(out).astype(np.float32) if out else np.zeros((0, 10), np.float32)


def bench_artifact(art: Artifact, x: np.ndarray, y: np.ndarray, batch_sizes, *, warmup: int,
                   iters: int, budget_s: float | None = 3.0, progress=None) -> dict:
    """Accuracy on all of (x, y), then latency per batch size (same input every call)."""
    t0 = time.perf_counter()
    logits = art.logits(x)
    eval_s = time.perf_counter() - t0
    latency = {}
    for b in batch_sizes:
        latency[str(b)] = latency_at(art, x, b, warmup=warmup, iters=iters, budget_s=budget_s)
        latency[str(b)]["threads"] = art.threads_for(b)
        if progress:
            progress()
    return {
        "artifact": str(art.path),
        "name": art.path.name,
        "format": art.format,
        "runtime": art.runtime,
        "via": art.via,
        "threads": art.threads,
        "providers": art.providers,
        "file_bytes": art.path.stat().st_size,
        "meta": art.meta,
        "accuracy": accuracy(logits, y),
        "n_images": int(len(y)),
        "eval_seconds": eval_s,
        "latency": latency,
        "_logits": logits,
    }


def load_test_data(path, limit: int | None = None):
    with np.load(path) as d:
        keys = ("x_test", "y_test") if "x_test" in d else ("x", "y")
        x, y = d[keys[0]], d[keys[1]]
    if limit:
        x, y = x[:limit], y[:limit]
    return np.ascontiguousarray(x, dtype=np.uint8), np.asarray(y).astype(np.int64)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m mnistopt.targets.worker", description=__doc__.split("\n")[0])
    p.add_argument("artifacts", nargs="+", type=Path)
    p.add_argument("--data", required=True, type=Path, help="npz with x_test/y_test (uint8)")
    p.add_argument("--out", required=True, type=Path, help="result JSON")
    p.add_argument("--logits-dir", type=Path, help="save each artifact's logits as NAME.npy")
    p.add_argument("--batch-sizes", default="1,32,256")
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--iters", type=int, default=200)
    p.add_argument("--budget", type=float, default=3.0, help="max timed seconds per batch size")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--limit", type=int, default=None, help="first N test images only (emulators)")
    a = p.parse_args(argv)
    try:
        sizes = parse_batch_sizes(a.batch_sizes)
    except ValueError as exc:
        p.error(str(exc))
    x, y = load_test_data(a.data, a.limit)
    results, failed = [], 0
    for path in a.artifacts:
        try:
            r = bench_artifact(Artifact(path, a.threads), x, y, sizes, warmup=a.warmup,
                               iters=a.iters, budget_s=a.budget)
        except Exception as exc:  # one bad file must not lose the others' figures
            failed += 1
            results.append({"artifact": str(path), "name": path.name, "error": f"{type(exc).__name__}: {exc}"})
            print(f"worker: {path}: {exc}", file=sys.stderr)
            continue
        logits = r.pop("_logits")
        if a.logits_dir:
            a.logits_dir.mkdir(parents=True, exist_ok=True)
            r["logits"] = str(a.logits_dir / f"{path.name}.npy")
            np.save(r["logits"], logits)
        results.append(r)
        lat = r["latency"]
        print(f"worker: {path.name}: acc {r['accuracy']:.4f} "
              + " ".join(f"b{b} p50 {s['p50_us']:.0f}us" for b, s in lat.items()), file=sys.stderr)
    write_json(a.out, {"schema": SCHEMA, "environment": environment(a.threads),
                              "batch_sizes": sizes, "warmup": a.warmup, "iters": a.iters,
                              "results": results})
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
