"""onnxruntime: one InferenceSession per model; `run` is thread-safe (ORT sessions are)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..errors import ConfigError, DeviceError, ModelLoadError, require
from .backends import Backend, TensorInfo, first_line

# ONNX element types as onnxruntime spells them -> numpy.
_ORT_TYPES = {
    "tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64,
    "tensor(uint8)": np.uint8, "tensor(int8)": np.int8, "tensor(int32)": np.int32,
    "tensor(int64)": np.int64,
}


def _cuda_device_id(device: str) -> int:
    _, _, idx = device.partition(":")
    try:
        return int(idx) if idx else 0
    except ValueError:
        raise DeviceError(f"unknown device '{device}': use 'cpu', 'cuda' or 'cuda:N'") from None


class OnnxBackend(Backend):
    name, format, extra = "onnxruntime", "onnx", "runtime-onnx"
    profiling = True  # onnxruntime's own profiler: per-node kernel times

    def __init__(self, path: Path, *, threads: int, device: str, profile: bool = False,
                 options: dict | None = None):
        super().__init__(path, threads=threads, device=device)
        ort = require("onnxruntime", self.extra, "running ONNX models")
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        so.log_severity_level = 3  # ORT's warnings would land in the CLI's output
        if threads == 1:
            # One thread: no pool to keep spinning; spinning only burns a core between calls.
            so.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self._profile_dir = None
        if profile:
            import tempfile

            self._profile_dir = tempfile.TemporaryDirectory(prefix="mnistopt-profile-")
            so.enable_profiling = True
            so.profile_file_prefix = str(Path(self._profile_dir.name) / "ort")
        if device == "cpu":
            providers = ["CPUExecutionProvider"]
        elif device.startswith("cuda"):
            dev_id = _cuda_device_id(device)
            if "CUDAExecutionProvider" not in ort.get_available_providers():
                raise DeviceError(
                    "device 'cuda' needs onnxruntime's CUDA provider, which this install lacks: "
                    "pip install onnxruntime-gpu (instead of onnxruntime) on a machine with a "
                    "CUDA GPU, or use device='cpu'")
            providers = [("CUDAExecutionProvider", {"device_id": dev_id}), "CPUExecutionProvider"]
        else:
            raise DeviceError(f"unknown device '{device}': use 'cpu', 'cuda' or 'cuda:N'")
        try:
            self.session = ort.InferenceSession(str(path), sess_options=so, providers=providers)
        except Exception as exc:  # ORT raises its own pybind types: all mean "not loadable"
            msg = first_line(exc)
            if "external" in msg.lower() or ".data" in msg:
                msg += " (the model's weights live in a separate file: re-export it as one file)"
            raise ModelLoadError(f"{path}: onnxruntime cannot load this model: {msg}") from None
        if device != "cpu" and "CUDAExecutionProvider" not in self.session.get_providers():
            # ORT falls back to CPU silently when the CUDA libraries fail to load.
            raise DeviceError("onnxruntime could not start its CUDA provider (no GPU, or CUDA/"
                              "cuDNN libraries missing); use device='cpu'")
        ins, outs = self.session.get_inputs(), self.session.get_outputs()
        self.single_input(len(ins))
        self.input = self._info(ins[0], path)
        self.output = self._info(outs[0], path)
        self.custom_metadata = dict(self.session.get_modelmeta().custom_metadata_map)
        self.providers = self.session.get_providers()
        # Bind once: the public `run` re-validates feed names on every call.
        self._sess_run = getattr(self.session, "_sess", self.session).run
        self._out_names = [self.output.name]
        self._in_name = self.input.name

    @staticmethod
    def _info(arg, path) -> TensorInfo:
        dtype = _ORT_TYPES.get(arg.type)
        if dtype is None:
            raise ModelLoadError(f"{path}: tensor '{arg.name}' has type {arg.type}; not an "
                                 "image classifier's")
        shape = tuple(d if isinstance(d, int) and d > 0 else -1 for d in (arg.shape or ()))
        return TensorInfo(arg.name, shape, dtype)

    def run(self, x: np.ndarray) -> np.ndarray:
        return self._sess_run(self._out_names, {self._in_name: x}, None)[0]

    def end_profiling(self) -> list:
        """onnxruntime's trace (Chrome trace events) of every call so far; profiling stops."""
        if self._profile_dir is None:
            raise ConfigError(f"{self.path}: not profiling (open it with profile=True)")
        try:
            return json.loads(Path(self.session.end_profiling()).read_text())
        finally:
            self._profile_dir.cleanup()
            self._profile_dir = None
