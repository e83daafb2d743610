"""The benchmark: find what to measure, measure each in a fresh process, collect one report.

`discover(paths)` turns files / run directories / folders into `Item`s; `run_bench(items,
options)` hands them to the device target (cpu and gpu here; arm and mcu in their own
packages, see `targets.py`) and returns the report dict (schema in `report.py`).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..artifact import read_sidecar
from ..errors import ConfigError, DeviceError, RunError
from .backends import ARTIFACT_BACKEND, NATIVE_FOR_FRAMEWORK


@dataclass
class Item:
    """One thing to benchmark: an exported file or a run directory's native model."""

    id: str  # stable name across runs, the key for --baseline
    kind: str  # "artifact" | "native"
    path: Path
    backend: str
    framework: str | None = None
    arch: str | None = None
    format: str | None = None  # onnx | tflite | native
    quant: str | None = None  # fp32 | int8 | dynamic | fp16 | None for native
    file_bytes: int = 0
    params: int | None = None
    macs: int | None = None
    meta: dict = field(default_factory=dict)


@dataclass
class Options:
    device: str = "cpu"
    batch_sizes: list = field(default_factory=lambda: [1, 32, 256])
    threads: int | None = None
    warmup: int = 20
    iters: int = 300
    budget_s: float = 3.0  # cap on timed seconds per (model, batch size)
    coldstart: bool = True
    progress: bool = True
    arm: object = None  # mnistopt.arm.target.ArmOptions for --device arm (target, emulate, cpu)


def _dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.is_dir() else path.stat().st_size


def _arch_figures(arch: str | None) -> tuple[int | None, int | None]:
    from ..archs import ARCHS

    a = ARCHS.get(arch or "")
    return (a.params, a.macs) if a else (None, None)


def artifact_item(path: Path) -> Item:
    path = Path(path)
    if path.suffix.lower() not in ARTIFACT_BACKEND:
        raise ConfigError(f"{path}: not an .onnx or .tflite file")
    if not path.is_file():
        raise ConfigError(f"{path}: no such file")
    meta = read_sidecar(path)
    # Default names are <arch>-<framework>-<quant>.<ext>; the sidecar, when present, is the truth.
    parts = path.stem.split("-")
    guess = dict(zip(("arch", "framework", "quant"), parts)) if len(parts) == 3 else {}
    arch = meta.get("arch") or guess.get("arch")
    params, macs = _arch_figures(arch)
    fmt = path.suffix.lower()[1:]
    q = meta.get("quantize") if isinstance(meta.get("quantize"), dict) else {}
    val = meta.get("validation") if isinstance(meta.get("validation"), dict) else {}
    keep = {"quantize_reason": q.get("reason"), "quantize_settings": q.get("settings"),
            "source_run": (meta.get("source") or {}).get("run") if isinstance(meta.get("source"), dict) else None,
            # what the exporter measured against the native model, for the reader's cross-check
            "validation": {k: v for k, v in val.items() if isinstance(v, (int, float, str, bool))} or None}
    return Item(id=path.name, kind="artifact", path=path, backend=ARTIFACT_BACKEND[path.suffix.lower()],
                framework=meta.get("framework") or guess.get("framework"), arch=arch, format=fmt,
                quant=q.get("tag") or guess.get("quant"),
                file_bytes=path.stat().st_size, params=params, macs=macs,
                meta={k: v for k, v in keep.items() if v is not None})


def native_item(run_dir: Path) -> Item:
    from ..train import load_run

    run = load_run(run_dir)
    backend = NATIVE_FOR_FRAMEWORK.get(run.framework)
    if backend is None:
        raise RunError(f"{run_dir}: no benchmark backend for framework '{run.framework}'")
    params, macs = _arch_figures(run.arch)
    return Item(id=f"{Path(run_dir).name}:native", kind="native", path=Path(run_dir), backend=backend,
                framework=run.framework, arch=run.arch, format="native", quant="fp32",
                file_bytes=_dir_bytes(run.native_path), params=params, macs=macs,
                meta={"test_accuracy_at_training": run.metrics.get("test_accuracy")})


def _is_run(d: Path) -> bool:
    return (d / "metrics.json").is_file()


