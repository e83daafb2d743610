"""The new layers through every export path: a depthwise-separable net with stride and average
pooling, trained briefly on real MNIST in each framework, exported fp32 and int8 to ONNX and
TFLite; `export` validates each file against the native model (it raises otherwise)."""

from __future__ import annotations

import importlib.util

import pytest

from mnistopt import archs as A
from mnistopt import archspec

HAS_LITERT = importlib.util.find_spec("litert_torch") is not None
DW = A.Arch("dwtest", (
    A.Normalize(), A.Conv(16, 3, pad=1, bias=False), A.BatchNorm(), A.ReLU(), A.MaxPool(2),  # 16x14x14
    *A.separable(32, 3, pad=1), A.AvgPool(2),                                               # 32x7x7
    A.DepthwiseConv(3, stride=2, multiplier=2), A.ReLU(), A.Flatten(), A.Dense(10)),         # 64x3x3
    "depthwise-separable test net")


@pytest.fixture(scope="module")
def small(mnist):
    from mnistopt.data import MNIST

    return MNIST(mnist.x_train[:4000], mnist.y_train[:4000], mnist.x_test[:1000],
                 mnist.y_test[:1000], source="subset", path=mnist.path, sha256="")


@pytest.mark.slow
@pytest.mark.parametrize("fw,fmt", [
    ("torch", "onnx"), ("keras", "onnx"), ("tf", "onnx"), ("keras", "tflite"), ("tf", "tflite"),
    pytest.param("torch", "tflite", marks=pytest.mark.skipif(not HAS_LITERT, reason="needs the litert extra")),
])
def test_depthwise_net_exports_and_validates_int8(fw, fmt, small, tmp_path):
    from mnistopt.export import export
    from mnistopt.train import TrainConfig, train

    spec = archspec.write(DW, tmp_path / "dw.json")
    cfg = TrainConfig(framework=fw, arch=str(spec), epochs=1, lr=3e-3, batch_size=32, val_split=0)
    run = train(cfg, tmp_path / "run", data=small, progress=False)
    assert run.metrics["params"] == DW.params
    arts = export(run, fmt, ["none", "int8"], calib_samples=256, out=tmp_path / "x", data=small, progress=False)
    fp32, int8 = (a.metadata["validation"] for a in arts)
    assert fp32["passed"] and int8["passed"]  # export raises first when either fails
    assert int8["top1_agreement"] >= 0.99 and fp32["reference_accuracy"] > 0.8
    if fmt == "tflite" and fw != "torch":  # full-integer TFLite: runnable by TFLite Micro
        from mnistopt.mcu.micro import inspect

        rep = inspect(arts[1].path)
        assert {"DEPTHWISE_CONV_2D", "AVERAGE_POOL_2D"} <= set(rep.ops) and not rep.missing_ops
