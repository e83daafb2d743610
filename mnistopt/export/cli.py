"""`mnistopt export` (placeholder until the exporters land)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def export_command(run: Annotated[Path, typer.Argument(help="Run directory")]) -> None:
    """Export a run to ONNX / TFLite (fp32, dynamic, int8, fp16), validated."""
    from ..errors import MnistoptError

    raise MnistoptError("export is not implemented yet")
