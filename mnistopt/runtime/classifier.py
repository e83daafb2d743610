"""`load(path) -> Classifier`: format detection, metadata, input adaptation, dequantization."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np

from ..artifact import check_metadata, read_sidecar
from ..errors import InputError, ModelLoadError
from .backends import TensorInfo, detect_format, open_backend

SCHEMA = "mnistopt.artifact/1"
N_CLASSES = 10
# Dynamic-batch models run in chunks of at most this many images: bounds the activation memory
# (a 10k batch through a conv net is GBs) while keeping per-call overhead negligible.
MAX_BATCH = 1024
# Batch size for whole-test-set figures (export validation, parity): dynamic-range models pick
# their activation scale per batch, so the batching is part of the result and is fixed here.
EVAL_BATCH = 1000
# From this many images a float model's pixels are divided by 255 rather than looked up.
ARITH_BATCH = 8
# Model input shapes (batch first, -1 = free) an MNIST classifier may have, by layout name.
LAYOUTS = {"NCHW": (1, 28, 28), "NHWC": (28, 28, 1), "NHW": (28, 28), "flat": (784,)}


def read_metadata(path: Path, fmt: str, embedded: dict) -> dict:
    """The exporter's metadata: the sidecar NAME.json merged over the copy embedded in the model.

    Either may be missing (a bare model copied to a device has neither); a sidecar that belongs
    to another format (NAME.onnx and NAME.tflite share NAME.json only if the exporter says so),
    does not parse or fails the schema (`check_metadata`) is ignored with a warning, never fatal.
    """
    meta: dict = {}
    raw = embedded.get("mnistopt")
    if raw:
        try:
            data = json.loads(raw)
            problems = check_metadata(data) if isinstance(data, dict) else ["not an object"]
        except (ValueError, RecursionError):
            problems = ["not JSON"]
        if problems:
            warnings.warn(f"{path}: embedded mnistopt metadata ignored: {problems[0]}",
                          stacklevel=3)
        else:
            meta.update(data)
    meta.update(read_sidecar(path, fmt))
    return meta


def input_layout(shape, fmt: str, hint: str | None = None, path="model") -> str:
    """Which LAYOUTS entry the model's input shape is (the model decides; metadata breaks ties)."""
    rest = shape[1:]
    fits = [name for name, dims in LAYOUTS.items()
            if len(dims) == len(rest) and all(d in (-1, e) for d, e in zip(rest, dims))]
    if not fits:
        raise ModelLoadError(
            f"{path}: not an MNIST classifier: its input is {_shape_str(shape)}, not a batch of "
            "28x28 grayscale images (N,1,28,28), (N,28,28,1), (N,28,28) or (N,784)")
    if hint in fits:
        return hint
    if len(fits) > 1 and "NCHW" in fits and "NHWC" in fits:  # all spatial dims free
        return "NHWC" if fmt == "tflite" else "NCHW"
    return fits[0]


def _shape_str(shape) -> str:
    return "(" + ",".join("N" if i == 0 and d == -1 else ("?" if d == -1 else str(d))
                          for i, d in enumerate(shape)) + ")"


def _quant(info: TensorInfo, side: dict, default: tuple[float, int] | None, where: str):
    """(scale, zero_point) of an integer tensor: the model's own, else the sidecar's (when it
    fits the model's type), else default."""
    if not np.issubdtype(info.dtype, np.integer):
        return None
    if info.scale:
        return float(info.scale), int(info.zero_point or 0)
    if side.get("scale"):
        dtype, zp = np.dtype(info.dtype), int(side.get("zero_point") or 0)
        limits = np.iinfo(dtype)
        if side.get("dtype", dtype.name) != dtype.name or not limits.min <= zp <= limits.max:
            warnings.warn(f"{where}: the metadata's quantization ({side.get('dtype')}, zero "
                          f"point {zp}) does not fit the model's {dtype.name} tensor; ignored",
                          stacklevel=3)
            return default
        return float(side["scale"]), zp
    return default


