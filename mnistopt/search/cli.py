"""`mnistopt search`: the most accurate int8 model within a target's budget (Optuna)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Annotated, Optional

import typer


def parse_duration(text: str | None) -> float | None:
    """'60m' / '1h' / '90s' / '3600' -> seconds."""
    from ..errors import ConfigError

    if text is None:
        return None
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*(s|m|min|h)?\s*", text)
    if not m:
        raise ConfigError(f"--timeout {text}: write e.g. 60m, 1h or 3600 (seconds)")
    return float(m.group(1)) * {None: 1, "s": 1, "m": 60, "min": 60, "h": 3600}[m.group(2)]


def search_command(
    target: Annotated[str, typer.Option(help="cpu | arm | arm:ssh://USER@HOST[:PORT] | mcu:CLASS (mnistopt mcu devices)")] = "cpu",
    budget: Annotated[Optional[list[str]], typer.Option(help="Hard limits, e.g. latency=20us or arena=64KB,flash=256KB (repeatable); mcu:CLASS implies its RAM and flash")] = None,
    max_params: Annotated[Optional[int], typer.Option(help="At most this many parameters")] = None,
    trials: Annotated[int, typer.Option(help="Finished trials the study should reach (a resumed study counts its old ones)")] = 40,
    timeout: Annotated[Optional[str], typer.Option(help="Stop starting trials after this long, e.g. 60m")] = None,
    workers: Annotated[int, typer.Option(help="Local processes working on the study")] = 1,
    storage: Annotated[Optional[str], typer.Option(help="Optuna storage URL, e.g. postgresql://USER:PW@HOST/DB [default: sqlite file in OUT]")] = None,
    study: Annotated[Optional[str], typer.Option(help="Study name [default: from target and budgets]")] = None,
    out: Annotated[Optional[Path], typer.Option(help="Trials, front and final model [default: workspace/search/STUDY]")] = None,
    heartbeat: Annotated[int, typer.Option(help="Seconds between a running trial's heartbeats; a killed worker's trial is retried after twice that")] = 60,
    cost: Annotated[Optional[str], typer.Option(help="The cost objective [default: the first budget, else the target's first figure]")] = None,
    framework: Annotated[str, typer.Option(help="torch | keras | tf")] = "tf",
    format: Annotated[str, typer.Option(help="onnx | tflite")] = "tflite",
    epochs: Annotated[int, typer.Option(help="Epochs per trial")] = 5,
    train_images: Annotated[int, typer.Option(help="Training images per trial (0: all left after validation)")] = 20000,
    val_images: Annotated[int, typer.Option(help="The last N training images score the trials")] = 5000,
    batch_size: Annotated[int, typer.Option()] = 128,
    augment: Annotated[bool, typer.Option(help="Random shifts and rotations while training")] = True,
    label_smoothing: Annotated[float, typer.Option(help="Cross-entropy label smoothing")] = 0.1,
    seed: Annotated[int, typer.Option()] = 0,
    data: Annotated[Optional[Path], typer.Option(help="MNIST from this path (IDX dir, .npz, wheel) instead of the cache")] = None,
    seed_arch: Annotated[Optional[list[str]], typer.Option(help="An arch .json to try first (repeatable)")] = None,
    seeds: Annotated[bool, typer.Option(help="Start with the built-in hand-made candidates")] = True,
    finalize: Annotated[bool, typer.Option(help="Then retrain the chosen front model on all 60,000 images, export, validate, measure")] = False,
    pick: Annotated[Optional[int], typer.Option(help="The front trial to finalize [default: the most accurate]")] = None,
    final_epochs: Annotated[int, typer.Option(help="Epochs for --finalize")] = 15,
    name: Annotated[Optional[str], typer.Option(help="Name of the finalized arch [default: tNUMBER]")] = None,
    quiet: Annotated[bool, typer.Option(help="No progress bars")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON")] = False,
) -> None:
    """Search architectures for the best int8 validation accuracy within a target's budget."""
    from .config import SearchConfig
    from .front import write_report
    from .study import search

    cfg = SearchConfig.from_args(
        target, budget or [], max_params=max_params, cost=cost or "", trials=trials,
        timeout=parse_duration(timeout), framework=framework.lower(), format=format.lower(),
        epochs=epochs, batch_size=batch_size, augment=augment, label_smoothing=label_smoothing,
        train_images=train_images or None, val_images=val_images, seed=seed, data=data, workers=workers,
        storage=storage, study=study, out=out, heartbeat=heartbeat, seeds=seeds, seed_archs=seed_arch or [],
        progress=not quiet)
    if not quiet:
        typer.echo(f"search {cfg.study}: target {cfg.target}, budgets {cfg.describe_budgets()}, "
                   f"cost {cfg.cost}; {cfg.trials} trials of {cfg.epochs} epochs on "
                   f"{cfg.train_images or 'all'} images, scored on {cfg.val_images:,} validation images",
                   err=True)
    result = write_report(search(cfg), cfg)
    if finalize:
        from .finalize import describe, finalize as final

        from .study import open_study

        result["final"] = final(open_study(cfg), cfg, pick=pick, epochs=final_epochs, name=name)
    if as_json:
        typer.echo(json.dumps({k: v for k, v in result.items() if k != "markdown"}, default=str))
        return
    typer.echo(result["markdown"])
    typer.echo(f"front: {cfg.out / 'front.md'}, {result['png']}, archs in {cfg.out / 'front'}")
    if finalize:
        typer.echo(describe(result["final"], cfg))
