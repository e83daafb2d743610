"""`export()`: convert, quantize, validate against the native model, then write atomically."""

from __future__ import annotations

import json
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..artifact import sidecar_path
from ..errors import ConfigError, ValidationError
from ..fsutil import atomic_path, check_output, sha256_file, write_json
from .registry import FORMATS, MODES, QUANT_TAGS, choose, format_module, get_exporter

SCHEMA = "mnistopt.artifact/1"
LABELS = [str(i) for i in range(10)]
DEFAULT_CALIB = 512
DEFAULT_OPSET = 18


@dataclass
class Artifact:
    path: Path
    sidecar: Path | None
    metadata: dict[str, Any]

    @property
    def report(self) -> dict:
        """The validation report (numbers), or {} when validation was off."""
        return self.metadata.get("validation") or {}


@dataclass(frozen=True)
class Context:
    """What the path modules need besides the run: the same for every call of one export."""

    opset: int = DEFAULT_OPSET
    calib: np.ndarray | None = None  # uint8 (N, 28, 28) training images; set when int8 is asked
    calib_source: str = ""
    progress: bool = True
    cpu: Any = None  # hw.CpuInfo; None = this machine
    batch: int = 1  # images per call, for paths whose files have a fixed batch
    # int8: every op in integer arithmetic (microcontrollers, NPUs) instead of the ops that are
    # faster in float on `cpu` left float (onnx_int8.float_convs, tflite_int8.float_part_plan).
    full_int8: bool = False
    # What the current format's `convert` changed in the graph on the way (exact rewrites),
    # one line each; it is emptied before each convert and lands in every file's metadata.
    graph: list = field(default_factory=list)


def calibration_images(data, n: int, seed: int = 0) -> np.ndarray:
    """`n` training images (never test images), a fixed random draw so it is reproducible."""
    n = min(n, len(data.x_train))
    idx = np.random.default_rng(seed).choice(len(data.x_train), n, replace=False)
    return data.x_train[np.sort(idx)]


def default_path(run, fmt: str, mode: str, batch: int = 1, full_int8: bool = False) -> Path:
    # A full-integer file is another file than the one made for this CPU: its own name.
    tag = (QUANT_TAGS[mode] + ("-full" if full_int8 and mode == "int8" else "")
           + (f"-b{batch}" if batch != 1 else ""))
    return run.path / "export" / f"{run.arch}-{run.framework}-{tag}{FORMATS[fmt]}"


def _target(run, fmt, mode, out, many: bool, batch: int = 1, full_int8: bool = False) -> Path:
    if out is None:
        return default_path(run, fmt, mode, batch, full_int8)
    out = Path(out)
    if out.suffix in (".onnx", ".tflite"):
        if many:
            raise ConfigError(f"--out {out} names one file but this exports several; give a directory")
        if out.suffix != FORMATS[fmt]:
            raise ConfigError(f"--out {out}: a {fmt} file should end in {FORMATS[fmt]}")
        return out
    return out / default_path(run, fmt, mode, batch, full_int8).name


