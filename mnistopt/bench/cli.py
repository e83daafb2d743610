"""`mnistopt bench`: which artifact to ship, measured."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated, List, Optional

import typer


class Device(str, Enum):
    cpu = "cpu"
    gpu = "gpu"
    arm = "arm"
    mcu = "mcu"


def bench_command(
    paths: Annotated[Optional[List[Path]], typer.Argument(help="Exported .onnx/.tflite files, run directories, or folders holding them [default: workspace/runs]")] = None,
    device: Annotated[Device, typer.Option(case_sensitive=False, help="Where to run: cpu, gpu (CUDA), arm, mcu")] = Device.cpu,
    batch_sizes: Annotated[str, typer.Option(help="Comma-separated batch sizes")] = "1,32,256",
    threads: Annotated[Optional[int], typer.Option(help="Intra-op threads [default: each runtime's own]")] = None,
    warmup: Annotated[int, typer.Option(help="Calls discarded before timing")] = 20,
    iters: Annotated[int, typer.Option(help="Timed calls per batch size (at most)")] = 300,
    budget: Annotated[float, typer.Option(help="Max timed seconds per model and batch size")] = 3.0,
    json_out: Annotated[Optional[Path], typer.Option("--json", help="Write the report as JSON (schema mnistopt.bench/1)")] = None,
    report: Annotated[Optional[Path], typer.Option("--report", help="Write a Markdown report")] = None,
    plot: Annotated[Optional[Path], typer.Option("--plot", help="Write accuracy vs latency as PNG")] = None,
    baseline: Annotated[Optional[Path], typer.Option(help="Earlier JSON report: exit 1 on an accuracy drop > 0.1 pp or p50 > +25 % + 10 µs")] = None,
    target: Annotated[Optional[str], typer.Option(help="--device arm: a real device, ssh://user@host[:port] (key auth only)")] = None,
    emulate: Annotated[bool, typer.Option(help="--device arm: run under qemu even on an aarch64 host (the default elsewhere)")] = False,
    cpu: Annotated[Optional[str], typer.Option(help="--device arm, emulated: cortex-a53, cortex-a72 (default), cortex-a76, ...")] = None,
    quiet: Annotated[bool, typer.Option(help="No progress bar")] = False,
) -> None:
    """Benchmark artifacts and native models: latency percentiles, throughput, accuracy, size,
    cold start and memory, each in a fresh process; check the project's targets."""
    from ..errors import ConfigError
    from .stats import parse_batch_sizes

    try:
        sizes = parse_batch_sizes(batch_sizes)
    except ValueError as exc:
        raise ConfigError(f"--batch-sizes: {exc}") from None
    if iters < 1 or warmup < 0 or budget <= 0 or (threads is not None and threads < 1):
        raise ConfigError("--iters and --threads must be >= 1, --warmup >= 0, --budget > 0")
    from ..fsutil import write_text
    from . import report as R
    from .api import Options, bench

    if (target or emulate or cpu) and device is not Device.arm:
        raise ConfigError("--target, --emulate and --cpu go with --device arm")
    arm = None
    if target or emulate or cpu:  # else mnistopt.arm reads MNISTOPT_ARM_* from the environment
        from ..arm.target import ArmOptions

        arm = ArmOptions(target=target, emulate=emulate, cpu=cpu)
    old = R.load_json(baseline) if baseline else None  # fail on a bad baseline before measuring
    rep = bench(paths or None, Options(device=device.value, batch_sizes=sizes, threads=threads,
                                       warmup=warmup, iters=iters, budget_s=budget,
                                       progress=not quiet, arm=arm))
    R.print_table(rep)
    if json_out:
        R.save_json(rep, json_out)
    if plot:
        R.plot(rep, plot)
    if report:
        rel = None
        if plot:
            try:
                rel = str(Path(plot).resolve().relative_to(Path(report).resolve().parent))
            except ValueError:
                rel = str(Path(plot).resolve())
        write_text(report, R.markdown(rep, rel))
    for f in (json_out, report, plot):
        if f:
            typer.echo(f"wrote {f}")
    if old is not None:
        regressions = R.compare_baseline(rep, old)
        if regressions:
            typer.echo(f"REGRESSION against {baseline}:", err=True)
            for line in regressions:
                typer.echo(f"  {line}", err=True)
            raise typer.Exit(1)
        typer.echo(f"no regression against {baseline}")