class Classifier:
    """A loaded MNIST classifier. Thread-safe; the backend session is created once.

    `predict`, `predict_proba` and `logits` take images in any accepted form (see `images`).
    For timing without preprocessing: `x = clf.prepare(images)` once, then `clf.run_raw(x)`
    (the model's raw output, int8 for int8 models) or `clf.logits_prepared(x)` (float logits).
    """

    def __init__(self, path, backend, metadata: dict):
        self.path, self.format, self.metadata = Path(path), backend.format, metadata
        self.threads, self.device = backend.threads, backend.device
        self.providers = list(backend.providers)
        self.backend = backend  # the library binding: backend.name, end_profiling(), ...
        inp, out = backend.input, backend.output
        side_in, side_out = metadata.get("input") or {}, metadata.get("output") or {}
        self.layout = input_layout(inp.shape, self.format, side_in.get("layout"), self.path)
        self._check_output(out.shape)
        labels = metadata.get("labels")
        self.labels = [str(v) for v in labels] if labels and len(labels) == N_CLASSES else \
            [str(i) for i in range(N_CLASSES)]
        self.output_kind = side_out.get("kind", "logits")
        # Integer input without recorded parameters: bytes are pixels (uint8 0..255) or pixels
        # shifted to int8 (-128..127), the two conventions an exporter would pick.
        default_in = {np.uint8: (1 / 255, 0), np.int8: (1 / 255, -128)}.get(inp.dtype)
        self.in_quant = _quant(inp, side_in, default_in, f"{self.path} input")
        self.out_quant = _quant(out, side_out, (1.0, 0), f"{self.path} output")
        self.in_dtype, self.out_dtype = np.dtype(inp.dtype), np.dtype(out.dtype)
        self.fixed_batch = inp.shape[0] if inp.shape and inp.shape[0] > 0 else None
        self._sample_shape = LAYOUTS[self.layout]
        self._lut = self._pixel_table()
        self._pixels_how, self._pixels = self._pixel_map()
        self._out_lut = self._output_table()
        self._run = backend.run

    def _check_output(self, shape: tuple) -> None:
        per_item = shape[1:]
        known = [d for d in per_item if d != -1]
        if not per_item or int(np.prod(known)) not in (N_CLASSES, 1) or \
                (len(known) == len(per_item) and int(np.prod(known)) != N_CLASSES):
            raise ModelLoadError(
                f"{self.path}: not an MNIST classifier: its output is {_shape_str(shape)}, not "
                f"(N,{N_CLASSES}) class scores")

    def _pixel_table(self) -> np.ndarray:
        """uint8 pixel -> model input value, for all 256 pixels (one `take` per call)."""
        x01 = np.arange(256, dtype=np.float32) / np.float32(255.0)
        return self._from_float(x01)

    def _pixel_map(self):
        """(how, function): uint8 pixels -> model input, equal to the table for every pixel:
        without a pass where the input is the pixels (uint8, scale 1/255, zero point 0), a flip
        of the top bit where it is pixels - 128 in int8; a float32 division for float inputs of
        ARITH_BATCH images or more (numpy's `take` widens uint8 indices first: 248 µs for 256 images on a
        Zen 3, the division 66 µs; for one image the table is the faster); else the table."""
        px, lut = np.arange(256, dtype=np.uint8), self._lut
        if lut.dtype == np.uint8 and np.array_equal(lut, px):
            return "none", lambda x: x
        if lut.dtype == np.int8 and np.array_equal(lut, (px ^ np.uint8(0x80)).view(np.int8)):
            return "flip", lambda x: (x ^ np.uint8(0x80)).view(np.int8)
        n255 = np.float32(255.0)
        if lut.dtype == np.float32 and np.array_equal(lut, np.divide(px, n255, dtype=np.float32)):
            return "divide", lambda x: np.divide(x, n255, dtype=np.float32) \
                if len(x) >= ARITH_BATCH else lut.take(x)
        return "table", lut.take

    def _output_table(self) -> np.ndarray | None:
        """8-bit output value -> float score, for all 256 values: one `take` dequantizes a
        batch (three numpy passes cost ~5 µs at batch 1, a third of a small int8 model's call)."""
        if self.out_quant is None or self.out_dtype.itemsize != 1:
            return None
        scale, zp = self.out_quant
        info = np.iinfo(self.out_dtype)
        q = np.arange(info.min, info.max + 1, dtype=np.float32)
        table = (q - np.float32(zp)) * np.float32(scale)
        # Index by the byte itself: int8 -128..-1 are bytes 128..255.
        return np.roll(table, info.min) if info.min else table

    def _from_float(self, x01: np.ndarray) -> np.ndarray:
        if self.in_quant is None:
            return x01.astype(self.in_dtype, copy=False)
        scale, zp = self.in_quant
        info = np.iinfo(self.in_dtype)
        q = np.round(x01 / np.float32(scale)) + zp
        return np.clip(q, info.min, info.max).astype(self.in_dtype)

    # -- public API -------------------------------------------------------------------------

    @property
    def input_spec(self) -> dict:
        """What the model takes: name, shape (-1 = free), layout, dtype, the pixel range that
        scale and zero_point (integer inputs) quantize, scale, zero_point."""
        b = self.backend.input
        scale, zp = self.in_quant or (None, None)
        return {"name": b.name, "shape": list(b.shape), "layout": self.layout,
                "dtype": self.in_dtype.name, "range": [0.0, 1.0], "scale": scale,
                "zero_point": zp}

    @property
    def output_spec(self) -> dict:
        b = self.backend.output
        scale, zp = self.out_quant or (None, None)
        return {"name": b.name, "shape": list(b.shape), "dtype": self.out_dtype.name,
                "scale": scale, "zero_point": zp, "kind": self.output_kind}

    def prepare(self, images) -> np.ndarray:
        """Images (any accepted form) -> the model's input: dtype, quantization, layout."""
        x = images_array(images)
        if x.dtype == np.uint8:
            x = self._pixels(x)  # exact same values as the float path, in one pass
        else:
            x = self._from_float(x)
        return x.reshape((x.shape[0],) + self._sample_shape)

    def run_raw(self, x: np.ndarray) -> np.ndarray:
        """One backend call on an already prepared batch: the model's raw (N, 10) output."""
        n = x.shape[0]
        step = self.fixed_batch or MAX_BATCH
        if n == step or (n < step and self.fixed_batch is None):
            return self._run(x)
        outs = []
        for i in range(0, n, step):
            part = x[i:i + step]
            if len(part) < step and self.fixed_batch:  # a fixed-batch model: pad, then cut
                pad = np.zeros((step - len(part),) + part.shape[1:], part.dtype)
                outs.append(self._run(np.concatenate([part, pad]))[:len(part)])
            else:
                outs.append(self._run(part))
        return np.concatenate(outs)

    def logits_prepared(self, x: np.ndarray) -> np.ndarray:
        """`run_raw` plus dequantization: float32 (N, 10) scores."""
        return self.dequantize(self.run_raw(x))

    def dequantize(self, y: np.ndarray) -> np.ndarray:
        """The model's raw (N, 10) output -> float32 scores (int8 outputs dequantized)."""
        if self._out_lut is not None and y.dtype == self.out_dtype:
            y = self._out_lut.take(y.view(np.uint8))
        elif self.out_quant is not None:
            scale, zp = self.out_quant
            y = (y.astype(np.float32) - np.float32(zp)) * np.float32(scale)
        elif y.dtype != np.float32:
            y = y.astype(np.float32)
        if y.ndim != 2 or y.shape[1] != N_CLASSES:
            y = y.reshape(len(y), -1)
            if y.shape[1] != N_CLASSES:
                raise ModelLoadError(f"{self.path}: not an MNIST classifier: it returned "
                                     f"{y.shape[1]} scores per image, not {N_CLASSES}")
        return y

    def logits(self, images) -> np.ndarray:
        """float32 (N, 10): the model's scores (int8 outputs dequantized)."""
        return self.logits_prepared(self.prepare(images))

    def predict_proba(self, images) -> np.ndarray:
        """float32 (N, 10) class probabilities (softmax of the logits)."""
        y = self.logits(images)
        if self.output_kind == "probabilities":
            with np.errstate(all="ignore"):
                sums = y.sum(axis=1, keepdims=True)
                if np.isfinite(y).all() and y.min() >= -1e-4 and np.abs(sums - 1).max() < 1e-2:
                    return y / sums
            # The model's own numbers win: these are not probabilities, whatever the metadata says.
            warnings.warn(f"{self.path}: the metadata says the output is probabilities, but "
                          "the model's scores are not (negative, or not summing to 1); they are "
                          "treated as logits", stacklevel=2)
            self.output_kind = "logits"
        e = np.exp(y - y.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)

    def predict(self, images) -> np.ndarray:
        """int64 (N,) class indices (`labels[i]` names them)."""
        return self.logits(images).argmax(axis=1)

    def __repr__(self) -> str:
        s = self.input_spec
        return (f"Classifier({self.path.name!r}, format={self.format}, input={s['layout']} "
                f"{s['dtype']}, device={self.device}, threads={self.threads})")


