"""Every model against every other on the same images: `mnistopt parity`.

    matrix(paths=None, *, images=None, labels=None, progress=True) -> dict

`paths` are what `mnistopt bench` takes (files, run directories, folders; default: the
workspace) and are found the same way (`targets.discover`). Each model's logits come from a
worker process (`logits.py`); each pair is measured with `parity.compare`. Two models must be
numerically equal when both are fp32 and come from the same native model (the run's
`native_sha256`, which an artifact's metadata records as `source.sha256`): the run's native
model and its fp32 files, in any runtimes. Such a pair is held to `parity.FP32`; a failure, or
a model that could not run, is listed in `failures` (the command then exits 1).

JSON schema "mnistopt.parity/1"::

    {"schema": "mnistopt.parity/1", "created": ISO time, "n_images": 10000,
     "models": [{id, kind: native|artifact, path, framework, arch, quant, source_sha256,
                 accuracy, error?}],
     "pairs": [{a, b, top1_agreement, disagreements, max_abs_diff, rel_max_diff, fp32,
                expected_equal, reference, bound?, passed?, failures?}],   (a before b)
     "failures": ["one line each"]}
"""

from __future__ import annotations

import datetime as _dt
from pathlib import Path

import numpy as np

from ..errors import ConfigError, RunError
from ..parity import FP32, Tolerance, compare

SCHEMA = "mnistopt.parity/1"


def pair_tolerance(a_native: bool, b_native: bool) -> Tolerance:
    """FP32 against a native model. Two files of one run were each validated against the
    native model, not against each other: by the triangle inequality they may differ by twice
    the bound and disagree on twice the images, and no more."""
    if a_native or b_native:
        return FP32
    return Tolerance(rel=2 * FP32.rel, agreement=1 - 2 * (1 - FP32.agreement))


def _expected_equal(a: dict, b: dict) -> bool:
    return (a["quant"] == b["quant"] == "fp32" and a.get("source_sha256") is not None
            and a.get("source_sha256") == b.get("source_sha256"))


def matrix(paths: list[Path] | None = None, *, images: np.ndarray | None = None,
           labels: np.ndarray | None = None, progress: bool = True) -> dict:
    """The agreement matrix of the models `paths` hold, on `images` (default: the test set)."""
    from ..targets.items import discover
    from ..workspace import workspace
    from .logits import logits_in_workers

    if not paths and not (workspace() / "runs").is_dir():
        raise RunError(f"nothing to compare: {workspace() / 'runs'} does not exist (train and "
                       "export first: 'make demo', or give PATHS)")
    items = discover(paths)
    if len(items) < 2:
        raise ConfigError(f"parity compares models with each other; found only {items[0].id}")
    if images is None:
        from ..data import load_mnist

        data = load_mnist()
        images, labels = data.x_test, data.y_test
    got = logits_in_workers([it.path for it in items], images, progress=progress)
    models, logits = [], []
    for it, (arr, info) in zip(items, got):
        m = {"id": it.id, "kind": it.kind, "path": str(it.path),
             "framework": info.get("framework") or it.framework, "arch": info.get("arch") or it.arch,
             # the model's own metadata first; the file name's guess only when it has none
             "quant": info.get("quant") or it.quant, "source_sha256": info.get("source_sha256"),
             "accuracy": None}
        if arr is not None and labels is not None:
            m["accuracy"] = float(np.mean(arr.argmax(1) == np.asarray(labels)))
        if arr is None:
            m["error"] = info.get("error", "no logits")
        models.append(m)
        logits.append(arr)
    pairs, failures = [], [f"{m['id']}: could not run ({m['error']})" for m in models if "error" in m]
    for i in range(len(models)):
        for j in range(i + 1, len(models)):
            if logits[i] is None or logits[j] is None:
                continue
            pairs.append(_pair(models[i], models[j], logits[i], logits[j], failures))
    return {"schema": SCHEMA,
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "n_images": int(len(images)), "models": models, "pairs": pairs, "failures": failures}


def _pair(a: dict, b: dict, la: np.ndarray, lb: np.ndarray, failures: list[str]) -> dict:
    expected = _expected_equal(a, b)
    # The native model is the golden reference; between two files, the first.
    flip = b["kind"] == "native" and a["kind"] != "native"
    (ref, lr), (cand, lc) = ((b, lb), (a, la)) if flip else ((a, la), (b, lb))
    tol = pair_tolerance(a["kind"] == "native", b["kind"] == "native") if expected else None
    r = compare(lr, lc, tolerance=tol)
    p = {"a": a["id"], "b": b["id"], "reference": ref["id"],
         "top1_agreement": r["top1_agreement"], "disagreements": r["disagreements"],
         "max_abs_diff": r["max_abs_diff"], "rel_max_diff": r["rel_max_diff"],
         "fp32": a["quant"] == b["quant"] == "fp32", "expected_equal": expected}
    if expected:
        p.update(bound=r["bound"], passed=r["passed"], failures=r["failures"])
        if not r["passed"]:
            failures.append(f"{cand['id']} vs {ref['id']}: fp32 of one model, not equal "
                            f"({'; '.join(r['failures'])})")
    return p
