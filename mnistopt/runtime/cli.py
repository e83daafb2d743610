"""`mnistopt predict MODEL IMAGE...`: label and confidence per image."""

from __future__ import annotations

import json
import os
import sys
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, List, Optional

import typer


def predict_command(
    model: Annotated[Path, typer.Argument(help="An exported model (.onnx or .tflite)")],
    images: Annotated[List[Path], typer.Argument(
        help="Image files (PNG, JPEG, ...: MNIST-preprocessed, needs mnistopt[images]) and/or "
             ".npy arrays of 28x28 images")],
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object")] = False,
    threads: Annotated[Optional[int], typer.Option(
        min=1, help="Intra-op threads (default: physical cores)")] = None,
    device: Annotated[str, typer.Option(help="cpu, or cuda[:N] for ONNX models")] = "cpu",
    top: Annotated[int, typer.Option(min=1, max=10, help="Show the k most likely labels")] = 1,
) -> None:
    """Classify images with an exported model: label and confidence for each."""
    import numpy as np

    from . import load
    from .preprocess import load_images

    with _warnings_shown(), _native_stderr_silenced():
        clf = load(model, threads=threads, device=device)
    names, batches = [], []
    for path in images:  # one file at a time, so every error names its file
        arr = load_images([path])
        batches.append(arr)
        names += [str(path)] if path.suffix.lower() != ".npy" else \
            [f"{path}[{i}]" for i in range(len(arr))]
    with _warnings_shown():
        proba = clf.predict_proba(np.concatenate(batches))
    order = np.argsort(-proba, axis=1)[:, :top]
    rows = [{"image": name, "label": clf.labels[int(o[0])],
             "confidence": round(float(p[o[0]]), 6),
             **({"top": [[clf.labels[int(k)], round(float(p[k]), 6)] for k in o]}
                if top > 1 else {})}
            for name, p, o in zip(names, proba, order)]
    if as_json:
        typer.echo(json.dumps({"model": str(model), "format": clf.format,
                               "predictions": rows}))
        return
    width = max(len(_shown(n)) for n in names)
    for row in rows:
        extra = ""
        if top > 1:
            extra = "   " + "  ".join(f"{_shown(lab)}:{p:.1%}" for lab, p in row["top"][1:])
        typer.echo(f"{_shown(row['image']):<{width}}  {_shown(row['label'])}  "
                   f"({row['confidence']:.1%}){extra}")


def _shown(text: str) -> str:
    """`text` with control characters escaped: labels come from a sidecar, names from disk,
    and an escape sequence must not reach the terminal."""
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode() for c in text)


@contextmanager
def _warnings_shown():
    """Warnings raised inside (a sidecar ignored, say) as one `warning: ...` line each, printed
    on leaving, so that they are seen even where fd 2 is silenced inside."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("default")
        try:
            yield
        finally:
            for w in caught:
                typer.echo(f"warning: {_shown(str(w.message))}", err=True)


@contextmanager
def _native_stderr_silenced():
    """Hide C++ log lines ("INFO: Created TensorFlow Lite XNNPACK delegate for CPU.") that
    LiteRT writes straight to fd 2; our own errors are raised after fd 2 is restored."""
    try:
        fd = sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):  # stderr replaced (tests, IDEs): nothing to do
        yield
        return
    sys.stderr.flush()
    saved = os.dup(fd)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), fd)
        yield
    finally:
        os.dup2(saved, fd)
        os.close(saved)
