"""The target contract: what a benchmark target is, what it is given, what it gives back.

A target (cpu, gpu, arm, mcu, ...) is a `Target` subclass with its own typed options (a
dataclass). The bench, the search and any other caller hand it `Item`s and common `Settings`
and get one record (a JSON-ready dict, keys in `RECORD_KEYS`) back per item, in order. A
model the target cannot run is a record with ``error`` set, never an exception; a target that
cannot run at all here raises `DeviceError` (or another `MnistoptError`) before any work.

Standard library only: target modules import this on the device side too.
"""

from __future__ import annotations

import dataclasses
import typing
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import ClassVar

from ..errors import ConfigError

# error_type of a record whose model this target does not run at all (a native model on ARM,
# a float model on a microcontroller): reported, but not a failure of the run.
UNSUPPORTED = "Unsupported"

# How the latency figures of a record were obtained.
LATENCY_SOURCES = ("native", "remote", "emulated")

# What a record holds. Item fields, then what the target measured (absent when not measured).
RECORD_KEYS = {
    "id": "stable name across runs (the key for --baseline)",
    "kind": "artifact | native", "path": "the file or run directory", "backend": "runner key",
    "backend_label": "how a table names the runner", "framework": "torch | keras | tf",
    "arch": "architecture name", "format": "onnx | tflite | native",
    "base_arch": "the arch a pruned model was cut from (`mnistopt prune`): the bench compares "
                 "it with that arch's native model and peers; null otherwise",
    "quant": "fp32 | int8 | dynamic | fp16", "file_bytes": "size on disk",
    "params": "parameter count", "macs": "multiply-adds per image",
    "float_mac_share": "share of the multiply-adds computed in float, read from the file's own "
                       "ops (TFLite); null where the quant says (int8: none, others: all)",
    "meta": "sidecar extracts",
    "device": "the target's name", "latency_source": "native | remote | emulated",
    "accuracy": "top-1 on the test images", "n_images": "how many test images",
    "latency": "{batch: {n, mean_us, p50_us, p90_us, p99_us, p99_9_us, min_us, max_us, "
               "std_us, images_per_s}}; {} when the target times nothing",
    "coldstart": "{total_s, in_process_s, import_s, load_s, first_inference_s, peak_rss_bytes}",
    "threads": "threads used", "via": "what ran it", "peak_rss_bytes_total": "peak memory",
    "eval_seconds": "time of the accuracy pass", "error": "one line: why it did not run",
    "error_type": "exception name, or UNSUPPORTED",
    "peer": "only on a peer's record (a tool mnistopt is compared with): {name, tool, how, "
            "source_run, build_s, cached, ...}; mnistopt's own records have no such key",
    "compile": "{seconds, shapes: {batch: s}}: time spent compiling (torch.compile); part of "
               "the cold start and the accuracy pass, never of a latency",
}
# Measured keys a target may copy from a worker's result into a record.
MEASURED_KEYS = ("accuracy", "n_images", "latency", "coldstart", "threads", "via",
                 "peak_rss_bytes_total", "eval_seconds", "error", "error_type", "compile")


@dataclass
class Item:
    """One thing to measure: an exported file or a run directory's native model."""

    id: str  # stable name across runs, the key for --baseline
    kind: str  # "artifact" | "native"
    path: Path
    backend: str
    framework: str | None = None
    arch: str | None = None
    format: str | None = None  # onnx | tflite | native
    quant: str | None = None  # fp32 | int8 | dynamic | fp16 | None for native
    file_bytes: int = 0
    params: int | None = None
    macs: int | None = None
    float_mac_share: float | None = None
    meta: dict = field(default_factory=dict)
    peer: dict | None = None  # set on a peer's item (see RECORD_KEYS); None for mnistopt's own
    base_arch: str | None = None  # the arch a pruned model was cut from (see RECORD_KEYS)


@dataclass
class Settings:
    """How to measure, the same for every target (a target may scale it down, e.g. under qemu)."""

    batch_sizes: list = field(default_factory=lambda: [1, 32, 256])
    threads: int | None = None
    warmup: int = 20
    iters: int = 300
    budget_s: float = 3.0  # cap on timed seconds per (model, batch size)
    coldstart: bool = True
    progress: bool = True

    def __post_init__(self):
        sizes = list(self.batch_sizes)
        if not sizes or any(not isinstance(b, int) or isinstance(b, bool) or b <= 0 for b in sizes):
            raise ConfigError(f"batch sizes must be positive integers, got {self.batch_sizes}")
        if self.iters < 1 or self.warmup < 0 or self.budget_s <= 0 or (
                self.threads is not None and self.threads < 1):
            raise ConfigError("iters and threads must be >= 1, warmup >= 0, budget > 0")
        self.batch_sizes = sizes


@dataclass(frozen=True)
class NoOptions:
    """The options of a target that has none."""


