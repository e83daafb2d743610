"""`mnistopt arch`: show an architecture layer by layer, or write it as JSON to start your own."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer


def arch_command(
    arch: Annotated[Optional[str], typer.Argument(help="A registered name or an arch .json file; none: list them")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the JSON spec")] = False,
    out: Annotated[Optional[Path], typer.Option(help="Write the JSON spec to this file")] = None,
) -> None:
    """List the architectures, show one (shapes, parameters, multiply-adds) or write it as JSON."""
    from dataclasses import asdict

    from .archs import ARCHS, get_arch
    from .archspec import TYPE_OF, dumps, write

    if arch is None:
        for a in ARCHS.values():
            typer.echo(f"{a.name:8} {a.params:>10,} params {a.macs:>12,} MACs  {a.summary}")
        return
    a = get_arch(arch)
    if out is not None:
        typer.echo(f"{a.name} -> {write(a, out)}")
        return
    if as_json:
        typer.echo(dumps(a), nl=False)
        return
    typer.echo(f"{a.name}: {a.summary}")
    for i, (layer, (c, h, w)) in enumerate(zip(a.layers, a.shapes())):
        args = ", ".join(f"{k}={v}" for k, v in asdict(layer).items())
        typer.echo(f"  {i:2} {TYPE_OF[type(layer)]:9} {args:40} -> {c}x{h}x{w}")
    typer.echo(f"  {a.params:,} parameters, {a.macs:,} multiply-adds per image")
