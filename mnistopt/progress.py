"""Progress bars for long work (training epochs, validation, benchmarks), on stderr."""

from __future__ import annotations

import sys
from contextlib import contextmanager


@contextmanager
def progress_bar(description: str, total: int, enabled: bool = True):
    """Yield `advance(n=1, **fields)`; a rich bar on a terminal, nothing when disabled."""
    if not enabled:
        yield lambda n=1, **fields: None
        return
    from rich.console import Console
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                               TimeElapsedColumn, TimeRemainingColumn)

    columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn(), TimeRemainingColumn(), TextColumn("{task.fields[info]}")]
    with Progress(*columns, console=Console(file=sys.stderr), transient=False) as bar:
        task = bar.add_task(description, total=total, info="")

        def advance(n: int = 1, info: str = "") -> None:
            bar.update(task, advance=n, info=info)

        yield advance
