"""Peers made of ONNX files: the tutorial path (torch.onnx.export + quantize_static, their
defaults) and OpenVINO (its CPU plugin on mnistopt's fp32 ONNX, NNCF's int8 of it as IR).

Each builder takes a `build.Context` and returns (path, notes): the file the bench runs and
what the report should say about how it was made.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


def tutorial_fp32(ctx) -> tuple[Path, dict]:
    """`torch.onnx.export` as its documentation shows it: an example input, input/output
    names, a dynamic batch axis; every other argument (exporter, opset, external data) its
    default."""
    import torch

    model = ctx.run.model.eval()
    example = torch.from_numpy(ctx.calib_input()[:1])
    name = "tutorial-fp32.onnx"
    with ctx.staging("tutorial-fp32") as tmp:
        torch.onnx.export(model, (example,), str(tmp / name), input_names=["input"],
                          output_names=["output"],
                          dynamic_axes={"input": {0: "batch_size"}, "output": {0: "batch_size"}})
        extra = sorted(p.name for p in tmp.iterdir() if p.name != name)
        path = ctx.publish(tmp, name)
    return path, {"files": [name, *extra]} if extra else {}


class _Reader:
    """onnxruntime's CalibrationDataReader protocol: one image per `get_next`, then None."""

    def __init__(self, name: str, x: np.ndarray):
        self.name, self.items = name, iter(x[i:i + 1] for i in range(len(x)))

    def get_next(self):
        x = next(self.items, None)
        return None if x is None else {self.name: x}


def tutorial_int8(ctx) -> tuple[Path, dict]:
    """`quantize_static(model_input, model_output, calibration_data_reader)` and nothing else."""
    from onnxruntime.quantization import quantize_static

    from ..runtime import open_backend

    fp32 = ctx.need("tutorial-fp32")
    # The input name as a tutorial finds it: from a session on the float model.
    in_name = open_backend(fp32, "onnxruntime-plain", threads=1).input.name
    name = "tutorial-int8.onnx"
    with ctx.staging("tutorial-int8") as tmp:
        quantize_static(str(fp32), str(tmp / name), _Reader(in_name, ctx.calib_input()))
        path = ctx.publish(tmp, name)
    return path, {}


def _mnistopt_fp32(ctx) -> Path | None:
    """The run's own fp32 ONNX file (`mnistopt export`'s default name), if it was exported."""
    p = ctx.run.path / "export" / f"{ctx.run.arch}-torch-fp32.onnx"
    return p if p.is_file() else None


def openvino_source(ctx) -> tuple[Path, dict]:
    """Nothing to build: OpenVINO reads mnistopt's fp32 ONNX (the tutorial's when the run has
    not been exported)."""
    own = _mnistopt_fp32(ctx)
    if own is not None:
        return own, {"source": str(own)}
    path = ctx.need("tutorial-fp32")
    return path, {"source": str(path), "note": "the run has no fp32 ONNX export: the "
                                               "tutorial's file"}


def openvino_source_sha256(ctx) -> str:
    from ..export.api import sha256_file

    return sha256_file(openvino_source(ctx)[0])


def nncf_int8(ctx) -> tuple[Path, dict]:
    """NNCF's post-training quantization as its documentation shows it: read the model with
    OpenVINO, `nncf.quantize(model, nncf.Dataset(items))`, `openvino.save_model`. Only
    subset_size is set: NNCF's default would use 300 of the 512 images."""
    import nncf
    import openvino as ov

    src, notes = openvino_source(ctx)
    model = ov.Core().read_model(str(src))
    x = ctx.calib_input()
    q = nncf.quantize(model, nncf.Dataset([x[i:i + 1] for i in range(len(x))]),
                      subset_size=len(x))
    name = "openvino-nncf-int8.xml"
    with ctx.staging("openvino-nncf-int8") as tmp:
        ov.save_model(q, str(tmp / name))
        path = ctx.publish(tmp, name)
    return path, notes
