"""`mnistopt report`: the documentation's figures, drawn from real runs and benchmarks."""

from __future__ import annotations

import json
from enum import Enum
from pathlib import Path
from typing import Annotated, List, Optional

import typer


def _figure_names() -> list[str]:
    from .registry import FIGURES  # numpy only: cheap enough for `mnistopt --help`

    return list(FIGURES)


Figure = Enum("Figure", {name: name for name in _figure_names()}, type=str)


def report_command(
    out: Annotated[Optional[Path], typer.Option(help="Folder for the PNGs (default: workspace/reports/img); the docs use docs/img")] = None,
    run: Annotated[Optional[Path], typer.Option(help="Run directory whose native model makes the predictions (default: workspace/runs/torch-seed)")] = None,
    model: Annotated[Optional[Path], typer.Option(help="Exported .onnx/.tflite to predict with instead, through the lean runtime")] = None,
    bench: Annotated[Optional[Path], typer.Option(help="Benchmark report for the Pareto plot, from mnistopt bench --json (default: newest under workspace/reports/)")] = None,
    figure: Annotated[Optional[List[Figure]], typer.Option(case_sensitive=False, help="Draw only this figure (repeatable) (default: all)")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print files written, skipped figures and their numbers as JSON")] = False,
) -> None:
    """Draw figures (PNG): sample digits, predictions, confusion matrix, errors, int8 weight error, Pareto."""
    from ..workspace import workspace
    from .registry import FIGURES, build_report

    if run is not None and model is not None:
        from ..errors import ConfigError

        raise ConfigError("give --run or --model, not both")
    from ..fsutil import check_output

    out = check_output(out or workspace() / "reports" / "img", "--out", directory=True)
    rep = build_report(out, [f.value for f in figure] if figure else None, run=run, model=model,
                       bench=bench)
    if as_json:
        typer.echo(json.dumps({"written": [str(p) for p in rep.written], "skipped": rep.skipped,
                               "facts": rep.facts}, default=float))
        return
    for p in rep.written:
        typer.echo(f"{p}  ({p.stat().st_size / 1024:.0f} KB)  {FIGURES[p.stem].about}")
    for f, why in rep.skipped.items():
        typer.echo(f"skipped {f}: {why}")
    if "predictions" in rep.facts:
        f = rep.facts["predictions"]
        mc = f["most_confused"]
        typer.echo(f"{f['source']}: {f['accuracy']:.2%} correct, {f['errors']} errors; most "
                   f"confused: {mc['true']} read as {mc['predicted']} ({mc['count']}x)")
    for s in rep.facts.get("weights", {}).get("layers", []):
        typer.echo(f"{s['layer']}: int8 SQNR per-tensor {s['sqnr_per_tensor_db']:.1f} dB, "
                   f"per-channel {s['sqnr_per_channel_db']:.1f} dB, per-channel 7-bit "
                   f"(reduce_range) {s['sqnr_per_channel_reduce_range_db']:.1f} dB (channel ranges differ "
                   f"{s['range_ratio']:.1f}x)")
