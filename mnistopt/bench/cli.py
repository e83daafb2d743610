"""`mnistopt bench` (placeholder until the benchmark lands)."""

from __future__ import annotations

import typer


def bench_command() -> None:
    """Benchmark artifacts and native models: latency, throughput, accuracy, size."""
    from ..errors import MnistoptError

    raise MnistoptError("bench is not implemented yet")
