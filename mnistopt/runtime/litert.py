"""LiteRT's Interpreter: with XNNPACK (what a phone or a Pi runs), or its reference kernels.

The interpreter owns one set of tensors, so concurrent calls are serialized by a lock; the input
is resized (and tensors reallocated) only when the batch size changes.
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np

from ..errors import ModelLoadError, require
from .backends import Backend, TensorInfo, first_line
from .flatbuf import tflite_metadata


class LiteRTBackend(Backend):
    """The default op resolver: builtin kernels with the XNNPACK delegate applied."""

    name, format, extra = "litert", "tflite", "runtime-tflite"
    label = "LiteRT/XNNPACK"
    resolver: str | None = None  # an OpResolverType name; None = LiteRT's default

    def __init__(self, path: Path, *, threads: int, device: str, profile: bool = False,
                 options: dict | None = None):
        super().__init__(path, threads=threads, device=device)
        self.cpu_only()
        litert = require("ai_edge_litert.interpreter", self.extra, "running TFLite models")
        kw = {} if self.resolver is None else {
            "experimental_op_resolver_type": getattr(litert.OpResolverType, self.resolver)}
        try:
            self.interp = litert.Interpreter(model_path=str(path), num_threads=threads, **kw)
            self.interp.allocate_tensors()
        except Exception as exc:  # ValueError / RuntimeError from the C++ loader
            raise ModelLoadError(f"{path}: LiteRT cannot load this model: {first_line(exc)}"
                                 ) from None
        ins, outs = self.interp.get_input_details(), self.interp.get_output_details()
        self.single_input(len(ins))
        self.input, self.output = self._info(ins[0]), self._info(outs[0])
        self.custom_metadata = tflite_metadata(path)
        self.providers = [self.label]
        self._in_idx, self._out_idx = ins[0]["index"], outs[0]["index"]
        self._in_shape = [int(d) for d in ins[0]["shape"]]
        self._batch = self._in_shape[0] if self._in_shape else None
        self._lock = threading.Lock()

    @staticmethod
    def _info(d: dict) -> TensorInfo:
        sig = d.get("shape_signature")
        shape = tuple(int(v) for v in (sig if sig is not None and len(sig) else d["shape"]))
        scale, zp = d.get("quantization", (0.0, 0))
        quantized = np.issubdtype(d["dtype"], np.integer) and scale
        return TensorInfo(d["name"], shape, d["dtype"].type if hasattr(d["dtype"], "type")
                          else d["dtype"], float(scale) if quantized else None,
                          int(zp) if quantized else None)

    def run(self, x: np.ndarray) -> np.ndarray:
        n = x.shape[0]
        with self._lock:
            if n != self._batch:
                shape = [n] + self._in_shape[1:]
                self.interp.resize_tensor_input(self._in_idx, shape, strict=True)
                self.interp.allocate_tensors()
                self._batch = n
            self.interp.set_tensor(self._in_idx, x)
            self.interp.invoke()
            return self.interp.get_tensor(self._out_idx)  # a copy: safe once the lock is released


class LiteRTReferenceBackend(LiteRTBackend):
    """LiteRT's builtin kernels without the default delegate: for int8 models, the same
    integer arithmetic as TFLite Micro's reference kernels (XNNPACK rounds some
    requantizations differently), so it is what a microcontroller result is checked against."""

    name = "litert-ref"
    label = "LiteRT/builtin"
    resolver = "BUILTIN_WITHOUT_DEFAULT_DELEGATES"
