"""Where the time goes inside an ONNX model: onnxruntime's profiler, summed per operator type.

    python -m mnistopt.bench.profile MODEL.onnx [--batch 1] [--iters 200] [--threads N]

Used to explain a missed latency target: if `model_run` is much larger than the sum of the
kernels, the time is framework overhead (thread-pool wake-ups, Python binding), not math.
"""

from __future__ import annotations

import argparse
from collections import defaultdict
from pathlib import Path

import numpy as np


def profile_onnx(path, batch: int = 1, iters: int = 200, threads: int | None = None) -> dict:
    """Per-op-type mean µs per call, the mean session run µs, and the kernel share of it."""
    from ..runtime import load

    clf = load(path, threads=threads, backend="onnxruntime", profile=True)
    x = clf.prepare(np.zeros((batch, 28, 28), np.uint8))
    for _ in range(iters):
        clf.run_raw(x)
    trace = clf.backend.end_profiling()
    ops, per_node, runs = defaultdict(float), defaultdict(float), []
    for ev in trace:
        if ev.get("cat") == "Node" and ev.get("name", "").endswith("_kernel_time"):
            op = ev.get("args", {}).get("op_name", "?")
            ops[op] += ev["dur"]
            per_node[ev["name"][: -len("_kernel_time")]] += ev["dur"]
        elif ev.get("cat") == "Session" and ev.get("name") == "model_run":
            runs.append(ev["dur"])
    runs = runs[len(runs) // 10:]  # the first calls include allocation: drop them
    n = max(len(runs), 1)
    run_us = float(np.median(runs)) if runs else float("nan")
    kernels = sum(ops.values()) / iters
    return {
        "model": str(path), "batch": batch, "iters": iters, "threads": clf.threads,
        "model_run_p50_us": run_us, "kernels_mean_us": kernels,
        "kernel_share": kernels / run_us if runs else None,
        "ops_us": {k: v / iters for k, v in sorted(ops.items(), key=lambda kv: -kv[1])},
        "top_nodes_us": {k: v / iters for k, v in sorted(per_node.items(), key=lambda kv: -kv[1])[:8]},
        "runs_seen": n,
    }


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python -m mnistopt.bench.profile")
    p.add_argument("model", type=Path)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--iters", type=int, default=200)
    p.add_argument("--threads", type=int, default=None)
    a = p.parse_args(argv)
    r = profile_onnx(a.model, a.batch, a.iters, a.threads)
    print(f"{r['model']}  batch {r['batch']}  threads {r['threads']}: model_run p50 "
          f"{r['model_run_p50_us']:.1f} µs, kernels {r['kernels_mean_us']:.1f} µs "
          f"({(r['kernel_share'] or 0):.0%})")
    for op, us in r["ops_us"].items():
        print(f"  {op:<24} {us:9.1f} µs")


if __name__ == "__main__":
    main()
