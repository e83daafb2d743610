"""The targets, by name. Each is imported only when asked for.

Adding a target is one module with a `Target` subclass plus one line in `TARGETS` below (or,
for a plug-in outside this package, `register(name, "package.module:Class")` at import time).
"""

from __future__ import annotations

import importlib

from ..errors import ConfigError, DeviceError
from .base import Target

TARGETS: dict[str, str | type] = {
    "cpu": "mnistopt.targets.local:CpuTarget",
    "gpu": "mnistopt.targets.local:GpuTarget",
    "arm": "mnistopt.arm.target:ArmTarget",
    "mcu": "mnistopt.mcu.target:McuTarget",
    "browser": "mnistopt.web.target:BrowserTarget",
}


def register(name: str, where: str | type) -> None:
    """Add (or replace) a target: `where` is "module:Class" (imported when used) or the class."""
    if not name or ":" in name or not name.replace("-", "").replace("_", "").isalnum():
        raise ValueError(f"target name {name!r}: letters, digits, '-' and '_' only")
    TARGETS[name] = where


def unregister(name: str) -> None:
    TARGETS.pop(name, None)


def names() -> list[str]:
    return list(TARGETS)


def parse_spec(spec: str) -> tuple[str, str | None]:
    """'arm:ssh://pi@host' -> ('arm', 'ssh://pi@host'); 'cpu' -> ('cpu', None)."""
    name, sep, arg = str(spec).strip().partition(":")
    name = name.lower()
    if name not in TARGETS:
        raise ConfigError(f"unknown device '{name}'; choose one of: {', '.join(TARGETS)}")
    return name, (arg if sep else None)


def target_class(name: str) -> type[Target]:
    """The Target subclass registered as `name`; DeviceError when its module is not there."""
    if name not in TARGETS:
        raise ConfigError(f"unknown device '{name}'; choose one of: {', '.join(TARGETS)}")
    where = TARGETS[name]
    if isinstance(where, type):
        cls = where
    else:
        module, _, attr = where.partition(":")
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name and module.startswith(exc.name):
                raise DeviceError(f"--device {name}: its target module {module} is not installed "
                                  "in this version of mnistopt") from None
            raise
        cls = getattr(mod, attr, None)
    if not (isinstance(cls, type) and issubclass(cls, Target)):
        raise DeviceError(f"--device {name}: {where} is not a mnistopt.targets.Target")
    return cls


def get_target(spec: str | Target = "cpu", options=None, set_options=()) -> Target:
    """A ready target from a device spec NAME[:ARG], typed `options`, and KEY=VALUE strings.

    `options` (the target's own dataclass) replaces its defaults; ARG and `set_options` are
    applied on top, in that order. Every problem is a one-line ConfigError before any work.
    """
    if isinstance(spec, Target):
        return spec
    from .base import with_options

    name, arg = parse_spec(spec)
    cls = target_class(name)
    opts = options if options is not None else cls.default_options()
    if not isinstance(opts, cls.options_type):
        raise TypeError(f"--device {name} takes {cls.options_type.__name__}, not "
                        f"{type(opts).__name__}")
    if arg is not None:
        opts = cls.parse_arg(arg, opts)
    if set_options:
        opts = with_options(opts, set_options)
    return cls(opts)
