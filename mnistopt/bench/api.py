"""`bench(paths, options) -> report dict`: the library entry point behind `mnistopt bench`."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

from .core import Item, Options, discover  # noqa: F401  (re-exported)


def bench(paths: list[Path] | None = None, options: Options | None = None) -> dict:
    """Discover what `paths` hold, run it on `options.device`, return the report."""
    from .env import environment
    from .report import build_report
    from .targets import get_target

    options = options or Options()
    target = get_target(options.device)  # an unknown/unavailable device fails before any work
    items = discover(paths)
    records = target.run(items, options)
    opts = {k: v for k, v in asdict(options).items() if k not in ("progress",)}
    return build_report(records, opts, environment(options.threads), options.device)
