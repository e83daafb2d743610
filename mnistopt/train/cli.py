"""`mnistopt train`. Options are plain strings, checked once by `TrainConfig.validate`; the help
lists what the registries hold."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from ..archs import ARCHS
from . import DEFAULT_VAL_SPLIT, DEVICES, FRAMEWORKS, LOOPS, SCHEDULES
from .recipes import RECIPES


def _choices(names) -> str:
    return " | ".join(names)


def _betas(text: str | None) -> tuple[float, ...] | None:
    from ..errors import ConfigError

    if text is None:
        return None
    try:
        return tuple(float(b) for b in text.split(","))
    except ValueError:
        raise ConfigError(f"--betas are two numbers, e.g. 0.7,0.9; got '{text}'") from None


def train_command(
    ctx: typer.Context,
    recipe: Annotated[Optional[str], typer.Option(
        help=f"Start from a named recipe ({_choices(RECIPES)}); options given here win")] = None,
    framework: Annotated[str, typer.Option(help=_choices(FRAMEWORKS))] = "torch",
    arch: Annotated[str, typer.Option(help=_choices([*ARCHS, "FILE.json"]))] = "seed",
    epochs: Annotated[int, typer.Option()] = 1,
    batch_size: Annotated[int, typer.Option()] = 64,
    lr: Annotated[float, typer.Option(help="Peak learning rate (Adam)")] = 1e-3,
    seed: Annotated[int, typer.Option()] = 0,
    device: Annotated[str, typer.Option(help=_choices(DEVICES))] = "cpu",
    augment: Annotated[bool, typer.Option(help="Random shifts and rotations, per batch")] = False,
    val_split: Annotated[int, typer.Option(
        help="Hold out the last N training images to validate on (per-epoch accuracy, "
             "--target-acc); 0: none")] = DEFAULT_VAL_SPLIT,
    target_acc: Annotated[Optional[float], typer.Option(
        help="Stop once validation accuracy reaches this fraction, e.g. 0.99")] = None,
    schedule: Annotated[str, typer.Option(
        help=f"Learning-rate schedule: {_choices(SCHEDULES)} (warm-up then cosine decay, or flat)")] = "onecycle",
    weight_decay: Annotated[float, typer.Option(help="Decoupled weight decay (AdamW)")] = 0.0,
    label_smoothing: Annotated[float, typer.Option(help="Cross-entropy label smoothing, e.g. 0.1")] = 0.0,
    data: Annotated[Optional[Path], typer.Option(help="MNIST from this path (IDX dir, .npz, wheel) instead of the cache")] = None,
    limit: Annotated[Optional[int], typer.Option(help="Train on the first N images only")] = None,
    loop: Annotated[str, typer.Option(
        help=f"{_choices(LOOPS)}: fast keeps the data on the device and never waits for it inside "
             "an epoch (torch); auto: fast on a GPU")] = "auto",
    compile: Annotated[bool, typer.Option(
        help="torch.compile the model (fast loop); compile time is reported apart")] = False,
    betas: Annotated[Optional[str], typer.Option(help="Adam's betas for the fast loop, e.g. 0.7,0.9")] = None,
    out: Annotated[Optional[Path], typer.Option(help="Run directory [default: workspace/runs/FRAMEWORK-ARCH]")] = None,
    quiet: Annotated[bool, typer.Option(help="No progress bars")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print metrics as JSON")] = False,
) -> None:
    """Train a CNN on MNIST in PyTorch, Keras or TensorFlow; write a run directory."""
    from . import TrainConfig, check_run_dir, default_run_dir, train
    from .recipes import with_recipe

    given = dict(framework=framework.lower(), arch=arch, epochs=epochs, batch_size=batch_size,
                 lr=lr, seed=seed, device=device.lower(), augment=augment,
                 target_acc=target_acc, schedule=schedule.lower(), weight_decay=weight_decay,
                 label_smoothing=label_smoothing, limit=limit, val_split=val_split,
                 loop=loop.lower(), compile=compile, betas=_betas(betas))
    # By name: typer may bring its own copy of click, whose enum is not click's.
    explicit = {k for k in given if getattr(ctx.get_parameter_source(k), "name", "") == "COMMANDLINE"}
    cfg = TrainConfig(**with_recipe(recipe, given, explicit))
    cfg.validate()  # bad arguments fail before any data or framework is loaded
    out = check_run_dir(out or default_run_dir(cfg))
    dataset = None
    if data is not None:
        from . import data_from_path

        dataset = data_from_path(data)
    run = train(cfg, out, data=dataset, progress=not quiet)
    m = run.metrics
    if as_json:
        typer.echo(json.dumps(m))
        return
    target = ""
    if cfg.target_acc is not None:
        t = m.get("time_to_target_seconds")
        target = (f"; reached {cfg.target_acc:.2%} validation accuracy in {_secs(t)}" if t is not None
                  else f"; did NOT reach {cfg.target_acc:.2%} validation accuracy")
    val = f" (validation {m['val_accuracy']:.2%})" if m.get("val_accuracy") is not None else ""
    typer.echo(f"{m['framework']}/{m['arch']}: test accuracy {m['test_accuracy']:.2%}{val} after "
               f"{m['epochs']} epoch(s), {_secs(m['train_seconds'])} "
               f"({m['train_images_per_second']:.0f} images/s){target} -> {run.path}")
    setup = m.get("setup_seconds")
    if setup:
        compiled = f", of which compiling {_secs(setup['compile'])}" if setup.get("compile") is not None else ""
        typer.echo(f"  off the clock: data to the device {_secs(setup['to_device'])}, "
                   f"warm-up {_secs(setup['warmup'])}{compiled}")


def _int_list(text: str, option: str) -> list[int]:
    from ..errors import ConfigError

    try:
        return [int(v) for v in text.split(",")]
    except ValueError:
        raise ConfigError(f"{option} takes whole numbers separated by commas, e.g. 8,8,16; "
                          f"got {text!r}") from None


def _secs(s: float) -> str:
    return f"{s:.3f} s" if s < 10 else f"{s:.1f} s"


def prune_command(
    run: Annotated[Path, typer.Argument(help="A run directory (torch, keras or tf) to prune")],
    keep: Annotated[Optional[list[float]], typer.Option(
        help="Fraction of each layer's channels to keep, e.g. 0.5; give several to try each: "
             "the smallest that holds validation accuracy is written [default: 0.5, or the "
             "largest that fits --max-macs / --max-params]")] = None,
    widths: Annotated[Optional[list[str]], typer.Option(
        help="Width of each prunable layer instead of one fraction for all, e.g. 8,8,16,32,32 "
             "for edge (its own: 8,16,16,32,32): cut where the multiply-adds are; give several "
             "to try each")] = None,
    max_macs: Annotated[Optional[int], typer.Option(
        help="Budget: at most this many multiply-adds per image")] = None,
    max_params: Annotated[Optional[int], typer.Option(
        help="Budget: at most this many parameters")] = None,
    epochs: Annotated[Optional[int], typer.Option(
        help="Fine-tuning epochs per candidate [default: as many as the run trained]")] = None,
    lr: Annotated[Optional[float], typer.Option(
        help="Fine-tuning peak learning rate [default: the run's own]")] = None,
    max_drop: Annotated[float, typer.Option(
        help="Validation accuracy a candidate may lose against the run, in percentage points")] = 0.1,
    data: Annotated[Optional[Path], typer.Option(help="MNIST from this path instead of the cache")] = None,
    out: Annotated[Optional[Path], typer.Option(
        help="Run directory to write [default: beside RUN, FRAMEWORK-ARCH_kNN, or "
             "FRAMEWORK-ARCH_wA_B_... for --widths]")] = None,
    quiet: Annotated[bool, typer.Option(help="No progress bars")] = False,
) -> None:
    """Make a trained model smaller: cut the weakest channels of every layer (or of the layers
    --widths names), fine-tune, keep what holds validation accuracy. Writes a new run directory
    (export and bench it as any)."""
    from . import data_from_path
    from .prune import cut_label, prune_run

    widths_to = [_int_list(w, "--widths") for w in widths or []]
    dataset = data_from_path(data) if data is not None else None
    if not keep and not widths_to and max_macs is None and max_params is None:
        keep = [0.5]
    pruned, tried = prune_run(run, keep or [], widths_to=widths_to, epochs=epochs, lr=lr,
                              max_drop=max_drop / 100, out=out, data=dataset, progress=not quiet,
                              max_macs=max_macs, max_params=max_params)
    src = pruned.metrics["pruned_from"]
    for t in tried:
        mark = "-> " if t["chosen"] else "   "
        typer.echo(f"{mark}{cut_label(t)}: {t['arch']}, {t['macs']:,} MACs, {t['params']:,} "
                   f"params, validation {t['val_accuracy']:.2%}")
    m = pruned.metrics
    typer.echo(f"{src['parent_arch']}: {src['parent_macs']:,} MACs, validation {src['val_accuracy']:.2%}"
               f" -> {m['arch']}: {m['macs']:,} MACs ({src['parent_macs'] / m['macs']:.1f}x fewer), "
               f"validation {m['val_accuracy']:.2%}, test {m['test_accuracy']:.2%} -> {pruned.path}")
