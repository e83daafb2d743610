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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from ..archs import get_arch
from ..errors import ConfigError, RunError
from ..fsutil import check_output
from .loop import EpochLog, OnEpoch, Splits, make_splits
from .rundir import write_run
from .weights import check as check_weights


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

    def weights(self, model) -> dict[str, np.ndarray]:
        """The model's arrays by name (what weights.npz holds)."""

    def layer_names(self, arch) -> list[dict[str, str]]:
        """Per layer of `arch`, each of its arrays (`archs.arrays`: "w", "b", "gamma", ...) ->
        its name in `weights`, which lays the arrays out the framework's way (conv HWIO in
        NHWC frameworks, OIHW in torch)."""

    def set_weights(self, model, arrays: dict[str, np.ndarray]) -> None:
        """Load `arrays` (names and shapes already checked against `weights`) into `model`."""

    def load(self, run_dir: Path, arch) -> Any:
        """A run written before weights.npz: read its native file (train/weights.py says how)."""

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
        missing = [n for n in ("LAYOUT", "build", "fit", "save", "weights", "layer_names",
                               "set_weights", "load", "logits", "device_check") if not hasattr(mod, n)]
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

    def validate(self, arch_given: bool = False) -> None:
        """Every option checked once, here; each error names the option and its range
        (`arch_given`: the caller brings the Arch itself, a pruned one; `arch` only names it)."""
        if not arch_given:
            get_arch(self.arch)
        if self.framework not in FRAMEWORKS:
            raise ConfigError(f"unknown framework '{self.framework}'; choose one of: {', '.join(FRAMEWORKS)}")
        for option, value, choices in (("--device", self.device, DEVICES),
                                       ("--schedule", self.schedule, SCHEDULES)):
            if value not in choices:
                raise ConfigError(f"{option} must be one of {', '.join(choices)}, got '{value}'")
        for option, value, lo, hi in (("--epochs", self.epochs, 1, 10_000),
                                      ("--batch-size", self.batch_size, 1, 65_536),
                                      ("--seed", self.seed, 0, 2**31 - 1),
                                      ("--val-split", self.val_split, 0, 10**7),
                                      ("--limit", self.limit, 1, 10**7)):
            if value is None and option == "--limit":
                continue
            if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
                raise ConfigError(f"{option} is a whole number in [{lo}, {hi:,}], got {value!r}")
        # option, value, low, high, whether low and high themselves are allowed
        for option, value, lo, hi, lo_in, hi_in in (
                ("--lr", self.lr, 0, 10, False, True),
                ("--weight-decay", self.weight_decay, 0, 1, True, False),
                ("--label-smoothing", self.label_smoothing, 0, 1, True, False),
                ("--target-acc", self.target_acc, 0, 1, False, True)):
            if value is None and option == "--target-acc":
                continue
            number = isinstance(value, (int, float)) and not isinstance(value, bool)
            if not (number and (lo <= value if lo_in else lo < value)
                    and (value <= hi if hi_in else value < hi)):  # NaN fails both
                span = f"{'[' if lo_in else '('}{lo}, {hi}{']' if hi_in else ')'}"
                raise ConfigError(f"{option} is a number in {span}, got {value!r}")
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
    _arch: Any = field(default=None, repr=False)

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
        """The model rebuilt from its arch with the run's weights (nothing in the run runs)."""
        if self._model is None:
            from .weights import load_model

            self._model = load_model(self)
        return self._model

    @property
    def arch_spec(self):
        """The `Arch` the run was trained with, rebuilt from metrics.json alone (checked once,
        when first asked for: `load_run` asks)."""
        if self._arch is None:
            from ..archspec import from_run_metrics

            self._arch = from_run_metrics(self.metrics, str(self.path / "metrics.json"))
        return self._arch

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


def check_run_dir(out: Path) -> Path:
    """`out` if a run can be written there: a finished run is replaced, but never a directory
    that is not one (--out ~ by mistake), nor a file, nor a place that takes no files."""
    out = check_output(out, "--out", directory=True)
    if out.is_dir() and not ((out / "metrics.json").is_file() or not any(out.iterdir())):
        raise ConfigError(f"--out {out}: exists and is not a run directory; choose another")
    return out


def default_run_dir(cfg: TrainConfig, root: Path | None = None) -> Path:
    from ..workspace import workspace

    return (root or workspace() / "runs") / f"{cfg.framework}-{get_arch(cfg.arch).name}"


def fit(cfg: TrainConfig, data, *, progress: bool = True, on_epoch: OnEpoch | None = None,
        arch=None, init: dict[str, np.ndarray] | None = None,
        score_test: bool = True) -> tuple[Any, dict]:
    """Build and train a model per `cfg` on `data` (an MNIST); (model, metrics) in memory.

    `arch`: an `archs.Arch` to build instead of `cfg.arch`'s; `init`: starting weights (the
    backend's, checked) instead of random ones, for fine-tuning. The backend sees the training
    and validation images only; the test set is scored here, once, through the `logits` path
    export validation uses (`score_test=False`: not at all, for a candidate that may go).
    """
    cfg.validate(arch_given=arch is not None)
    if on_epoch is not None and not cfg.val_split:
        raise ConfigError("an on_epoch callback gets the validation accuracy: it needs val_split > 0")
    arch = arch or get_arch(cfg.arch)
    mod = backend(cfg.framework)
    mod.device_check(cfg.device)
    splits = make_splits(cfg, data)
    model = mod.build(arch, seed=cfg.seed)
    if init is not None:
        mod.set_weights(model, check_weights(f"{arch.name} starting weights", init,
                                             mod.weights(model)))
    with EpochLog(cfg, len(splits.y_train), len(splits.y_val), on_epoch, progress) as log:
        facts = mod.fit(model, cfg, splits, log)
    test = test_accuracy(mod, model, data) if score_test else None
    return model, {**log.result(test_accuracy=test, split=splits.describe()), **facts}


def test_accuracy(mod: Backend, model, data) -> float:
    """Top-1 accuracy of `model` (framework module `mod`) on `data`'s test images."""
    logits = [mod.logits(model, to_input(data.x_test[i:i + 1000], mod.LAYOUT))
              for i in range(0, len(data.x_test), 1000)]
    return float((np.concatenate(logits).argmax(1) == data.y_test).mean())


def train(cfg: TrainConfig, out: Path | None = None, *, data=None, progress: bool = True,
          on_epoch: OnEpoch | None = None) -> Run:
    """Train per `cfg`, write the run directory atomically, return it loaded.

    `on_epoch(epoch, val_accuracy) -> bool` is called after every epoch (epoch counts from 1);
    True stops training there (a search prunes a poor trial this way). An exception it raises
    ends the run with nothing written.
    """
    cfg.validate()
    out = check_run_dir(Path(out) if out else default_run_dir(cfg))
    if data is None:
        from ..data import load_mnist

        data = load_mnist()

    model, result = fit(cfg, data, progress=progress, on_epoch=on_epoch)
    return write_run(out, cfg, get_arch(cfg.arch), model, result)
