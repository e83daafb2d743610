"""`mnistopt predict` (placeholder until the runtime lands)."""

from __future__ import annotations

import typer


def predict_command() -> None:
    """Classify image files with an exported model."""
    from ..errors import MnistoptError

    raise MnistoptError("predict is not implemented yet")