def export(run, format: str | Sequence[str] = "onnx", quantize: str | Sequence[str] = "none", *,
           calib_samples: int = DEFAULT_CALIB, opset: int = DEFAULT_OPSET,
           out: str | os.PathLike | None = None, validate: bool = True,
           atol: float | None = None, data=None, progress: bool = True, cpu=None,
           batch: int = 1, full_int8: bool = False) -> list[Artifact]:
    """Export `run` (a Run or its directory) to each format x quantize mode; return the artifacts.

    `batch`: images per call for the paths whose files have a fixed batch (torch -> TFLite);
    their file names then end in -bN. A larger batch serves throughput (one call per N images
    instead of N calls); a batch-1 call on such a file pads to N.

    int8 files keep float the few ops whose int8 form is slower on `cpu` (default: this
    machine; the file's metadata lists them); `full_int8` makes every op integer, for
    microcontrollers and NPUs.

    Each file is validated on the full test set of `data` (MNIST by default) before it is
    written; a failure raises a ValidationError subclass and leaves no file behind.
    """
    from ..progress import progress_bar
    from ..runtime import load as open_model
    from ..train import Run, load_run
    from ..train.prune import base_arch

    fmts, modes = choose(format, FORMATS, "export format"), choose(quantize, MODES, "quantize mode")
    run = run if isinstance(run, Run) else load_run(run)
    arch = run.arch_spec
    if opset < 17:
        raise ConfigError(f"--opset must be at least 17, got {opset}")
    if atol is not None and not atol > 0:
        raise ConfigError(f"--atol must be positive, got {atol}")
    if isinstance(batch, bool) or not isinstance(batch, int) or not 1 <= batch <= 4096:
        raise ConfigError(f"--batch must be an integer from 1 to 4096, got {batch!r}")
    jobs = []
    for fmt in fmts:
        exp = get_exporter(run.framework, fmt)
        for mode in modes:
            if mode not in exp.modes:
                raise ConfigError(f"{run.framework} -> {fmt} has no quantize mode '{mode}'; "
                                  f"it has: {', '.join(exp.modes)}")
        if batch != 1 and not exp.fixed_batch:
            raise ConfigError(f"--batch is for files with a fixed batch (torch -> tflite); "
                              f"{run.framework} -> {fmt} files take any batch")
        jobs.append((fmt, exp))
    needs_calib = "int8" in modes
    if full_int8 and not needs_calib:
        raise ConfigError("--full-int8 is about int8 files: add --quantize int8")
    if needs_calib and (calib_samples is None or calib_samples < 1):
        raise ConfigError(f"--calib-samples must be at least 1 for int8, got {calib_samples}")
    many = len(fmts) * len(modes) > 1
    targets = {(f, m): _target(run, f, m, out, many, batch, full_int8) for f in fmts for m in modes}
    for target in targets.values():  # a bad location fails now, not after the conversion
        check_output(target, "--out" if out is not None else "output")
        check_output(sidecar_path(target), "--out" if out is not None else "output")
    impls = [(fmt, exp, exp.impl()) for fmt, exp in jobs]  # missing extras fail before any work
    _load_native(run)

    if data is None:
        from ..data import load_mnist

        data = load_mnist()
    calib = calibration_images(data, calib_samples) if needs_calib else None
    if needs_calib and batch > len(calib):
        raise ConfigError(f"--batch {batch} is more than the {len(calib)} calibration images")
    ctx = Context(opset=opset, progress=progress, cpu=cpu, calib=calib, batch=batch,
                  full_int8=bool(full_int8),
                  calib_source=f"training set, {len(calib)} images drawn with seed 0" if needs_calib else "")

    native = None
    if validate:
        native = []
        with progress_bar(f"native {run.framework} logits", len(data.x_test), progress) as advance:
            for j in range(0, len(data.x_test), 1000):
                native.append(run.logits(data.x_test[j:j + 1000]))
                advance(len(native[-1]))
        native = np.concatenate(native)

    artifacts = []
    for fmt, exp, impl in impls:
        with tempfile.TemporaryDirectory(prefix="mnistopt-export-") as tmp:
            work = Path(tmp)
            t0 = time.perf_counter()
            ctx.graph.clear()
            with progress_bar(f"{run.framework} -> {fmt} fp32", 1, progress) as advance:
                fp32 = impl.convert(run, work, ctx)
                advance(1)
            convert_s = time.perf_counter() - t0
            fp32_size = fp32.stat().st_size
            tools = impl.tools(run.framework)
            for mode in modes:
                t0 = time.perf_counter()
                if mode == "none":
                    model, settings, reason = fp32, {}, "float32, numerically the native model"
                else:
                    with progress_bar(f"{run.framework} -> {fmt} {mode}", 1, progress) as advance:
                        model, settings, reason = impl.quantize(run, fp32, mode, work, ctx)
                        advance(1)
                seconds = time.perf_counter() - t0 + (convert_s if mode == "none" else 0.0)
                clf = open_model(model)
                meta = {
                    "schema": SCHEMA, "format": fmt, "framework": run.framework, "arch": run.arch,
                    **({"base_arch": base} if (base := base_arch(run.metrics)) else {}),
                    "params": arch.params, "macs": arch.macs,
                    "labels": LABELS,
                    "source": {"run": str(run.path), "native": run.metrics["native"],
                               "sha256": run.metrics.get("native_sha256"),
                               "test_accuracy": run.metrics.get("test_accuracy")},
                    "input": clf.input_spec, "output": clf.output_spec,
                    "quantize": {"mode": mode, "tag": QUANT_TAGS[mode], "settings": settings,
                                 "reason": reason},
                    "tools": {**tools, "mnistopt": _version()},
                    "graph": list(ctx.graph),
                    "validation": None,
                    "export_seconds": round(seconds, 3),
                    "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                }
                size = model.stat().st_size
                what = f"{run.framework} -> {fmt} {QUANT_TAGS[mode]}"
                if validate:
                    report = _validate(clf, native, data, exp.tolerance(mode).with_atol(atol),
                                       what, progress)
                    report.update(size_bytes=size, fp32_size_bytes=fp32_size,
                                  size_ratio_to_fp32=size / fp32_size)
                    meta["validation"] = report
                artifacts.append(_write(impl, model, targets[(fmt, mode)], meta))
    return artifacts


def _load_native(run) -> None:
    """Load the native model now, so a corrupt file is one clear error, not a deep traceback."""
    from ..errors import MnistoptError, RunError

    try:
        run.model
    except MnistoptError:
        raise
    except Exception as exc:
        raise RunError(f"{run.native_path}: cannot load the native {run.framework} model "
                       f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}); "
                       "retrain it with 'mnistopt train'") from None


def _validate(clf, native, data, tol, what, progress) -> dict:
    from ..parity import check
    from ..progress import progress_bar
    from ..runtime.classifier import logits_in_batches

    with progress_bar(f"validate {what}", len(data.x_test), progress) as advance:
        got = logits_in_batches(clf, data.x_test, advance=advance)
    try:
        return check(native, got, data.y_test, tol, what=what)
    except ValidationError as exc:
        exc.args = (f"{exc.args[0]}; nothing written",)
        raise


def _write(impl, model: Path, target: Path, meta: dict) -> Artifact:
    """Embed the metadata, write the model and its sidecar beside `target`, each atomically."""
    with atomic_path(target, suffix=target.suffix) as tmp:
        impl.embed(model, tmp, meta)
        sidecar_meta = {**meta, "file": {"name": target.name, "bytes": tmp.stat().st_size,
                                         "sha256": sha256_file(tmp)}}
    sidecar = sidecar_path(target)
    write_json(sidecar, sidecar_meta)
    return Artifact(path=target, sidecar=sidecar, metadata=sidecar_meta)


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("mnistopt")
    except Exception:
        return "unknown"


def read_metadata(path: str | os.PathLike) -> dict | None:
    """An artifact's metadata: its sidecar if present, else what is embedded, else None."""
    path = Path(path)
    sidecar = sidecar_path(path)
    if sidecar.is_file():
        return json.loads(sidecar.read_text())
    fmt = next((f for f, suffix in FORMATS.items() if path.suffix == suffix), None)
    return format_module(fmt).read_embedded(path) if fmt else None
