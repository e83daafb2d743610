"""`mnistopt arm ...`: prepare the ARM emulator, and benchmark on ARM with parity against x86."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, List, Optional

import typer

arm_app = typer.Typer(help="ARM targets: emulated (qemu), remote (ssh) or this aarch64 host.",
                      no_args_is_help=True)

CacheOpt = Annotated[Optional[Path], typer.Option(
    "--cache", help="Emulation cache [default: $MNISTOPT_ARM_CACHE or ~/.cache/mnistopt/arm]")]


@arm_app.command("setup")
def setup_command(cache: CacheOpt = None,
                  force: Annotated[bool, typer.Option(help="Rebuild even if the cache is complete")] = False) -> None:
    """Prepare qemu-aarch64 + an arm64 Debian sysroot + aarch64 wheels, once (about 100 s, ~420 MB)."""
    from .setup import default_cache, read_manifest, setup

    target = cache or default_cache()
    if read_manifest(target) and not force:
        typer.echo(f"already prepared: {target} (--force rebuilds)")
    m = setup(cache, force=force)
    typer.echo(f"{m['qemu']}; sysroot Debian {m['sysroot_suite']} arm64, python {m['python']}; "
               + ", ".join(f"{k} {v}" for k, v in m["wheels"].items()
                           if k in ("numpy", "onnxruntime", "ai_edge_litert")))


@arm_app.command("info")
def info_command(cache: CacheOpt = None) -> None:
    """Show the emulation cache and the CPU models qemu can emulate."""
    import json

    from .emulated import available_cpus
    from .setup import default_cache, read_manifest

    target = cache or default_cache()
    m = read_manifest(target)
    if m is None:
        typer.echo(f"not prepared: {target} (run 'mnistopt arm setup')")
        raise typer.Exit(1)
    typer.echo(json.dumps(m, indent=2))
    cpus = [c for c in available_cpus(target) if c.startswith(("cortex", "neoverse", "a64fx", "max"))]
    typer.echo("cpus: " + " ".join(cpus))


@arm_app.command("bench")
def bench_command(
    paths: Annotated[Optional[List[Path]], typer.Argument(help="Exported .onnx/.tflite files or folders [default: workspace/runs]")] = None,
    target: Annotated[Optional[str], typer.Option(help="A real device: ssh://user@host[:port] (key auth only)")] = None,
    emulate: Annotated[bool, typer.Option(help="Run under qemu even on an aarch64 host (the default on other hosts)")] = False,
    cpu: Annotated[Optional[str], typer.Option(help="Emulated core: cortex-a53, cortex-a72 (default), cortex-a76, neoverse-n1, max, ...")] = None,
    remote_python: Annotated[Optional[str], typer.Option(help="Interpreter on the device that has mnistopt[runtime] [default: a venv it creates]")] = None,
    remote_venv: Annotated[Optional[str], typer.Option(help="venv the device creates once and reuses [default: ~/.cache/mnistopt/arm-venv]")] = None,
    ssh_option: Annotated[Optional[List[str]], typer.Option(help="Extra ssh/scp argument, repeatable (e.g. --ssh-option=-i --ssh-option=KEY)")] = None,
    keep_remote: Annotated[bool, typer.Option(help="Keep the device's work directory")] = False,
    cache: CacheOpt = None,
    batch_sizes: Annotated[str, typer.Option(help="Comma-separated batch sizes for latency")] = "1,32,256",
    threads: Annotated[Optional[int], typer.Option(help="Intra-op threads")] = None,
    warmup: Annotated[int, typer.Option(help="Calls discarded before timing")] = 20,
    iters: Annotated[int, typer.Option(help="Timed calls per batch size (at most)")] = 300,
    limit: Annotated[Optional[int], typer.Option(help="First N test images only")] = None,
    json_out: Annotated[Optional[Path], typer.Option("--json", help="Write the report as JSON")] = None,
    quiet: Annotated[bool, typer.Option(help="No progress bar")] = False,
) -> None:
    """Run artifacts on ARM: accuracy, parity with x86 (exit 1 if out of bounds), latency."""
    from ..errors import ConfigError
    from ..targets.base import Settings
    from ..targets.document import document, run_options, save_json
    from ..targets.env import environment
    from ..targets.items import discover
    from ..targets.stats import parse_batch_sizes
    from .target import ArmOptions, ArmTarget

    try:
        sizes = parse_batch_sizes(batch_sizes)
    except ValueError as exc:
        raise ConfigError(f"--batch-sizes: {exc}") from None
    settings = Settings(batch_sizes=sizes, threads=threads, warmup=warmup, iters=iters,
                        progress=not quiet)
    if json_out:
        from ..fsutil import check_output

        check_output(json_out, "--json")
    # Conflicting options fail here, before any work.
    arm = ArmTarget(ArmOptions(target=target, emulate=emulate, cpu=cpu, cache=cache,
                               remote_python=remote_python, remote_venv=remote_venv,
                               ssh_options=list(ssh_option or []), keep=keep_remote, limit=limit))
    records = arm.run(discover(paths or None), settings)
    rep = document(records, run_options(settings, arm), environment(threads), arm.name)
    rep["failures"] = arm.failures(records)
    print_arm_table(rep)
    if json_out:
        save_json(rep, json_out)
        typer.echo(f"wrote {json_out}")
    if rep["failures"]:
        raise typer.Exit(1)


def print_arm_table(rep: dict) -> int:
    """One line per artifact; returns how many failed to run or missed their parity bounds."""
    from ..targets.base import UNSUPPORTED

    failed = 0
    rows = [("artifact", "acc", "max|diff|", "rel", "top-1 agree", "parity", "b1 p50", "latency")]
    for r in rep["results"]:
        if r.get("error"):
            failed += r.get("error_type") != UNSUPPORTED
            typer.echo(f"{r['id']}: {r['error']}", err=True)
            continue
        p = r.get("parity") or {}
        lat = (r.get("latency") or {}).get("1", {})
        ok = p.get("passed")
        failed += ok is False
        rows.append((r["id"], f"{r['accuracy']:.2%}",
                     f"{p['max_abs_diff']:.2g}" if p else "-",
                     f"{p['rel_max_diff']:.2g}" if p else "-",
                     f"{p['top1_agreement']:.2%}" if p else "-",
                     "-" if ok is None else ("ok" if ok else "FAIL"),
                     f"{lat['p50_us'] / 1000:.2f} ms" if lat else "-",
                     r.get("latency_source", "")))
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        typer.echo("  ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip())
    arm = next((r["arm"] for r in rep["results"] if r.get("arm")), {})
    if arm:
        where = {"emulated": f"qemu -cpu {arm.get('cpu')} ({arm.get('qemu', '')})",
                 "remote": f"{arm.get('target')} ({arm.get('machine')})",
                 "native": f"this host ({arm.get('cpu_model')})"}[arm["mode"]]
        typer.echo(f"ran {arm['mode']} on {where}")
        if arm.get("note"):
            typer.echo(f"note: {arm['note']}")
    return failed
