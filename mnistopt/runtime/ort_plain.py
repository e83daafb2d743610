"""onnxruntime with its own defaults: what `InferenceSession(path)` does in a tutorial.

No mnistopt session choices (no spinning policy, no inter-op setting, ORT's default graph
optimization level and thread pool); only the thread count when one is asked for, so that a
benchmark compares at equal threads (without one: the physical cores, ORT's own default).
The bench's "tutorial" peers run in it.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import DeviceError, ModelLoadError, require
from .backends import Backend, first_line
from .ort import OnnxBackend


class PlainOnnxBackend(OnnxBackend):
    name, format, extra = "onnxruntime-plain", "onnx", "runtime-onnx"
    profiling = False
    auto_threads = False  # a tutorial's session: one thread count for every call

    def __init__(self, path: Path, *, threads: int, device: str, profile: bool = False,
                 options: dict | None = None):
        Backend.__init__(self, path, threads=threads, device=device)
        if device != "cpu":
            raise DeviceError(f"backend '{self.name}' runs on the CPU (device '{device}' was "
                              "asked for); use 'onnxruntime' with device='cuda' for a GPU")
        ort = require("onnxruntime", self.extra, "running ONNX models")
        so = ort.SessionOptions()
        so.intra_op_num_threads = self.threads
        try:
            self.session = ort.InferenceSession(str(path), sess_options=so,
                                                providers=["CPUExecutionProvider"])
        except Exception as exc:  # ORT's pybind errors: all mean "not loadable"
            raise ModelLoadError(f"{path}: onnxruntime cannot load this model: "
                                 f"{first_line(exc)}") from None
        ins, outs = self.session.get_inputs(), self.session.get_outputs()
        self.single_input(len(ins))
        self.input, self.output = self._info(ins[0], path), self._info(outs[0], path)
        self.custom_metadata = dict(self.session.get_modelmeta().custom_metadata_map)
        self.providers = self.session.get_providers()
        self._sess_run = self.session.run  # the public, checking call: as a tutorial makes it
        self._out_names, self._in_name = [self.output.name], self.input.name

    def run(self, x):
        return self._sess_run(self._out_names, {self._in_name: x})[0]
