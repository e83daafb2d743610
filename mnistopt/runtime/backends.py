"""The two backends, each importing its library only when a model of its format is loaded.

A backend opens the file once and exposes what the model itself says about its single input and
output (`TensorInfo`: name, shape with -1 for a free dimension, numpy dtype, and the int8
scale/zero-point where the format records them), plus `run(x) -> raw output`. Everything about
images, layouts and labels lives in `mnistopt.runtime`; this module only binds the libraries.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

import numpy as np

from ..errors import DeviceError, ModelLoadError, require

# ONNX element types as onnxruntime spells them -> numpy.
_ORT_TYPES = {
    "tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64,
    "tensor(uint8)": np.uint8, "tensor(int8)": np.int8, "tensor(int32)": np.int32,
    "tensor(int64)": np.int64,
}


class TensorInfo:
    """One model input or output as the model itself declares it."""

    # A plain class: dataclasses pulls in `inspect`, ~10 ms of cold start on a small device.
    __slots__ = ("name", "shape", "dtype", "scale", "zero_point")

    def __init__(self, name: str, shape: tuple, dtype: type, scale: float | None = None,
                 zero_point: int | None = None):
        self.name = name
        self.shape = shape  # ints, -1 where the model leaves the dimension free (the batch)
        self.dtype = dtype
        self.scale = scale  # int8/uint8 tensors: real = (q - zero_point) * scale
        self.zero_point = zero_point

    def __repr__(self) -> str:
        return (f"TensorInfo({self.name!r}, {self.shape}, {np.dtype(self.dtype).name}, "
                f"scale={self.scale}, zero_point={self.zero_point})")


def physical_cores() -> int:
    """Physical cores this process may use (hyper-threads share one core's int8 units)."""
    try:
        usable = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        usable = os.cpu_count() or 1
    try:
        cores, phys = set(), "0"
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                key = key.strip()
                if key == "physical id":
                    phys = value.strip()
                elif key == "core id":
                    cores.add((phys, value.strip()))
        if cores:
            return max(1, min(usable, len(cores)))
    except OSError:
        pass
    return max(1, usable)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _cuda_device_id(device: str) -> int:
    _, _, idx = device.partition(":")
    try:
        return int(idx) if idx else 0
    except ValueError:
        raise DeviceError(f"unknown device '{device}': use 'cpu', 'cuda' or 'cuda:N'") from None


class OnnxBackend:
    """onnxruntime, one InferenceSession per model; `run` is thread-safe (ORT sessions are)."""

    format = "onnx"

    def __init__(self, path: Path, threads: int, device: str):
        ort = require("onnxruntime", "runtime", "running ONNX models")
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        so.log_severity_level = 3  # ORT's warnings would land in the CLI's output
        if threads == 1:
            # One thread: no pool to keep spinning; spinning only burns a core between calls.
            so.add_session_config_entry("session.intra_op.allow_spinning", "0")
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
            msg = _first_line(exc)
            if "external" in msg.lower() or ".data" in msg:
                msg += " (the model's weights live in a separate file: re-export it as one file)"
            raise ModelLoadError(f"{path}: onnxruntime cannot load this model: {msg}") from None
        if device != "cpu" and "CUDAExecutionProvider" not in self.session.get_providers():
            # ORT falls back to CPU silently when the CUDA libraries fail to load.
            raise DeviceError("onnxruntime could not start its CUDA provider (no GPU, or CUDA/"
                              "cuDNN libraries missing); use device='cpu'")
        ins, outs = self.session.get_inputs(), self.session.get_outputs()
        if len(ins) != 1:
            raise ModelLoadError(f"{path}: has {len(ins)} inputs; an MNIST classifier has one "
                                 "(the images)")
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


class TFLiteBackend:
    """LiteRT's Interpreter (XNNPACK applied by its default op resolver); `run` holds a lock.

    The interpreter owns one set of tensors, so concurrent calls are serialized; the input is
    resized (and tensors reallocated) only when the batch size changes.
    """

    format = "tflite"

    def __init__(self, path: Path, threads: int, device: str):
        if device != "cpu":
            raise DeviceError(f"TFLite models run on the CPU here (device '{device}' was asked "
                              "for); use the ONNX artifact with device='cuda' for a GPU")
        litert = require("ai_edge_litert.interpreter", "runtime", "running TFLite models")
        try:
            self.interp = litert.Interpreter(model_path=str(path), num_threads=threads)
            self.interp.allocate_tensors()
        except Exception as exc:  # ValueError / RuntimeError from the C++ loader
            raise ModelLoadError(f"{path}: LiteRT cannot load this model: {_first_line(exc)}"
                                 ) from None
        ins, outs = self.interp.get_input_details(), self.interp.get_output_details()
        if len(ins) != 1:
            raise ModelLoadError(f"{path}: has {len(ins)} inputs; an MNIST classifier has one "
                                 "(the images)")
        self.input, self.output = self._info(ins[0]), self._info(outs[0])
        self.custom_metadata = tflite_metadata(path)
        self.providers = ["LiteRT/XNNPACK"]
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


def tflite_metadata(path: Path) -> dict[str, str]:
    """The flatbuffer's named metadata entries that hold UTF-8 text (e.g. "mnistopt" JSON).

    A minimal flatbuffer walk (Model.metadata -> Metadata{name, buffer} -> Buffer.data), so no
    tflite schema package is needed; anything unexpected yields {} (metadata is optional).
    """
    import struct

    try:
        b = Path(path).read_bytes()
        u32 = lambda o: struct.unpack_from("<I", b, o)[0]  # noqa: E731

        def field(table: int, i: int) -> int | None:
            vt = table - struct.unpack_from("<i", b, table)[0]
            vsize = struct.unpack_from("<H", b, vt)[0]
            if 4 + 2 * i >= vsize:
                return None
            off = struct.unpack_from("<H", b, vt + 4 + 2 * i)[0]
            return table + off if off else None

        def ref(pos: int) -> int:
            return pos + u32(pos)

        def vector(pos: int):
            start = ref(pos)
            return start + 4, u32(start)

        model = u32(0)
        meta_f, buf_f = field(model, 6), field(model, 4)
        if meta_f is None or buf_f is None:
            return {}
        bufs, n_bufs = vector(buf_f)
        out = {}
        start, n = vector(meta_f)
        for k in range(n):
            entry = ref(start + 4 * k)
            name_f, bidx_f = field(entry, 0), field(entry, 1)
            if name_f is None or bidx_f is None:
                continue
            s0, ln = vector(name_f)
            name = b[s0:s0 + ln].decode("utf-8", "replace")
            idx = u32(bidx_f)
            if idx >= n_bufs:
                continue
            buf = ref(bufs + 4 * idx)
            data_f = field(buf, 0)
            if data_f is not None:
                d0, dl = vector(data_f)
                data = b[d0:d0 + dl]
            else:  # large models keep buffers after the flatbuffer: (offset, size)
                off_f, size_f = field(buf, 1), field(buf, 2)
                if off_f is None or size_f is None:
                    continue
                off, size = struct.unpack_from("<Q", b, off_f)[0], struct.unpack_from(
                    "<Q", b, size_f)[0]
                data = b[off:off + size]
            try:
                out[name] = data.decode("utf-8")
            except UnicodeDecodeError:
                pass  # binary metadata (e.g. min_runtime_version is text; others may not be)
        return out
    except (OSError, struct.error, IndexError, ValueError):
        return {}


BACKENDS = {"onnx": OnnxBackend, "tflite": TFLiteBackend}
