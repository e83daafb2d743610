"""onnxruntime: one InferenceSession per model; `run` is thread-safe (ORT sessions are)."""

from __future__ import annotations

import json
import threading
import time
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
    auto_threads = True

    def __init__(self, path: Path, *, threads: int | None, device: str, profile: bool = False,
                 options: dict | None = None):
        super().__init__(path, threads=threads, device=device)
        self._ort = require("onnxruntime", self.extra, "running ONNX models")
        self._profile_dir = None
        if profile:
            import tempfile

            self._profile_dir = tempfile.TemporaryDirectory(prefix="mnistopt-profile-")
        if device == "cpu":
            self._providers = ["CPUExecutionProvider"]
        elif device.startswith("cuda"):
            dev_id = _cuda_device_id(device)
            if "CUDAExecutionProvider" not in self._ort.get_available_providers():
                raise DeviceError(
                    "device 'cuda' needs onnxruntime's CUDA provider, which this install lacks: "
                    "pip install onnxruntime-gpu (instead of onnxruntime) on a machine with a "
                    "CUDA GPU, or use device='cpu'")
            self._providers = [("CUDAExecutionProvider", {"device_id": dev_id}),
                               "CPUExecutionProvider"]
        else:
            raise DeviceError(f"unknown device '{device}': use 'cpu', 'cuda' or 'cuda:N'")
        # Automatic threads: a one-thread session now, an all-cores one on the first large call
        # or small call of the thread trial (see backends.PARALLEL_BATCH). A profiled model has
        # one session, on one thread.
        self._split = self.auto and self.threads > 1 and not profile
        if profile and self.auto:
            self.threads = self.threads_for(1)
            self.auto = False
        self.session = self._open(self.threads_for(1))
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
        self._big_run = None
        self._big_lock = threading.Lock()
        self._out_names = [self.output.name]
        self._in_name = self.input.name

    def _open(self, threads: int):
        ort = self._ort
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        so.log_severity_level = 3  # ORT's warnings would land in the CLI's output
        if threads == 1:
            # One thread: no pool to keep spinning; spinning only burns a core between calls.
            so.add_session_config_entry("session.intra_op.allow_spinning", "0")
        # QDQ propagation hoists a QuantizeLinear above a MaxPool that follows a float conv (the
        # first conv of an int8 file stays float), and the MaxPool then runs as a uint8 NCHW
        # kernel ~10x slower than the float one: lenet5 int8 1.35x its fp32 at batch 1 with it,
        # 1.03x without; seed, edge, wide the same either way. A model without QDQ nodes has
        # nothing for it to do.
        so.add_session_config_entry("optimization.disable_specified_optimizers",
                                    "QDQPropagationTransformer")
        if self._profile_dir is not None:
            so.enable_profiling = True
            so.profile_file_prefix = str(Path(self._profile_dir.name) / "ort")
        try:
            return ort.InferenceSession(str(self.path), sess_options=so, providers=self._providers)
        except Exception as exc:  # ORT raises its own pybind types: all mean "not loadable"
            msg = first_line(exc)
            if "external" in msg.lower() or ".data" in msg:
                msg += " (the model's weights live in a separate file: re-export it as one file)"
            raise ModelLoadError(f"{self.path}: onnxruntime cannot load this model: {msg}"
                                 ) from None

    def _open_big(self):
        with self._big_lock:
            if self._big_run is None:
                big = self._open(self.threads)
                self._big_run = getattr(big, "_sess", big).run
        return self._big_run

    @staticmethod
    def _info(arg, path) -> TensorInfo:
        dtype = _ORT_TYPES.get(arg.type)
        if dtype is None:
            raise ModelLoadError(f"{path}: tensor '{arg.name}' has type {arg.type}; not an "
                                 "image classifier's")
        shape = tuple(d if isinstance(d, int) and d > 0 else -1 for d in (arg.shape or ()))
        return TensorInfo(arg.name, shape, dtype)

    def run(self, x: np.ndarray) -> np.ndarray:
        if not self._split:
            return self._sess_run(self._out_names, {self._in_name: x}, None)[0]
        n = x.shape[0]
        timed = n < self.parallel_batch and self.trial.choice is None
        threads = self.trial.next() if timed else self.threads_for(n)
        run = self._sess_run if threads == 1 else (self._big_run or self._open_big())
        if not timed:
            return run(self._out_names, {self._in_name: x}, None)[0]
        t0 = time.perf_counter()
        out = run(self._out_names, {self._in_name: x}, None)[0]
        self.trial.record(threads, (time.perf_counter() - t0) / n)
        return out

    def end_profiling(self) -> list:
        """onnxruntime's trace (Chrome trace events) of every call so far; profiling stops."""
        if self._profile_dir is None:
            raise ConfigError(f"{self.path}: not profiling (open it with profile=True)")
        try:
            return json.loads(Path(self.session.end_profiling()).read_text())
        finally:
            self._profile_dir.cleanup()
            self._profile_dir = None
