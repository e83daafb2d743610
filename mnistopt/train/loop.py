"""What every trainer does the same way around its framework's own training step.

`Splits` is the data a backend may see: training images and the validation images held out
from them; never the test set (`train.fit` scores that once, after training). `EpochLog` is
the bookkeeping of an epoch loop: clock, progress bar, per-epoch history, early stopping on
validation accuracy (`--target-acc`) or on a caller's callback, and the result dict that goes
into metrics.json.
"""

from __future__ import annotations

import time
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any, Callable, Optional

import numpy as np

from ..errors import ConfigError

# on_epoch(epoch, val_accuracy) -> True to stop after this epoch; epoch counts from 1.
OnEpoch = Callable[[int, Optional[float]], bool]


@dataclass(frozen=True)
class Splits:
    """uint8 images (N, 28, 28) and labels; the validation set may be empty."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    val_from: int  # index of the first validation image in the full training set

    def describe(self) -> dict:
        n_val = len(self.y_val)
        return {"train": int(len(self.y_train)), "val": int(n_val),
                "val_images": [self.val_from, self.val_from + n_val] if n_val else None}


def make_splits(cfg, data) -> Splits:
    """The last `cfg.val_split` training images for validation; the first `cfg.limit` of the
    rest (all by default) for training. A fixed slice, so every run of every framework is
    selected on the same images."""
    n_all = len(data.x_train)
    if cfg.val_split >= n_all:
        raise ConfigError(f"--val-split {cfg.val_split} leaves no training images: the data has "
                          f"{n_all}; give a smaller --val-split")
    cut = n_all - cfg.val_split
    n = min(cfg.limit, cut) if cfg.limit else cut
    return Splits(data.x_train[:n], data.y_train[:n], data.x_train[cut:], data.y_train[cut:], cut)


class EpochLog:
    """Bookkeeping of one training run. A backend's loop calls, per epoch::

        advance = log.begin(epoch)          # clock on, progress bar open
        ... its own steps, advance(k, info=...) as it goes ...
        if log.end(loss, train_accuracy, validate):   # clock off, validate, record
            break

    `validate()` returns the accuracy on the validation images; it is called only when there
    are some, outside the timed part. Use as a context manager so a failure closes the bar.
    """

    def __init__(self, cfg, n_train: int, n_val: int, on_epoch: OnEpoch | None = None,
                 progress: bool = True):
        self.cfg, self.n_train, self.n_val = cfg, n_train, n_val
        self.on_epoch, self.progress = on_epoch, progress
        self.steps = -(-n_train // cfg.batch_size)  # batches per epoch, the last one short
        self.history: list[dict] = []
        self.train_seconds = 0.0
        self.time_to_target: float | None = None
        self.stopped: str | None = None
        self._bar = ExitStack()

    def __enter__(self) -> "EpochLog":
        return self

    def __exit__(self, *exc) -> bool:
        self._bar.close()
        return False

    def begin(self, epoch: int) -> Callable[..., None]:
        from ..progress import progress_bar

        self._epoch, self._done = epoch, 0
        bar = self._bar.enter_context(
            progress_bar(f"epoch {epoch + 1}/{self.cfg.epochs}", self.steps, self.progress))

        def advance(n: int = 1, info: str = "") -> None:
            self._done += n
            bar(n, info=info)

        self._advance = advance
        self._t0 = time.perf_counter()
        return advance

    def end(self, loss: float, train_accuracy: float, validate: Callable[[], float]) -> bool:
        """Record the epoch; True when training should stop here."""
        self.train_seconds += time.perf_counter() - self._t0
        val = float(validate()) if self.n_val else None  # not counted in train_seconds
        info = f"loss {loss:.4f} train {train_accuracy:.2%}" + (f" val {val:.2%}" if val is not None else "")
        self._advance(self.steps - self._done, info=info)
        self._bar.close()
        epoch = self._epoch + 1
        self.history.append({"epoch": epoch, "loss": float(loss),
                             "train_accuracy": float(train_accuracy), "val_accuracy": val,
                             "seconds": self.train_seconds})
        if self.on_epoch is not None and self.on_epoch(epoch, val):
            self.stopped = "callback"
        if self.cfg.target_acc is not None and val is not None and val >= self.cfg.target_acc:
            self.time_to_target, self.stopped = self.train_seconds, "target"
        return self.stopped is not None

    def result(self, **facts: Any) -> dict:
        """The training half of metrics.json; `facts` adds test_accuracy, versions, ..."""
        h, t = self.history, self.train_seconds
        return {
            "epochs": len(h),
            "history": h,
            "val_accuracy": h[-1]["val_accuracy"] if h else None,
            "train_seconds": t,
            "train_images_per_second": len(h) * self.n_train / t if t else None,
            "time_to_target_seconds": self.time_to_target,
            "stopped_early": self.stopped,
            **facts,
        }
