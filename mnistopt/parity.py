"""The one parity helper: does a model say what its reference says? numpy only.

The reference (the native model, or another artifact) is golden. `compare` measures; `check`
measures and raises a typed error carrying the numbers when a `Tolerance` is not met. The
exporter's validation, the tests and the benchmark all call these.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from .errors import ShapeMismatchError, ToleranceError


@dataclass(frozen=True)
class Tolerance:
    """What a path promises. `None` disables a check (the number is still reported).

    rel: max |logit diff| <= rel * max |reference logit| (scale-free: logits have no unit);
    atol: an absolute bound instead of `rel` (the CLI's --atol);
    agreement: minimum fraction of images whose top-1 class matches the reference;
    acc_drop: maximum accuracy lost against the reference, as a fraction (0.003 = 0.3 pp).
    """

    rel: float | None = None
    atol: float | None = None
    agreement: float | None = None
    acc_drop: float | None = None

    def with_atol(self, atol: float | None) -> "Tolerance":
        if atol is None:
            return self
        return Tolerance(rel=None, atol=atol, agreement=self.agreement, acc_drop=self.acc_drop)

    def bound(self, max_abs_ref: float) -> float | None:
        if self.atol is not None:
            return self.atol
        return None if self.rel is None else self.rel * max_abs_ref


# fp32 conversions must be numerically the same model; quantized ones the same classifier.
FP32 = Tolerance(rel=1e-4, agreement=0.9999)
QUANTIZED = Tolerance(agreement=0.99, acc_drop=0.003)


def top1_agreement(a: np.ndarray, b: np.ndarray) -> float:
    """Fraction of rows where two (N, C) score arrays pick the same class."""
    if len(a) == 0:
        return 1.0
    return float(np.mean(np.argmax(a, axis=1) == np.argmax(b, axis=1)))


def compare(reference: np.ndarray, candidate: np.ndarray, labels: np.ndarray | None = None,
            tolerance: Tolerance | None = None) -> dict:
    """Numbers comparing two (N, C) logit arrays; `passed` against `tolerance` if given.

    Raises ShapeMismatchError when the shapes differ (nothing else is comparable then).
    """
    reference = np.asarray(reference, dtype=np.float64)
    candidate = np.asarray(candidate, dtype=np.float64)
    if reference.shape != candidate.shape:
        raise ShapeMismatchError(
            f"output shape {tuple(candidate.shape)} differs from the reference's "
            f"{tuple(reference.shape)}",
            {"reference_shape": list(reference.shape), "candidate_shape": list(candidate.shape)})
    diff = np.abs(reference - candidate)
    n = len(reference)
    ref_top, cand_top = reference.argmax(1), candidate.argmax(1)
    max_abs_ref = float(np.abs(reference).max()) if reference.size else 0.0
    report = {
        "n": int(n),
        "max_abs_diff": float(diff.max()) if diff.size else 0.0,
        "mean_abs_diff": float(diff.mean()) if diff.size else 0.0,
        "max_abs_logit": max_abs_ref,
        "top1_agreement": float(np.mean(ref_top == cand_top)) if n else 1.0,
        "disagreements": int(np.sum(ref_top != cand_top)),
        "nonfinite": int(np.sum(~np.isfinite(candidate))),
    }
    report["rel_max_diff"] = report["max_abs_diff"] / max_abs_ref if max_abs_ref else 0.0
    if labels is not None:
        labels = np.asarray(labels)
        report["reference_accuracy"] = float(np.mean(ref_top == labels)) if n else 0.0
        report["candidate_accuracy"] = float(np.mean(cand_top == labels)) if n else 0.0
        report["accuracy_drop"] = report["reference_accuracy"] - report["candidate_accuracy"]
    if tolerance is not None:
        report["tolerance"] = asdict(tolerance)
        report["bound"] = tolerance.bound(max_abs_ref)
        report["failures"] = _failures(report, tolerance)
        report["passed"] = not report["failures"]
    return report


def _failures(r: dict, tol: Tolerance) -> list[str]:
    out = []
    if r["nonfinite"]:
        out.append(f"{r['nonfinite']} non-finite outputs")
    if r["bound"] is not None and not r["max_abs_diff"] <= r["bound"]:
        out.append(f"max |diff| {r['max_abs_diff']:.3g} > {r['bound']:.3g}")
    if tol.agreement is not None and r["top1_agreement"] < tol.agreement:
        out.append(f"top-1 agreement {r['top1_agreement']:.4%} < {tol.agreement:.4%}")
    # 1e-9: 0.850 - 0.847 is 0.0030000000000000027 in floating point, and that is 0.3 pp.
    if tol.acc_drop is not None and r.get("accuracy_drop") is not None \
            and r["accuracy_drop"] > tol.acc_drop + 1e-9:
        out.append(f"accuracy drop {100 * r['accuracy_drop']:.2f} pp > {100 * tol.acc_drop:.2f} pp")
    return out


def summary(r: dict) -> str:
    """One line of the numbers that matter."""
    parts = [f"max |diff| {r['max_abs_diff']:.3g} (max |logit| {r['max_abs_logit']:.3g})",
             f"top-1 agreement {r['top1_agreement']:.2%} ({r['disagreements']} of {r['n']} differ)"]
    if "accuracy_drop" in r:
        parts.append(f"accuracy {r['reference_accuracy']:.2%} -> {r['candidate_accuracy']:.2%} "
                     f"(drop {100 * r['accuracy_drop']:+.2f} pp)")
    return ", ".join(parts)


def check(reference: np.ndarray, candidate: np.ndarray, labels: np.ndarray | None,
          tolerance: Tolerance, what: str = "model") -> dict:
    """`compare`, then raise ToleranceError (with the report) unless every bound holds."""
    report = compare(reference, candidate, labels, tolerance)
    if not report["passed"]:
        raise ToleranceError(f"{what} fails validation ({'; '.join(report['failures'])}): "
                             f"{summary(report)}", report)
    return report
