"""Figures for the documentation, drawn from real runs, artifacts and benchmark reports.

    build_report(out, figures=None, run=None, model=None, bench=None) -> Report

Each figure is one small PNG (matplotlib, Agg backend), registered in `FIGURES` with the
inputs it needs (`registry.py`). Predictions come from a native run (`load_run(dir).logits`)
or an exported artifact through the lean runtime (`mnistopt.runtime.load(path)`); weight
figures need a PyTorch run; the Pareto plot needs a benchmark report (`mnistopt bench --json`),
drawn by the bench's own `bench.pareto.plot`. A figure whose input is missing is skipped with
a reason, never faked; an input that is not what the project writes is a one-line error.
"""

from __future__ import annotations

from .numbers import QMAX_INT8, QMAX_REDUCED, confusion_matrix, quantize_symmetric, softmax, sqnr_db
from .registry import FIGURES, INPUTS, Figure, Inputs, Report, Unavailable, build_report
from .sources import bench_rows, read_bench

__all__ = ["FIGURES", "INPUTS", "QMAX_INT8", "QMAX_REDUCED", "Figure", "Inputs", "Report",
           "Unavailable", "bench_rows", "build_report", "confusion_matrix", "quantize_symmetric",
           "read_bench", "softmax", "sqnr_db"]
