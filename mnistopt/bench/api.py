"""`bench(paths, settings, device) -> report dict`: the library entry point behind `mnistopt bench`."""

from __future__ import annotations

from pathlib import Path

from ..errors import ConfigError
from ..targets.base import Settings, Target

# Where peers run: their tools (OpenVINO, ExecuTorch, torch.compile) are on this machine.
PEER_DEVICES = ("cpu", "gpu")


def bench(paths: list[Path] | None = None, settings: Settings | None = None,
          device: str | Target = "cpu", set_options=(), peers=None, runtimes=None,
          paired: bool = False) -> dict:
    """Discover what `paths` hold, run it on `device` (a spec NAME[:ARG] or a Target), report.

    `set_options`: KEY=VALUE strings for the target's own options. The report's "failures"
    lists the models that failed (the target decides what counts, e.g. ARM parity).
    `peers`: None, or the names of the peers to build for each torch run and bench beside
    mnistopt's files ([] = all; mnistopt/peers/); their failures go to "peer_failures".
    `runtimes`: None, or the runtimes to run exported files on (`targets.items.with_runtimes`:
    by default each format's own, plus OpenVINO for ONNX files on the cpu target where it is
    installed).
    `paired`: on cpu / gpu, time each pair the targets compare (int8 / fp32, best file / best
    peer) again in alternating rounds, each in its own process (`bench/paired.py`); the targets then
    decide on that ratio.
    """
    from ..targets.document import run_options
    from ..targets.env import environment
    from ..targets.items import discover, with_runtimes
    from ..targets.registry import get_target
    from .report import build_report

    settings = settings or Settings()
    target = get_target(device, set_options=set_options)  # a bad device fails before any work
    if peers is not None and target.name not in PEER_DEVICES:
        raise ConfigError(f"--peers runs on --device {' or '.join(PEER_DEVICES)} (the peers' "
                          f"tools run on this machine), not on '{target.name}'")
    if peers is not None:
        from ..peers import choose

        choose(peers)  # an unknown name fails before any work
    items = with_runtimes(discover(paths), runtimes, target.name)
    skipped = []
    if peers is not None:
        from ..targets.items import peer_items

        extra, skipped = peer_items(items, peers, settings.batch_sizes, target.name,
                                    settings.progress)
        items = items + extra
    records = target.run(items, settings) + skipped
    if paired and target.name in PEER_DEVICES:
        from .paired import attach

        attach(records, target.name, settings.threads, progress=settings.progress)
    rep = build_report(records, run_options(settings, target), environment(settings.threads),
                       target.name)
    rep["failures"] = target.failures([r for r in records if not r.get("peer")])
    if peers is not None:
        rep["peer_failures"] = target.failures([r for r in records if r.get("peer")])
    return rep
