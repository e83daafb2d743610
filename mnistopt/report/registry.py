"""The figures: a registry of name -> (what it shows, the inputs it needs, how it is drawn).

Inputs are resolved once per report, on first use, by name (`INPUTS`); one that is not there
raises `Unavailable`, and every figure needing it is skipped with that reason, never faked.
A new figure is one draw function and one `Figure(...)` line in `FIGURES`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..errors import ConfigError
from . import sources
from .numbers import confusion_matrix


class Unavailable(Exception):
    """An input is not in the workspace; the message says how to make it."""


@dataclass
class Report:
    written: list[Path] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)  # figure -> why
    facts: dict = field(default_factory=dict)  # the numbers behind the figures


@dataclass
class Inputs:
    """Where a report looks (the CLI's options and the workspace), and what it found there."""

    ws: Path
    run: Path | None = None
    model: Path | None = None
    bench: Path | None = None
    data: Any = None
    facts: dict = field(default_factory=dict)
    _got: dict = field(default_factory=dict)

    def get(self, name: str):
        if name not in self._got:
            try:
                self._got[name] = INPUTS[name](self)
            except Unavailable as exc:
                self._got[name] = exc
        if isinstance(self._got[name], Unavailable):
            raise self._got[name]
        return self._got[name]


def _data(i: Inputs):
    if i.data is None:
        from ..data import load_mnist

        i.data = load_mnist()
    return i.data


def _predictions(i: Inputs):
    """(x, y, probabilities, label) of the test set, and their numbers in facts."""
    if i.run is None and i.model is None:
        raise Unavailable("no run or model (train one with 'mnistopt train', or pass --run/--model)")
    data = i.get("data")
    x, y = data.x_test, data.y_test.astype(np.int64)
    prob, label = sources.predictions(x, run=i.run, model=i.model)
    pred = prob.argmax(1)
    cm = confusion_matrix(y, pred)
    off = cm - np.diag(np.diag(cm))
    a, b = np.unravel_index(np.argmax(off), off.shape)
    i.facts["predictions"] = {
        "source": label, "accuracy": float((pred == y).mean()), "errors": int((pred != y).sum()),
        "most_confused": {"true": int(a), "predicted": int(b), "count": int(off[a, b])},
        "per_class_errors": (cm.sum(1) - np.diag(cm)).tolist(),
    }
    return x, y, prob, label


def _runs(i: Inputs):
    runs = sources.curve_runs(i.ws / "runs")
    if not runs:
        raise Unavailable(f"no runs with a history under {i.ws / 'runs'}")
    return runs


def _torch_run(i: Inputs):
    got = sources.torch_run(i.run, i.ws / "runs")
    if got is None:
        raise Unavailable("needs a PyTorch run (mnistopt train --framework torch)")
    return got


def _bench(i: Inputs):
    path = Path(i.bench) if i.bench else sources.default_bench(i.ws / "reports")
    if path is None:
        raise Unavailable("no benchmark JSON (run 'mnistopt bench', or pass --bench)")
    return path, sources.read_bench(path)


INPUTS: dict[str, Callable[[Inputs], Any]] = {
    "data": _data, "predictions": _predictions, "runs": _runs, "torch_run": _torch_run,
    "bench": _bench,
}


# -- draw functions: (inputs, target PNG) -> (path, facts or None) ----------------------------

def _digits(i: Inputs, out: Path):
    from .image_figures import fig_digits

    d = i.get("data")
    return fig_digits(d.x_train, d.y_train, out), None


def _prediction_grid(i: Inputs, out: Path):
    from .image_figures import fig_predictions

    x, y, prob, label = i.get("predictions")
    return fig_predictions(x, y, prob, label, out), None


def _confusion(i: Inputs, out: Path):
    from .image_figures import fig_confusion

    _, y, prob, label = i.get("predictions")
    return fig_confusion(y, prob.argmax(1), label, out), None


def _misclassified(i: Inputs, out: Path):
    from .image_figures import fig_misclassified

    x, y, prob, label = i.get("predictions")
    return fig_misclassified(x, y, prob, label, out), None


def _curves(i: Inputs, out: Path):
    from .model_figures import fig_curves

    return fig_curves(i.get("runs"), out), None


def _features(i: Inputs, out: Path):
    from .model_figures import fig_features, first_conv_maps

    run, label = i.get("torch_run")
    x0 = i.get("data").x_test[0]
    kernels, maps, total = first_conv_maps(run, x0)
    return fig_features(kernels, maps, total, x0, label, out), None


def _weights(i: Inputs, out: Path):
    from .model_figures import fig_weights, torch_conv_weights

    run, label = i.get("torch_run")
    path, facts = fig_weights(torch_conv_weights(run), label, out)
    return path, {"run": str(run.path), **facts}


def _pareto(i: Inputs, out: Path):
    from ..bench.pareto import plot

    path, rep = i.get("bench")
    return (plot(rep, out, title=f"Latency vs accuracy ({path.name})"),
            {"bench": str(path), "rows": sources.bench_rows(rep)})


@dataclass(frozen=True)
class Figure:
    name: str  # also the PNG's file stem and the CLI's --figure choice
    about: str
    needs: tuple[str, ...]  # keys of INPUTS, resolved before drawing
    draw: Callable[[Inputs, Path], tuple[Path, dict | None]]


FIGURES: dict[str, Figure] = {f.name: f for f in [
    Figure("digits", "ten training images of each digit: how differently people write them",
           ("data",), _digits),
    Figure("predictions", "test digits with the model's prediction and confidence",
           ("predictions",), _prediction_grid),
    Figure("confusion", "confusion matrix on the 10,000 test images", ("predictions",), _confusion),
    Figure("misclassified", "the test digits the model gets wrong, most confident first",
           ("predictions",), _misclassified),
    Figure("curves", "validation accuracy per epoch of every run in the workspace", ("runs",), _curves),
    Figure("features", "the first conv layer's 3x3 filters and what each one sees in a test digit",
           ("torch_run", "data"), _features),
    Figure("weights", "per-channel weight ranges and int8 rounding error, per-tensor vs per-channel",
           ("torch_run",), _weights),
    Figure("pareto", "latency vs accuracy of every benchmarked model", ("bench",), _pareto),
]}


def build_report(out: Path, figures: list[str] | None = None, run: Path | None = None,
                 model: Path | None = None, bench: Path | None = None, data=None,
                 workspace_dir: Path | None = None) -> Report:
    """Draw the requested figures (default: all, in registry order) into `out`; skip those
    whose inputs are missing."""
    from ..workspace import workspace

    names = list(figures or FIGURES)
    for f in names:
        if f not in FIGURES:
            raise ConfigError(f"unknown figure '{f}'; choose from: {', '.join(FIGURES)}")
    ws = Path(workspace_dir) if workspace_dir else workspace()
    if run is None and model is None:
        run = sources.default_run(ws / "runs")
    inputs = Inputs(ws=ws, run=run, model=model, bench=bench, data=data)
    rep = Report(facts=inputs.facts)
    out = Path(out)
    for name in [f for f in FIGURES if f in names]:
        fig = FIGURES[name]
        try:
            for need in fig.needs:
                inputs.get(need)
        except Unavailable as why:
            rep.skipped[name] = str(why)
            continue
        path, facts = fig.draw(inputs, out / f"{name}.png")
        rep.written.append(path)
        if facts is not None:
            rep.facts[name] = facts
    return rep
