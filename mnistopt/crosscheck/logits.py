"""Logits of any model the project makes, and of many models in worker processes.

    model_logits(path, images) -> (logits (N, 10) float32, info)

A run directory answers through its native model (`train.load_run(dir).logits`), a .onnx or
.tflite file through the lean runtime (`mnistopt.runtime.load(path).logits`). `info` says what
the model is: kind, framework, arch, quant tag and the sha256 of the native model it came from
(the run's own, or the one an artifact's metadata records).

`logits_in_workers(paths, images)` computes many: one fresh interpreter per group of models
that import the same framework (torch runs; Keras and TensorFlow runs; artifacts, which need
only the runtime). In one process torch and TensorFlow would each bring their own thread
pools, oneDNN and protobuf (the README's benchmark: peak RSS 242 MiB for torch eager, 685 MiB
for Keras), and a crash in one framework would lose every model's logits; here it costs only
its group, and one interpreter start-up per framework is paid, not one per model. Results come
back as .npy files, read without pickle and size-checked.

    python -m mnistopt.crosscheck.logits --data X.npz --out DIR PATH...    (the worker)
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import numpy as np

from ..errors import ModelLoadError

N_CLASSES = 10


def model_logits(path: str | os.PathLike, images: np.ndarray) -> tuple[np.ndarray, dict]:
    path = Path(path)
    if path.is_dir():
        from ..train import load_run

        run = load_run(path)
        out = run.logits(images)
        info = {"kind": "native", "framework": run.framework, "arch": run.arch, "quant": "fp32",
                "source_sha256": run.metrics.get("native_sha256"),
                "label": f"{run.framework}/{run.arch} ({path.name})"}
    else:
        from .. import runtime

        clf = runtime.load(path)
        # In batches of the size export validation used: a dynamic-range int8 model picks its
        # activation scales per call, so its logits depend on the batch it was given.
        out = runtime.logits_in_batches(clf, images)
        meta = clf.metadata if isinstance(clf.metadata, dict) else {}
        q = meta.get("quantize") if isinstance(meta.get("quantize"), dict) else {}
        src = meta.get("source") if isinstance(meta.get("source"), dict) else {}
        info = {"kind": "artifact", "framework": _str(meta.get("framework")),
                "arch": _str(meta.get("arch")), "quant": _str(q.get("tag")),
                "source_sha256": _str(src.get("sha256")), "label": path.name}
    out = np.asarray(out)
    if out.shape != (len(images), N_CLASSES):
        raise ModelLoadError(f"{path}: expected ({len(images)}, {N_CLASSES}) logits, got shape "
                             f"{out.shape}")
    return out.astype(np.float32, copy=False), info


def _str(v) -> str | None:
    return v if isinstance(v, str) else None


def group_of(path: Path) -> str:
    """Which worker a model runs in: the framework a run directory imports, else 'runtime'."""
    if not Path(path).is_dir():
        return "runtime"
    try:
        fw = json.loads((Path(path) / "metrics.json").read_text()).get("framework")
    except (OSError, ValueError, AttributeError):
        fw = None
    return {"keras": "tensorflow", "tf": "tensorflow"}.get(fw, str(fw or "unknown"))


def logits_in_workers(paths: list[Path], images: np.ndarray, progress: bool = True,
                      timeout: float = 1800) -> list[tuple[np.ndarray | None, dict]]:
    """(logits or None, info with 'error' on failure) for each path, in order."""
    from ..progress import progress_bar

    results: list = [None] * len(paths)
    groups: dict[str, list[int]] = {}
    for i, p in enumerate(paths):
        groups.setdefault(group_of(p), []).append(i)
    with tempfile.TemporaryDirectory(prefix="mnistopt-parity-") as tmp, \
            progress_bar("parity: logits", len(paths), progress) as advance:
        work = Path(tmp)
        data = work / "images.npz"
        np.savez(data, x=np.ascontiguousarray(images, np.uint8))
        for name, idx in groups.items():
            out = work / name
            out.mkdir()
            cmd = [sys.executable, "-m", "mnistopt.crosscheck.logits", "--data", str(data),
                   "--out", str(out), *[str(paths[i]) for i in idx]]
            errfile = work / f"{name}.err"
            with open(errfile, "w") as err:  # a file, not a pipe: TensorFlow's chatter cannot block it
                proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, text=True)
                timer = threading.Timer(timeout, proc.kill)
                timer.start()
                try:
                    for line in proc.stdout:  # one line per finished model: the bar moves
                        k = line.strip()
                        if k.isdigit() and int(k) < len(idx):
                            advance(1, info=Path(paths[idx[int(k)]]).name)
                    proc.wait()
                finally:
                    timer.cancel()
            tail = " | ".join(errfile.read_text(errors="replace").strip().splitlines()[-2:])
            for k, i in enumerate(idx):
                results[i] = _read_result(out, k, len(images), proc.returncode, tail)
    return results


def _read_result(out: Path, k: int, n: int, code, tail: str):
    """One model's worker output; an error entry when there is none or it is malformed."""
    info_file, arr_file = out / f"{k}.json", out / f"{k}.npy"
    try:
        info = json.loads(info_file.read_text())
    except (OSError, ValueError):
        return None, {"error": f"worker exited {code} before this model: {tail or 'no message'}"}
    if not isinstance(info, dict) or info.get("error"):
        return None, {"error": str(info.get("error") if isinstance(info, dict) else info)}
    # The worker is ours, but the file is still read from disk: bound it, refuse pickles.
    if not arr_file.is_file() or arr_file.stat().st_size > n * N_CLASSES * 8 + 4096:
        return None, {**info, "error": "worker wrote no logits, or an oversized file"}
    arr = np.load(arr_file, allow_pickle=False)
    if arr.shape != (n, N_CLASSES) or arr.dtype.kind != "f":
        return None, {**info, "error": f"worker wrote logits of shape {arr.shape}, {arr.dtype}"}
    return arr, info


def main(argv=None) -> int:
    import argparse

    p = argparse.ArgumentParser(prog="python -m mnistopt.crosscheck.logits")
    p.add_argument("--data", required=True, type=Path)
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("paths", nargs="+", type=Path)
    a = p.parse_args(argv)
    with np.load(a.data, allow_pickle=False) as d:
        images = d["x"]
    for k, path in enumerate(a.paths):
        try:
            logits, info = model_logits(path, images)
            np.save(a.out / f"{k}.npy", logits)
        except Exception as exc:  # one model's failure is data for the table, not the end
            info = {"error": f"{type(exc).__name__}: {exc}"}
        (a.out / f"{k}.json").write_text(json.dumps(info))
        print(k, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
