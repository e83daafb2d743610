"""Tiny models for the runtime tests, built with the real exporters' libraries.

Each builder writes one file into `out` and returns its path; the weights are random but
seeded, which is all parity tests need. torch / TensorFlow are imported only here (the tests
that load the files check that the runtime itself never imports them).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np


def calibration_images(n: int = 64, seed: int = 0) -> np.ndarray:
    """uint8 (n, 28, 28): a bright bar on noise, shaped like MNIST's statistics."""
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 60, (n, 28, 28)).astype(np.uint8)
    for i in range(n):
        r = rng.integers(4, 20)
        x[i, r:r + 4, 4:24] = 255
    return x


def torch_onnx(out: Path, *, name: str = "tiny.onnx") -> Path:
    """A small NCHW ConvNet exported with the dynamo exporter, dynamic batch, one file."""
    import torch

    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(1, 4, 3), torch.nn.ReLU(), torch.nn.MaxPool2d(2), torch.nn.Flatten(),
        torch.nn.Linear(4 * 13 * 13, 10)).eval()
    path = Path(out) / name
    example = torch.rand(2, 1, 28, 28)
    batch = torch.export.Dim("batch", min=1, max=4096)
    torch.onnx.export(net, (example,), str(path), dynamo=True, external_data=False,
                      input_names=["images"], output_names=["logits"],
                      dynamic_shapes=({0: batch},), verbose=False)
    torch.save(net.state_dict(), Path(out) / (name + ".pt"))
    return path


def torch_reference(out: Path, name: str, x01_nchw: np.ndarray) -> np.ndarray:
    import torch

    net = torch.nn.Sequential(
        torch.nn.Conv2d(1, 4, 3), torch.nn.ReLU(), torch.nn.MaxPool2d(2), torch.nn.Flatten(),
        torch.nn.Linear(4 * 13 * 13, 10)).eval()
    net.load_state_dict(torch.load(Path(out) / (name + ".pt"), weights_only=True))
    with torch.no_grad():
        return net(torch.from_numpy(x01_nchw)).numpy()


def _keras_model(input_shape=(28, 28, 1), classes=10):
    import keras

    keras.utils.set_random_seed(0)
    return keras.Sequential([
        keras.Input(input_shape),
        keras.layers.Conv2D(4, 3, activation="relu"), keras.layers.MaxPooling2D(2),
        keras.layers.Flatten(), keras.layers.Dense(classes)])


def keras_tflite(out: Path, *, int8: bool = False, name: str | None = None,
                 input_shape=(28, 28, 1), classes: int = 10) -> Path:
    """A small NHWC Keras ConvNet -> SavedModel -> TFLite (float, or full int8 with int8 I/O)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import tensorflow as tf

    model = _keras_model(input_shape, classes)
    out = Path(out)
    name = name or ("tiny-int8.tflite" if int8 else "tiny.tflite")
    saved = out / (name + ".saved_model")
    model.export(str(saved), verbose=False)
    model.save(out / (name + ".keras"))
    conv = tf.lite.TFLiteConverter.from_saved_model(str(saved))
    if int8:
        calib = calibration_images(64).astype(np.float32)[..., None] / 255.0
        if input_shape != (28, 28, 1):
            calib = np.random.default_rng(0).random((64,) + input_shape, np.float32)

        def representative():
            for i in range(len(calib)):
                yield [calib[i:i + 1]]

        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.representative_dataset = representative
        conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        conv.inference_input_type = tf.int8
        conv.inference_output_type = tf.int8
    path = out / name
    path.write_bytes(conv.convert())
    return path


def keras_reference(out: Path, name: str, x01_nhwc: np.ndarray) -> np.ndarray:
    import keras

    model = keras.models.load_model(Path(out) / (name + ".keras"))
    return np.asarray(model(x01_nhwc, training=False))


def onnx_graph(out: Path, name: str, *, in_shape, out_classes: int = 10,
               in_type: str = "float", metadata: dict | None = None) -> Path:
    """A hand-built ONNX graph (no torch): Flatten -> MatMul -> (N, out_classes).

    For shapes and types the real exporters would not produce: a 32x32 input, 5 classes, a
    fixed batch, uint8 input.
    """
    import json

    import onnx
    from onnx import TensorProto, helper, numpy_helper

    elem = {"float": TensorProto.FLOAT, "uint8": TensorProto.UINT8}[in_type]
    feat = int(np.prod([d for d in in_shape[1:]]))
    rng = np.random.default_rng(1)
    w = numpy_helper.from_array(rng.normal(0, 0.05, (feat, out_classes)).astype(np.float32), "w")
    nodes = []
    src = "x"
    if in_type != "float":
        nodes.append(helper.make_node("Cast", ["x"], ["xf"], to=TensorProto.FLOAT))
        src = "xf"
    nodes += [helper.make_node("Flatten", [src], ["flat"], axis=1),
              helper.make_node("MatMul", ["flat", "w"], ["y"])]
    dims = ["batch" if d == -1 else d for d in in_shape]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", elem, dims)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [dims[0], out_classes])], [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    if metadata is not None:
        helper.set_model_props(model, {"mnistopt": json.dumps(metadata)})
    path = Path(out) / name
    onnx.save(model, str(path))
    return path
