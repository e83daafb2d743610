"""`mnistopt demo`: the whole job on the defaults — data, train, export, bench, report.

It sits above every part it drives (data -> train -> export -> bench); no part imports it.

Each step is skipped when its outputs are already there (a run's metrics.json, an artifact
file, a report newer than every model), unless --force. Training defaults are chosen to finish
in a few minutes on a 2-core laptop-class CPU, not for the best accuracy.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Annotated

import typer


@dataclass(frozen=True)
class DemoRun:
    framework: str
    arch: str
    epochs: int
    limit: int | None  # first N training images; None = all 60,000
    why: str


# One epoch of `seed` on all of MNIST already reaches ~98.5-99 % in PyTorch; Keras and the plain
# TensorFlow loop are slower per image on this CPU, so they see the first 20,000 images (~98 %).
# `edge` is 1/12 of seed's multiply-adds, so it can afford 3 epochs (BN needs a few to settle).
DEMO_RUNS = (
    DemoRun("torch", "seed", 1, None, "reference model, 1 epoch"),
    DemoRun("torch", "edge", 3, None, "device model: <20k parameters"),
    DemoRun("keras", "seed", 1, 20000, "1 epoch on 20k images (time budget)"),
    DemoRun("tf", "seed", 1, 20000, "1 epoch on 20k images (time budget)"),
)
FORMATS = ("onnx", "tflite")
QUANTIZE = ("none", "int8")


class Step(str, Enum):
    data = "data"
    train = "train"
    export = "export"
    bench = "bench"


def _say(msg: str) -> None:
    typer.secho(msg, fg="cyan", err=True)


def demo(*, force: bool = False, until: str = "bench", frameworks=("torch", "keras", "tf"),
         iters: int = 200, budget_s: float = 1.0, progress: bool = True) -> dict | None:
    """Run the pipeline; return the benchmark report (None when stopped before the bench)."""
    from .data import load_mnist
    from .errors import MnistoptError
    from .train import TrainConfig, load_run, train
    from .workspace import workspace

    order = [s.value for s in Step]
    stop = order.index(until)
    ws = workspace()
    _say(f"[1/5] data: MNIST")
    data = load_mnist()
    if stop < 1:
        return None

    runs = []
    for i, spec in enumerate(r for r in DEMO_RUNS if r.framework in frameworks):
        out = ws / "runs" / f"{spec.framework}-{spec.arch}"
        if (out / "metrics.json").is_file() and not force:
            _say(f"[2/5] train {out.name}: already there, skipped")
            runs.append(load_run(out))
            continue
        _say(f"[2/5] train {out.name}: {spec.why}")
        cfg = TrainConfig(framework=spec.framework, arch=spec.arch, epochs=spec.epochs, limit=spec.limit)
        try:
            run = train(cfg, out, data=data, progress=progress)
        except MnistoptError as exc:  # e.g. the tf extra missing: the other frameworks still run
            _say(f"      skipped: {exc}")
            continue
        _say(f"      test accuracy {run.metrics['test_accuracy']:.2%} in {run.metrics['train_seconds']:.0f} s")
        runs.append(run)
    if stop < 2:
        return None

    from .export import export
    from .export.api import default_path

    for run in runs:
        for fmt in FORMATS:
            todo = [m for m in QUANTIZE if force or not default_path(run, fmt, m).is_file()]
            if not todo:
                _say(f"[3/5] export {run.path.name} -> {fmt}: already there, skipped")
                continue
            _say(f"[3/5] export {run.path.name} -> {fmt} {', '.join(todo)}")
            try:
                arts = export(run, fmt, todo, data=data, progress=progress)
            except MnistoptError as exc:  # one unsupported path must not stop the others
                _say(f"      failed: {exc}")
                continue
            for a in arts:
                v = a.report
                acc = f", accuracy {v['accuracy']:.2%}" if isinstance(v.get("accuracy"), float) else ""
                _say(f"      {a.path.name}: {a.path.stat().st_size / 1e3:.1f} kB{acc}")
    if stop < 3:
        return None

    from .bench import report as R
    from .bench.api import bench
    from .fsutil import write_text
    from .targets.base import Settings

    reports = ws / "reports"
    js, md, png = reports / "bench.json", reports / "bench.md", reports / "bench.png"
    models = [p for r in runs for p in [r.path / "metrics.json", *(r.path / "export").glob("*.*")]
              if p.exists()]
    newest = max((p.stat().st_mtime for p in models), default=0)
    if js.is_file() and js.stat().st_mtime > newest and not force:
        _say(f"[4/5] bench: {js} is newer than every model, skipped (--force to re-measure)")
        rep = R.load_json(js)
    else:
        _say(f"[4/5] bench: {len(runs)} runs and their artifacts, each in a fresh process")
        settings = Settings(iters=iters, budget_s=budget_s, progress=progress)
        rep = bench([r.path for r in runs], settings, device="cpu", paired=True)
        R.save_json(rep, js)
    _say(f"[5/5] report: {js}, {md}, {png}")
    R.plot(rep, png)
    write_text(md, R.markdown(rep, png.name))
    R.print_table(rep)
    return rep


def demo_command(
    force: Annotated[bool, typer.Option(help="Redo every step even when its outputs exist")] = False,
    until: Annotated[Step, typer.Option(case_sensitive=False, help="Stop after this step")] = Step.bench,
    frameworks: Annotated[str, typer.Option(help="Comma-separated: torch,keras,tf")] = "torch,keras,tf",
    iters: Annotated[int, typer.Option(help="Timed calls per model and batch size (at most)")] = 200,
    budget: Annotated[float, typer.Option(help="Max timed seconds per model and batch size")] = 1.0,
    quiet: Annotated[bool, typer.Option(help="No progress bars")] = False,
) -> None:
    """Data -> train -> export (ONNX + TFLite, fp32 + int8) -> bench -> report, on the defaults,
    skipping what is already done. Writes workspace/reports/bench.{json,md,png}."""
    from .errors import ConfigError

    fws = tuple(f.strip() for f in frameworks.split(",") if f.strip())
    bad = [f for f in fws if f not in {r.framework for r in DEMO_RUNS}]
    if bad or not fws:
        raise ConfigError(f"--frameworks: unknown {', '.join(bad) or '(none given)'}; choose from torch,keras,tf")
    demo(force=force, until=until.value, frameworks=fws, iters=iters, budget_s=budget,
         progress=not quiet)
