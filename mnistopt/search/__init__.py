"""`mnistopt search`: find the most accurate int8 model that fits a device's budget.

Each Optuna trial samples an architecture (`space`), trains it on part of the training set,
exports it int8, validates the int8 file, measures it on the target (`measure`) and reports
(int8 validation accuracy, the target's cost) with the budgets as constraints (`trial`). The
study lives in Optuna storage, shared by any number of workers and resumable (`study`); the
result is the Pareto front (`front`), and `--finalize` retrains the chosen model on all the
training images and reports its test accuracy, the one use of the test set (`finalize`).

    from mnistopt.search import SearchConfig, search, write_report
    cfg = SearchConfig.from_args("mcu:m4-64k", ["arena=12KB,flash=16KB"], max_params=8000)
    write_report(search(cfg), cfg)
"""

from __future__ import annotations

from .config import SearchConfig  # noqa: F401  (the public API)


def search(cfg):
    from .study import search as run

    return run(cfg)


def write_report(study, cfg):
    from .front import write_report as write

    return write(study, cfg)
