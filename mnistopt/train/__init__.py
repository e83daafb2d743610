"""Training: one `train()` API over a registry of frameworks, and the run directory contract.

A run directory holds:

* the native model — torch: ``model.pt`` (a ``state_dict``, loadable with ``weights_only=True``),
  keras: ``model.keras``, tf: ``saved_model/``;
* ``metrics.json`` — framework, arch, params, macs, native (file name of the model), layout
  (NCHW/NHWC), config, per-epoch history, test_accuracy, train_seconds, ...

`load_run(dir)` reads it back into a `Run`, whose `logits(images)` runs the native model on
uint8 images: the golden reference that exporters and the benchmark compare against.

Framework modules are imported lazily (torch and TensorFlow take seconds to import); each one
provides ``LAYOUT``, ``build(arch)``, ``fit(model, cfg, data, progress)``, ``save(model, dir)``,
``load(dir, arch)``, ``logits(model, x01)`` and ``device_check(device)``.
"""

from __future__ import annotations

import importlib
import json
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..archs import get_arch
from ..errors import ConfigError, RunError

# name -> (module, extra that installs it, native file or directory name)
FRAMEWORKS: dict[str, tuple[str, str, str]] = {
    "torch": ("mnistopt.train.torch_backend", "torch", "model.pt"),
    "keras": ("mnistopt.train.keras_backend", "tf", "model.keras"),
    "tf": ("mnistopt.train.tf_backend", "tf", "saved_model"),
}
# The framework's own package, imported to check the extra is installed.
FRAMEWORK_PACKAGES = {"torch": "torch", "keras": "keras", "tf": "tensorflow"}


def backend(framework: str):
    """The framework's module, or a clear error naming the extra that installs it."""
    from ..errors import require

    if framework not in FRAMEWORKS:
        raise ConfigError(f"unknown framework '{framework}'; choose one of: {', '.join(FRAMEWORKS)}")
    module, extra, _ = FRAMEWORKS[framework]
    if framework in ("keras", "tf"):
        # TensorFlow's C++ logging prints start-up banners and harmless version-skew errors
        # on stderr before Python sees anything; real failures still raise exceptions.
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    require(FRAMEWORK_PACKAGES[framework], extra, f"the {framework} framework")
    return importlib.import_module(module)


@dataclass
class TrainConfig:
    framework: str = "torch"
    arch: str = "seed"
    epochs: int = 1
    batch_size: int = 64
    lr: float = 1e-3
    seed: int = 0
    device: str = "cpu"
    augment: bool = False
    target_acc: float | None = None
    schedule: str = "onecycle"  # "constant" or "onecycle" (linear warm-up, cosine decay)
    weight_decay: float = 0.0
    label_smoothing: float = 0.0
    limit: int | None = None  # train on the first N images only (tests, smoke runs)

    def validate(self) -> None:
        get_arch(self.arch)
        if self.framework not in FRAMEWORKS:
            raise ConfigError(f"unknown framework '{self.framework}'; choose one of: {', '.join(FRAMEWORKS)}")
        if self.epochs <= 0:
            raise ConfigError(f"--epochs must be at least 1, got {self.epochs}")
        if self.batch_size <= 0:
            raise ConfigError(f"--batch-size must be at least 1, got {self.batch_size}")
        if not self.lr > 0:
            raise ConfigError(f"--lr must be positive, got {self.lr}")
        if self.device not in ("cpu", "gpu"):
            raise ConfigError(f"--device must be cpu or gpu, got '{self.device}'")
        if self.schedule not in ("constant", "onecycle"):
            raise ConfigError(f"--schedule must be constant or onecycle, got '{self.schedule}'")
        if self.target_acc is not None and not 0 < self.target_acc <= 1:
            raise ConfigError(f"--target-acc is a fraction in (0, 1], got {self.target_acc}")


@dataclass
class Run:
    """A trained model on disk, loaded back."""

    path: Path
    metrics: dict[str, Any]
    _model: Any = field(default=None, repr=False)

    @property
    def framework(self) -> str:
        return self.metrics["framework"]

    @property
    def arch(self) -> str:
        return self.metrics["arch"]

    @property
    def native_path(self) -> Path:
        return self.path / self.metrics["native"]

    @property
    def layout(self) -> str:
        return self.metrics["layout"]

    @property
    def model(self):
        if self._model is None:
            self._model = backend(self.framework).load(self.path, self.arch_spec)
        return self._model

    @property
    def arch_spec(self):
        """The `Arch` the run was trained with, rebuilt from metrics.json alone."""
        from ..archspec import from_run_metrics

        return from_run_metrics(self.metrics, str(self.path / "metrics.json"))

    def logits(self, images: np.ndarray, batch_size: int = 1000) -> np.ndarray:
        """Native logits (N, 10) float32 for uint8 images (N, 28, 28)."""
        mod = backend(self.framework)
        out = [mod.logits(self.model, to_input(images[i:i + batch_size], self.layout))
               for i in range(0, len(images), batch_size)]
        return np.concatenate(out) if out else np.zeros((0, 10), np.float32)


