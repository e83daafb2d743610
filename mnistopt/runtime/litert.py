"""LiteRT's Interpreter: with XNNPACK (what a phone or a Pi runs), or its reference kernels.

An interpreter owns one set of tensors, so concurrent calls are serialized by a lock; the input
is resized (and tensors reallocated) only when the batch size changes. Automatic threads: all
physical cores from 16 images on; below, one thread or all cores, whichever the thread trial
(`backends.ThreadTrial`) timed faster on the model's first calls.

On a CPU with AMX the process is refused AMX before XNNPACK starts (`amx.py`: its AMX int8
kernels are 3-4x slower than its AVX-512 VNNI ones on these nets); `options={"amx": "on"}`
leaves the process alone.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np

from ..errors import ConfigError, ModelLoadError, require
from . import amx
from .backends import Backend, TensorInfo, first_line
from .flatbuf import tflite_metadata


class LiteRTBackend(Backend):
    """The default op resolver: builtin kernels with the XNNPACK delegate applied."""

    name, format, extra = "litert", "tflite", "runtime-tflite"
    label = "LiteRT/XNNPACK"
    resolver: str | None = None  # an OpResolverType name; None = LiteRT's default

    auto_threads = True
    options = frozenset({"amx"})
    AMX = ("auto", "on")
    # XNNPACK reads the AMX permission once, when its first delegate starts: what it got.
    _xnnpack_amx: str | None = None
    # Calls of 16 images or more on all cores; smaller ones on one thread or all cores, as the
    # thread trial finds faster (backends.PARALLEL_BATCH), each count with its own interpreter.

    def __init__(self, path: Path, *, threads: int | None, device: str, profile: bool = False,
                 options: dict | None = None):
        super().__init__(path, threads=threads, device=device)
        self.cpu_only()
        self.amx = (options or {}).get("amx", "auto")
        if self.amx not in self.AMX:
            raise ConfigError(f"litert amx must be one of {', '.join(self.AMX)}, got {self.amx!r}")
        self._litert = require("ai_edge_litert.interpreter", self.extra, "running TFLite models")
        if self.resolver is None and LiteRTBackend._xnnpack_amx is None:
            if self.amx == "auto":
                try:
                    amx.deny_xtiledata()
                except OSError:  # no seccomp in a locked-down sandbox: XNNPACK keeps AMX
                    pass
            LiteRTBackend._xnnpack_amx = amx.state()
        self.interp = self._open(self.threads)  # all cores; the one `delegation()` reads
        ins, outs = self.interp.get_input_details(), self.interp.get_output_details()
        self.single_input(len(ins))
        self.input, self.output = self._info(ins[0]), self._info(outs[0])
        self.custom_metadata = tflite_metadata(path)
        xa = LiteRTBackend._xnnpack_amx if self.resolver is None else "none"
        self.providers = [self.label if xa == "none" else
                          f"{self.label} (AMX {'off' if xa == 'denied' else 'on'})"]
        self._in_idx, self._out_idx = ins[0]["index"], outs[0]["index"]
        self._in_shape = [int(d) for d in ins[0]["shape"]]
        self._file_batch = self._in_shape[0] if self._in_shape else None
        # threads -> [interpreter, the batch size its tensors fit]
        self._slots = {self.threads: [self.interp, self._file_batch]}
        self._lock = threading.Lock()

    def _open(self, threads: int):
        litert = self._litert
        kw = {} if self.resolver is None else {
            "experimental_op_resolver_type": getattr(litert.OpResolverType, self.resolver)}
        try:
            interp = litert.Interpreter(model_path=str(self.path), num_threads=threads, **kw)
            interp.allocate_tensors()
        except Exception as exc:  # ValueError / RuntimeError from the C++ loader
            raise ModelLoadError(f"{self.path}: LiteRT cannot load this model: {first_line(exc)}"
                                 ) from None
        return interp

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
        timed = n < self.parallel_batch and self.trial.choice is None
        threads = self.trial.next() if timed else self.threads_for(n)
        with self._lock:
            slot = self._slots.get(threads)
            if slot is None:
                slot = self._slots[threads] = [self._open(threads), self._file_batch]
            interp = slot[0]
            if n != slot[1]:
                interp.resize_tensor_input(self._in_idx, [n] + self._in_shape[1:], strict=True)
                interp.allocate_tensors()
                slot[1] = n
            interp.set_tensor(self._in_idx, x)
            if timed:
                t0 = time.perf_counter()
                interp.invoke()
                self.trial.record(threads, (time.perf_counter() - t0) / n)
            else:
                interp.invoke()
            return interp.get_tensor(self._out_idx)  # a copy: safe once the lock is released

    def delegation(self) -> dict:
        """Which ops the delegate took: {"partitions": n, "ops": [{index, op, delegated}]}.

        LiteRT lists a model's own ops, then one DELEGATE node per partition the delegate took;
        an op no partition covers runs in LiteRT's builtin kernels (slow, and each boundary
        costs a copy)."""
        ops = self.interp._get_ops_details()
        delegates = [op for op in ops if op["op_name"] == "DELEGATE"]
        inside = set()
        for d in delegates:
            inside |= self._covered(ops, d)
        return {"partitions": len(delegates), "ops": [
            {"index": int(op["index"]), "op": op["op_name"], "delegated": op["index"] in inside}
            for op in ops if op["op_name"] != "DELEGATE"]}

    @staticmethod
    def _covered(ops, delegate) -> set:
        """Indices of the ops between a delegate node's inputs and its outputs: walk back from
        its outputs through their producers until a tensor is one of its inputs."""
        by_out = {int(t): op for op in ops if op["op_name"] != "DELEGATE"
                  for t in op.get("outputs", [])}
        stop = {int(t) for t in delegate.get("inputs", [])}
        todo, seen = [int(t) for t in delegate.get("outputs", [])], set()
        while todo:
            t = todo.pop()
            op = by_out.get(t)
            if op is None or op["index"] in seen or t in stop:
                continue
            seen.add(op["index"])
            todo.extend(int(i) for i in op.get("inputs", []) if int(i) >= 0)
        return seen


class LiteRTReferenceBackend(LiteRTBackend):
    """LiteRT's builtin kernels without the default delegate: for int8 models, the same
    integer arithmetic as TFLite Micro's reference kernels (XNNPACK rounds some
    requantizations differently), so it is what a microcontroller result is checked against."""

    name = "litert-ref"
    label = "LiteRT/builtin"
    resolver = "BUILTIN_WITHOUT_DEFAULT_DELEGATES"
