"""Where the time goes inside a model: onnxruntime's profiler per node, OpenVINO's per-layer
counters, LiteRT's delegation.

    python -m mnistopt.bench.profile MODEL.onnx|MODEL.tflite|MODEL.xml [--batch 1] [--iters 500]
        [--threads N] [--openvino]
    mnistopt bench --profile ...   (every file of the run, in the report)

ONNX: each node's median kernel time over the calls (a median, not a mean: on a loaded machine
a few preempted calls push the mean of every node up, and the per-node means summed to more
than the whole call), the nodes as onnxruntime runs them after its graph optimisations (fused
QLinearConv, NCHWc Conv, layout Transposes and Reorders), and the call's median. If
`model_run` is much larger than the sum of the kernels, the time is framework overhead.
OpenVINO (a `FILE@openvino` row, an IR peer, `--openvino`): the CPU plugin's counters of each
layer that ran (its kernel named: jit_avx2_I8, brgconv_avx2_f32, ...), per call, the same
medians; the call's time is the runtime's call as a clock around it sees it.
TFLite: which ops the XNNPACK delegate took, and into how many partitions; an op left to
LiteRT's builtin kernels is slow, and each partition boundary costs a copy.
"""

from __future__ import annotations

import argparse
import time
from collections import defaultdict
from pathlib import Path

import numpy as np


def profile_onnx(path, batch: int = 1, iters: int = 500, threads: int | None = None) -> dict:
    """Per-node p50 kernel µs (in run order), per-op-type sums, the call's p50 and the share
    of it the kernels account for."""
    from ..runtime import load

    clf = load(path, threads=threads, backend="onnxruntime", profile=True)
    x = clf.prepare(np.zeros((batch, 28, 28), np.uint8))
    for _ in range(iters):
        clf.run_raw(x)
    trace = clf.backend.end_profiling()
    nodes, op_of, runs = defaultdict(list), {}, []
    for ev in trace:
        if ev.get("cat") == "Node" and ev.get("name", "").endswith("_kernel_time"):
            name = ev["name"][: -len("_kernel_time")]
            nodes[name].append(ev["dur"])
            op_of[name] = ev.get("args", {}).get("op_name", "?")
        elif ev.get("cat") == "Session" and ev.get("name") == "model_run":
            runs.append(ev["dur"])
    return _summary(path, "onnxruntime", batch, iters, clf.threads, nodes, op_of, runs)


def profile_openvino(path, batch: int = 1, iters: int = 500, threads: int | None = None) -> dict:
    """The same figures from OpenVINO's CPU plugin (f32 precision: the file's own arithmetic,
    one request a call), for an ONNX file or an IR (.xml)."""
    from ..runtime import detect_format, load

    backend = "openvino-ir" if detect_format(Path(path)) == "ir" else "openvino"
    clf = load(path, threads=threads, backend=backend, profile=True)
    x = clf.prepare(np.zeros((batch, 28, 28), np.uint8))
    nodes, op_of, runs = defaultdict(list), {}, []
    for _ in range(iters):
        t0 = time.perf_counter()
        clf.run_raw(x)
        runs.append((time.perf_counter() - t0) * 1e6)
        for layer in clf.backend.last_layers():
            nodes[layer["node"]].append(layer["us"])
            op_of[layer["node"]] = f"{layer['op']} {layer['kernel']}"
    return _summary(path, "openvino", batch, iters, clf.threads, nodes, op_of, runs)


