"""Where an exported model's sidecar metadata lives, and how every part reads it (stdlib only).

`mnistopt export` writes ``NAME.onnx`` + ``NAME.onnx.json`` (the full file name, because
``NAME.onnx`` and ``NAME.tflite`` of one run sit side by side). ``NAME.json`` is still read when
its ``format`` matches, for files renamed or written by hand.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path


def sidecar_path(model: Path) -> Path:
    return Path(model).with_name(Path(model).name + ".json")


def read_sidecar(model: Path, fmt: str | None = None) -> dict:
    """The sidecar's metadata, or {} when there is none that describes this very file."""
    model = Path(model)
    fmt = fmt or model.suffix.lower().lstrip(".")
    for side in (sidecar_path(model), model.with_suffix(".json")):
        if not side.is_file():
            continue
        try:
            data = json.loads(side.read_text())
        except (OSError, ValueError) as exc:
            warnings.warn(f"{side}: unreadable sidecar ignored ({exc})", stacklevel=2)
            continue
        if not isinstance(data, dict) or data.get("format", fmt) != fmt:
            continue
        size = (data.get("file") or {}).get("bytes")
        if size is not None and model.is_file() and size != model.stat().st_size:
            # A sidecar left over from another export of the same name: its numbers would lie.
            warnings.warn(f"{side} describes a {size}-byte file, not this one; ignored", stacklevel=2)
            continue
        return {**data, "sidecar": str(side)}
    return {}
