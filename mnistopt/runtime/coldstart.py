"""Cold start of the runtime, measured in fresh processes: import + load + first prediction.

    python -m mnistopt.runtime.coldstart MODEL [MODEL...] [--repeat 5] [--threads N] [--json]

Each repeat is a new `python` process that imports `mnistopt.runtime`, loads the model and
classifies one image, timing each step with perf_counter; the parent also times the whole
process (interpreter start-up and exit included). Reports medians, the child's peak RSS
(VmHWM), and which heavy frameworks it imported (there must be none).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time

HEAVY = ("torch", "tensorflow", "keras", "tf2onnx", "onnx", "jax")

_CHILD = r"""
import time
t0 = time.perf_counter()
import json, sys
import mnistopt.runtime as rt
t1 = time.perf_counter()
clf = rt.load(sys.argv[1], threads=int(sys.argv[2]) or None)
t2 = time.perf_counter()
import numpy as np
label = int(clf.predict(np.zeros((28, 28), np.uint8))[0])
t3 = time.perf_counter()
import resource
try:  # VmHWM: this program's own peak (ru_maxrss on Linux keeps the parent's across exec)
    rss = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM:")) / 1024
except (OSError, StopIteration):
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
heavy = sorted({m.split(".")[0] for m in sys.modules} & set(sys.argv[3].split(",")))
print(json.dumps({"import_s": t1 - t0, "load_s": t2 - t1, "first_predict_s": t3 - t2,
                  "total_s": t3 - t0, "peak_rss_mib": rss, "heavy_modules": heavy,
                  "label": label, "format": clf.format}))
"""


def measure(model, *, repeat: int = 5, threads: int | None = None,
            python: str | None = None) -> dict:
    """Median cold-start figures for `model` over `repeat` fresh processes."""
    runs = []
    for _ in range(repeat):
        t = time.perf_counter()
        proc = subprocess.run([python or sys.executable, "-c", _CHILD, str(model),
                               str(threads or 0), ",".join(HEAVY)],
                              capture_output=True, text=True)
        wall = time.perf_counter() - t
        if proc.returncode != 0:
            last = (proc.stderr.strip().splitlines() or ["(no output)"])[-1]
            raise RuntimeError(f"cold-start child failed on {model}: {last}")
        rec = json.loads(proc.stdout.strip().splitlines()[-1])
        rec["process_s"] = wall
        runs.append(rec)
    out = {"model": str(model), "format": runs[0]["format"], "repeat": repeat}
    for key in ("import_s", "load_s", "first_predict_s", "total_s", "process_s", "peak_rss_mib"):
        out[key] = statistics.median(r[key] for r in runs)
    out["total_s_min"] = min(r["total_s"] for r in runs)
    out["heavy_modules"] = sorted({m for r in runs for m in r["heavy_modules"]})
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m mnistopt.runtime.coldstart",
                                 description=__doc__.splitlines()[0])
    ap.add_argument("models", nargs="+")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    results = [measure(m, repeat=args.repeat, threads=args.threads) for m in args.models]
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    for r in results:
        print(f"{r['model']} [{r['format']}]: import {r['import_s'] * 1e3:.0f} ms + load "
              f"{r['load_s'] * 1e3:.0f} ms + first prediction {r['first_predict_s'] * 1e3:.1f} ms"
              f" = {r['total_s'] * 1e3:.0f} ms (min {r['total_s_min'] * 1e3:.0f}); whole "
              f"process {r['process_s'] * 1e3:.0f} ms; peak RSS {r['peak_rss_mib']:.0f} MiB; "
              f"heavy modules: {', '.join(r['heavy_modules']) or 'none'}  (median of {r['repeat']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
