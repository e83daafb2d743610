"""Export paths, registered in one place, keyed (framework, format).

A path knows how to make the fp32 file from a run (`convert`) and how to make each quantized
variant (`quantize`); it declares which modes it supports and the tolerance each must meet.
Its module is imported only when it is used, so this file stays free of torch / TensorFlow.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field

from ..errors import ConfigError
from ..parity import FP32, QUANTIZED, Tolerance

MODES = ("none", "dynamic", "int8", "fp16")
# mode -> file-name tag
QUANT_TAGS = {"none": "fp32", "dynamic": "dynamic", "int8": "int8", "fp16": "fp16"}
FORMATS = {"onnx": ".onnx", "tflite": ".tflite"}


@dataclass(frozen=True)
class Exporter:
    framework: str
    format: str
    module: str  # implements convert(run, workdir, ctx) and quantize(fp32, mode, workdir, ctx)
    extra: str  # the pip extra whose packages this path needs
    requires: tuple[str, ...]  # the modules that extra provides (checked before any work)
    modes: tuple[str, ...] = MODES
    tolerances: dict = field(default_factory=lambda: {
        "none": FP32, "dynamic": QUANTIZED, "int8": QUANTIZED, "fp16": QUANTIZED})

    @property
    def key(self) -> tuple[str, str]:
        return self.framework, self.format

    def tolerance(self, mode: str) -> Tolerance:
        return self.tolerances[mode]

    def impl(self):
        from ..errors import require

        for mod in self.requires:
            require(mod, self.extra, f"{self.framework} -> {self.format} export")
        return importlib.import_module(self.module)


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
                  ("litert_torch", "ai_edge_quantizer", "ai_edge_litert")))


def get_exporter(framework: str, fmt: str) -> Exporter:
    if fmt not in FORMATS:
        raise ConfigError(f"unknown export format '{fmt}'; choose one of: {', '.join(FORMATS)}, all")
    try:
        return EXPORTERS[(framework, fmt)]
    except KeyError:
        known = ", ".join(f"{f}->{t}" for f, t in EXPORTERS)
        raise ConfigError(f"no exporter from {framework} to {fmt}; registered: {known}") from None
