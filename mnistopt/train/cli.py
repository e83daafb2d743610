"""`mnistopt train`."""

from __future__ import annotations

import json
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer


class Framework(str, Enum):
    torch = "torch"
    keras = "keras"
    tf = "tf"


class Schedule(str, Enum):
    onecycle = "onecycle"
    constant = "constant"


class Device(str, Enum):
    cpu = "cpu"
    gpu = "gpu"


def train_command(
    framework: Annotated[Framework, typer.Option(case_sensitive=False)] = Framework.torch,
    arch: Annotated[str, typer.Option(help="seed | lenet5 | edge | wide")] = "seed",
    epochs: Annotated[int, typer.Option()] = 1,
    batch_size: Annotated[int, typer.Option()] = 64,
    lr: Annotated[float, typer.Option(help="Peak learning rate (Adam)")] = 1e-3,
    seed: Annotated[int, typer.Option()] = 0,
    device: Annotated[Device, typer.Option(case_sensitive=False)] = Device.cpu,
    augment: Annotated[bool, typer.Option(help="Random shifts and rotations, per batch")] = False,
    target_acc: Annotated[Optional[float], typer.Option(help="Stop once test accuracy reaches this fraction")] = None,
    schedule: Annotated[Schedule, typer.Option(case_sensitive=False, help="Learning-rate schedule: one-cycle (warm-up, cosine decay) or constant")] = Schedule.onecycle,
    weight_decay: Annotated[float, typer.Option(help="Decoupled weight decay (AdamW)")] = 0.0,
    label_smoothing: Annotated[float, typer.Option(help="Cross-entropy label smoothing, e.g. 0.1")] = 0.0,
    data: Annotated[Optional[Path], typer.Option(help="MNIST from this path (IDX dir, .npz, wheel) instead of the cache")] = None,
    limit: Annotated[Optional[int], typer.Option(help="Train on the first N images only")] = None,
    out: Annotated[Optional[Path], typer.Option(help="Run directory [default: workspace/runs/FRAMEWORK-ARCH]")] = None,
    quiet: Annotated[bool, typer.Option(help="No progress bars")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print metrics as JSON")] = False,
) -> None:
    """Train a CNN on MNIST in PyTorch, Keras or TensorFlow; write a run directory."""
    from . import TrainConfig, train

    cfg = TrainConfig(framework=framework.value, arch=arch, epochs=epochs, batch_size=batch_size,
                      lr=lr, seed=seed, device=device.value, augment=augment,
                      target_acc=target_acc, schedule=schedule.value, weight_decay=weight_decay,
                      label_smoothing=label_smoothing, limit=limit)
    cfg.validate()  # bad arguments fail before any data or framework is loaded
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
        target = (f"; reached {cfg.target_acc:.2%} in {t:.1f} s" if t is not None
                  else f"; did NOT reach {cfg.target_acc:.2%}")
    typer.echo(f"{m['framework']}/{m['arch']}: test accuracy {m['test_accuracy']:.2%} after "
               f"{m['epochs']} epoch(s), {m['train_seconds']:.1f} s "
               f"({m['train_images_per_second']:.0f} images/s){target} -> {run.path}")
