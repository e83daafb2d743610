"""Writing a run directory: the native model, weights.npz and metrics.json, swapped in whole."""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

from ..fsutil import replace_dir, write_json
from .weights import save as save_weights

if TYPE_CHECKING:
    from . import Run, TrainConfig


def write_run(out: Path, cfg: TrainConfig, arch, model, result: dict,
              extra: dict | None = None) -> Run:
    """Write `model` (of `arch`, trained per `cfg`, `result` from `fit`) as the run directory
    `out`, atomically, `extra` added to metrics.json; return the run, loaded."""
    from ..archspec import to_dict
    from . import backend, load_run, native_sha256

    mod = backend(cfg.framework)
    # Build the run in a temp directory beside the target, then swap it in: a crash or Ctrl-C
    # never leaves a half-written run that load_run would accept.
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    try:
        native = mod.save(model, tmp)
        metrics = {
            "framework": cfg.framework,
            "arch": arch.name,
            "arch_spec": to_dict(arch),
            "params": arch.params,
            "macs": arch.macs,
            "native": native,
            "layout": mod.LAYOUT,
            "native_sha256": native_sha256(tmp / native),
            "weights": save_weights(mod.weights(model), tmp),
            "config": asdict(cfg),
            **result,
            **(extra or {}),
        }
        write_json(tmp / "metrics.json", metrics)
        # mkdtemp/mkstemp make private (0700/0600) entries; a run is meant to be shared.
        os.chmod(tmp, 0o755)
        os.chmod(tmp / "metrics.json", 0o644)
        replace_dir(tmp, out)  # `out` is whole at every instant: the old run or the new
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    run = load_run(out)
    run._model = model
    return run
