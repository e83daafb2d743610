"""The backend contract and registry: which library runs a model, behind one interface.

A backend opens the file once and exposes what the model itself says about its single input and
output (`TensorInfo`: name, shape with -1 for a free dimension, numpy dtype, and the int8
scale/zero-point where the format records them), plus `run(x) -> raw output`. Everything about
images, layouts and labels lives in `Classifier`; a backend only binds its library, and imports
it only when a model is opened with it (TFLite Micro's module is never imported otherwise).

    open_backend("m.tflite", "litert-ref", threads=1)   # the Backend itself
    mnistopt.runtime.load("m.onnx", profile=True)       # wrapped in a Classifier

Adding a backend: a `Backend` subclass in its own module, and one line in `BACKENDS`.
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from pathlib import Path

import numpy as np

from ..errors import ConfigError, DeviceError, ModelLoadError
from ..hw import physical_cores

# name -> "module:Class" below mnistopt.runtime; imported when a model is opened with it.
BACKENDS = {
    "onnxruntime": "ort:OnnxBackend",
    "litert": "litert:LiteRTBackend",
    "litert-ref": "litert:LiteRTReferenceBackend",
    "tflite-micro": "tflm:MicroBackend",
    "onnxruntime-plain": "ort_plain:PlainOnnxBackend",
    "openvino": "ov:OpenVINOBackend",
    "openvino-ir": "ov:OpenVINOIRBackend",
}
# What `load` uses when no backend is named, by file format ("ir": OpenVINO's NAME.xml + .bin).
DEFAULT_BACKEND = {"onnx": "onnxruntime", "tflite": "litert", "ir": "openvino-ir"}
# With no thread count asked for, a backend that supports it (`auto_threads`) runs calls of
# `parallel_batch` images or more on all physical cores (from 16 images on, two threads were
# 1.1-1.8x faster than one for every file measured). Below that, whether a second thread pays
# depends on the model, the runtime and the CPU: a call of one MNIST image lasts 10-600 µs,
# and a thread pool's hand-off costs a few µs. Measured at batch 1, two threads against one:
# onnxruntime on Zen 4, 1.03-2.1x slower for tiny, edge, wide and lenet5, 0.75x for seed;
# LiteRT on Zen 4, 0.54x seed and 0.71x lenet5; on Zen 5, 1.4x slower for wide int8; on Zen 3,
# 0.55-0.95x. So small calls go through a `ThreadTrial`: one thread and all cores, timed on
# the model's own first calls, and the faster one kept.
PARALLEL_BATCH = 16
TRIAL_CALLS = 7  # timed calls per block, after TRIAL_WARM discarded (allocation, caches)
TRIAL_WARM = 3
# Two rounds (1, 2, 2, 1): with two candidates, 40 small calls in all. One round (1, 2) let a
# burst of host load or the process's cold first calls land on one count: on a 2-core Xeon
# LiteRT's edge int8 file chose two threads in a bench (32.1 µs) and runs 20.5 µs on one.
TRIAL_ROUNDS = 2
# A later candidate (more threads, more streams) must be this much faster than the first to
# be chosen: seven calls' median moves by more than 10 % on a shared VM, and the first is the
# cheaper choice (one core left to the rest of the machine). On a 2-core Zen 3, LeNet-5 int8
# at batch 1 ran 27.6 µs on one thread and 44.1 on two, yet a noisy trial had picked two.
TRIAL_MARGIN = 0.10


class ThreadTrial:
    """The thread count for calls of fewer than `parallel_batch` images. Until it has decided,
    `next()` gives each candidate a block of TRIAL_WARM + TRIAL_CALLS calls, one candidate
    after the other (not interleaved call by call: an onnxruntime pool that has just run spins
    for a while and would steal the core of a one-thread call made right after it), in
    TRIAL_ROUNDS rounds, the second in reverse order (1, 2, 2, 1): a burst of load on the host,
    or the process's own cold first calls, then falls on both candidates. `record()` takes each
    call's seconds per image; the first TRIAL_WARM calls of a block are not counted. A
    candidate's time is the lower of its blocks' medians (a burst of load spans a block, not
    two); the fastest is `choice` (a later one only if TRIAL_MARGIN faster than the first),
    and stays."""

    __slots__ = ("candidates", "order", "times", "choice", "_calls")

    def __init__(self, candidates):
        self.candidates = tuple(dict.fromkeys(candidates))  # in order, without repeats
        self.order = (self.candidates + self.candidates[::-1]) * (TRIAL_ROUNDS // 2) + \
            self.candidates * (TRIAL_ROUNDS % 2)
        self.times = {c: [] for c in self.candidates}
        self.choice = self.candidates[0] if len(self.candidates) == 1 else None
        self._calls = 0  # calls `next()` has given

    def next(self) -> int:
        if self.choice is not None:
            return self.choice
        self._calls += 1
        block = (self._calls - 1) // (TRIAL_WARM + TRIAL_CALLS)
        return self.order[min(block, len(self.order) - 1)]

    def record(self, threads: int, seconds_per_image: float) -> None:
        warm = (self._calls - 1) % (TRIAL_WARM + TRIAL_CALLS) < TRIAL_WARM  # the last call's
        if self.choice is not None or threads not in self.times or warm:
            return
        self.times[threads].append(seconds_per_image)
        if all(len(t) >= TRIAL_ROUNDS * TRIAL_CALLS for t in self.times.values()):
            med = {c: min(float(np.median(t[i:i + TRIAL_CALLS]))
                          for i in range(0, len(t), TRIAL_CALLS))
                   for c, t in self.times.items()}
            first, best = self.candidates[0], min(self.candidates, key=med.get)
            self.choice = best if med[best] < (1 - TRIAL_MARGIN) * med[first] else first

    def current(self) -> int:
        """The choice, or (undecided) the first candidate."""
        return self.choice if self.choice is not None else self.candidates[0]


class TensorInfo:
    """One model input or output as the model itself declares it."""

    # A plain class: dataclasses pulls in more modules, cold start on a small device.
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


class Backend(ABC):
    """One model opened in one library. Subclasses set the class attributes and, in
    `__init__`, `input`, `output`, `custom_metadata` (the model's own text metadata) and
    `providers` (what really runs it, e.g. ["CPUExecutionProvider"])."""

    name: str  # the BACKENDS key
    format: str  # "onnx" or "tflite": the files it opens
    extra: str  # the pip extra that installs its library
    options: frozenset = frozenset()  # keys it accepts in `options`
    profiling: bool = False  # whether `profile=True` is supported
    auto_threads: bool = False  # takes threads=None: `threads_for(batch)` decides per call
    parallel_batch: int = PARALLEL_BATCH  # with automatic threads: all cores from this batch on

    input: TensorInfo
    output: TensorInfo
    custom_metadata: dict
    providers: list

    def __init__(self, path: Path, *, threads: int | None, device: str, profile: bool = False,
                 options: dict | None = None):
        self.path, self.device = Path(path), device
        self.auto = threads is None  # only ever None for an `auto_threads` backend
        self.threads = threads or physical_cores()  # the most any call uses
        self.trial = ThreadTrial((1, self.threads) if self.auto else (self.threads,))

    def deciding(self, batch: int) -> bool:
        """Whether a call of `batch` images would still be one of a trial's (timed both ways,
        not yet run the way that will stay): a benchmark calls until it is not."""
        return self.auto and batch < self.parallel_batch and self.trial.choice is None

    def threads_for(self, batch: int) -> int:
        """Intra-op threads a call of `batch` images runs on (for a small call before the
        trial has decided: one)."""
        return self.trial.current() if self.auto and batch < self.parallel_batch else self.threads

    @abstractmethod
    def run(self, x: np.ndarray) -> np.ndarray:
        """One call on a prepared batch (the model's dtype and layout): its raw output."""

    def end_profiling(self) -> list:
        """The profiler's trace events since the model was opened (with profile=True)."""
        raise ConfigError(f"backend '{self.name}' has no profiler")

    def cpu_only(self) -> None:
        if self.device != "cpu":
            raise DeviceError(f"TFLite models run on the CPU here (device '{self.device}' was "
                              "asked for); use the ONNX artifact with device='cuda' for a GPU")

    def single_input(self, n: int) -> None:
        if n != 1:
            raise ModelLoadError(f"{self.path}: has {n} inputs; an MNIST classifier has one "
                                 "(the images)")


def backend_class(name: str) -> type[Backend]:
    """The registered class, imported on first use; ConfigError for an unknown name."""
    if name not in BACKENDS:
        raise ConfigError(f"unknown runtime backend '{name}'; choose from: {', '.join(BACKENDS)}")
    module, _, cls = BACKENDS[name].partition(":")
    klass = getattr(importlib.import_module(f"{__package__}.{module}"), cls)
    if not (isinstance(klass, type) and issubclass(klass, Backend)):
        raise TypeError(f"{BACKENDS[name]} is not a runtime Backend")
    return klass


def backends_for(fmt: str) -> list[str]:
    """Names of the registered backends that open `fmt` files, the default first."""
    names = [n for n in BACKENDS if backend_class(n).format == fmt]
    return sorted(names, key=lambda n: n != DEFAULT_BACKEND.get(fmt))


def detect_format(path: Path) -> str:
    """'tflite', 'onnx' or 'ir' from the file's first bytes (its name may lie, or be missing)."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            head = f.read(16)
    except FileNotFoundError:
        raise ModelLoadError(f"{path}: no such model file") from None
    except IsADirectoryError:
        raise ModelLoadError(f"{path}: is a directory, not a model file (.onnx or .tflite)"
                             ) from None
    except OSError as exc:
        raise ModelLoadError(f"{path}: cannot read the model file: {exc.strerror}") from None
    if len(head) >= 8 and head[4:8] == b"TFL3":  # flatbuffer file identifier
        return "tflite"
    # An ONNX ModelProto is a protobuf whose first field is ir_version (field 1, varint): 0x08.
    # Older exporters may put another field first, so a .onnx name is accepted as well.
    if head[:1] == b"\x08" or (path.suffix.lower() == ".onnx" and head[:1] in (b"\x12", b"\x1a",
                                                                                  b"\x22", b"\x3a")):
        return "onnx"
    # An OpenVINO IR graph is XML (`<?xml ...?>` then `<net ...>`) beside its NAME.bin weights.
    if path.suffix.lower() == ".xml" and head.lstrip().startswith((b"<?xml", b"<net")):
        return "ir"
    if not head:
        raise ModelLoadError(f"{path}: the file is empty, not a model")
    raise ModelLoadError(f"{path}: not an ONNX or TFLite model (neither a TFLite flatbuffer nor "
                         "an ONNX protobuf); pass a file written by `mnistopt export`")


def open_backend(path, backend: str | None = None, *, threads: int | None = None,
                 device: str = "cpu", profile: bool = False,
                 options: dict | None = None) -> Backend:
    """Open `path` with `backend` (default: DEFAULT_BACKEND for the file's format).

    threads: intra-op threads (default, where the backend supports it: the physical cores for
    calls of at least its `parallel_batch` images, and for smaller ones one thread or all
    cores, whichever its `ThreadTrial` timed faster; else the physical cores); device: 'cpu'
    or 'cuda[:N]';
    profile: turn on the backend's profiler (`end_profiling()`); options: backend-specific
    settings (e.g. {"arena_bytes": N} for tflite-micro).
    """
    path = Path(path)
    fmt = detect_format(path)
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int)
                                or threads < 1):
        raise ConfigError(f"threads must be a positive integer, got {threads!r}")
    cls = backend_class(backend or DEFAULT_BACKEND[fmt])
    if cls.format != fmt:
        raise ConfigError(f"{path}: is a {fmt} model; backend '{cls.name}' runs {cls.format} "
                          f"models (for {fmt}: {', '.join(backends_for(fmt))})")
    if profile and not cls.profiling:
        raise ConfigError(f"backend '{cls.name}' has no profiler (profiling: "
                          f"{', '.join(n for n in BACKENDS if backend_class(n).profiling)})")
    unknown = sorted(set(options or {}) - cls.options)
    if unknown:
        raise ConfigError(f"backend '{cls.name}' has no option {', '.join(map(repr, unknown))}"
                          + (f" (it has: {', '.join(sorted(cls.options))})" if cls.options else ""))
    device = str(device).lower()
    if threads is None and not (cls.auto_threads and device == "cpu"):
        threads = physical_cores()
    return cls(path, threads=threads, device=device, profile=profile, options=dict(options or {}))


def first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
