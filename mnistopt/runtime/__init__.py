"""The lean runtime: run an exported MNIST classifier (ONNX or TFLite) on a device.

    from mnistopt.runtime import load
    clf = load("seed-torch-int8.tflite", threads=1)   # format from the file's bytes
    clf.predict(images)         # int64 (N,) labels
    clf.predict_proba(images)   # float32 (N, 10)
    clf.logits(images)          # float32 (N, 10), int8 outputs dequantized
    clf.metadata, clf.input_spec, clf.output_spec

Images: uint8 pixels or float in [0, 1], shaped (28,28), (N,28,28), (N,28,28,1), (N,1,28,28) or
(N,784); the runtime adapts them to the model's layout and dtype (int8 inputs with the model's
own scale/zero-point). Image files: `mnistopt.runtime.preprocess.load_images` (needs Pillow).

Benchmark fast path: `x = clf.prepare(images)` outside the clock, then time `clf.run_raw(x)`
(one backend call, raw output) or `clf.logits_prepared(x)` (plus dequantization).

Backends (`BACKENDS`; `Backend` is the contract): onnxruntime (ONNX, the default), litert
(TFLite with XNNPACK, the default), litert-ref (LiteRT's builtin kernels, no delegate),
tflite-micro (the `mcu` extra), onnxruntime-plain (onnxruntime's own session defaults),
openvino (ONNX) and openvino-ir (OpenVINO IR, `NAME.xml` + `NAME.bin`; the `openvino` extra).
`load(path, backend="litert-ref")` picks one;
`load(path, profile=True)` turns on onnxruntime's profiler (`clf.backend.end_profiling()`);
`open_backend(...)` gives the bare backend (raw tensors, no image handling).

Imports numpy and, lazily, onnxruntime or ai_edge_litert: only the one the model needs
(extras `runtime-onnx`, `runtime-tflite`, or `runtime` for both); openvino only when asked for.
"""

from .backends import BACKENDS, DEFAULT_BACKEND, Backend, TensorInfo, detect_format, open_backend
from .classifier import SCHEMA, Classifier, images_array, input_layout, load, logits_in_batches

__all__ = ["BACKENDS", "DEFAULT_BACKEND", "SCHEMA", "Backend", "Classifier", "TensorInfo",
           "detect_format", "images_array", "input_layout", "load", "logits_in_batches",
           "open_backend"]
