"""`bench(paths, settings, device) -> report dict`: the library entry point behind `mnistopt bench`."""

from __future__ import annotations

from pathlib import Path

from ..targets.base import Settings, Target


def bench(paths: list[Path] | None = None, settings: Settings | None = None,
          device: str | Target = "cpu", set_options=()) -> dict:
    """Discover what `paths` hold, run it on `device` (a spec NAME[:ARG] or a Target), report.

    `set_options`: KEY=VALUE strings for the target's own options. The report's "failures"
    lists the models that failed (the target decides what counts, e.g. ARM parity).
    """
    from ..targets.document import run_options
    from ..targets.env import environment
    from ..targets.items import discover
    from ..targets.registry import get_target
    from .report import build_report

    settings = settings or Settings()
    target = get_target(device, set_options=set_options)  # a bad device fails before any work
    items = discover(paths)
    records = target.run(items, settings)
    rep = build_report(records, run_options(settings, target), environment(settings.threads),
                       target.name)
    rep["failures"] = target.failures(records)
    return rep
