"""One trial: sample an arch, train it, export int8, validate the file, measure it on the target.

Objectives: int8 validation accuracy (maximised) and the target's cost figure (minimised).
Budgets are Optuna constraints (`trial.set_constraint`, value / limit - 1 <= 0 is feasible).
An arch that breaks a budget before any training (too many parameters, an impossible shape)
is pruned at once with its constraint set, so the sampler learns to avoid the region.

Optuna cannot prune multi-objective trials itself (`Trial.report` is single-objective), so
`Pruner` does it from each epoch's validation accuracy, kept in the trial's user attributes.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import archspec
from ..errors import ConfigError, MnistoptError
from . import space

FINISHED = ("COMPLETE", "PRUNED")


@dataclass
class Pruner:
    """Stop a trial whose validation accuracy at some epoch is already out of the race.

    Nothing is pruned before epoch `warmup` (a one-cycle schedule is still warming up and the
    first epochs say little). From then on a trial near chance (below `floor`) is not learning;
    and after `startup` finished trials, a trial is pruned at epoch e when
      * a finished trial at most as large (parameters and multiply-adds) was better at epoch e
        by `margin`: it is dominated already, whatever its target cost turns out to be; or
      * it is more than `gap` below the best finished trial's accuracy at epoch e.
    """

    startup: int = 3
    warmup: int = 2
    margin: float = 0.002
    gap: float = 0.02
    floor: float = 0.2

    def reason(self, trial_number: int, epoch: int, acc: float, params: int, macs: int,
               finished: list) -> str | None:
        if epoch < self.warmup:
            return None
        if acc < self.floor:
            return f"validation accuracy {acc:.2%} after epoch {epoch}: not learning"
        done = [t for t in finished if len(t.user_attrs.get("val_curve", [])) >= epoch]
        if len(done) < self.startup:
            return None
        for t in done:
            a = t.user_attrs["val_curve"][epoch - 1]
            if (t.user_attrs.get("params", 1 << 62) <= params and t.user_attrs.get("macs", 1 << 62) <= macs
                    and a >= acc + self.margin):
                return (f"epoch {epoch}: {acc:.2%}, trial {t.number} was {a:.2%} with no more "
                        "parameters or multiply-adds")
        best = max(t.user_attrs["val_curve"][epoch - 1] for t in done)
        if acc < best - self.gap:
            return f"epoch {epoch}: {acc:.2%}, more than {self.gap:.0%} below the best ({best:.2%})"
        return None


def trial_arch(trial):
    """(arch, learning rate): a seed's fixed spec, or a fresh point of the space."""
    spec = trial.user_attrs.get("arch_spec")
    if spec is not None:  # enqueued from a user's arch file: no search parameters
        return archspec.from_dict(spec, f"trial {trial.number}"), float(trial.user_attrs.get("lr", 5e-3))
    p = space.suggest(trial)
    return space.params_to_arch(p, name=f"t{trial.number}"), p["lr"]