# Accepted image shapes -> how many leading batch dims; everything becomes (N, 28, 28).
_SINGLE = {(28, 28), (28, 28, 1), (1, 28, 28), (784,)}


def images_array(images) -> np.ndarray:
    """Validate images; return (N, 28, 28) uint8 pixels or float32 in [0, 1].

    Accepted: uint8 (or any integer dtype holding 0..255) pixels, float in [0, 1], bool; shaped
    (28,28), (N,28,28), (N,28,28,1), (N,1,28,28), (N,784) or (784,).
    """
    try:
        x = np.asarray(images)
    except (ValueError, TypeError) as exc:
        raise InputError(f"images are not an array of numbers: {exc}") from None
    kind = x.dtype.kind
    if kind not in "uifb":
        raise InputError(f"images must be numbers (uint8 pixels or float in [0, 1]), got dtype "
                         f"{x.dtype}")
    shape = x.shape
    if shape in _SINGLE and shape != (1, 28, 28):
        x = x.reshape(1, 28, 28)
    elif x.ndim == 3 and shape[1:] == (28, 28):
        pass
    elif x.ndim == 4 and (shape[1:] == (28, 28, 1) or shape[1:] == (1, 28, 28)):
        x = x.reshape(shape[0], 28, 28)
    elif x.ndim == 2 and shape[1] == 784:
        x = x.reshape(shape[0], 28, 28)
    else:
        raise InputError(f"images have shape {shape}; expected (28, 28), (N, 28, 28), "
                         "(N, 28, 28, 1), (N, 1, 28, 28) or (N, 784) with 28x28 pixels")
    if x.shape[0] == 0:
        raise InputError("empty batch: pass at least one image")
    if kind == "u" and x.dtype.itemsize == 1:
        return np.ascontiguousarray(x)
    if kind in "ui":
        lo, hi = int(x.min()), int(x.max())
        if lo < 0 or hi > 255:
            raise InputError(f"integer images must hold pixels 0..255, got values {lo}..{hi}")
        return x.astype(np.uint8)
    if kind == "b":
        return x.astype(np.float32)
    with np.errstate(all="ignore"):
        if not np.isfinite(x).all():
            raise InputError("images contain NaN or infinite values")
        lo, hi = float(x.min()), float(x.max())
    if lo < -1e-3 or hi > 1 + 1e-3:
        hint = " (uint8-range values in a float array: divide by 255)" if hi <= 255 else ""
        raise InputError(f"float images must be in [0, 1], got values {lo:g}..{hi:g}{hint}")
    x = x.astype(np.float32, copy=False)
    return np.clip(x, 0.0, 1.0) if lo < 0 or hi > 1 else np.ascontiguousarray(x)


def logits_in_batches(clf: Classifier, images, batch: int = EVAL_BATCH,
                      advance=None) -> np.ndarray:
    """float32 (N, 10) logits of `images`, `batch` at a time; `advance(n)` after each batch."""
    out = []
    for j in range(0, len(images), batch):
        out.append(clf.logits(images[j:j + batch]))
        if advance:
            advance(len(out[-1]))
    return np.concatenate(out) if out else np.zeros((0, N_CLASSES), np.float32)


def load(path, *, threads: int | None = None, device: str = "cpu", backend: str | None = None,
         profile: bool = False, options: dict | None = None) -> Classifier:
    """Open an exported MNIST classifier (.onnx or .tflite, detected from its bytes).

    threads: intra-op threads (default: this machine's physical cores); device: 'cpu', or
    'cuda[:N]' for ONNX models where onnxruntime's CUDA provider is installed (DeviceError if not);
    backend: a `BACKENDS` name (default: onnxruntime for ONNX, litert for TFLite); profile: the
    backend's profiler on (`clf.backend.end_profiling()`); options: backend settings.
    """
    b = open_backend(path, backend, threads=threads, device=device, profile=profile,
                     options=options)
    return Classifier(path, b, read_metadata(Path(path), b.format, b.custom_metadata))