def _summary(path, kind: str, batch: int, iters: int, threads, nodes: dict, op_of: dict,
             runs: list) -> dict:
    skip = len(runs) // 10  # the first calls include allocation, compiling: drop them
    runs = runs[skip:]
    per_node = [{"node": n, "op": op_of[n], "p50_us": float(np.median(v[len(v) // 10:] or v))}
                for n, v in nodes.items()]
    ops = defaultdict(float)
    for row in per_node:
        ops[row["op"]] += row["p50_us"]
    run_us = float(np.median(runs)) if runs else None
    kernels = sum(r["p50_us"] for r in per_node)
    return {
        "model": str(path), "kind": kind, "batch": batch, "iters": iters,
        "threads": threads, "model_run_p50_us": run_us, "kernels_p50_us": kernels,
        "kernel_share": kernels / run_us if run_us else None,
        "nodes": per_node, "ops_us": dict(sorted(ops.items(), key=lambda kv: -kv[1])),
        "runs_seen": len(runs),
    }


def tflite_delegation(path) -> dict:
    """The ops of a .tflite file and which the XNNPACK delegate runs."""
    from ..runtime import open_backend

    d = open_backend(path, "litert", threads=1).delegation()
    left = [o["op"] for o in d["ops"] if not o["delegated"]]
    return {"model": str(path), "kind": "litert", "partitions": d["partitions"],
            "ops": d["ops"], "not_delegated": left,
            "delegated": len(d["ops"]) - len(left), "total": len(d["ops"])}


def profile_file(path, batch: int = 1, iters: int = 500, threads: int | None = None,
                 openvino: bool = False) -> dict:
    """The profile of `path` in its runtime: onnxruntime (ONNX), OpenVINO (IR, or ONNX with
    `openvino`), LiteRT's delegation (TFLite)."""
    from ..runtime import detect_format

    fmt = detect_format(Path(path))
    if fmt == "ir" or (openvino and fmt == "onnx"):
        return profile_openvino(path, batch, iters, threads)
    if fmt == "onnx":
        return profile_onnx(path, batch, iters, threads)
    return tflite_delegation(path)


def profile_records(records: list[dict], *, iters: int = 500, threads: int | None = None,
                    progress: bool = True) -> dict:
    """{record id: profile} for every file in `records` that ran; errors as {"error": ...}."""
    from ..errors import MnistoptError
    from ..progress import progress_bar

    files = [r for r in records if r.get("kind") == "artifact" and not r.get("error")
             and r.get("format") in ("onnx", "tflite", "ir") and r.get("path")]
    out, seen = {}, {}  # a peer may run a file another row ran in the same runtime
    with progress_bar("profile", len(files), progress) as advance:
        for r in files:
            ov = str(r.get("backend", "")).startswith("openvino")
            key = (r["path"], ov)
            if key not in seen:
                try:
                    seen[key] = profile_file(r["path"], 1, iters, threads, openvino=ov)
                except MnistoptError as exc:
                    seen[key] = {"error": str(exc)}
            out[r["id"]] = seen[key]
            advance(1)
    return out


def profile_lines(profiles: dict, top: int = 12) -> list[str]:
    """Text for the terminal and the Markdown report."""
    lines = []
    for rid, p in profiles.items():
        if p.get("error"):
            lines.append(f"{rid}: profile failed: {p['error']}")
        elif p.get("kind") == "litert":
            left = p["not_delegated"]
            lines.append(f"{rid}: XNNPACK runs {p['delegated']} of {p['total']} ops in "
                         f"{p['partitions']} partition(s)"
                         + (f"; left to LiteRT's kernels: {', '.join(left)}" if left else ""))
        else:
            run = p["model_run_p50_us"]
            lines.append(f"{rid}: b{p['batch']} threads {p['threads']}, call p50 "
                         f"{run or float('nan'):.1f} µs, kernels {p['kernels_p50_us']:.1f} µs "
                         f"({(p['kernel_share'] or 0):.0%}), {len(p['nodes'])} nodes:")
            for n in sorted(p["nodes"], key=lambda n: -n["p50_us"])[:top]:
                lines.append(f"    {n['op']:<26} {n['p50_us']:8.1f} µs  {n['node'][:50]}")
    return lines


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python -m mnistopt.bench.profile")
    p.add_argument("model", type=Path)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--iters", type=int, default=500)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--openvino", action="store_true", help="an ONNX file on OpenVINO")
    a = p.parse_args(argv)
    from ..errors import MnistoptError

    try:
        r = profile_file(a.model, a.batch, a.iters, a.threads, openvino=a.openvino)
    except MnistoptError as exc:
        raise SystemExit(f"error: {exc}") from None
    for line in profile_lines({a.model.name: r}, top=100):
        print(line)


if __name__ == "__main__":
    main()
