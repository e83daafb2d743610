"""Sessions of the peers (mnistopt/peers/): the same prepare/run interface as backends.py.

Files (ONNX, OpenVINO IR) open through `mnistopt.runtime` with the peer's backend and its
settings; torch.compile and ExecuTorch programs are run by their own libraries, as a user of
those tools runs them.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from ..errors import DeviceError, RunError
from .backends import _Torch
from .worker import Artifact


def PlainOnnx(path, threads, device):  # noqa: N802  (a session factory named like a class)
    return Artifact(path, threads, device=device, backend="onnxruntime-plain")


def OpenVINO(path, threads, device):  # noqa: N802
    """OpenVINO with its own defaults for this CPU: bfloat16 where the CPU has it, every call
    one request on all threads (its latency hint; mnistopt's stream trial is not a default)."""
    backend = "openvino-ir" if Path(path).suffix.lower() == ".xml" else "openvino"
    art = Artifact(path, threads, device=device, backend=backend,
                   options={"precision": "default", "streams": 1})
    art.via = f"mnistopt.runtime {backend}: {', '.join(art.providers)}"  # which precision ran
    return art


class TorchCompile(_Torch):
    """`torch.compile(model)` with its defaults (inductor, mode "default", dynamic shapes
    decided by torch: the first batch size compiles static, a second one compiles a graph with
    a free batch). Each batch size's first call, which compiles, happens in `prepare`, outside
    the clock; its seconds are `compile`."""

    def __init__(self, run_dir, threads, device):
        # No CUDA-graph capture of the eager model: what runs is torch.compile's own.
        super().__init__(run_dir, threads, device, graphs=False)
        self.model = self.torch.compile(self.model)
        self.via = "torch.compile" + (", CUDA" if self.device.type == "cuda" else "")
        self.compile = {"seconds": 0.0, "shapes": {}}

    def prepare(self, images):
        x = super().prepare(images)
        key = str(len(x))
        if key not in self.compile["shapes"]:
            t0 = time.perf_counter()
            self.run(x)
            dt = time.perf_counter() - t0
            self.compile["shapes"][key] = round(dt, 3)
            self.compile["seconds"] = round(self.compile["seconds"] + dt, 3)
        return x


class ExecuTorch:
    """A folder of fixed-batch ExecuTorch programs (bN.pte, XNNPACK-delegated); a batch with no
    program of its size runs in pieces of the largest one that fits, the last piece padded."""

    via = "executorch"

    def __init__(self, folder, threads, device):
        if device != "cpu":
            raise DeviceError(f"ExecuTorch/XNNPACK runs on the CPU (--device {device} was asked)")
        import torch
        from executorch.extension.pybindings.portable_lib import _unsafe_reset_threadpool
        from executorch.runtime import Runtime

        from ..peers.executorch_peers import programs

        self.torch = torch
        files = programs(folder)
        if not files:
            raise RunError(f"{folder}: no ExecuTorch programs (bN.pte) in this folder")
        if threads:
            _unsafe_reset_threadpool(threads)  # XNNPACK's pool; the default is every core
        self.threads = threads
        runtime = Runtime.get()
        self.methods = {b: runtime.load_program(p).load_method("forward") for b, p in files.items()}
        self.sizes = sorted(self.methods)

    def prepare(self, images):
        from ..train import to_input

        return self.torch.from_numpy(to_input(images, "NCHW"))

    def _one(self, x):
        return self.methods[len(x)].execute([x])[0]

    def run(self, x):
        n = len(x)
        if n in self.methods:
            return self._one(x).numpy()
        step = max([b for b in self.sizes if b <= n], default=self.sizes[0])
        outs = []
        for i in range(0, n, step):
            part = x[i:i + step]
            if len(part) < step:
                pad = self.torch.zeros((step - len(part), *part.shape[1:]), dtype=part.dtype)
                part = self.torch.cat([part, pad])
            outs.append(self._one(part)[:min(step, n - i)].numpy())
        return np.concatenate(outs)
