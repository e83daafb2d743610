"""The GPU check's Python part (tools/gpu_check.sh runs it on the GPU machine; read its header).

    python tools/gpu_check.py --out DIR [--device gpu] [--budget-s 420] [--smoke] [--data F.npz]

Writes DIR/gpu-check.json after every section (a run cut short keeps what it measured):

* environment: GPU, driver, torch, CUDA, cuDNN, Python;
* time_to_99: candidate recipes near `gpu-fast` (2 seeds each) on the device-resident loop,
  each stopping at the first epoch whose *validation* accuracy is >= 99 %; the candidate with
  the smallest median time is chosen on validation alone, then run again on fresh seeds, and
  only those runs' test accuracies are the result (each scored once, after training);
  then the chosen recipe with torch.compile, its compile time apart;
* best_in_10s: `wide` with augmentation, as many epochs as fit in 10 s of training (sized
  from a one-epoch probe); its validation and test accuracy;
* bench: `mnistopt bench --device gpu` on a `seed` and an `edge` run trained here (batch 1
  and 4096), and eager against CUDA-graph replay for both in this process;
* gpu_tests: `pytest -m gpu` on the torch tests.

--smoke (with --device cpu) runs every section on a few hundred images, for the test suite.
Training seconds exclude the data's copy to the device, the warm-up and compilation, and the
validation passes; all of those are reported apart.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SCHEMA = "mnistopt.gpu-check/1"
TARGET = 0.99
GOAL_S, STRETCH_S = 0.76, 0.3  # the published 0.76 s (GTX 1660 Ti); the stretch goal


def environment(device: str) -> dict:
    import numpy
    import torch

    from mnistopt.targets.env import gpu_info, library_versions

    env = {"python": sys.version.split()[0], "platform": platform.platform(), "torch": torch.__version__,
           "cuda": torch.version.cuda, "numpy": numpy.__version__, "cpu_count": os.cpu_count(),
           "libraries": library_versions(), "nvidia_smi": gpu_info(), "device": device}
    commit = ROOT / ".gpu" / "commit.txt"
    env["commit"] = commit.read_text().strip() if commit.is_file() else None
    if device == "gpu" and torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        env.update(gpu=p.name, capability=f"{p.major}.{p.minor}", sms=p.multi_processor_count,
                   memory_gib=round(p.total_memory / 2**30, 1), cudnn=torch.backends.cudnn.version(),
                   bf16=torch.cuda.is_bf16_supported())
    return env


def train_once(data, **kw) -> dict:
    """One run through the public `train.fit`; the facts a report needs."""
    from mnistopt.train import TrainConfig, fit

    cfg = TrainConfig(framework="torch", loop="fast", **kw)
    _, m = fit(cfg, data, progress=False)
    return {"seed": cfg.seed, "time_to_val_target_s": m["time_to_target_seconds"],
            "epochs": m["epochs"], "val_accuracy": m["val_accuracy"], "test_accuracy": m["test_accuracy"],
            "train_seconds": m["train_seconds"], "setup_seconds": m["setup_seconds"],
            "epoch_seconds": [h["seconds"] for h in m["history"]],
            "val_history": [h["val_accuracy"] for h in m["history"]], "fast": m["fast"]}


def candidates(smoke: bool) -> list[dict]:
    from mnistopt.train.recipes import RECIPES

    base = {k: v for k, v in RECIPES["gpu-fast"].values.items() if k not in ("framework", "loop", "device")}
    if smoke:
        return [base]
    out = [base]
    for arch in ("lenet5", "seed", "edge"):
        for epochs, bs in ((1, 256), (2, 256), (2, 512)):
            c = {**base, "arch": arch, "epochs": epochs, "batch_size": bs}
            if c not in out:
                out.append(c)
    return out


def summarize_runs(runs: list[dict]) -> dict:
    times = [r["time_to_val_target_s"] for r in runs]
    reached = [t for t in times if t is not None]
    tests = [r["test_accuracy"] for r in runs]
    med = statistics.median(reached) if len(reached) == len(times) and times else None
    return {"runs": len(runs), "reached_val_target": len(reached),
            "median_time_to_val_target_s": med, "min_s": min(reached) if reached else None,
            "max_s": max(reached) if reached else None,
            "test_accuracy_mean": statistics.fmean(tests) if tests else None,
            "test_accuracy_min": min(tests) if tests else None,
            "test_at_least_target": sum(t >= TARGET for t in tests)}


def time_to_99(data, a, rep, left) -> dict:
    common = dict(device=a.device, target_acc=TARGET, **a.train_kw)
    train_once(data, **{**candidates(True)[0], **common, "epochs": 1})  # primer: CUDA context, libraries
    seeds = (0,) if a.smoke else (0, 1)
    table = []
    for cand in candidates(a.smoke):
        if left() < 60 and table:
            break
        runs = [train_once(data, **{**cand, **common, "seed": s}) for s in seeds]
        table.append({"config": cand, **summarize_runs(runs)})
    ok = [row for row in table if row["median_time_to_val_target_s"] is not None]
    # Chosen on validation alone; the test accuracies above are recorded, never compared.
    chosen = min(ok, key=lambda row: row["median_time_to_val_target_s"]) if ok else table[0]
    out = {"target": TARGET, "selection": table, "chosen": chosen["config"],
           "chosen_by": "smallest median time to the validation target, all seeds reaching it"}
    fresh = (100,) if a.smoke else (100, 101, 102, 103, 104)
    runs = [train_once(data, **{**chosen["config"], **common, "seed": s}) for s in fresh]
    out["runs"], out["summary"] = runs, summarize_runs(runs)
    s = out["summary"]
    out["summary"].update(goal_s=GOAL_S, stretch_s=STRETCH_S, met_goal=bool(
        s["median_time_to_val_target_s"] is not None and s["median_time_to_val_target_s"] < GOAL_S
        and s["test_accuracy_mean"] >= TARGET))
    rep["time_to_99"] = out
    return out


def compiled(data, a, rep, left) -> dict:
    """The chosen recipe with torch.compile (inductor): its compile time, then its speed."""
    t99 = rep.get("time_to_99") or {}
    cfg = t99.get("chosen") or candidates(True)[0]
    kw = {**cfg, "device": a.device, "target_acc": TARGET, **a.train_kw, "compile": True}
    runs = [train_once(data, **kw, seed=s) for s in (100, 101, 102)]
    out = {"config": cfg, "runs": runs, "summary": summarize_runs(runs),
           "compile_seconds": [r["setup_seconds"]["compile"] for r in runs]}
    rep["compiled"] = out
    return out


def best_in_10s(data, a, rep, left) -> dict:
    budget = 2.0 if a.smoke else 10.0
    cfg = dict(arch="lenet5" if a.smoke else "wide", batch_size=128, lr=4e-3, augment=True,
               label_smoothing=0.1, device=a.device, **a.train_kw)
    probe = train_once(data, **cfg, epochs=1)
    per_epoch = probe["train_seconds"]
    # 0.85: the one-cycle schedule needs its length up front, and epochs vary a little
    epochs = max(1, min(60, int(budget * 0.85 / per_epoch)))
    run = train_once(data, **cfg, epochs=epochs)
    out = {"budget_s": budget, "config": {**cfg, "epochs": epochs}, "probe_epoch_s": per_epoch, **run,
           "within_budget": run["train_seconds"] <= budget}
    rep["best_in_10s"] = out
    return out


def bench(data, a, rep, left) -> dict:
    from mnistopt.train import TrainConfig, train

    ws = Path(os.environ.get("MNISTOPT_WORKSPACE", "/tmp/mnistopt-gpu-ws"))
    runs = {}
    for arch, epochs in (("seed", 1), ("edge", 3)):
        cfg = TrainConfig(framework="torch", arch=arch, epochs=epochs, batch_size=128, lr=3e-3, device=a.device,
                          loop="fast", **a.train_kw)
        runs[arch] = train(cfg, ws / "runs" / f"torch-{arch}", data=data, progress=False).path
    sizes = "1,64" if a.smoke else "1,4096"
    cmd = [sys.executable, "-m", "mnistopt", "bench", *map(str, runs.values()), "--device", a.device,
           "--batch-sizes", sizes, "--json", str(a.out / "bench-gpu.json"), "--report", str(a.out / "bench-gpu.md"),
           "--quiet"] + (["--iters", "20", "--warmup", "3", "--budget", "1"] if a.smoke else [])
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=max(30, left() - 30))
    out = {"command": " ".join(cmd[1:]), "returncode": proc.returncode, "seconds": time.perf_counter() - t0,
           "stderr_tail": proc.stderr.strip().splitlines()[-5:], "models": {}}
    doc = json.loads((a.out / "bench-gpu.json").read_text()) if (a.out / "bench-gpu.json").is_file() else {}
    for r in doc.get("results", []):
        lat = r.get("latency", {})
        b_small, b_big = sizes.split(",")
        out["models"][f"{r.get('arch')}/{r.get('backend')}"] = {
            "accuracy": r.get("accuracy"), "via": r.get("via"), "error": r.get("error"),
            "p50_us_b1": lat.get(b_small, {}).get("p50_us"),
            f"images_per_s_b{b_big}": lat.get(b_big, {}).get("images_per_s"),
            "coldstart_s": (r.get("coldstart") or {}).get("total_s")}
    rep["bench"] = out
    out["graphs_vs_eager"] = {arch: graphs_vs_eager(path, a, sizes) for arch, path in runs.items()}
    return out


def graphs_vs_eager(run_dir, a, sizes: str) -> dict:
    """Batch latency p50 with and without CUDA-graph replay, host clock and device events."""
    import numpy as np

    from mnistopt.targets.backends import _Torch
    from mnistopt.targets.stats import summarize, time_calls

    res = {}
    x = np.random.default_rng(0).integers(0, 256, (max(map(int, sizes.split(","))), 28, 28), dtype=np.uint8)
    for graphs in ((False, True) if a.device == "gpu" else (False,)):
        s = _Torch(run_dir, None, a.device, graphs=graphs)
        for b in map(int, sizes.split(",")):
            xb = s.prepare(x[:b])
            st = summarize(time_calls(lambda: s.run(xb), warmup=20, iters=50 if a.smoke else 500, budget_s=1), b)
            res[f"{'graphs' if graphs else 'eager'}_b{b}"] = {"p50_us": st["p50_us"],
                                                               "images_per_s": st["images_per_s"],
                                                               "device_us": device_time_us(s, xb)}
    return res


def device_time_us(session, xb) -> float | None:
    """The forward pass alone on the GPU (CUDA events around 50 calls), no copy to the host."""
    torch = session.torch
    if session.device.type != "cuda":
        return None
    fwd = session.graphs.forward if session.graphs else session.model
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    with torch.inference_mode():
        start.record()
        for _ in range(50):
            fwd(xb)
        end.record()
    end.synchronize()
    return start.elapsed_time(end) * 1e3 / 50


def gpu_tests(data, a, rep, left) -> dict:
    tests = ["tests/test_gpu.py", "tests/test_train.py::test_gpu_training_round_trips[torch]"]
    cmd = [sys.executable, "-m", "pytest", "-q", "-m", "gpu", "-p", "no:cacheprovider", *tests]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=max(30, left() - 20))
    (a.out / "pytest-gpu.txt").write_text(proc.stdout + proc.stderr)
    out = {"returncode": proc.returncode, "summary": (proc.stdout.strip().splitlines() or [""])[-1]}
    rep["gpu_tests"] = out
    return out


# In this order; a section starts only with its minimum left of the budget.
SECTIONS = {"time_to_99": time_to_99, "best_in_10s": best_in_10s, "bench": bench, "compiled": compiled,
            "gpu_tests": gpu_tests}
SECTION_MIN_S = {"time_to_99": 60, "best_in_10s": 30, "bench": 50, "compiled": 60, "gpu_tests": 30}
SMOKE_SECTIONS = "time_to_99,best_in_10s,bench"  # compiling and pytest: too slow for a test


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="tools/gpu_check.py", description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--device", default="gpu", choices=("gpu", "cpu"))
    p.add_argument("--budget-s", type=float, default=250.0, help="start no section after this")
    p.add_argument("--smoke", action="store_true", help="a few hundred images, one candidate (tests)")
    p.add_argument("--data", type=Path, help="MNIST .npz [default: the cache, or $MNISTOPT_DATA]")
    p.add_argument("--only", help=f"comma-separated sections [default: all: {','.join(SECTIONS)}; "
                                  f"--smoke: {SMOKE_SECTIONS}]")
    a = p.parse_args(argv)
    a.only = a.only or (SMOKE_SECTIONS if a.smoke else ",".join(SECTIONS))
    a.out.mkdir(parents=True, exist_ok=True)
    a.train_kw = dict(limit=384, val_split=128) if a.smoke else {}
    t0 = time.perf_counter()

    def left() -> float:
        return a.budget_s - (time.perf_counter() - t0)

    from mnistopt.fsutil import write_json

    rep: dict = {"schema": SCHEMA, "smoke": a.smoke, "device": a.device, "errors": {}, "skipped": [],
                 "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}

    def save():
        rep["elapsed_s"] = time.perf_counter() - t0
        write_json(path, rep, default=str)

    rep["environment"] = environment(a.device)
    path = a.out / f"gpu-{slug(rep['environment'].get('gpu') or a.device)}.json"
    if a.device == "gpu" and not rep["environment"].get("gpu"):
        rep["errors"]["environment"] = "torch sees no CUDA device"
        save()
        print(f"error: torch {rep['environment']['torch']} sees no CUDA device", file=sys.stderr)
        return 2
    if a.data:
        from mnistopt.train import data_from_path
        data = data_from_path(a.data)
    else:
        from mnistopt.data import load_mnist
        data = load_mnist()
    rep["data"] = {"source": data.source, "sha256": data.sha256, "train": int(len(data.y_train))}
    save()
    for name in a.only.split(","):
        if left() < (5 if a.smoke else SECTION_MIN_S[name]):
            rep["skipped"].append(name)
            continue
        print(f"[{time.perf_counter() - t0:6.1f} s] {name}", flush=True)
        try:
            SECTIONS[name](data, a, rep, left)
        except Exception as exc:  # one section's failure must not lose the others' figures
            rep["errors"][name] = f"{type(exc).__name__}: {exc}"
            traceback.print_exc()
        save()
    try:
        print(headline(rep))
    except (KeyError, TypeError, ValueError) as exc:  # the JSON is written; the summary is a courtesy
        print(f"(no summary: {exc!r}; see {path})")
    return 0


def slug(name: str) -> str:
    """'NVIDIA H200' -> 'h200': the report's file name."""
    import re

    return re.sub(r"[^a-z0-9]+", "-", name.lower().replace("nvidia", "")).strip("-") or "gpu"


def headline(rep: dict) -> str:
    lines = [f"gpu check ({rep['environment'].get('gpu', rep['device'])}, torch {rep['environment']['torch']}), "
             f"{rep['elapsed_s']:.0f} s; errors: {sorted(rep['errors']) or 'none'}; skipped: {rep['skipped'] or 'none'}"]
    t = rep.get("time_to_99", {}).get("summary")
    if t:
        lines.append(f"  time to >= 99 % (validation stop): median {t['median_time_to_val_target_s']} s, "
                     f"test accuracy mean {t['test_accuracy_mean']:.4f} (min {t['test_accuracy_min']:.4f}), "
                     f"{t['test_at_least_target']}/{t['runs']} runs >= 99 % on test")
    b = rep.get("best_in_10s")
    if b:
        lines.append(f"  best in {b['budget_s']:.0f} s: {b['config']['arch']} {b['config']['epochs']} epochs, "
                     f"{b['train_seconds']:.2f} s, test {b['test_accuracy']:.4f}")
    for k, m in rep.get("bench", {}).get("models", {}).items():
        lines.append(f"  bench {k}: {m}")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
