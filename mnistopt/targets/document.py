"""The results document: records of one run on one target, with the environment they came from.

`mnistopt bench` adds its analysis (Pareto front, performance targets, failures) to this same
document; `mnistopt arm bench` writes it as it is. Schema in mnistopt/bench/report.py.
"""

from __future__ import annotations

import datetime as _dt
from pathlib import Path

SCHEMA = "mnistopt.bench/1"


def document(records: list[dict], options: dict, environment: dict, device: str) -> dict:
    return {
        "schema": SCHEMA,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "device": device,
        "options": options,
        "environment": environment,
        "results": records,
    }


def run_options(settings, target) -> dict:
    """The report's "options": the common settings, the device, the target's own options."""
    from dataclasses import asdict

    opts = {k: v for k, v in asdict(settings).items() if k != "progress"}
    opts["device"] = target.name
    opts["target_options"] = target.describe()["options"]
    return opts


def _jsonable(o):
    if hasattr(o, "item"):  # numpy scalars
        return o.item()
    return str(o)


def save_json(doc: dict, path: Path) -> Path:
    from ..fsutil import write_json

    return write_json(path, doc, default=_jsonable)
