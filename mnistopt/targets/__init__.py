"""Benchmark targets: where models run, as plug-ins below the bench.

    from mnistopt.targets import Settings, artifact_item, get_target
    target = get_target("mcu:m4-64k")            # or get_target("arm", ArmOptions(...))
    [rec] = target.run([artifact_item("edge-torch-int8.tflite")], Settings(progress=False))
    rec["accuracy"], rec["mcu"]["arena_bytes"]   # cpu/arm: rec["latency"]["1"]["p50_us"]

The contract (`Target`, `Item`, `Settings`, records) is in `base.py`, the names in
`registry.py`, discovery in `items.py`. The names below load on first use, so that
`python -m mnistopt.targets.child` (timing a cold start) and the device-side worker import
nothing they do not need.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "base": ("Item", "NoOptions", "RECORD_KEYS", "Settings", "Target", "UNSUPPORTED",
             "make_record", "unsupported", "with_options"),
    "items": ("artifact_item", "discover", "native_item"),
    "registry": ("TARGETS", "get_target", "names", "parse_spec", "register", "target_class",
                 "unregister"),
}
_WHERE = {name: mod for mod, names in _EXPORTS.items() for name in names}
__all__ = sorted([*_WHERE, "measure"])


def __getattr__(name: str):
    if name in _WHERE:
        return getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def measure(paths, device="cpu", settings=None, options=None, set_options=()) -> list[dict]:
    """Records for `paths` (files, run directories, folders) run on `device` (a spec or Target)."""
    from .base import Settings
    from .items import discover
    from .registry import get_target

    target = get_target(device, options, set_options)
    return target.run(discover(paths), settings or Settings(progress=False))
