"""TFLite Micro: tflite-micro's Python interpreter, the C++ kernels firmware compiles.

Needs the `mcu` extra; this module imports it only when a model is opened. The interpreter
runs one image per call (a device's fixed batch of 1) in a tensor arena of `arena_bytes`
(option; default generous) and reports what it really allocated (`arena_usage()`).
"""

from __future__ import annotations

import os
import re
import sys
import tempfile
import threading
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from ..errors import McuError, ModelLoadError, require
from .backends import Backend, TensorInfo
from .flatbuf import read_tflite

# A flatbuffer (and so a TFLite Micro model) cannot exceed 2 GiB.
MAX_MODEL_BYTES = 1 << 31
# TFLite Micro places its own allocator in the arena: below a few hundred bytes it crashes the
# process (tflite-micro 0.dev20261023) instead of reporting; from here up it reports.
MIN_ARENA_BYTES = 512
_ARENA_RE = re.compile(r"Arena allocation (total|head|tail) (\d+) bytes")


def default_arena(model_bytes: int) -> int:
    """An arena large enough for any model of this size to learn what it really needs."""
    return 2 * model_bytes + (4 << 20)


@contextmanager
def capture_stderr_fd():
    """Collect what C++ code writes to file descriptor 2 (TFLite Micro's MicroPrintf)."""
    sys.stderr.flush()
    saved = os.dup(2)
    out = {"text": ""}
    with tempfile.TemporaryFile() as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            yield out
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            out["text"] = tmp.read().decode("utf-8", "replace")


def _info(model, index: int, path) -> TensorInfo:
    t = model.tensors[index]
    try:
        dtype = np.dtype(t.dtype).type
    except TypeError:
        raise ModelLoadError(f"{path}: tensor '{t.name}' has type {t.dtype}; not an image "
                             "classifier's") from None
    shape = t.shape_signature or t.shape
    return TensorInfo(t.name, tuple(int(d) for d in shape), dtype,
                      float(t.scale[0]) if t.scale else None,
                      int(t.zero_point[0]) if t.zero_point else None)


class MicroBackend(Backend):
    name, format, extra = "tflite-micro", "tflite", "mcu"
    options = frozenset({"arena_bytes"})

    def __init__(self, path: Path, *, threads: int, device: str, profile: bool = False,
                 options: dict | None = None):
        super().__init__(path, threads=1, device=device)  # TFLite Micro is single-threaded
        self.cpu_only()
        size = self.path.stat().st_size
        if size > MAX_MODEL_BYTES:
            raise ModelLoadError(f"{path}: {size} bytes is larger than any TFLite model can be")
        data = self.path.read_bytes()
        model = read_tflite(data, str(path))
        self.single_input(len(model.inputs))
        self.input = _info(model, model.inputs[0], path)
        self.output = _info(model, model.outputs[0], path)
        self.custom_metadata = {}
        for key, raw in model.metadata.items():
            try:
                self.custom_metadata[key] = raw.decode("utf-8")
            except UnicodeDecodeError:
                pass
        arena = (options or {}).get("arena_bytes") or default_arena(len(data))
        if not isinstance(arena, int) or arena < MIN_ARENA_BYTES:
            raise McuError(f"arena_bytes must be at least {MIN_ARENA_BYTES} bytes (TFLite "
                           f"Micro's own bookkeeping lives there), got {arena!r}")
        self.arena_bytes = arena
        self.interp = self._open(data, arena)
        self.providers = ["TFLite Micro"]
        self._lock = threading.Lock()

    @staticmethod
    def _open(data: bytes, arena: int):
        """The interpreter, or McuError carrying TFLite Micro's own complaint."""
        runtime = require("tflite_micro", "mcu", "the microcontroller target").runtime
        with capture_stderr_fd() as err:
            try:
                return runtime.Interpreter.from_bytes(data, arena_size=arena)
            except RuntimeError:
                pass
        lines = [ln.strip() for ln in err["text"].splitlines() if ln.strip()]
        why = "; ".join(lines[-3:]) or "AllocateTensors failed"
        raise McuError(f"TFLite Micro could not load the model with a {arena}-byte arena: {why}")

    def run(self, x: np.ndarray) -> np.ndarray:
        outs = []
        with self._lock:
            for i in range(len(x)):  # one image per invoke, as on a device
                self.interp.set_input(x[i:i + 1], 0)
                self.interp.invoke()
                outs.append(self.interp.get_output(0).reshape(1, -1).copy())
        return np.concatenate(outs) if outs else np.zeros((0, 0), self.output.dtype)

    def arena_usage(self) -> dict[str, int]:
        """{'total', 'head', 'tail'} bytes from the interpreter's RecordingMicroAllocator
        report; complete only after at least one `run`."""
        with self._lock, capture_stderr_fd() as err:
            self.interp.print_allocations()
        found = {k: int(v) for k, v in _ARENA_RE.findall(err["text"])}
        if "total" not in found:
            raise McuError(f"TFLite Micro printed no arena report: {err['text'][:200]!r}")
        return found
