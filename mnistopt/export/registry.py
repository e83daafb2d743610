"""Export paths, registered in one place, keyed (framework, format).

An `Exporter` entry names the module that implements `ExportPath` for one (framework, format),
the extra it needs, the quantize modes it supports and the tolerance each must meet. The module
is imported only when it is used, so this file stays free of torch / TensorFlow; `impl()` checks
it against the protocol before any work, and the registry test checks every entry.
"""

from __future__ import annotations

import importlib
import inspect
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from ..errors import ConfigError
from ..parity import FP32, QUANTIZED, Tolerance

MODES = ("none", "dynamic", "int8", "fp16")
# mode -> file-name tag
QUANT_TAGS = {"none": "fp32", "dynamic": "dynamic", "int8": "int8", "fp16": "fp16"}
FORMATS = {"onnx": ".onnx", "tflite": ".tflite"}


@runtime_checkable
class ExportPath(Protocol):
    """What `export()` calls on a path module. `ctx` is an `api.Context` (opset, calibration
    images, progress, cpu); nothing else passes between the calls."""

    def convert(self, run, workdir: Path, ctx) -> Path:
        """The fp32 model file for `run` (a train.Run), written inside `workdir`."""

    def quantize(self, run, fp32: Path, mode: str, workdir: Path, ctx) -> tuple[Path, dict, str]:
        """(file, settings, one-line reason) for `mode` (not "none"), made from `fp32`."""

    def embed(self, src: Path, dst: Path, meta: dict) -> None:
        """Write the model `src` to `dst` with `meta` inside it."""

    def read_embedded(self, path: Path) -> dict | None:
        """The metadata `embed` put in `path`, or None."""

    def tools(self, framework: str) -> dict:
        """{package: version} of everything this path used for `framework`."""


def protocol_errors(module: Any) -> list[str]:
    """How `module` falls short of ExportPath: missing functions, or other parameters."""
    errors = []
    for name, want in inspect.getmembers(ExportPath, inspect.isfunction):
        if name.startswith("_"):
            continue
        got = getattr(module, name, None)
        if not callable(got):
            errors.append(f"lacks {name}()")
            continue
        want_params = list(inspect.signature(want).parameters)[1:]  # less self
        got_params = list(inspect.signature(got).parameters)
        if got_params != want_params:
            errors.append(f"{name}({', '.join(got_params)}) should be {name}({', '.join(want_params)})")
    return errors


@dataclass(frozen=True)
class Exporter:
    framework: str
    format: str
    module: str  # implements ExportPath
    extra: str  # the pip extra whose packages this path needs
    requires: tuple[str, ...]  # the modules that extra provides (checked before any work)
    modes: tuple[str, ...] = MODES
    # The files take a fixed number of images per call (`export(batch=N)` picks it; 1 by
    # default) instead of a free batch dimension.
    fixed_batch: bool = False
    tolerances: dict = field(default_factory=lambda: {
        "none": FP32, "dynamic": QUANTIZED, "int8": QUANTIZED, "fp16": QUANTIZED})

    @property
    def key(self) -> tuple[str, str]:
        return self.framework, self.format

    def tolerance(self, mode: str) -> Tolerance:
        return self.tolerances[mode]

    def impl(self) -> ExportPath:
        from ..errors import require

        for mod in self.requires:
            require(mod, self.extra, f"{self.framework} -> {self.format} export")
        return load_path_module(self.module)


def load_path_module(name: str) -> ExportPath:
    module = importlib.import_module(name)
    errors = protocol_errors(module)
    if errors:
        raise TypeError(f"{name} does not implement ExportPath: {'; '.join(errors)}")
    return module


EXPORTERS: dict[tuple[str, str], Exporter] = {}


def register(exporter: Exporter) -> Exporter:
    EXPORTERS[exporter.key] = exporter
    return exporter


_TF = ("tensorflow",)
register(Exporter("torch", "onnx", "mnistopt.export.onnx_paths", "export",
                  ("torch", "onnx", "onnxscript", "onnxruntime")))
register(Exporter("keras", "onnx", "mnistopt.export.onnx_paths", "tf",
                  _TF + ("tf2onnx", "onnx", "onnxruntime")))
register(Exporter("tf", "onnx", "mnistopt.export.onnx_paths", "tf",
                  _TF + ("tf2onnx", "onnx", "onnxruntime")))
register(Exporter("keras", "tflite", "mnistopt.export.tflite_paths", "tf",
                  _TF + ("ai_edge_litert",)))
register(Exporter("tf", "tflite", "mnistopt.export.tflite_paths", "tf",
                  _TF + ("ai_edge_litert",)))
# PyTorch -> TFLite goes through litert-torch, a heavy optional extra; its quantized variants
# through ai-edge-quantizer, which litert-torch brings.
register(Exporter("torch", "tflite", "mnistopt.export.tflite_paths", "litert",
                  ("litert_torch", "ai_edge_quantizer", "ai_edge_litert"), fixed_batch=True))


def get_exporter(framework: str, fmt: str) -> Exporter:
    try:
        return EXPORTERS[(framework, fmt)]
    except KeyError:
        known = ", ".join(f"{f}->{t}" for f, t in EXPORTERS)
        raise ConfigError(f"no exporter from {framework} to {fmt}; registered: {known}") from None


def format_module(fmt: str) -> ExportPath:
    """A module of `fmt`'s paths, for reading metadata (needs only the format's own package)."""
    return load_path_module(next(e.module for e in EXPORTERS.values() if e.format == fmt))


def choose(value: str | list[str] | tuple[str, ...], known, what: str) -> list[str]:
    """`value` (one name, several, or "all") as a list of names from `known`, in order, once
    each; ConfigError for a name not in it. The one check of --format and --quantize."""
    values = [value] if isinstance(value, str) else list(value)
    if "all" in values:
        values = list(known)
    for v in values:
        if v not in known:
            raise ConfigError(f"unknown {what} '{v}'; choose one of: {', '.join(known)}, all")
    return list(dict.fromkeys(values))
