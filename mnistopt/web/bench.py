"""ONNX artifacts run in headless Chromium with onnxruntime-web, checked against native ORT.

`measure(paths, ...)` serves the models and the 10,000 test images, opens ``bench.html`` in a
fresh page per model (a fresh WebAssembly instance, as the other targets use a fresh process)
and lets `page/bench.js` run every test image at batch 1, timing each `session.run` inside
the page, then the larger batch sizes. Back come the latency samples and the logits; the
logits are compared with the same file under onnxruntime on this host (`mnistopt.parity`).
"""

from __future__ import annotations

import base64
import time
from pathlib import Path

import numpy as np

from ..errors import MnistoptError

# The browser and the host run different kernels (WASM SIMD vs AVX-512, other summation
# orders, int8 requantization rounding): the same classifier, not the same bits.
FP32_TOLERANCE = dict(rel=1e-4, agreement=0.999)
QUANT_TOLERANCE = dict(agreement=0.999)
# How long one model may take in the page (the seed CNN at batch 1: ~1 min on 2 busy cores).
MODEL_TIMEOUT_S = 1800
POLL_S = 0.25


def tolerance_for(quant: str | None):
    from ..parity import Tolerance

    return Tolerance(**(FP32_TOLERANCE if quant in (None, "fp32") else QUANT_TOLERANCE))


def test_set(limit: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    from ..data import load_mnist

    m = load_mnist()
    n = len(m.y_test) if limit is None else min(limit, len(m.y_test))
    return np.ascontiguousarray(m.x_test[:n]), np.asarray(m.y_test[:n])


def measure(paths: list[Path], *, batch_sizes=(1,), warmup: int = 20, iters: int = 300,
            budget_s: float = 3.0, threads: int | None = None, progress: bool = True,
            limit: int | None = None, quants: list | None = None, cache: Path | None = None,
            chromium: Path | None = None) -> list[dict]:
    """One result per path: {accuracy, n_images, samples_us: {batch: [...]}, threads,
    eval_seconds, browser: {...}, parity: {...}} or {error, error_type}."""
    from ..progress import progress_bar
    from . import assets
    from .browser import browser, version
    from .server import WebServer

    x, y = test_set(limit)
    quants = quants or [None] * len(paths)
    out = []
    blobs = {"/data/x_test.bin": x.tobytes()}
    with WebServer(list(paths), cache=cache, extra=blobs) as srv, browser(chromium) as b, \
            progress_bar("bench (browser)", len(paths) * len(x), progress) as adv:
        for i, path in enumerate(paths):
            adv(0, info=Path(path).name)
            opts = {"model": i, "threads": threads or 0, "warmup": warmup,
                    "batchSizes": list(batch_sizes), "iters": iters, "budgetS": budget_s}
            try:
                raw = _run_page(b, srv.url, opts, adv)
            except MnistoptError as exc:
                out.append({"error": str(exc), "error_type": type(exc).__name__})
                continue
            logits = np.frombuffer(base64.b64decode(raw["logits"]), np.float32).reshape(-1, 10)
            res = {
                "accuracy": float(np.mean(logits.argmax(1) == y)), "n_images": int(len(y)),
                "samples_us": {int(k): v for k, v in raw["samples"].items()},
                "threads": raw["threads"], "eval_seconds": raw["evalSeconds"],
                "via": f"onnxruntime-web {assets.VERSION} (WASM SIMD) in {version(b)}",
                "browser": {"browser": version(b), "onnxruntime_web": raw["ortVersion"],
                            "threads": raw["threads"],
                            "cross_origin_isolated": raw["crossOriginIsolated"],
                            "session_load_ms": raw["loadMs"], "user_agent": raw["userAgent"]},
            }
            res["parity"] = parity(path, logits, x, y, quants[i], threads)
            out.append(res)
    return out


def _run_page(b, url: str, opts: dict, advance) -> dict:
    """Run one model in a fresh page; raises DeviceError with the page's message on failure."""
    from ..errors import DeviceError

    context = b.new_context()
    try:
        page = context.new_page()
        page.goto(url + "bench.html")
        page.wait_for_function("window.mnistoptBench !== undefined", timeout=60_000)
        page.evaluate("opts => mnistoptBench.start(opts)", opts)
        deadline, seen = time.monotonic() + MODEL_TIMEOUT_S, 0
        while True:
            st = page.evaluate("({phase: mnistoptBench.state.phase, done: mnistoptBench.state.done,"
                               " error: mnistoptBench.state.error})")
            advance(st["done"] - seen)
            seen = st["done"]
            if st["phase"] == "done":
                return page.evaluate("mnistoptBench.state.result")
            if st["phase"] == "error":
                raise DeviceError(f"in the page: {st['error']}")
            if time.monotonic() > deadline:
                raise DeviceError(f"no result after {MODEL_TIMEOUT_S} s")
            time.sleep(POLL_S)
    finally:
        context.close()


def parity(path: Path, logits: np.ndarray, images: np.ndarray, labels: np.ndarray, quant,
           threads) -> dict:
    """The browser's logits against onnxruntime's on this host for the same file."""
    from ..parity import compare
    from ..runtime import load

    ref = load(path, threads=threads).logits(images)
    par = compare(ref, logits, labels, tolerance_for(quant))
    par["reference"] = "onnxruntime on this host"
    return par
