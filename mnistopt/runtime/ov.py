"""OpenVINO's CPU plugin: ONNX files (the same ones onnxruntime runs) and OpenVINO IR files.

OpenVINO compiles a model for one input shape much better than for a free one (measured on the
edge net, batch 1, contended: 61 µs static vs 72-113 µs with a free batch), so each batch size
seen gets its own compiled model (the first few sizes), and the model with a free batch serves
the rest. One infer request per compiled model; calls are serialized by a lock.

Large calls (PARALLEL_BATCH images or more, a free batch, more than one thread) can also run as
*streams*: the batch cut into one equal share per thread, each share an infer request of a
model compiled with NUM_STREAMS = threads, all started at once. Measured at batch 256 on a
2-core Zen 3 against one call on both threads: edge int8 1.12x, wide int8 1.11x, seed int8
1.00x, fp32 files 0.94-1.07x. So the first large calls time both ways (a `ThreadTrial` over
stream counts, the same mechanism as the runtimes' thread trial) and the faster one stays.

Precision: `options={"precision": ...}` — "f32" (default: the file's own arithmetic, what parity
checks expect), or "default": OpenVINO's choice for this CPU, which is bfloat16 on CPUs with
AVX512-BF16 or AMX (faster, not numerically the file). `options={"streams": 1}`: every call is
one request on all threads, as OpenVINO's own latency default runs it ("auto", the default:
the stream trial above decides for large calls).
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np

from ..errors import ConfigError, DeviceError, ModelLoadError, require
from .backends import PARALLEL_BATCH, Backend, TensorInfo, ThreadTrial, first_line

# Batch sizes compiled for per model: a bench uses three (1, the largest batch, the eval chunk).
MAX_SHAPES = 4
# An IR's weights file is read whole by OpenVINO: bound it before it is opened (the largest
# mnistopt model's weights are under 2 MB).
MAX_IR_BYTES = 256 << 20
PRECISIONS = ("f32", "default")
STREAMS = ("auto", 1)


def compile_config(threads: int, precision: str = "f32", streams: int = 1) -> dict:
    """The CPU plugin's settings: `threads` threads in all; one stream (one call at a time, all
    threads on it), or `streams` requests running at once."""
    if precision not in PRECISIONS:
        raise ConfigError(f"openvino precision must be one of {', '.join(PRECISIONS)}, got "
                          f"{precision!r}")
    cfg = {"INFERENCE_NUM_THREADS": int(threads), "NUM_STREAMS": int(streams),
           "PERFORMANCE_HINT": "LATENCY" if streams == 1 else "THROUGHPUT"}
    if precision == "f32":
        cfg["INFERENCE_PRECISION_HINT"] = "f32"
    return cfg


def _info(port, default_name: str) -> TensorInfo:
    names = port.get_names()  # a port may have none (an IR written without tensor names)
    shape = tuple(d.get_length() if d.is_static else -1 for d in port.get_partial_shape())
    return TensorInfo(sorted(names)[0] if names else default_name, shape,
                      port.get_element_type().to_dtype().type)


class OpenVINOBackend(Backend):
    name, format, extra = "openvino", "onnx", "openvino"
    options = frozenset({"precision", "streams"})
    profiling = True  # the CPU plugin's per-layer counters (PERF_COUNT): `last_layers()`

    def __init__(self, path: Path, *, threads: int, device: str, profile: bool = False,
                 options: dict | None = None):
        super().__init__(path, threads=threads, device=device)
        if device != "cpu":
            raise DeviceError(f"the openvino backend runs on the CPU here (device '{device}' was "
                              "asked for); use onnxruntime with device='cuda' for a GPU")
        self.precision = (options or {}).get("precision", "f32")
        streams = (options or {}).get("streams", "auto")
        if streams not in STREAMS:
            raise ConfigError(f"openvino streams must be one of auto, 1, got {streams!r}")
        self._config = compile_config(threads, self.precision)
        self._profile = profile
        if profile:  # every compiled model counts, and every call is one request
            self._config["PERF_COUNT"] = True
            streams = 1
        self._last = None  # the request of the last call
        ov = require("openvino", self.extra, "running models with OpenVINO")
        self._check_size(path)
        self._core = ov.Core()
        try:
            self._model = self._core.read_model(str(path))
            ins, outs = self._model.inputs, self._model.outputs
            self.single_input(len(ins))
            self.input, self.output = _info(ins[0], "input"), _info(outs[0], "output")
            self._free = self._core.compile_model(self._model, "CPU", self._config)
        except (ModelLoadError, ConfigError):
            raise
        except Exception as exc:  # OpenVINO raises RuntimeError / its own types for bad files
            raise ModelLoadError(f"{path}: OpenVINO cannot load this model: {first_line(exc)}"
                                 ) from None
        self.custom_metadata = self._metadata()
        self.inference_precision = self._free.get_property("INFERENCE_PRECISION_HINT").to_string()
        self.providers = [f"OpenVINO CPU ({self.inference_precision})"]
        self._static: dict[int, object] = {}
        self._streamed: dict[int, list] = {}  # share size -> its `streams` infer requests
        # Stream counts for large calls: 1 (one request on every thread), or one per thread.
        self.stream_trial = ThreadTrial((1, self.threads) if streams == "auto" else (1,))
        self._lock = threading.Lock()

    def _check_size(self, path: Path) -> None:
        for f in (path, path.with_suffix(".bin")) if self.format == "ir" else (path,):
            if f.is_file() and f.stat().st_size > MAX_IR_BYTES:
                raise ModelLoadError(f"{f}: {f.stat().st_size:,} bytes, over the {MAX_IR_BYTES:,}"
                                     " bytes an MNIST classifier can need; not opened")

    def _metadata(self) -> dict:
        # ONNX metadata_props (and an IR's copy of them) live under rt_info "framework".
        try:
            if not self._model.has_rt_info(["framework"]):
                return {}
            keys = self._model.get_rt_info(["framework"]).astype(dict)
            return {str(k): self._model.get_rt_info(["framework", k]).astype(str) for k in keys}
        except Exception:  # metadata is a hint; a model without readable metadata still runs
            return {}

    def _compile_for(self, batch: int, config: dict | None = None):
        """The model compiled for exactly `batch` images, with `config` or the backend's own."""
        model = self._model.clone()
        model.reshape({0: [batch, *self.input.shape[1:]]})
        return self._core.compile_model(model, "CPU", config or self._config)

    def _request(self, n: int):
        """The request compiled for `n` images, compiled now for the first MAX_SHAPES sizes;
        None: the free-shape model runs it (also what reports a wrong fixed batch)."""
        req = self._static.get(n)
        if req is None and len(self._static) < MAX_SHAPES and (
                not self.input.shape or self.input.shape[0] in (-1, n)):
            req = self._static[n] = self._compile_for(n).create_infer_request()
        return req

    def streams_for(self, batch: int) -> int:
        """Streams a call of `batch` images runs on (1 until the trial has chosen)."""
        return self.stream_trial.current() if self._streamable(batch) else 1

    def _streamable(self, n: int) -> bool:
        """Whether a call of `n` images can be split: large, in equal shares of a free batch,
        with a share size already compiled for or room for one more (MAX_SHAPES)."""
        s = self.threads
        return (len(self.stream_trial.candidates) > 1 and n >= PARALLEL_BATCH and n % s == 0
                and bool(self.input.shape) and self.input.shape[0] == -1
                and (n // s in self._streamed or len(self._streamed) < MAX_SHAPES))

    def _stream_requests(self, share: int, streams: int) -> list:
        reqs = self._streamed.get(share)
        if reqs is None:
            config = compile_config(self.threads, self.precision, streams)
            compiled = self._compile_for(share, config)
            reqs = self._streamed[share] = [compiled.create_infer_request()
                                            for _ in range(streams)]
        return reqs

    def _run_one(self, x: np.ndarray) -> np.ndarray:
        req = self._request(x.shape[0])
        self._last = req
        if req is None:
            return self._free(x)[0]
        # share_inputs: no copy of the prepared batch; outputs are copied (the default), so a
        # result stays valid after the next call.
        return req.infer({0: x}, share_inputs=True)[0]

    def last_layers(self) -> list[dict]:
        """The last call's per-layer counters (opened with profile=True): each layer that ran,
        {"node", "op", "kernel", "us"}, in run order; [] after a call of a size it had no
        compiled model to spare for (MAX_SHAPES)."""
        if not self._profile:
            raise ConfigError(f"{self.path}: not profiling (open it with profile=True)")
        if self._last is None:
            return []
        import openvino as ov

        ran = ov.ProfilingInfo.Status.EXECUTED
        return [{"node": p.node_name, "op": p.node_type, "kernel": p.exec_type,
                 "us": p.real_time.total_seconds() * 1e6}
                for p in self._last.get_profiling_info() if p.status == ran]

    def _run_streams(self, x: np.ndarray, streams: int) -> np.ndarray:
        share = x.shape[0] // streams
        reqs = self._stream_requests(share, streams)
        for i, req in enumerate(reqs):
            req.start_async({0: x[i * share:(i + 1) * share]}, share_inputs=True)
        for req in reqs:
            req.wait()
        return np.concatenate([req.get_output_tensor(0).data for req in reqs])

    def deciding(self, batch: int) -> bool:
        return super().deciding(batch) or (self._streamable(batch) and
                                           self.stream_trial.choice is None)

    def run(self, x: np.ndarray) -> np.ndarray:
        with self._lock:
            n = x.shape[0]
            if not self._streamable(n):
                return self._run_one(x)
            trial = self.stream_trial
            streams = trial.next()
            t0 = time.perf_counter()
            out = self._run_streams(x, streams) if streams > 1 else self._run_one(x)
            if trial.choice is None:
                trial.record(streams, (time.perf_counter() - t0) / n)
            return out


class OpenVINOIRBackend(OpenVINOBackend):
    """OpenVINO's own format: NAME.xml (the graph) + NAME.bin (the weights), e.g. what
    `nncf.quantize` + `openvino.save_model` write."""

    name, format = "openvino-ir", "ir"
