"""`mnistopt mcu`: does an int8 model fit a microcontroller, and the C array to put it there."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, List, Optional

import typer

mcu_app = typer.Typer(
    name="mcu", no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
    help="Microcontrollers: run int8 TFLite models in TFLite Micro, RAM/flash fit, C arrays.")


def _kb(n: int | float) -> str:
    n = float(n)
    if abs(n) >= 1024 * 1024:
        return f"{n / 1024 / 1024:.2f} MB"
    return f"{n / 1024:.1f} KB"


@mcu_app.command("report")
def report_command(
    artifacts: Annotated[List[Path], typer.Argument(help="int8 .tflite files")],
    limit: Annotated[Optional[int], typer.Option(help="Evaluate the first N test images only [default: all 10,000]")] = None,
    device_class: Annotated[Optional[List[str]], typer.Option("--device-class", help="Fit against this class only (repeatable); see `mnistopt mcu devices`")] = None,
    ram_allowance: Annotated[Optional[float], typer.Option(help="KB of RAM beyond the arena (stack, interpreter, app) [default: 24]")] = None,
    flash_allowance: Annotated[Optional[float], typer.Option(help="KB of flash beyond the model (TFLM runtime, kernels, app) [default: 128]")] = None,
    compare: Annotated[bool, typer.Option(help="Also run LiteRT on the same file (agreement, output difference)")] = True,
    out: Annotated[Optional[Path], typer.Option(help="Also write the reports as JSON to this file")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the reports as JSON")] = False,
    quiet: Annotated[bool, typer.Option(help="No progress bars")] = False,
) -> None:
    """Run each model in TFLite Micro on MNIST's test set; accuracy, arena, flash, fit table."""
    from . import devices as dev
    from .micro import evaluate, inspect

    if out is not None:
        from ..fsutil import check_output

        check_output(out, "--out")
    ram = dev.RAM_ALLOWANCE if ram_allowance is None else int(ram_allowance * 1024)
    flash = dev.FLASH_ALLOWANCE if flash_allowance is None else int(flash_allowance * 1024)
    classes = dev.get_devices(device_class)
    for a in artifacts:  # refuse a float model before spending minutes on the others
        inspect(a)
    reports = [evaluate(a, limit=limit, devices=[d.key for d in classes], ram_allowance=ram,
                        flash_allowance=flash, compare=compare, progress=not quiet)
               for a in artifacts]
    payload = [r.as_dict() for r in reports]
    if out is not None:
        from ..fsutil import write_text

        write_text(out, json.dumps(payload, indent=1) + "\n")
    if as_json:
        typer.echo(json.dumps(payload, indent=1))
        return
    print_reports(reports, classes)


def print_reports(reports, classes) -> None:
    import sys

    from rich.console import Console
    from rich.table import Table

    # Piped output has no terminal width; keep the tables whole rather than at 80 columns.
    console = Console(width=None if sys.stdout.isatty() else 150)
    t = Table(title="TFLite Micro (reference kernels, on this host)", title_justify="left")
    for col in ("artifact", "images", "TFLM acc", "LiteRT acc", "agree", "max diff",
                "XNNPACK agree", "arena", "flash", "host ms"):
        t.add_column(col, justify="left" if col == "artifact" else "right", no_wrap=True)
    for r in reports:
        lr, xn = r.litert or {}, r.litert_xnnpack or {}
        pct = lambda v: "-" if v is None else f"{100 * v:.2f}%"  # noqa: E731
        diff = "-" if not lr else (f"{lr['max_diff_steps']} step(s)" if lr.get("max_diff_steps") is not None
                                   else f"{lr['max_abs_diff']:.3g}")
        t.add_row(r.name, str(r.n_images), pct(r.accuracy), pct(lr.get("accuracy")),
                  pct(lr.get("agreement")), diff, pct(xn.get("agreement")), _kb(r.arena_bytes),
                  _kb(r.flash_bytes), f"{r.host_ms_per_image:.2f}" if r.host_ms_per_image else "-")
    console.print(t)
    for r in reports:
        missing = f"  [red]missing in TFLite Micro: {', '.join(r.missing_ops)}[/]" if r.missing_ops else ""
        console.print(f"{r.name}: {len(r.ops)} operators: {', '.join(r.ops)}{missing}")

    f = Table(title="Fit (RAM = arena + allowance, flash = model + allowance; headroom left)",
              title_justify="left")
    f.add_column("artifact")
    for d in classes:
        f.add_column(f"{d.part}\n{d.label}", justify="left")
    for r in reports:
        cells = []
        for fit in r.fits:
            ok = fit["fits"]
            mark = "[green]fits[/]" if ok else "[red]NO[/]"
            cells.append(f"{mark}\nRAM {_headroom(fit['ram_headroom'], fit['ram_available'])}\n"
                         f"flash {_headroom(fit['flash_headroom'], fit['flash_available'])}")
        f.add_row(r.name + f"\nRAM {_kb(r.arena_bytes + r.ram_allowance)}\n"
                  f"flash {_kb(r.flash_bytes + r.flash_allowance)}", *cells)
    console.print(f)
    r0 = reports[0] if reports else None
    if r0 is not None:
        console.print(f"Allowances: RAM {_kb(r0.ram_allowance)} (stack, interpreter, app), flash "
                      f"{_kb(r0.flash_allowance)} (TFLM runtime, kernels, startup, app); ESP32-S3 "
                      "also reserves ESP-IDF's share. Host ms/image are reference kernels on this "
                      "machine, not a device's. Sources: `mnistopt mcu devices`.")


def _headroom(left: int, available: int) -> str:
    if left < 0:
        return f"{_kb(-left)} over"
    return f"{_kb(left)} free ({100 * left / available:.0f}%)"


@mcu_app.command("devices")
def devices_command(
    as_json: Annotated[bool, typer.Option("--json", help="Print as JSON")] = False,
) -> None:
    """The device classes the fit table uses, with their figures' sources and allowances."""
    from dataclasses import asdict

    from . import devices as dev

    if as_json:
        typer.echo(json.dumps({"ram_allowance": dev.RAM_ALLOWANCE,
                               "flash_allowance": dev.FLASH_ALLOWANCE,
                               "devices": [asdict(d) for d in dev.DEVICES.values()]}, indent=1))
        return
    for d in dev.DEVICES.values():
        reserved = ""
        if d.platform_ram or d.platform_flash:
            reserved = f"; platform reserves {_kb(d.platform_ram)} RAM, {_kb(d.platform_flash)} flash"
        typer.echo(f"{d.key:9} {d.part} ({d.label}){reserved}\n          source: {d.source}"
                   + (f"\n          note: {d.note}" if d.note else ""))
    typer.echo(f"allowances: RAM {_kb(dev.RAM_ALLOWANCE)} beyond the arena, flash "
               f"{_kb(dev.FLASH_ALLOWANCE)} beyond the model (see mnistopt/mcu/devices.py)")


@mcu_app.command("c-array")
def c_array_command(
    model: Annotated[Path, typer.Argument(help="int8 .tflite file")],
    out: Annotated[Path, typer.Option(help="Folder for NAME.h and NAME.c")] = Path("."),
    name: Annotated[Optional[str], typer.Option(help="C symbol [default: from the file name]")] = None,
) -> None:
    """Write the model as a C source/header pair (16-byte aligned array, scales, arena size)."""
    from ..fsutil import check_output
    from .carray import write_c_array

    check_output(out, "--out", directory=True)
    header, source = write_c_array(model, out, name)
    typer.echo(f"{header}\n{source}  ({model.stat().st_size} bytes)")