def discover(paths: list[Path] | None = None) -> list[Item]:
    """Files, run directories and folders (searched recursively) -> items, in a stable order.

    With no paths: every run under the workspace plus the artifacts in its export/ folder.
    """
    from ..workspace import workspace

    if not paths:
        root = workspace() / "runs"
        if not root.is_dir():
            raise RunError(f"nothing to benchmark: {root} does not exist "
                           "(train and export first: 'make demo', or give PATHS)")
        paths = [root]
    items: dict[str, Item] = {}

    def add(item: Item) -> None:
        key = str(item.path.resolve()) + item.kind
        items.setdefault(key, item)

    for p in map(Path, paths):
        if p.is_file():
            add(artifact_item(p))
        elif p.is_dir():
            if _is_run(p):
                add(native_item(p))
            for run in sorted(q.parent for q in p.rglob("metrics.json")):
                if run != p and not run.name.startswith("."):
                    add(native_item(run))
            for f in sorted(p.rglob("*")):
                # Hidden paths are temp files of an export or a run still being written.
                if f.suffix.lower() in ARTIFACT_BACKEND and f.is_file() and not any(
                        part.startswith(".") for part in f.relative_to(p).parts):
                    add(artifact_item(f))
        else:
            raise ConfigError(f"{p}: no such file or directory")
    if not items:
        raise RunError(f"nothing to benchmark under {', '.join(map(str, paths))} "
                       "(no .onnx/.tflite files and no run directories)")
    out = list(items.values())
    # Make ids unique when two runs export files of the same name.
    seen: dict[str, int] = {}
    for it in out:
        seen[it.id] = seen.get(it.id, 0) + 1
    for it in out:
        if seen[it.id] > 1:
            it.id = f"{it.path.parent.parent.name}/{it.id}" if it.kind == "artifact" else str(it.path)
    return out


def write_test_npz(path: Path) -> None:
    import numpy as np

    from ..data import load_mnist

    m = load_mnist()
    np.savez(path, x_test=m.x_test, y_test=m.y_test)


def run_child(item: Item, opts: Options, data: Path, workdir: Path, timeout: float = 900) -> dict:
    """Benchmark one item in a fresh interpreter; returns the child's result dict."""
    out = workdir / f"{abs(hash(item.id))}.json"
    cmd = [sys.executable, "-m", "mnistopt.bench.child", "--backend", item.backend,
           "--path", str(item.path), "--data", str(data), "--out", str(out),
           "--batch-sizes", ",".join(map(str, opts.batch_sizes)), "--warmup", str(opts.warmup),
           "--iters", str(opts.iters), "--budget", str(opts.budget_s), "--device", opts.device]
    if opts.threads:
        cmd += ["--threads", str(opts.threads)]
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


def measure_local(items: list[Item], opts: Options) -> list[dict]:
    """The cpu/gpu target: every item in its own subprocess on this machine."""
    from ..progress import progress_bar

    records = []
    with tempfile.TemporaryDirectory(prefix="mnistopt-bench-") as tmp:
        work = Path(tmp)
        data = work / "test.npz"
        write_test_npz(data)
        with progress_bar(f"bench ({opts.device})", len(items), opts.progress) as advance:
            for item in items:
                advance(0, info=item.id)
                res = run_child(item, opts, data, work)
                records.append(make_record(item, res, opts, latency_source="native"))
                advance(1, info=item.id)
    if items and all(r.get("error_type") == "DeviceError" for r in records):
        looked = "; ".join(sorted({r["error"].split(": ", 1)[-1] for r in records}))
        raise DeviceError(f"no backend can run on --device {opts.device}: {looked}")
    return records


def make_record(item: Item, res: dict, opts: Options, latency_source: str) -> dict:
    """One result record (schema in report.py) from an item and what was measured for it."""
    from .backends import BACKENDS

    rec = {k: v for k, v in asdict(item).items() if k != "path"}
    rec["path"] = str(item.path)
    rec["backend_label"] = BACKENDS[item.backend].label if item.backend in BACKENDS else item.backend
    rec["device"] = opts.device
    rec["latency_source"] = latency_source  # native | remote | emulated
    for key in ("accuracy", "n_images", "latency", "coldstart", "threads", "via",
                "peak_rss_bytes_total", "eval_seconds", "error", "error_type"):
        if key in res:
            rec[key] = res[key]
    rec.setdefault("latency", {})
    return rec
