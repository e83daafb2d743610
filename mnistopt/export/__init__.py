"""Export a trained run to ONNX / TFLite (fp32, dynamic, int8, fp16), each file validated.

    export(run, format="onnx"|"tflite"|"all", quantize="none"|"dynamic"|"int8"|"fp16"|"all"
           or a list, *, calib_samples=512, opset=18, out=None, validate=True, atol=None)
        -> list[Artifact]          # Artifact(path, sidecar, metadata, report)

Paths sit in one registry keyed (framework, format) (`EXPORTERS`, see `registry.py`); each
names a module implementing `ExportPath` and declares its quantize modes and the
`parity.Tolerance` its files must meet. Before a file is
written, the exported model is run on the full MNIST test set and compared with the native
model (`parity.check`); a failure raises `ToleranceError` / `ShapeMismatchError` with the
numbers, and nothing is written (temp file, then rename).

Default location: ``RUN/export/<arch>-<framework>-<quant>.<onnx|tflite>``, quant in
fp32 | fp16 | dynamic | int8.

Artifact metadata, schema ``mnistopt.artifact/1``
--------------------------------------------------
A JSON object in the sidecar ``NAME.json`` beside the model, NAME being the model's full file
name (``seed-torch-int8.onnx`` -> ``seed-torch-int8.onnx.json``: the .onnx and the .tflite of
one run and mode share a stem) and, for ONNX, also in ``metadata_props["mnistopt"]`` (for TFLite,
also in the flatbuffer's metadata entry ``"mnistopt"``). The embedded copy lacks ``file``
(a file cannot contain its own hash); otherwise the two are equal::

    schema       "mnistopt.artifact/1"
    format       "onnx" | "tflite"
    framework    "torch" | "keras" | "tf"         (where the model was trained)
    arch         "seed" | "lenet5" | "edge" | ...
    labels       ["0", ..., "9"]                 (class i of the output is labels[i])
    source       {run, native, sha256, test_accuracy}   (sha256 = metrics["native_sha256"])
    input        {name, shape, layout, dtype, range, scale, zero_point}
                 shape has -1 for a free batch dim, e.g. [-1, 1, 28, 28] (layout "NCHW") or
                 [-1, 28, 28, 1] ("NHWC"); a fixed batch is its number. dtype "float32":
                 feed pixels / 255 (range [0, 1]; the model normalises inside). dtype
                 "int8"/"uint8": feed round(pixels / 255 / scale) + zero_point, clipped.
                 scale / zero_point are null for float inputs.
    output       {name, shape, dtype, scale, zero_point, kind: "logits"}
                 integer outputs: logits = (q - zero_point) * scale. Softmax is not applied.
    quantize     {mode: "none"|"dynamic"|"int8"|"fp16", tag: "fp32"|"dynamic"|"int8"|"fp16",
                  settings: {...tool options...}, reason: "one line: why these settings"}
    tools        {"torch": "2.13.0+cpu", "onnx": ..., "onnxruntime": ..., "mnistopt": ...}
    validation   null (--no-validate) or the parity report: n, max_abs_diff, max_abs_logit,
                 rel_max_diff, top1_agreement, disagreements, reference_accuracy (native),
                 candidate_accuracy (exported), accuracy_drop, tolerance, passed, plus
                 size_bytes and size_ratio_to_fp32
    created      ISO-8601 UTC time
    file         (sidecar only) {name, bytes, sha256}

A reader should rely on the model's own I/O when the sidecar is absent: the float32 input is
always pixels / 255 in the layout its shape shows, and the output always 10 logits.
"""

from __future__ import annotations

from .api import Artifact, export, read_metadata, sidecar_path
from .registry import EXPORTERS, MODES, QUANT_TAGS, Exporter, ExportPath, get_exporter

__all__ = ["Artifact", "EXPORTERS", "ExportPath", "Exporter", "MODES", "QUANT_TAGS", "export",
           "get_exporter", "read_metadata", "sidecar_path"]
