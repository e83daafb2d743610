"""Training: one `train()` API over a registry of frameworks, and the run directory contract.

A run directory holds:

* the native model — torch: ``model.pt`` (a ``state_dict``, loadable with ``weights_only=True``),
  keras: ``model.keras``, tf: ``saved_model/``;
* ``metrics.json`` — framework, arch, params, macs, native (file name of the model), layout
  (NCHW/NHWC), config (incl. val_split), split (train / val image counts, which images were
  held out), per-epoch history (loss, train_accuracy, val_accuracy, seconds), val_accuracy,
  test_accuracy, train_seconds, stopped_early, ...

Model selection sees only the training images: the last ``val_split`` of them (5,000 by
default) are held out for the per-epoch validation accuracy that ``--target-acc`` and the
``on_epoch`` callback act on. The test set is scored once, after training (`test_accuracy`).

`load_run(dir)` reads a run back into a `Run`, whose `logits(images)` runs the native model on
uint8 images: the golden reference that exporters and the benchmark compare against.

Framework modules are imported lazily (torch and TensorFlow take seconds to import); each one
implements `Backend`.
"""

from __future__ import annotations

import importlib
import json
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from ..archs import get_arch
from ..errors import ConfigError, RunError
from ..fsutil import write_json
from .loop import EpochLog, OnEpoch, Splits, make_splits


@dataclass(frozen=True)
class Framework:
    module: str  # implements Backend
    extra: str  # the pip extra that installs the framework
    native: str  # the file or directory `save` writes
    package: str  # the framework's own package, imported to check the extra is installed


FRAMEWORKS: dict[str, Framework] = {
    "torch": Framework("mnistopt.train.torch_backend", "torch", "model.pt", "torch"),
    "keras": Framework("mnistopt.train.keras_backend", "tf", "model.keras", "keras"),
    "tf": Framework("mnistopt.train.tf_backend", "tf", "saved_model", "tensorflow"),
}
FRAMEWORK_PACKAGES = {name: f.package for name, f in FRAMEWORKS.items()}
DEVICES = ("cpu", "gpu")
SCHEDULES = ("onecycle", "constant")  # one-cycle: linear warm-up, cosine decay
# "standard": the explicit step-by-step loop; "fast": the device-resident loop of
# train/torch_fast.py (whole data set on the device, no host sync inside an epoch);
# "auto": fast on a GPU, standard on the CPU.
LOOPS = ("auto", "standard", "fast")
# The classic 55,000 / 5,000 split of MNIST's training set (TensorFlow's original MNIST
# tutorial): 5,000 images measure accuracy near 99 % to about +-0.14 pp (one standard error),
# fine enough to stop at a target, and leave 92 % of the images to train on.
DEFAULT_VAL_SPLIT = 5000


@runtime_checkable
class Backend(Protocol):
    """What a framework module provides (torch_backend, keras_backend, tf_backend)."""

    LAYOUT: str  # "NCHW" or "NHWC": the native model's input layout

    def build(self, arch, seed: int = 0) -> Any:
        """A fresh model of `arch` (an archs.Arch); the seed fixes the initial weights."""

    def fit(self, model, cfg: "TrainConfig", data: Splits, log: EpochLog) -> dict:
        """Train in place, calling log.begin / log.end per epoch; return framework facts
        (versions, threads) for metrics.json."""

    def save(self, model, run_dir: Path) -> str:
        """Write the native model into run_dir; return its file or directory name."""

    def load(self, run_dir: Path, arch) -> Any: ...

    def logits(self, model, x01: np.ndarray) -> np.ndarray:
        """(N, 10) float32 logits for float32 [0, 1] images in LAYOUT."""

    def device_check(self, device: str) -> Any:
        """The framework's device for "cpu" / "gpu", or DeviceError naming why not."""


def backend(framework: str) -> Backend:
    """The framework's module, or a clear error naming the extra that installs it."""
    from ..errors import require

    if framework not in FRAMEWORKS:
        raise ConfigError(f"unknown framework '{framework}'; choose one of: {', '.join(FRAMEWORKS)}")
    fw = FRAMEWORKS[framework]
    require(fw.package, fw.extra, f"the {framework} framework")
    mod = importlib.import_module(fw.module)
    if not isinstance(mod, Backend):
        missing = [n for n in ("LAYOUT", "build", "fit", "save", "load", "logits", "device_check")
                   if not hasattr(mod, n)]
        raise TypeError(f"{fw.module} does not implement train.Backend: lacks {', '.join(missing)}")
    return mod


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
    target_acc: float | None = None  # stop once validation accuracy reaches it
    schedule: str = "onecycle"
    weight_decay: float = 0.0
    label_smoothing: float = 0.0
    limit: int | None = None  # train on the first N images only (tests, smoke runs)
    val_split: int = DEFAULT_VAL_SPLIT  # the last N training images validate; 0: none
    loop: str = "auto"  # one of LOOPS; "fast" is torch's
    compile: bool = False  # torch.compile the model (fast loop); compile time reported apart
    betas: tuple[float, float] | None = None  # Adam's (fast loop); None: the framework's

    def uses_fast_loop(self) -> bool:
        return self.framework == "torch" and (
            self.loop == "fast" or (self.loop == "auto" and self.device == "gpu"))

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
        if self.device not in DEVICES:
            raise ConfigError(f"--device must be one of {', '.join(DEVICES)}, got '{self.device}'")
        if self.schedule not in SCHEDULES:
            raise ConfigError(f"--schedule must be one of {', '.join(SCHEDULES)}, got '{self.schedule}'")
        if self.limit is not None and self.limit <= 0:
            raise ConfigError(f"--limit must be at least 1, got {self.limit}")
        if self.val_split < 0:
            raise ConfigError(f"--val-split is a number of images (0: none), got {self.val_split}")
        if self.target_acc is not None and not 0 < self.target_acc <= 1:
            raise ConfigError(f"--target-acc is a fraction in (0, 1], got {self.target_acc}")
        if self.target_acc is not None and not self.val_split:
            raise ConfigError("--target-acc stops on validation accuracy: it needs --val-split > 0")
        if self.loop not in LOOPS:
            raise ConfigError(f"--loop must be one of {', '.join(LOOPS)}, got '{self.loop}'")
        if self.loop == "fast" and self.framework != "torch":
            raise ConfigError(f"--loop fast is the torch trainer's; {self.framework} has the standard loop")
        if (self.compile or self.betas) and not self.uses_fast_loop():
            what = "--compile" if self.compile else "--betas"
            raise ConfigError(f"{what} applies to the torch fast loop: add --loop fast (or --device gpu)")
        if self.betas is not None and (len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas)):
            raise ConfigError(f"--betas are two numbers in [0, 1), e.g. 0.7,0.9; got {self.betas}")


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


