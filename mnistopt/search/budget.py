"""Targets and budgets as the user writes them: `--target mcu:m4-64k --budget arena=12KB,flash=16KB`.

A budget is a hard limit on one measured figure of the trial's int8 model; the figures are
the target's (`METRICS`). Sizes are in KB = 1024 bytes, as the device classes in
`mnistopt.mcu.devices` are.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..errors import ConfigError

# figure -> (unit it is kept in, what it is). Lower is better for all of them.
METRICS = {
    "latency": ("us", "int8 batch-1 p50 latency on the target"),
    "arena": ("B", "TFLite Micro tensor arena, measured"),
    "flash": ("B", "model flatbuffer bytes (what goes into flash)"),
    "size": ("B", "int8 model file bytes"),
    "macs": ("", "multiply-adds per image"),
    "params": ("", "trainable parameters"),
}
# Which figures each kind of target measures, the first being its default cost objective.
TARGET_METRICS = {
    "cpu": ("latency", "size", "macs", "params"),
    "arm": ("latency", "size", "macs", "params"),
    "mcu": ("arena", "flash", "size", "macs", "params"),
}
_UNITS = {
    "us": {"ns": 1e-3, "us": 1.0, "µs": 1.0, "ms": 1e3, "s": 1e6, "": 1.0},
    "B": {"b": 1, "kb": 1024, "kib": 1024, "mb": 1024 ** 2, "mib": 1024 ** 2, "": 1},
    "": {"": 1, "k": 1e3, "m": 1e6},
}
_VALUE = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:e[+-]?[0-9]+)?)\s*([a-zµ]*)\s*$", re.I)


@dataclass(frozen=True)
class Target:
    """Where trials are measured: kind cpu | arm | mcu, and its detail (ssh URL, device class)."""

    kind: str
    detail: str | None = None

    def __str__(self) -> str:
        return self.kind + (f":{self.detail}" if self.detail else "")

    @property
    def metrics(self) -> tuple[str, ...]:
        return TARGET_METRICS[self.kind]


def parse_target(text: str) -> Target:
    kind, _, detail = text.partition(":")
    if kind not in TARGET_METRICS:
        raise ConfigError(f"--target '{text}': choose cpu, arm, arm:ssh://USER@HOST or mcu:CLASS")
    if kind == "cpu" and detail:
        raise ConfigError(f"--target '{text}': cpu is this machine and takes no detail")
    if kind == "arm" and detail and not detail.startswith("ssh://"):
        raise ConfigError(f"--target '{text}': an ARM device is arm:ssh://USER@HOST[:PORT]")
    if kind == "mcu":
        from ..mcu.devices import DEVICES

        if detail not in DEVICES:
            raise ConfigError(f"--target '{text}': name a device class, one of: "
                              + ", ".join(f"mcu:{k}" for k in DEVICES))
    return Target(kind, detail or None)


def parse_value(metric: str, text: str) -> float:
    """'20us' -> 20.0 (µs); '64KB' -> 65536 (bytes); '8k' -> 8000."""
    unit = METRICS[metric][0]
    m = _VALUE.match(str(text))
    scale = _UNITS[unit].get(m.group(2).lower()) if m else None
    if m is None or scale is None:
        units = ", ".join(u for u in _UNITS[unit] if u) or "none"
        raise ConfigError(f"--budget {metric}={text}: not a number with a unit ({units})")
    value = float(m.group(1)) * scale
    if not value > 0:
        raise ConfigError(f"--budget {metric}={text}: must be positive")
    return value


def parse_budgets(texts: list[str], target: Target) -> dict[str, float]:
    """['latency=20us', 'arena=64KB,flash=256KB'] -> {'latency': 20.0, ...}, checked."""
    budgets: dict[str, float] = {}
    for text in texts:
        for part in filter(None, (p.strip() for p in text.split(","))):
            name, eq, value = part.partition("=")
            if not eq:
                raise ConfigError(f"--budget '{part}': write METRIC=VALUE, e.g. latency=20us")
            name = name.strip().lower()
            if name not in target.metrics:
                raise ConfigError(f"--budget {name}: target {target} measures "
                                  f"{', '.join(target.metrics)}")
            if name in budgets:
                raise ConfigError(f"--budget {name} given twice")
            budgets[name] = parse_value(name, value)
    return budgets


def device_budgets(target: Target) -> dict[str, float]:
    """What an MCU class leaves for the model: its RAM and flash less the platform's share."""
    if target.kind != "mcu":
        return {}
    from ..mcu import devices as dev

    d = dev.DEVICES[target.detail]
    return {"arena": d.ram - dev.RAM_ALLOWANCE - d.platform_ram,
            "flash": d.flash - dev.FLASH_ALLOWANCE - d.platform_flash}


def show(metric: str, value: float | None) -> str:
    """A figure for people: 14.2 µs, 11.5 KB, 7,918."""
    if value is None:
        return "-"
    unit = METRICS[metric][0]
    if unit == "us":
        return f"{value:.1f} µs" if value < 1000 else f"{value / 1000:.2f} ms"
    if unit == "B":
        return f"{value / 1024:.1f} KB"
    return f"{value:,.0f}"
