"""Run an int8 TFLite model in the real TFLite Micro interpreter; measure what a device needs.

`evaluate(path)` runs the 10,000 MNIST test images through TFLite Micro (tflite-micro's
Python interpreter: the same C++ kernels firmware compiles, reference kernels on the host)
and through LiteRT on the same file, and reports accuracy, agreement, the tensor arena the
interpreter really allocated (its RecordingMicroAllocator report, then re-run with exactly
that arena to prove it is enough), the flash the model takes and the operators it uses.
All three run through `mnistopt.runtime` (backends tflite-micro, litert-ref, litert).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ..errors import McuError, ModelLoadError
from ..runtime.flatbuf import FLOAT_TYPES, TFLiteModel, read_tflite
from . import devices as dev

# Builtin operators with a TFLite Micro kernel: the kernel registrations (`Register_*`) in
# tflite-micro's _runtime.so (wheel 0.dev20261023), which registers every kernel it has.
# Custom-only kernels (ETHOSU, DETECTION_POSTPROCESS, signal ops) are left out.
TFLM_OPS = frozenset("""
ABS ADD ADD_N ARG_MAX ARG_MIN ASSIGN_VARIABLE AVERAGE_POOL_2D BATCH_MATMUL BATCH_TO_SPACE_ND
BROADCAST_ARGS BROADCAST_TO CALL_ONCE CAST CEIL CONCATENATION CONV_2D COS CUMSUM
DEPTHWISE_CONV_2D DEPTH_TO_SPACE DEQUANTIZE DIV DYNAMIC_UPDATE_SLICE ELU EMBEDDING_LOOKUP EQUAL
EXP EXPAND_DIMS FILL FLOOR FLOOR_DIV FLOOR_MOD FULLY_CONNECTED GATHER GATHER_ND GREATER
GREATER_EQUAL HARD_SWISH IF L2_NORMALIZATION L2_POOL_2D LEAKY_RELU LESS LESS_EQUAL LOG
LOGICAL_AND LOGICAL_NOT LOGICAL_OR LOGISTIC LOG_SOFTMAX MAXIMUM MAX_POOL_2D MEAN MINIMUM
MIRROR_PAD MUL NEG NOT_EQUAL PACK PAD PADV2 PRELU QUANTIZE READ_VARIABLE REDUCE_ALL REDUCE_MAX
REDUCE_MIN RELU RELU6 RESHAPE RESIZE_BILINEAR RESIZE_NEAREST_NEIGHBOR REVERSE_V2 ROUND RSQRT
SELECT_V2 SHAPE SIN SLICE SOFTMAX SPACE_TO_BATCH_ND SPACE_TO_DEPTH SPLIT SPLIT_V SQRT SQUARE
SQUARED_DIFFERENCE SQUEEZE STRIDED_SLICE SUB SUM SVDF TANH TRANSPOSE TRANSPOSE_CONV
UNIDIRECTIONAL_SEQUENCE_LSTM UNPACK VAR_HANDLE WHILE ZEROS_LIKE
""".split())

# Operators allowed to touch float tensors in an int8 model: the boundary conversions.
_IO_OPS = {"QUANTIZE", "DEQUANTIZE"}


@dataclass
class TensorInfo:
    dtype: str
    shape: list[int]
    scale: float | None = None
    zero_point: int | None = None


@dataclass
class McuReport:
    path: str
    flash_bytes: int  # the flatbuffer, as it goes into flash (a const array)
    weight_bytes: int  # of which constant data (weights, biases)
    ops: list[str]
    missing_ops: list[str]  # operators TFLite Micro has no kernel for
    input: TensorInfo
    output: TensorInfo
    # Tensor arena TFLite Micro allocated (head + tail), verified. Measured on this 64-bit
    # host: the tail holds pointer-sized structs, so a 32-bit MCU needs a little less.
    arena_bytes: int = 0
    arena_head: int = 0  # non-persistent: activations, reused between layers
    arena_tail: int = 0  # persistent: interpreter structures, quantization data
    arena_verified: bool = False  # the whole evaluation ran in an arena of exactly arena_bytes
    n_images: int = 0
    accuracy: float | None = None  # TFLite Micro
    # Against LiteRT on the same file: its builtin int8 kernels (the same integer arithmetic
    # as TFLite Micro's) and its default XNNPACK path (what a phone or a Pi runs; it rounds
    # some requantizations differently, so expect one-step differences there).
    # Each: accuracy, agreement (top-1), max_abs_diff (dequantized), max_diff_steps (int8).
    litert: dict = field(default_factory=dict)
    litert_xnnpack: dict = field(default_factory=dict)
    host_ms_per_image: float | None = None  # reference kernels on this host, not a device
    ram_allowance: int = dev.RAM_ALLOWANCE
    flash_allowance: int = dev.FLASH_ALLOWANCE
    fits: list[dict] = field(default_factory=list)
    meta: dict = field(default_factory=dict)  # from the artifact's sidecar: arch, framework, ...
    tflm_version: str = ""

    @property
    def name(self) -> str:
        return Path(self.path).name

    def as_dict(self) -> dict:
        return asdict(self)


def _tensor_info(model: TFLiteModel, index: int) -> TensorInfo:
    t = model.tensors[index]
    return TensorInfo(t.dtype, list(t.shape), float(t.scale[0]) if t.scale else None,
                      int(t.zero_point[0]) if t.zero_point else None)


def check_int8(model: TFLiteModel, name: str) -> None:
    """McuError unless every compute operator works on integers (int8 weights and activations)."""
    float_ops = [op.name for op in model.operators if op.name not in _IO_OPS
                 and any(0 <= t < len(model.tensors) and model.tensors[t].dtype in FLOAT_TYPES
                         for t in op.inputs + op.outputs)]
    if float_ops:
        raise McuError(
            f"{name} is not an int8 model ({', '.join(dict.fromkeys(float_ops))} compute in "
            "float): microcontroller targets need a full-integer int8 TFLite model; export "
            "one with `mnistopt export RUN --format tflite --quantize int8 --full-int8`")


def load(path: str | Path) -> tuple[bytes, TFLiteModel]:
    """The file's bytes and parsed model; ModelLoadError / McuError for anything unusable."""
    path = Path(path)
    if not path.is_file():
        raise ModelLoadError(f"{path}: no such file")
    data = path.read_bytes()
    model = read_tflite(data, str(path))
    check_int8(model, str(path))
    return data, model


