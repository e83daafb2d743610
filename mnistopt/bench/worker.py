"""Runtime-only benchmark worker: accuracy, latency and logits of exported files.

    python -m mnistopt.bench.worker --data TEST.npz --out RESULT.json \\
        [--logits-dir DIR] [--batch-sizes 1,32] [--warmup W] [--iters N] [--threads T] \\
        [--limit N] ARTIFACT...

Imports numpy, the standard library and the runtimes only (onnxruntime / ai_edge_litert, via
`mnistopt.runtime` once it is there), so it runs unchanged on a device (aarch64 under qemu or
over SSH). The host benchmark uses the same `open_artifact` and the same statistics
(`mnistopt.bench.stats`), so figures from both places compare.

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

from ..errors import DeviceError
from .env import environment
from .stats import accuracy, parse_batch_sizes, summarize, time_calls

SCHEMA = "mnistopt.bench.worker/1"
FORMATS = {".onnx": "onnx", ".tflite": "tflite"}
RUNTIMES = {"onnx": "onnxruntime", "tflite": "litert"}


class Artifact:
    """An exported file opened once: `prepare(images)` outside the clock, `run(prepared)` timed."""

    def __init__(self, path, threads: int | None = None, device: str = "cpu"):
        self.path = Path(path)
        self.format = FORMATS.get(self.path.suffix.lower())
        if self.format is None:
            raise ValueError(f"{self.path}: not an .onnx or .tflite file")
        self.runtime = RUNTIMES[self.format]
        self.threads = threads
        self.meta = _sidecar(self.path)
        self.device = device
        self._impl = _open_impl(self.path, self.format, threads, device)
        self.via = self._impl.via
        self.threads = getattr(self._impl, "threads", threads)

    def prepare(self, images: np.ndarray):
        return self._impl.prepare(np.ascontiguousarray(images))

    def run(self, prepared) -> np.ndarray:
        return self._impl.run(prepared)

    def logits(self, images: np.ndarray, chunk: int = 500) -> np.ndarray:
        out = [self.run(self.prepare(images[i:i + chunk])) for i in range(0, len(images), chunk)]
        return np.concatenate(out).astype(np.float32) if out else np.zeros((0, 10), np.float32)


def _sidecar(path: Path) -> dict:
    from ..artifact import read_sidecar

    return read_sidecar(path)


def _open_impl(path: Path, fmt: str, threads, device: str = "cpu"):
    """The project's lean runtime (the code a device ships); direct bindings where it is absent
    (a worker copied to a device without the runtime package)."""
    try:
        from ..runtime import load
    except ImportError:
        load = None
    if load is not None:
        return _RuntimeImpl(load(path, threads=threads, device="cuda" if device == "gpu" else device))
    if fmt == "onnx":
        return _OrtImpl(path, threads, device)
    if device != "cpu":
        raise DeviceError(f"--device {device}: LiteRT's Python interpreter runs on the CPU only")
    return _LiteRTImpl(path, threads)


class _RuntimeImpl:
    via = "mnistopt.runtime"

    def __init__(self, clf):
        self.clf = clf
        self.threads = clf.threads
        self.providers = list(getattr(clf, "providers", []))

    def prepare(self, images):
        return self.clf.prepare(images)  # dtype, int8 quantization, layout: outside the clock

    def run(self, prepared):
        # The backend call plus output dequantization: what an application waits for.
        return self.clf.logits_prepared(prepared)


def _to_float(images: np.ndarray, shape) -> np.ndarray:
    """uint8 (N, 28, 28) -> float32 [0, 1] in the layout the model's input shape implies."""
    x = images.astype(np.float32) / np.float32(255.0)
    if len(shape) == 4:
        return x[:, None] if shape[1] == 1 else x[..., None]
    return x


