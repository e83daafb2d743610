"""Measure one model in a fresh process: cold start and peak RSS first, then accuracy and latency.

    python -m mnistopt.targets.child --backend B --path P --data TEST.npz --out RESULT.json [...]

Started by the cpu/gpu target (`local.py`) once per model. The only modules imported before
the clock are the standard library; the backend then imports what it needs.
"""

from __future__ import annotations

import time

_T0 = time.perf_counter()  # before anything of ours is imported

import argparse  # noqa: E402
import json  # noqa: E402
import resource  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402


def _peak_rss_bytes() -> int:
    # VmHWM belongs to this program's address space alone. ru_maxrss does not: on Linux it
    # survives execve, so a child forked from the (large) bench process inherits its peak.
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    # ru_maxrss is KiB on Linux, bytes on macOS.
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return r if sys.platform == "darwin" else r * 1024


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m mnistopt.targets.child")
    p.add_argument("--backend", required=True)
    p.add_argument("--path", required=True, type=Path)
    p.add_argument("--data", required=True, type=Path)
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--batch-sizes", default="1,32,256")
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--iters", type=int, default=200)
    p.add_argument("--budget", type=float, default=3.0)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--device", default="cpu")
    p.add_argument("--logits", type=Path, default=None)
    a = p.parse_args(argv)

    out: dict = {"backend": a.backend, "path": str(a.path), "device": a.device}
    try:
        out.update(_measure(a))
        code = 0
    except Exception as exc:  # reported to the parent as data: one model's failure is not fatal
        from ..errors import DeviceError

        out["error"] = f"{type(exc).__name__}: {exc}"
        out["error_type"] = "DeviceError" if isinstance(exc, DeviceError) else type(exc).__name__
        code = 1
    from ..fsutil import write_text

    # Atomic: the parent takes a file that exists for a whole result.
    write_text(a.out, json.dumps(out))
    return code


def _measure(a) -> dict:
    # Cold start: import what the backend needs, open the model, first inference on one image.
    t_import = time.perf_counter()
    import numpy as np

    from .backends import get_backend

    backend = get_backend(a.backend)
    if backend.kind == "artifact":
        from . import worker  # noqa: F401  (numpy + runtime only)
    else:
        import importlib

        from ..train import FRAMEWORK_PACKAGES

        importlib.import_module(backend.package or FRAMEWORK_PACKAGES[a.backend])
    t_load = time.perf_counter()
    session = backend.open(a.path, a.threads, a.device)
    t_first = time.perf_counter()
    session.run(session.prepare(np.zeros((1, 28, 28), np.uint8)))
    t_done = time.perf_counter()
    cold = {
        "wall_clock_done": time.time(),  # the parent adds interpreter start-up from this
        "in_process_s": t_done - _T0,
        "import_s": t_load - t_import,
        "load_s": t_first - t_load,
        "first_inference_s": t_done - t_first,
        "peak_rss_bytes": _peak_rss_bytes(),
    }

    from .backends import logits_all
    from .stats import accuracy, latency_at, parse_batch_sizes
    from .worker import load_test_data

    x, y = load_test_data(a.data)
    t = time.perf_counter()
    logits = logits_all(session, x)
    eval_s = time.perf_counter() - t
    if a.logits:
        np.save(a.logits, logits)
    latency = {}
    for b in parse_batch_sizes(a.batch_sizes):
        latency[str(b)] = latency_at(session, x, b, warmup=a.warmup, iters=a.iters,
                                     budget_s=a.budget)
        if hasattr(session, "threads_for"):  # the runtime picks threads per call size
            latency[str(b)]["threads"] = session.threads_for(b)
        streams = getattr(session, "streams_for", lambda _: 1)(b)
        if streams > 1:  # OpenVINO's large calls, split where its trial timed that faster
            latency[str(b)]["streams"] = streams
    return {
        "coldstart": cold,
        "accuracy": accuracy(logits, y),
        "n_images": int(len(y)),
        "eval_seconds": eval_s,
        "latency": latency,
        "threads": getattr(session, "threads", a.threads),
        "via": getattr(session, "via", a.backend),
        "peak_rss_bytes_total": _peak_rss_bytes(),
        **({"compile": session.compile} if getattr(session, "compile", None) else {}),
    }


if __name__ == "__main__":
    sys.exit(main())
