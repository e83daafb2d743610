"""`mnistopt parity`: does every model agree with every other, and are the equal ones equal?"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, List, Optional

import typer


def parity_command(
    paths: Annotated[Optional[List[Path]], typer.Argument(help="Exported .onnx/.tflite files, run directories, or folders holding them (default: workspace/runs)")] = None,
    json_out: Annotated[Optional[Path], typer.Option("--json", help="Write the matrix as JSON (schema mnistopt.parity/1)")] = None,
    plot: Annotated[Optional[Path], typer.Option("--plot", help="Write the disagreement heatmap as PNG")] = None,
    quiet: Annotated[bool, typer.Option(help="No progress bar")] = False,
) -> None:
    """Every model against every other on the 10,000 test images: top-1 agreement,
    disagreements, max |logit diff|. Exit 1 when the fp32 files of one run and its native
    model (any runtimes) are not numerically equal (parity.FP32), or a model cannot run."""
    from ..fsutil import check_output
    from . import matrix
    from .show import heatmap, print_table

    if json_out:
        check_output(json_out, "--json")
    if plot:
        check_output(plot, "--plot", suffix=".png")
    result = matrix(paths or None, progress=not quiet)
    print_table(result)
    if json_out:
        from ..fsutil import write_json

        write_json(json_out, result)
    if plot:
        heatmap(result, plot)
    for f in (json_out, plot):
        if f:
            typer.echo(f"wrote {f}")
    if result["failures"]:
        raise typer.Exit(1)