class _OrtImpl:
    via = "onnxruntime"

    def __init__(self, path: Path, threads, device: str = "cpu"):
        import onnxruntime as ort

        providers = ["CPUExecutionProvider"]
        if device == "gpu":
            have = ort.get_available_providers()
            if "CUDAExecutionProvider" not in have:
                raise DeviceError(f"--device gpu: onnxruntime {ort.__version__} has no "
                                  f"CUDAExecutionProvider (it has {', '.join(have)}); "
                                  "install onnxruntime-gpu or use --device cpu")
            providers = ["CUDAExecutionProvider", "CPUExecutionProvider"]
        so = ort.SessionOptions()
        if threads:
            so.intra_op_num_threads = threads
            so.inter_op_num_threads = 1
        self.sess = ort.InferenceSession(str(path), so, providers=providers)
        inp = self.sess.get_inputs()[0]
        self.name, self.shape, self.type = inp.name, inp.shape, inp.type
        self.out = self.sess.get_outputs()[0].name

    def prepare(self, images):
        if self.type == "tensor(uint8)":
            x = images if len(self.shape) == 3 else images[..., None]
        else:
            x = _to_float(images, self.shape)
        return {self.name: np.ascontiguousarray(x)}

    def run(self, feed):
        return self.sess.run([self.out], feed)[0]


class _LiteRTImpl:
    via = "ai_edge_litert"

    def __init__(self, path: Path, threads):
        from ai_edge_litert.interpreter import Interpreter

        self.interp = Interpreter(model_path=str(path), num_threads=threads)
        self.interp.allocate_tensors()
        self.inp = self.interp.get_input_details()[0]
        self.outd = self.interp.get_output_details()[0]
        self.batch = int(self.inp["shape"][0])

    def prepare(self, images):
        x = _to_float(images, self.inp["shape"])
        dtype = self.inp["dtype"]
        if dtype in (np.int8, np.uint8):
            scale, zp = self.inp["quantization"]
            info = np.iinfo(dtype)
            x = np.clip(np.round(x / scale + zp), info.min, info.max).astype(dtype)
        return np.ascontiguousarray(x)

    def _resize(self, n: int) -> None:
        if n != self.batch:
            shape = list(self.inp["shape"])
            shape[0] = n
            self.interp.resize_tensor_input(self.inp["index"], shape)
            self.interp.allocate_tensors()
            self.inp = self.interp.get_input_details()[0]
            self.outd = self.interp.get_output_details()[0]
            self.batch = n

    def run(self, x):
        self._resize(len(x))
        self.interp.set_tensor(self.inp["index"], x)
        self.interp.invoke()
        y = self.interp.get_tensor(self.outd["index"])
        if self.outd["dtype"] in (np.int8, np.uint8):
            scale, zp = self.outd["quantization"]
            y = (y.astype(np.float32) - zp) * scale
        return y


def bench_artifact(art: Artifact, x: np.ndarray, y: np.ndarray, batch_sizes, *, warmup: int,
                   iters: int, budget_s: float | None = 3.0, progress=None) -> dict:
    """Accuracy on all of (x, y), then latency per batch size (same input every call)."""
    t0 = time.perf_counter()
    logits = art.logits(x)
    eval_s = time.perf_counter() - t0
    latency = {}
    for b in batch_sizes:
        # Tile the test set when a batch is larger than it (tiny test sets in tests).
        xb = x[:b] if len(x) >= b else np.resize(x, (b,) + x.shape[1:])
        prepared = art.prepare(xb)
        latency[str(b)] = summarize(
            time_calls(lambda: art.run(prepared), warmup=warmup, iters=iters, budget_s=budget_s), b)
        if progress:
            progress()
    return {
        "artifact": str(art.path),
        "name": art.path.name,
        "format": art.format,
        "runtime": art.runtime,
        "via": art.via,
        "threads": art.threads,
        "providers": getattr(art._impl, "providers", None),
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
    p = argparse.ArgumentParser(prog="python -m mnistopt.bench.worker", description=__doc__.split("\n")[0])
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
    from ..fsutil import write_json

    write_json(a.out, {"schema": SCHEMA, "environment": environment(a.threads),
                       "batch_sizes": sizes, "warmup": a.warmup, "iters": a.iters,
                       "results": results})
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
