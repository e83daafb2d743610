"""How mnistopt reads a run's model back: the arch rebuilt in code, its weights from numbers.

Each run keeps its framework's native model (model.pt, model.keras, saved_model/) for that
framework's users, and beside it ``weights.npz``: the model's arrays by name, numbers only,
its sha256 recorded in metrics.json when the run was trained. mnistopt itself loads that file
into a model rebuilt from the arch, with every name and shape checked against the rebuilt
model, and never executes anything stored in the run: a SavedModel is a program (its graph
runs when it is served), and a .keras config chooses which classes get built with which
arguments; Keras' safe_mode blocks lambdas and a deny-list, and has been bypassed before
(CVE-2025-1550, CVE-2025-8747, CVE-2025-9906).

Runs trained before weights.npz existed: torch's model.pt is a state_dict read with
``weights_only=True``; Keras' weights are read from the ``model.weights.h5`` inside model.keras
(its config.json is never looked at); a tf run has only its SavedModel, which is loaded only
when the user says they trust it (`--trust-savedmodel`, or MNISTOPT_TRUST_SAVEDMODEL=1).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..errors import DataError, RunError
from ..fsutil import sha256_file

WEIGHTS = "weights.npz"
TRUST_ENV = "MNISTOPT_TRUST_SAVEDMODEL"
# 50 M numbers (200 MB of float32): a hundred times the largest arch; more is not one of ours.
MAX_ELEMENTS = 50_000_000


def trust_savedmodel() -> None:
    """Let this process (and the bench's child processes) load tf runs' SavedModels."""
    os.environ[TRUST_ENV] = "1"


def savedmodel_trusted() -> bool:
    return os.environ.get(TRUST_ENV, "") == "1"


def save(arrays: dict[str, np.ndarray], run_dir: Path) -> dict:
    """Write weights.npz into `run_dir`; the record for metrics.json ("weights")."""
    path = Path(run_dir) / WEIGHTS
    np.savez(path, **{k: np.array(v, order="C") for k, v in arrays.items()})
    return {"file": WEIGHTS, "sha256": sha256_file(path), "arrays": len(arrays)}


def load(run_dir: Path, record, expected: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The arrays of `run_dir`'s weights.npz, checked against the digest `record` and against
    `expected` (the rebuilt model's own arrays: the same names, shapes and kinds)."""
    path = Path(run_dir) / WEIGHTS
    if not isinstance(record, dict) or not isinstance(record.get("sha256"), str):
        raise RunError(f"{run_dir}/metrics.json: its 'weights' entry is not a digest record")
    if not path.is_file():
        raise RunError(f"{path}: missing (metrics.json records it); the run is incomplete")
    if path.stat().st_size > MAX_ELEMENTS * 8:
        raise RunError(f"{path}: {path.stat().st_size:,} bytes, far more than any arch's weights")
    if sha256_file(path) != record["sha256"]:
        raise RunError(f"{path}: does not match the sha256 recorded in metrics.json when the run "
                       "was trained; the run was changed or is corrupt: retrain it")
    try:
        arrays = read_npz(path)
    except DataError as exc:
        raise RunError(f"{exc}; retrain the run") from None
    return check(path, arrays, expected)


def check(path, arrays: dict[str, np.ndarray], expected: dict[str, np.ndarray]) -> dict:
    """`arrays` if they are exactly the rebuilt model's (`expected`) names, shapes and kinds,
    cast to its dtypes; else one RunError naming the first differences."""
    missing, extra = sorted(set(expected) - set(arrays)), sorted(set(arrays) - set(expected))
    if missing or extra:
        raise RunError(f"{path}: not the weights of this arch "
                       f"({_names('missing', missing)}{'; ' if missing and extra else ''}"
                       f"{_names('unexpected', extra)})")
    for name, want in expected.items():
        got = arrays[name]
        if got.shape != want.shape or got.dtype.kind != np.asarray(want).dtype.kind:
            raise RunError(f"{path}: {name} is {got.dtype}{list(got.shape)}, the arch needs "
                           f"{np.asarray(want).dtype}{list(want.shape)}")
        if got.dtype.kind == "f" and not np.isfinite(got).all():
            raise RunError(f"{path}: {name} holds NaN or infinite values")
    return {k: np.asarray(arrays[k], dtype=np.asarray(expected[k]).dtype) for k in expected}


def read_npz(path: Path) -> dict[str, np.ndarray]:
    from ..datafiles import read_npz as bounded

    return bounded(path, max_elements=MAX_ELEMENTS)


def _names(what: str, names: list[str]) -> str:
    if not names:
        return ""
    shown = ", ".join(names[:4]) + (f" and {len(names) - 4} more" if len(names) > 4 else "")
    return f"{what}: {shown}"


def load_model(run):
    """`run`'s model, rebuilt from its arch and loaded from weights.npz (or, for a run written
    before that file existed, from its native file as the module docstring says)."""
    from . import backend

    mod, arch = backend(run.framework), run.arch_spec  # the spec recorded at training time
    if "weights" in run.metrics:
        model = mod.build(arch)
        mod.set_weights(model, load(run.path, run.metrics["weights"], mod.weights(model)))
        return model
    if run.framework == "tf" and not savedmodel_trusted():
        raise RunError(
            f"{run.path}: this tf run has no {WEIGHTS} (it predates it), only a SavedModel, and "
            "loading a SavedModel runs the graph stored in it, which could do anything; not "
            "loaded. Retrain the run, or pass --trust-savedmodel if you trust where it came from")
    return mod.load(run.path, arch)
