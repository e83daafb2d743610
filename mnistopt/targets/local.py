"""The cpu and gpu targets: every model in a fresh process on this machine.

A fresh interpreter per model (`python -m mnistopt.targets.child`) makes the cold start real,
the memory figure that backend's alone, and keeps one framework's thread pool (torch's OpenMP
threads keep spinning after a call) from slowing the next model's timings.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ..errors import DeviceError
from .base import Item, Settings, Target, make_record

CHILD_TIMEOUT_S = 900


def run_child(item: Item, settings: Settings, device: str, data: Path, workdir: Path,
              timeout: float = CHILD_TIMEOUT_S) -> dict:
    """Measure one item in a fresh interpreter; returns the child's result dict."""
    out = workdir / f"{abs(hash(item.id))}.json"
    cmd = [sys.executable, "-m", "mnistopt.targets.child", "--backend", item.backend,
           "--path", str(item.path), "--data", str(data), "--out", str(out),
           "--batch-sizes", ",".join(map(str, settings.batch_sizes)),
           "--warmup", str(settings.warmup), "--iters", str(settings.iters),
           "--budget", str(settings.budget_s), "--device", device]
    if settings.threads:
        cmd += ["--threads", str(settings.threads)]
    env = dict(os.environ)
    t_spawn = time.time()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s", "error_type": "Timeout"}
    if not out.is_file():
        tail = (proc.stderr or "").strip().splitlines()[-3:]
        return {"error": f"worker exited {proc.returncode}: {' | '.join(tail)}", "error_type": "Crash"}
    res = json.loads(out.read_text())
    cold = res.get("coldstart")
    if cold:
        # From spawning the interpreter to the first answer: what a user of a CLI tool waits.
        cold["total_s"] = cold.pop("wall_clock_done") - t_spawn
    return res


class LocalTarget(Target):
    """This machine's CPU or GPU (the backend picks the provider)."""

    def run(self, items: list[Item], settings: Settings) -> list[dict]:
        from ..progress import progress_bar
        from .backends import BACKENDS
        from .items import write_test_npz

        records = []
        with tempfile.TemporaryDirectory(prefix="mnistopt-bench-") as tmp:
            work = Path(tmp)
            data = work / "test.npz"
            write_test_npz(data)
            with progress_bar(f"bench ({self.name})", len(items), settings.progress) as advance:
                for item in items:
                    advance(0, info=item.id)
                    res = run_child(item, settings, self.name, data, work)
                    label = BACKENDS[item.backend].label if item.backend in BACKENDS else None
                    records.append(make_record(item, res, self.name, "native", label))
                    advance(1, info=item.id)
        if items and all(r.get("error_type") == "DeviceError" for r in records):
            looked = "; ".join(sorted({r["error"].split(": ", 1)[-1] for r in records}))
            raise DeviceError(f"no backend can run on --device {self.name}: {looked}")
        return records


class CpuTarget(LocalTarget):
    name = "cpu"
    summary = "this machine's CPU, each model in a fresh process"


class GpuTarget(LocalTarget):
    name = "gpu"
    summary = "this machine's CUDA GPU (onnxruntime-gpu, torch, TensorFlow)"
