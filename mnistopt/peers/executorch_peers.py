"""ExecuTorch with the XNNPACK delegate, fp32 and PT2E int8, as its tutorials build it.

An ExecuTorch program has fixed shapes here: one exported with a free batch dimension failed at
run time for batches past a planned bound ("Attempted to resize a bounded tensor"), so each
timed batch size gets its own `bN.pte` in a folder per peer. The int8 model is quantized once
(a free batch, all 512 calibration images) and exported per batch size from there, so every
file carries the same scales.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

# bN.pte: the program for batches of N images.
PTE = re.compile(r"^b([1-9][0-9]{0,4})\.pte$")
CALIB_BATCH = 64


def programs(folder: Path) -> dict[int, Path]:
    """{batch: file} of a peer folder."""
    out = {}
    for p in Path(folder).iterdir() if Path(folder).is_dir() else ():
        m = PTE.match(p.name)
        if m and p.is_file():
            out[int(m.group(1))] = p
    return dict(sorted(out.items()))


def _lower(module, batch: int, shape: tuple) -> bytes:
    import torch
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower

    ep = torch.export.export(module, (torch.zeros((batch, *shape)),))
    return to_edge_transform_and_lower(ep, partitioner=[XnnpackPartitioner()]) \
        .to_executorch().buffer


def _write(ctx, name: str, module) -> tuple[Path, dict]:
    shape = tuple(ctx.calib_input().shape[1:])
    with ctx.staging(name) as tmp:
        folder = tmp / name
        folder.mkdir()
        for b in ctx.batch_sizes:
            (folder / f"b{b}.pte").write_bytes(_lower(module, b, shape))
        path = ctx.publish(tmp, name)
    return path, {"batch_sizes": list(ctx.batch_sizes)}


def build_fp32(ctx) -> tuple[Path, dict]:
    return _write(ctx, "executorch-fp32", ctx.run.model.eval())


def build_int8(ctx) -> tuple[Path, dict]:
    """prepare_pt2e -> calibrate -> convert_pt2e with XNNPACKQuantizer's symmetric per-channel
    config (what the ExecuTorch XNNPACK tutorial uses), then lowered like the fp32 model."""
    import torch
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
        XNNPACKQuantizer, get_symmetric_quantization_config)
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    x = ctx.calib_input()
    batch = torch.export.Dim("batch", min=1, max=4096)
    graph = torch.export.export(ctx.run.model.eval(), (torch.from_numpy(x[:2]),),
                                dynamic_shapes=({0: batch},)).module()
    quantizer = XNNPACKQuantizer().set_global(get_symmetric_quantization_config(
        is_per_channel=True))
    prepared = prepare_pt2e(graph, quantizer)
    for i in range(0, len(x), CALIB_BATCH):
        prepared(torch.from_numpy(np.ascontiguousarray(x[i:i + CALIB_BATCH])))
    return _write(ctx, "executorch-int8", convert_pt2e(prepared))