def missing_ops(model: TFLiteModel) -> list[str]:
    return [op for op in model.op_names if op not in TFLM_OPS]


def inspect(path: str | Path) -> McuReport:
    """What can be said without running anything: size, operators, I/O. Checks it is int8."""
    data, model = load(path)
    return McuReport(
        path=str(path), flash_bytes=len(data), weight_bytes=model.weight_bytes,
        ops=model.op_names, missing_ops=missing_ops(model),
        input=_tensor_info(model, model.inputs[0]), output=_tensor_info(model, model.outputs[0]),
        meta=_sidecar(Path(path)))


def _sidecar(path: Path) -> dict:
    from ..artifact import read_sidecar

    meta = read_sidecar(path)
    keep = {k: meta[k] for k in ("arch", "framework", "format") if isinstance(meta.get(k), str)}
    if isinstance(meta.get("quantize"), dict) and "mode" in meta["quantize"]:
        keep["quantize"] = meta["quantize"]["mode"]
    return keep


def _open(path, backend: str, **options):
    """A runtime Classifier on `backend`, one thread (as on a device, and reproducible)."""
    from ..runtime import load as open_model

    return open_model(path, backend=backend, threads=1, options=options or None)


def run_raw(clf, inputs: np.ndarray, progress: bool = False, label: str = "") -> tuple:
    """Raw outputs for prepared inputs (batch 1 per call, as on a device), and the seconds."""
    from ..progress import progress_bar

    outs = []
    t0 = time.perf_counter()
    with progress_bar(label or clf.backend.name, len(inputs), progress) as advance:
        for i in range(0, len(inputs), 100):
            outs.append(clf.run_raw(inputs[i:i + 100]))
            advance(len(outs[-1]))
    seconds = time.perf_counter() - t0
    return (np.concatenate(outs) if outs else np.zeros((0, 0))), seconds


