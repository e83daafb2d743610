"""Device targets: where the models run. Each is a module imported only when asked for.

A target module provides ``run(items: list[core.Item], options: core.Options) -> list[dict]``
returning records built with ``core.make_record(item, result, options, latency_source)``,
where latency_source says how the latency was obtained: "native" (this machine), "remote"
(a device over SSH) or "emulated" (qemu: accuracy is real, latency is not the device's).
Results from the runtime-only worker (`python -m mnistopt.bench.worker`) fit ``make_record``
as they are. A target that cannot run raises `mnistopt.errors.DeviceError` saying what it
looked for.
"""

from __future__ import annotations

import importlib

from ..errors import ConfigError, DeviceError

TARGETS: dict[str, str] = {
    "cpu": "mnistopt.bench.targets",
    "gpu": "mnistopt.bench.targets",
    "arm": "mnistopt.arm.target",
    "mcu": "mnistopt.mcu.target",
}


def run(items, options):
    """The cpu and gpu targets: every item in a fresh process on this machine."""
    from .core import measure_local

    return measure_local(items, options)


def get_target(device: str):
    """The target module for `device`; DeviceError when its package is not there (yet)."""
    if device not in TARGETS:
        raise ConfigError(f"unknown device '{device}'; choose one of: {', '.join(TARGETS)}")
    name = TARGETS[device]
    try:
        mod = importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name and name.startswith(exc.name):
            raise DeviceError(f"--device {device}: its target module {name} is not installed "
                              "in this version of mnistopt") from None
        raise
    if not hasattr(mod, "run"):
        raise DeviceError(f"--device {device}: {name} has no run(items, options)")
    return mod