def to_input(images: np.ndarray, layout: str) -> np.ndarray:
    """uint8 (N, 28, 28) -> float32 in [0, 1], (N, 1, 28, 28) for NCHW or (N, 28, 28, 1) for NHWC."""
    x = images.astype(np.float32) / 255.0
    return x[:, None, :, :] if layout == "NCHW" else x[..., None]


def native_sha256(path: Path) -> str:
    """sha256 of a native model file, or of a SavedModel directory's files in sorted order."""
    import hashlib

    h = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for p in files:
        h.update(str(p.relative_to(path) if path.is_dir() else p.name).encode())
        h.update(p.read_bytes())
    return h.hexdigest()


def load_run(path: str | os.PathLike) -> Run:
    path = Path(path)
    mfile = path / "metrics.json"
    if not path.is_dir():
        raise RunError(f"{path}: not a run directory (train one with 'mnistopt train')")
    if not mfile.is_file():
        raise RunError(f"{path}: no metrics.json; not a finished run directory")
    try:
        metrics = json.loads(mfile.read_text())
        for key in ("framework", "arch", "native", "layout"):
            metrics[key]
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise RunError(f"{mfile}: unreadable or incomplete ({exc})") from None
    if not (path / metrics["native"]).exists():
        raise RunError(f"{path}: the native model {metrics['native']} is missing")
    run = Run(path=path, metrics=metrics)
    run.arch_spec  # a bad spec is one clear error now, not a framework's traceback later
    return run


def write_json_atomic(path: Path, obj: Any) -> None:
    from ..fsutil import write_json

    write_json(path, obj)


def data_from_path(path: str | os.PathLike):
    """MNIST read from `path` (IDX directory, .npz, wheel, .pkl.gz), checked, not cached."""
    from ..data import MNIST, arrays_from_source, arrays_sha256, check_arrays

    arrays, desc = arrays_from_source(Path(path))
    arrays = check_arrays(arrays, desc)
    return MNIST(**arrays, source=desc, path=Path(path), sha256=arrays_sha256(arrays))


def default_run_dir(cfg: TrainConfig, root: Path | None = None) -> Path:
    from ..workspace import workspace

    return (root or workspace() / "runs") / f"{cfg.framework}-{get_arch(cfg.arch).name}"


def train(cfg: TrainConfig, out: Path | None = None, *, data=None, progress: bool = True) -> Run:
    """Train per `cfg`, write the run directory atomically, return it loaded."""
    cfg.validate()
    arch = get_arch(cfg.arch)
    mod = backend(cfg.framework)
    mod.device_check(cfg.device)
    if data is None:
        from ..data import load_mnist

        data = load_mnist()
    out = Path(out) if out else default_run_dir(cfg)
    # A finished run is replaced, but never a directory that is not one (--out ~ by mistake).
    if out.exists() and not (out.is_dir() and ((out / "metrics.json").is_file() or not any(out.iterdir()))):
        raise ConfigError(f"{out} exists and is not a run directory; choose another --out")
    out.parent.mkdir(parents=True, exist_ok=True)

    from ..archspec import to_dict

    model = mod.build(arch, seed=cfg.seed)
    result = mod.fit(model, cfg, data, progress=progress)

    # Build the run in a temp directory beside the target, then swap it in: a crash or Ctrl-C
    # never leaves a half-written run that load_run would accept.
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    try:
        native = mod.save(model, tmp)
        metrics = {
            "framework": cfg.framework,
            "arch": arch.name,
            "arch_spec": to_dict(arch),
            "params": arch.params,
            "macs": arch.macs,
            "native": native,
            "layout": mod.LAYOUT,
            "native_sha256": native_sha256(tmp / native),
            "config": asdict(cfg),
            **result,
        }
        write_json_atomic(tmp / "metrics.json", metrics)
        # mkdtemp/mkstemp make private (0700/0600) entries; a run is meant to be shared.
        os.chmod(tmp, 0o755)
        os.chmod(tmp / "metrics.json", 0o644)
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    run = load_run(out)
    run._model = model
    return run
