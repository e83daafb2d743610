"""`mnistopt bench`: which artifact to ship, measured."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, List, Optional

import typer


def _device_help() -> str:
    from ..targets.registry import names

    return (f"Where to run: {', '.join(names())}, or NAME:ARG with what that target takes "
            "(README, Benchmark)")


def _peer_help() -> str:
    from ..peers.registry import PEERS

    return f"Only this peer, repeatable (implies --peers): {', '.join(PEERS)}"


def _runtime_help() -> str:
    from ..targets.items import runtime_names

    return (f"Run exported files on this runtime, repeatable: {', '.join(runtime_names())} "
            "[default: each format's own, plus openvino for ONNX files on --device cpu where "
            "it is installed]")


def bench_command(
    paths: Annotated[Optional[List[Path]], typer.Argument(help="Exported .onnx/.tflite files, run directories, or folders holding them [default: workspace/runs]")] = None,
    device: Annotated[str, typer.Option(metavar="NAME[:ARG]", help=_device_help())] = "cpu",
    target_option: Annotated[Optional[List[str]], typer.Option(metavar="KEY=VALUE", help="An option of the device's target, repeatable (README, Benchmark)")] = None,
    batch_sizes: Annotated[str, typer.Option(help="Comma-separated batch sizes")] = "1,32,256",
    threads: Annotated[Optional[int], typer.Option(help="Intra-op threads [default: each runtime's own]")] = None,
    warmup: Annotated[int, typer.Option(help="Calls discarded before timing")] = 20,
    iters: Annotated[int, typer.Option(help="Timed calls per batch size (at most)")] = 300,
    budget: Annotated[float, typer.Option(help="Max timed seconds per model and batch size")] = 3.0,
    json_out: Annotated[Optional[Path], typer.Option("--json", help="Write the report as JSON (schema mnistopt.bench/1)")] = None,
    report: Annotated[Optional[Path], typer.Option("--report", help="Write a Markdown report")] = None,
    plot: Annotated[Optional[Path], typer.Option("--plot", help="Write accuracy vs latency as PNG")] = None,
    baseline: Annotated[Optional[Path], typer.Option(help="Earlier JSON report: exit 1 on an accuracy drop > 0.1 pp or p50 > +25 % + 10 µs")] = None,
    profile: Annotated[bool, typer.Option("--profile", help="Per-node p50 times at batch 1 of each ONNX file (onnxruntime's profiler) and of each row on OpenVINO (its per-layer counters), and the ops XNNPACK delegates in each TFLite file")] = False,
    quiet: Annotated[bool, typer.Option(help="No progress bar")] = False,
    trust_savedmodel: Annotated[bool, typer.Option(
        "--trust-savedmodel", help="Load tf runs that have no weights.npz from their SavedModel, "
                                   "which runs the graph stored in it: only for runs you trust")] = False,
    peers: Annotated[bool, typer.Option("--peers", help="Also bench what a user would run instead (OpenVINO + NNCF, torch.compile, the tutorial ONNX path, ExecuTorch), built from each torch run into RUN/peers/ (README, Peers)")] = False,
    peer: Annotated[Optional[List[str]], typer.Option(metavar="NAME", help=_peer_help())] = None,
    runtime: Annotated[Optional[List[str]], typer.Option(metavar="NAME", help=_runtime_help())] = None,
    paired: Annotated[bool, typer.Option(
        "--paired/--no-paired", help="Time each pair the targets compare (int8/fp32, best/peer) again, the two "
                                     "files in alternating rounds, each in its own process (cpu, gpu)")] = True,
) -> None:
    """Benchmark artifacts and native models: latency percentiles, throughput, accuracy, size,
    cold start and memory, each in a fresh process; % of the CPU's peak multiply-adds; check
    the project's targets and name the file to ship per arch."""
    from ..errors import ConfigError
    from ..fsutil import check_output, write_text
    from ..targets.base import Settings
    from ..targets.registry import get_target
    from ..targets.stats import parse_batch_sizes
    from . import report as R
    from .api import bench

    try:
        sizes = parse_batch_sizes(batch_sizes)
    except ValueError as exc:
        raise ConfigError(f"--batch-sizes: {exc}") from None
    settings = Settings(batch_sizes=sizes, threads=threads, warmup=warmup, iters=iters,
                        budget_s=budget, progress=not quiet)
    for f, option, suffix in ((json_out, "--json", None), (report, "--report", None),
                              (plot, "--plot", ".png")):
        if f:
            check_output(f, option, suffix=suffix)
    if trust_savedmodel:
        from ..train.weights import trust_savedmodel as trust

        trust()  # an environment variable: the bench's child processes inherit it
    target = get_target(device, set_options=target_option or ())
    old = R.load_json(baseline) if baseline else None  # fail on a bad baseline before measuring
    rep = bench(paths or None, settings, target,
                peers=list(peer) if peer else ([] if peers else None),
                runtimes=list(runtime) if runtime else None, paired=paired)
    if profile:
        from .profile import profile_records

        rep["profile"] = profile_records(rep["results"], threads=threads, progress=not quiet)
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
    failed = bool(rep["failures"])
    if old is not None:
        regressions = R.compare_baseline(rep, old)
        if regressions:
            typer.echo(f"REGRESSION against {baseline}:", err=True)
            for line in regressions:
                typer.echo(f"  {line}", err=True)
            failed = True
        else:
            typer.echo(f"no regression against {baseline}")
    if failed:
        raise typer.Exit(1)
