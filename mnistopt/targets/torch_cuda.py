"""The native torch model on a CUDA GPU: one captured CUDA graph per batch size.

At batch 1 a small CNN's GPU work is a few microseconds per layer, far less than the time the
host takes to launch each kernel from Python; a CUDA graph records the whole forward pass once
and replays it with one launch, so batch-1 latency becomes the GPU's time plus one launch. At
large batches the kernels dominate and a graph changes little.

A prepared input is the graph's own input buffer for that batch size (the request copied into
it, as a server using graphs does), so it is valid until the next `load` of the same size.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass
class _Captured:
    graph: Any  # torch.cuda.CUDAGraph
    static_in: Any
    static_out: Any


class CudaGraphs:
    """Capture `model`'s forward pass per input shape on first use; replay it afterwards."""

    WARMUP = 3  # eager calls on a side stream before capture (cuDNN picks its kernels there)

    def __init__(self, model):
        import torch

        self.torch, self.model = torch, model
        self._by_shape: dict[tuple, _Captured] = {}
        self._by_ptr: dict[int, _Captured] = {}

    def _capture(self, x) -> _Captured:
        torch = self.torch
        static_in = x.clone()
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.inference_mode():
            with torch.cuda.stream(side):
                for _ in range(self.WARMUP):
                    self.model(static_in)
            torch.cuda.current_stream().wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                static_out = self.model(static_in)
        cap = _Captured(graph, static_in, static_out)
        self._by_shape[tuple(x.shape)] = cap
        self._by_ptr[static_in.data_ptr()] = cap
        return cap

    def load(self, x):
        """Copy device tensor `x` into the graph input of its shape (capturing it first)."""
        cap = self._by_shape.get(tuple(x.shape)) or self._capture(x)
        cap.static_in.copy_(x)
        return cap.static_in

    def forward(self, x):
        """The model's output for `x`: a replay when `x` is a graph input, else an eager call."""
        cap = self._by_ptr.get(x.data_ptr())
        if cap is None or cap.static_in is not x:
            with self.torch.inference_mode():
                return self.model(x)
        cap.graph.replay()
        return cap.static_out


def setup_cuda(torch) -> None:
    """Inference settings: every batch size is one fixed shape, so let cuDNN tune for it."""
    torch.backends.cudnn.benchmark = True