def evaluate(path: str | Path, *, images: np.ndarray | None = None,
             labels: np.ndarray | None = None, limit: int | None = None,
             devices: list[str] | None = None, ram_allowance: int = dev.RAM_ALLOWANCE,
             flash_allowance: int = dev.FLASH_ALLOWANCE, compare: bool = True,
             progress: bool = True) -> McuReport:
    """Run `path` (an int8 .tflite) in TFLite Micro on MNIST's test set; the full report.

    images/labels default to the 10,000 MNIST test images (uint8 (N, 28, 28)); `limit` takes
    the first N. `compare` also runs LiteRT on the same file for agreement and output diff.
    """
    report = inspect(path)
    if report.missing_ops:
        raise McuError(f"{path} uses operators TFLite Micro has no kernel for: "
                       f"{', '.join(report.missing_ops)}")
    if images is None:
        from ..data import load_mnist

        m = load_mnist()
        images, labels = m.x_test, m.y_test
    if limit is not None:
        images, labels = images[:limit], None if labels is None else labels[:limit]
    # A generous arena first, to learn what the interpreter really allocates (the arena
    # does not depend on the pixels) ...
    probe = _open(path, "tflite-micro")
    probe.run_raw(probe.prepare(np.zeros((1, 28, 28), np.uint8)))
    usage = probe.backend.arena_usage()
    report.arena_bytes, report.arena_head = usage["total"], usage.get("head", 0)
    report.arena_tail = usage.get("tail", 0)
    del probe
    # ... then the whole evaluation in exactly that much: the figure firmware can use.
    clf = _open(path, "tflite-micro", arena_bytes=report.arena_bytes)
    report.arena_verified = True  # opening raises McuError when the arena is too small
    inputs = clf.prepare(images) if len(images) else \
        np.zeros((0,) + clf.backend.input.shape[1:], clf.in_dtype)
    raw, seconds = run_raw(clf, inputs, progress, label=f"TFLite Micro {report.name}")
    report.tflm_version = _tflm_version()
    report.n_images = len(inputs)
    report.host_ms_per_image = 1000 * seconds / max(1, len(inputs))
    if labels is not None and len(raw):
        report.accuracy = float(np.mean(clf.dequantize(raw).argmax(1) == np.asarray(labels)))
    if compare and len(raw):
        for attr, backend in (("litert", "litert-ref"), ("litert_xnnpack", "litert")):
            ref_raw, _ = run_raw(_open(path, backend), inputs)
            setattr(report, attr, _compare(ref_raw, raw, labels, clf, report.output))
    report.ram_allowance, report.flash_allowance = ram_allowance, flash_allowance
    report.fits = [f.as_dict() for f in dev.fit(report.arena_bytes, report.flash_bytes,
                                                dev.get_devices(devices), ram_allowance,
                                                flash_allowance)]
    return report


def _compare(ref_raw: np.ndarray, raw: np.ndarray, labels, clf, info: TensorInfo) -> dict:
    ref, out = clf.dequantize(ref_raw), clf.dequantize(raw)
    res = {"accuracy": None if labels is None else float(np.mean(ref.argmax(1) == np.asarray(labels))),
           "agreement": float(np.mean(ref.argmax(1) == out.argmax(1))),
           "max_abs_diff": float(np.abs(ref - out).max()), "max_diff_steps": None}
    if info.dtype in ("int8", "uint8", "int16"):
        res["max_diff_steps"] = int(np.abs(ref_raw.astype(np.int32) - raw.astype(np.int32)).max())
    return res


def _tflm_version() -> str:
    try:
        from importlib.metadata import version

        return version("tflite-micro")
    except Exception:  # metadata is a nicety; never fail a report on it
        return ""