class Objective:
    """Callable for `study.optimize`; one per worker process (it holds the data in memory)."""

    def __init__(self, cfg, mnist, pruner: Pruner | None = None):
        from ..data import MNIST

        self.cfg, self.pruner = cfg, pruner or Pruner()
        cut = len(mnist.x_train) - cfg.val_images
        if cut < 64:
            raise ConfigError(f"--val-images {cfg.val_images} leaves no training images")
        self.val = (mnist.x_train[cut:], mnist.y_train[cut:])
        # What a trial may see: the training images, the last val_images of them for scoring.
        # The test set is not kept; where train() and export() score a "test" set, it is the
        # validation images.
        src = f"{mnist.source}, validation = training images {cut}..{len(mnist.x_train)}"
        self.data = MNIST(mnist.x_train, mnist.y_train, *self.val, source=src, path=mnist.path, sha256="")
        self.train_part = MNIST(mnist.x_train[:cut], mnist.y_train[:cut], *self.val, source=src,
                                path=mnist.path, sha256="")
        self.running: int | None = None  # the trial in progress (what Ctrl-C interrupts)

    def __call__(self, trial) -> tuple[float, float]:
        import optuna

        self.running = trial.number  # left set by a KeyboardInterrupt, for the requeue
        try:
            result = self._run(trial)
        except optuna.TrialPruned:
            self.running = None
            raise
        except Exception as exc:  # the trial fails; the search goes on and reports why
            self.running = None
            trial.set_user_attr("error", f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
            raise
        self.running = None
        return result

    def _run(self, trial) -> tuple[float, float]:
        import optuna

        cfg, t0 = self.cfg, time.time()
        trial.set_user_attr("worker", os.getpid())
        trial_dir = cfg.out / "trials" / f"{trial.number:04d}"
        try:
            arch, lr = trial_arch(trial)
            archspec.check(arch, f"trial {trial.number}")
        except ConfigError as exc:
            trial.set_constraint("shape", 1.0)
            self._prune(trial, f"impossible shape: {str(exc).split(': ', 1)[-1]}", static=True)
        trial.set_user_attr("arch_spec", archspec.to_dict(arch))
        trial.set_user_attr("params", arch.params)
        trial.set_user_attr("macs", arch.macs)
        if cfg.max_params:
            trial.set_constraint("params", arch.params / cfg.max_params - 1)
            if arch.params > cfg.max_params:
                self._prune(trial, f"{arch.params:,} parameters, over --max-params {cfg.max_params:,}",
                            static=True)
        if "flash" in cfg.budgets and arch.params > cfg.budgets["flash"]:  # an int8 weight is a byte
            trial.set_constraint("flash", arch.params / cfg.budgets["flash"] - 1)
            self._prune(trial, f"{arch.params:,} int8 weights cannot fit the flash budget", static=True)

        shutil.rmtree(trial_dir, ignore_errors=True)  # a retried trial starts clean
        trial_dir.mkdir(parents=True)
        archspec.write(arch, trial_dir / "arch.json")
        curve: list[float] = []

        def on_epoch(epoch: int, acc: float | None) -> bool:
            curve.append(float(acc))
            trial.set_user_attr("val_curve", curve)
            finished = trial.study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
            why = self.pruner.reason(trial.number, epoch, acc, arch.params, arch.macs, finished)
            if why and epoch < cfg.epochs:
                self._prune(trial, why)
            return False

        t1 = time.time()
        run = self._train(trial_dir, lr, on_epoch)
        t2 = time.time()
        try:
            art = self._export(run, trial_dir)
        except MnistoptError as exc:  # e.g. int8 validation failed: the file is not usable
            trial.set_constraint("export", 1.0)
            self._prune(trial, f"int8 export: {exc}")
        v = art.report
        int8_acc, fp32_acc = v["candidate_accuracy"], v["reference_accuracy"]
        trial.set_user_attr("int8_val_accuracy", int8_acc)
        trial.set_user_attr("fp32_val_accuracy", fp32_acc)
        trial.set_user_attr("artifact", str(art.path))
        t3 = time.time()
        figures = _measure(art.path, cfg, self.val)
        figures.update(params=float(arch.params), macs=float(arch.macs))
        trial.set_user_attr("phase_seconds", {"train": t2 - t1, "export": t3 - t2, "measure": time.time() - t3})
        trial.set_user_attr("figures", figures)
        if "error" in figures:
            trial.set_constraint("measure", 1.0)
            self._prune(trial, f"on {cfg.target}: {figures['error']}")
        for name, limit in cfg.budgets.items():
            trial.set_constraint(name, figures[name] / limit - 1)
        trial.set_user_attr("seconds", time.time() - t0)
        return int8_acc, figures[cfg.cost]

    @staticmethod
    def _prune(trial, why: str, static: bool = False):
        """End the trial as pruned; `static`: before any training (it does not count as one
        of the --trials, it cost nothing)."""
        import optuna

        trial.set_user_attr("pruned", why)
        if static:
            trial.set_user_attr("static", True)
        raise optuna.TrialPruned(why)

    def _train(self, trial_dir: Path, lr: float, on_epoch):
        from ..train import TrainConfig, train

        cfg = self.cfg
        tc = TrainConfig(framework=cfg.framework, arch=str(trial_dir / "arch.json"), epochs=cfg.epochs,
                         batch_size=cfg.batch_size, lr=lr, seed=cfg.seed, augment=cfg.augment,
                         label_smoothing=cfg.label_smoothing, limit=cfg.train_images,
                         val_split=len(self.val[1]))
        return train(tc, trial_dir / "run", data=self.data, progress=False, on_epoch=on_epoch)

    def _export(self, run, trial_dir: Path):
        from ..export import export

        [art] = export(run, self.cfg.format, "int8", out=trial_dir, data=self.train_part,
                       progress=False, full_int8=self.cfg.target.kind == "mcu")
        return art


def _measure(path: Path, cfg, val) -> dict:
    from .measure import measure

    # Two workers timing at once would measure each other: one at a time per machine.
    with _machine_lock(cfg.out / ".measure.lock", cfg.target.kind == "cpu"):
        return measure(path, cfg.target, val, cfg.out)


class _machine_lock:
    def __init__(self, path: Path, enabled: bool):
        self.path, self.enabled, self.f = path, enabled, None

    def __enter__(self):
        if self.enabled:
            import fcntl

            self.f = open(self.path, "a")
            fcntl.flock(self.f, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc):
        if self.f:
            self.f.close()  # closing releases the lock
        return False


def trial_summary(t) -> dict:
    """What the front table and the JSON report show of a finished trial."""
    u = t.user_attrs
    return {"number": t.number, "state": t.state.name, "values": t.values,
            "params": u.get("params"), "macs": u.get("macs"), "figures": u.get("figures", {}),
            "int8_val_accuracy": u.get("int8_val_accuracy"), "fp32_val_accuracy": u.get("fp32_val_accuracy"),
            "summary": (u.get("arch_spec") or {}).get("summary"), "pruned": u.get("pruned"),
            "error": u.get("error"),
            "artifact": u.get("artifact"), "seconds": u.get("seconds"),
            "feasible": all(v <= 0 for v in t.constraints.values())}


def dumps(obj) -> str:
    return json.dumps(obj, indent=2, default=lambda o: o.item() if isinstance(o, np.generic) else str(o))