def make_record(item: Item, res: dict, device: str, latency_source: str,
                backend_label: str | None = None) -> dict:
    """One record from an item and what was measured for it (`res`: MEASURED_KEYS)."""
    if latency_source not in LATENCY_SOURCES:
        raise ValueError(f"latency_source {latency_source!r} is not one of {LATENCY_SOURCES}")
    rec = {k: v for k, v in asdict(item).items() if k != "path" and (k != "peer" or v)}
    rec["path"] = str(item.path)
    rec["backend_label"] = backend_label or item.backend
    rec["device"] = device
    rec["latency_source"] = latency_source
    for key in MEASURED_KEYS:
        if key in res:
            rec[key] = res[key]
    rec.setdefault("latency", {})
    return rec


def unsupported(item: Item, why: str, device: str, latency_source: str = "native") -> dict:
    """The record of a model this target does not run (not a failure of the run)."""
    return make_record(item, {"error": why, "error_type": UNSUPPORTED}, device, latency_source)


class Target(ABC):
    """A place where models run. Subclass, set the class attributes, implement `run`.

    Registration is one line in `mnistopt/targets/registry.py` (or `register()` at run time).
    """

    name: ClassVar[str] = ""  # the registry key, also each record's "device"
    summary: ClassVar[str] = ""  # one line: where the models run, what the figures mean
    options_type: ClassVar[type] = NoOptions  # a dataclass: this target's own options
    # What ARG means in a device spec NAME:ARG ("" = the target takes none).
    spec_usage: ClassVar[str] = ""

    def __init__(self, options=None):
        self.options = self.default_options() if options is None else options
        if not isinstance(self.options, self.options_type):
            raise TypeError(f"{type(self).__name__} takes {self.options_type.__name__}, "
                            f"not {type(self.options).__name__}")
        self.check()

    @classmethod
    def default_options(cls):
        """Options when the caller gives none (a target may read its environment variables)."""
        return cls.options_type()

    @classmethod
    def parse_arg(cls, arg: str, options):
        """`options` updated from the ARG of a device spec NAME:ARG; ConfigError if invalid."""
        raise ConfigError(f"--device {cls.name} takes no ':{arg}' (use --device {cls.name})")

    def check(self) -> None:
        """Refuse contradictory options before any work (ConfigError, one line)."""

    @abstractmethod
    def run(self, items: list[Item], settings: Settings) -> list[dict]:
        """One record per item, in order (see RECORD_KEYS)."""

    def failures(self, records: list[dict]) -> list[str]:
        """One line per model that failed (UNSUPPORTED records are not failures)."""
        return [f"{r['id']}: {r['error']}" for r in records
                if r.get("error") and r.get("error_type") != UNSUPPORTED]

    def describe(self) -> dict:
        """The target and its options, for the report."""
        return {"name": self.name, "options": _jsonable_options(self.options)}


def _jsonable_options(options) -> dict:
    out = {}
    for k, v in asdict(options).items():
        out[k] = str(v) if isinstance(v, Path) else v
    return out


# -- options from strings (KEY=VALUE on a command line) -----------------------------------

_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


def _convert(name: str, text: str, hint) -> object:
    """`text` as the type `hint` of an options field; ConfigError naming the field otherwise."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is typing.Union or type(hint).__name__ == "UnionType":
        inner = [a for a in args if a is not type(None)]
        if text.lower() in ("", "none") and type(None) in args:
            return None
        return _convert(name, text, inner[0]) if len(inner) == 1 else text
    if origin in (list, tuple):
        import shlex

        items = shlex.split(text)
        return items if origin is list else tuple(items)
    try:
        if hint is bool:
            if text.lower() in _TRUE:
                return True
            if text.lower() in _FALSE:
                return False
            raise ValueError
        if hint in (int, float, str):
            return hint(text)
        if hint is Path:
            return Path(text).expanduser()
    except ValueError:
        kind = "true or false" if hint is bool else f"a{'n' if hint is int else ''} {hint.__name__}"
        raise ConfigError(f"target option {name}={text!r}: must be {kind}") from None
    return text


def with_options(options, pairs: dict[str, str] | list[str]):
    """`options` (a dataclass) with KEY=VALUE strings applied, each checked against its field."""
    if isinstance(pairs, dict):
        pairs = [f"{k}={v}" for k, v in pairs.items()]
    cls = type(options)
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    changes = {}
    for pair in pairs:
        key, sep, value = str(pair).partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not key:
            raise ConfigError(f"target option '{pair}': write KEY=VALUE")
        if key not in names:
            have = ", ".join(names) or "none"
            raise ConfigError(f"unknown target option '{key}' (this target's options: {have})")
        changes[key] = _convert(key, value.strip(), hints[key])
    return dataclasses.replace(options, **changes) if changes else options
