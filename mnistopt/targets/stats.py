"""Latency statistics and the timing loop, shared by the host benchmark and the device worker.

Imports numpy and the standard library only: the ARM worker runs this file on aarch64.
"""

from __future__ import annotations

import time
from typing import Callable

import numpy as np

# Percentiles reported for every (artifact, batch size); p99.9 needs >= 1000 samples to mean
# much, so `n` is always reported beside it.
PERCENTILES = (50, 90, 99, 99.9)


def summarize(samples_ns, batch: int) -> dict:
    """Latency samples of one call each (ns) -> mean/p50/p90/p99/p99.9/min/max in µs, images/s.

    Percentiles use linear interpolation (numpy's default), so known samples give known
    values: [1..100] µs has p50 = 50.5 µs.
    """
    a = np.asarray(samples_ns, dtype=np.float64) / 1e3  # µs
    if a.size == 0:
        raise ValueError("no latency samples")
    p = np.percentile(a, PERCENTILES)
    mean = float(a.mean())
    return {
        "batch": int(batch),
        "n": int(a.size),
        "mean_us": mean,
        "p50_us": float(p[0]),
        "p90_us": float(p[1]),
        "p99_us": float(p[2]),
        "p99_9_us": float(p[3]),
        "min_us": float(a.min()),
        "max_us": float(a.max()),
        "std_us": float(a.std()),
        # Throughput from the mean: the rate a saturated caller would see, one call at a time.
        "images_per_s": batch * 1e6 / mean if mean > 0 else float("inf"),
    }


def settle(session, prepared, limit: int = 200) -> None:
    """Call `session.run(prepared)` until the runtime's own trials for this call size (thread
    count, OpenVINO's streams) have decided, so that every timed call runs the way that stays.
    Sessions without trials (native models) are left as they are."""
    deciding = getattr(session, "deciding", None)
    for _ in range(limit if deciding else 0):
        if not deciding(len(prepared)):
            return
        session.run(prepared)


def latency_at(session, x: np.ndarray, batch: int, *, warmup: int, iters: int,
               budget_s: float | None) -> dict:
    """One batch size's latency summary: the first `batch` images of `x` (tiled where it has
    fewer: tiny test sets in tests), prepared outside the clock, the runtime's trials settled,
    then timed calls of `session.run`."""
    xb = x[:batch] if len(x) >= batch else np.resize(x, (batch,) + x.shape[1:])
    prepared = session.prepare(xb)
    settle(session, prepared)
    return summarize(time_calls(lambda: session.run(prepared), warmup=warmup, iters=iters,
                                budget_s=budget_s), batch)


def time_calls(fn: Callable[[], object], *, warmup: int = 10, iters: int = 200,
               budget_s: float | None = 3.0, min_iters: int = 5) -> list[int]:
    """Call `fn()` `warmup` times (discarded), then time up to `iters` calls with perf_counter_ns.

    Only the call is inside the clock: inputs must be prepared beforehand and bound into `fn`.
    `budget_s` caps the timed phase (a batch-256 fp32 call can take 100 ms) but never below
    `min_iters` samples.
    """
    for _ in range(warmup):
        fn()
    samples: list[int] = []
    clock = time.perf_counter_ns
    deadline = clock() + int(budget_s * 1e9) if budget_s else None
    for i in range(iters):
        t0 = clock()
        fn()
        t1 = clock()
        samples.append(t1 - t0)
        if deadline is not None and i + 1 >= min_iters and t1 > deadline:
            break
    return samples


def accuracy(logits: np.ndarray, labels: np.ndarray) -> float:
    """Top-1 accuracy of (N, 10) logits against (N,) integer labels."""
    if len(labels) == 0:
        return float("nan")
    return float((np.asarray(logits).argmax(1) == np.asarray(labels)).mean())


def parse_batch_sizes(text: str) -> list[int]:
    """'1,32,256' -> [1, 32, 256]; ValueError on anything else."""
    sizes = [int(s) for s in str(text).replace(" ", "").split(",") if s]
    if not sizes or any(b <= 0 for b in sizes):
        raise ValueError(f"batch sizes must be positive integers, got '{text}'")
    return sizes