def latest_run(root: str | os.PathLike | None = None) -> Run:
    """The most recently finished run under `root` (default: the workspace's runs/)."""
    from ..workspace import workspace

    root = Path(root) if root is not None else workspace() / "runs"
    runs = []
    for d in sorted(root.iterdir()) if root.is_dir() else []:
        if d.name.startswith("."):  # a run being written (train's temp directory)
            continue
        try:
            runs.append(load_run(d))
        except RunError:  # an unfinished or foreign directory: not a candidate
            continue
    if not runs:
        raise RunError(f"no trained run in {root}; run 'mnistopt train' first")
    return max(runs, key=lambda r: ((r.path / "metrics.json").stat().st_mtime_ns, r.path.name))


def data_from_path(path: str | os.PathLike):
    """MNIST read from `path` (IDX directory, .npz, wheel, .pkl.gz), checked, not cached."""
    from ..data import MNIST, arrays_from_source, arrays_sha256, check_arrays

    arrays, desc = arrays_from_source(Path(path))
    arrays = check_arrays(arrays, desc)
    return MNIST(**arrays, source=desc, path=Path(path), sha256=arrays_sha256(arrays))


def default_run_dir(cfg: TrainConfig, root: Path | None = None) -> Path:
    from ..workspace import workspace

    return (root or workspace() / "runs") / f"{cfg.framework}-{get_arch(cfg.arch).name}"


def fit(cfg: TrainConfig, data, *, progress: bool = True,
        on_epoch: OnEpoch | None = None) -> tuple[Any, dict]:
    """Build and train a model per `cfg` on `data` (an MNIST); (model, metrics) in memory.

    The backend sees the training and validation images only; the test set is scored here,
    once, through the same `logits` path that export validation uses.
    """
    cfg.validate()
    if on_epoch is not None and not cfg.val_split:
        raise ConfigError("an on_epoch callback gets the validation accuracy: it needs val_split > 0")
    arch = get_arch(cfg.arch)
    mod = backend(cfg.framework)
    mod.device_check(cfg.device)
    splits = make_splits(cfg, data)
    model = mod.build(arch, seed=cfg.seed)
    with EpochLog(cfg, len(splits.y_train), len(splits.y_val), on_epoch, progress) as log:
        facts = mod.fit(model, cfg, splits, log)
    logits = [mod.logits(model, to_input(data.x_test[i:i + 1000], mod.LAYOUT))
              for i in range(0, len(data.x_test), 1000)]
    test = float((np.concatenate(logits).argmax(1) == data.y_test).mean())
    return model, {**log.result(test_accuracy=test, split=splits.describe()), **facts}


def train(cfg: TrainConfig, out: Path | None = None, *, data=None, progress: bool = True,
          on_epoch: OnEpoch | None = None) -> Run:
    """Train per `cfg`, write the run directory atomically, return it loaded.

    `on_epoch(epoch, val_accuracy) -> bool` is called after every epoch (epoch counts from 1);
    True stops training there (a search prunes a poor trial this way). An exception it raises
    ends the run with nothing written.
    """
    cfg.validate()
    if data is None:
        from ..data import load_mnist

        data = load_mnist()
    out = Path(out) if out else default_run_dir(cfg)
    # A finished run is replaced, but never a directory that is not one (--out ~ by mistake).
    if out.exists() and not (out.is_dir() and ((out / "metrics.json").is_file() or not any(out.iterdir()))):
        raise ConfigError(f"{out} exists and is not a run directory; choose another --out")
    out.parent.mkdir(parents=True, exist_ok=True)

    from ..archspec import to_dict

    arch = get_arch(cfg.arch)
    mod = backend(cfg.framework)
    model, result = fit(cfg, data, progress=progress, on_epoch=on_epoch)

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
        write_json(tmp / "metrics.json", metrics)
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
