"""The microcontroller target: TFLite Micro end to end, the fit table, the C array, errors.

The fast tests build a tiny TFLite model by hand (RESHAPE + FULLY_CONNECTED, class-template
weights) with the flatbuffer schema ai-edge-litert ships: no TensorFlow, milliseconds to make,
and LiteRT and TFLite Micro both run it for real. The slow test converts a Keras model. The
arithmetic (device fit, C arrays, operator checks) runs without tflite-micro; only the tests
marked `needs_tflm` need it.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mnistopt.errors import ConfigError, McuError, ModelLoadError
from mnistopt.mcu import devices as dev
from mnistopt.mcu.carray import read_c_array, resolver_method, symbol_for, write_c_array
from mnistopt.mcu.micro import TFLM_OPS, evaluate, inspect
from mnistopt.runtime.flatbuf import BUILTIN_OPS, read_tflite

HAS_TFLM = importlib.util.find_spec("tflite_micro") is not None
needs_tflm = pytest.mark.skipif(not HAS_TFLM, reason="the mcu extra (tflite-micro) is not installed")


def build_linear_tflite(x: np.ndarray, y: np.ndarray, *, int8: bool = True,
                        reshape_op: str = "RESHAPE") -> bytes:
    """A 784->10 linear classifier (class-mean templates) as a .tflite, int8 or float32."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as s

    x01 = x.reshape(len(x), -1).astype(np.float32) / 255
    means = np.stack([x01[y == c].mean(0) for c in range(10)])
    w = means - means.mean(0)  # (10, 784): a pixel counts for the classes it is bright in
    b = np.zeros(10, np.float32)
    logits = x01 @ w.T
    tt = s.TensorType

    def tensor(name, shape, dtype, buffer, scale=None, zp=0):
        t = s.TensorT()
        t.name, t.shape, t.type, t.buffer = name, list(shape), dtype, buffer
        if scale is not None:
            t.quantization = s.QuantizationParametersT()
            t.quantization.scale, t.quantization.zeroPoint = [float(scale)], [int(zp)]
        return t

    def buffer(data: bytes = b""):
        buf = s.BufferT()
        buf.data = list(data) if data else None
        return buf

    s_in, s_w = 1 / 255, float(np.abs(w).max() / 127)
    s_out = float(np.abs(logits).max() / 100)
    act = tt.INT8 if int8 else tt.FLOAT32
    q = (lambda sc, zp: (sc, zp)) if int8 else (lambda sc, zp: (None, 0))
    if int8:
        w_data = np.clip(np.round(w / s_w), -127, 127).astype(np.int8).tobytes()
        b_data = np.round(b / (s_in * s_w)).astype(np.int32).tobytes()
    else:
        w_data, b_data = w.astype(np.float32).tobytes(), b.tobytes()
    tensors = [
        tensor("images", (1, 28, 28, 1), act, 1, *q(s_in, -128)),
        tensor("shape", (2,), tt.INT32, 2),
        tensor("flat", (1, 784), act, 3, *q(s_in, -128)),
        tensor("weights", (10, 784), tt.INT8 if int8 else tt.FLOAT32, 4, *q(s_w, 0)),
        tensor("bias", (10,), tt.INT32 if int8 else tt.FLOAT32, 5, *q(s_in * s_w, 0)),
        tensor("logits", (1, 10), act, 6, *q(s_out, 0)),
    ]
    buffers = [buffer(), buffer(), buffer(np.array([1, 784], np.int32).tobytes()), buffer(),
               buffer(w_data), buffer(b_data), buffer()]
    codes = []
    for name in (reshape_op, "FULLY_CONNECTED"):
        c = s.OperatorCodeT()
        c.builtinCode = getattr(s.BuiltinOperator, name)
        c.deprecatedBuiltinCode = min(c.builtinCode, 127)
        c.version = 1
        codes.append(c)
    reshape = s.OperatorT()
    reshape.opcodeIndex, reshape.inputs, reshape.outputs = 0, [0, 1], [2]
    reshape.builtinOptionsType = s.BuiltinOptions.ReshapeOptions
    reshape.builtinOptions = s.ReshapeOptionsT()
    reshape.builtinOptions.newShape = [1, 784]
    fc = s.OperatorT()
    fc.opcodeIndex, fc.inputs, fc.outputs = 1, [2, 3, 4], [5]
    fc.builtinOptionsType = s.BuiltinOptions.FullyConnectedOptions
    fc.builtinOptions = s.FullyConnectedOptionsT()
    sg = s.SubGraphT()
    sg.tensors, sg.inputs, sg.outputs, sg.operators, sg.name = tensors, [0], [5], [reshape, fc], "main"
    model = s.ModelT()
    model.version, model.operatorCodes, model.subgraphs, model.buffers = 3, codes, [sg], buffers
    model.description = "mnistopt test: linear templates"
    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


@pytest.fixture
def tiny_models(tmp_path, tiny_mnist):
    m = tiny_mnist
    paths = {}
    for key, kw in {"int8": {}, "fp32": {"int8": False}, "tile": {"reshape_op": "TILE"}}.items():
        p = tmp_path / f"linear-test-{key}.tflite"
        p.write_bytes(build_linear_tflite(m.x_train, m.y_train, **kw))
        paths[key] = p
    return paths


def test_flatbuffer_reader(tiny_models):
    model = read_tflite(tiny_models["int8"].read_bytes())
    assert model.op_names == ["RESHAPE", "FULLY_CONNECTED"]
    inp, out = model.tensors[model.inputs[0]], model.tensors[model.outputs[0]]
    assert (inp.dtype, inp.shape, inp.zero_point) == ("int8", (1, 28, 28, 1), (-128,))
    assert inp.scale[0] == pytest.approx(1 / 255)
    assert out.dtype == "int8" and out.shape == (1, 10)
    consts = {t.name for t in model.tensors if t.constant}
    assert consts == {"shape", "weights", "bias"}
    assert model.weight_bytes == 8 + 7840 + 40
    # The reader's operator table is the real schema's, code for code.
    from ai_edge_litert import schema_py_generated as s

    assert all(getattr(s.BuiltinOperator, name) == code for code, name in enumerate(BUILTIN_OPS))


@needs_tflm
def test_tiny_int8_model_through_tflite_micro(tiny_models, tiny_mnist):
    r = evaluate(tiny_models["int8"], images=tiny_mnist.x_test, labels=tiny_mnist.y_test,
                 progress=False)
    assert r.n_images == len(tiny_mnist.x_test)
    assert r.accuracy > 0.9  # the bright bar's row decides the class
    assert r.litert["accuracy"] == r.accuracy
    assert r.litert["agreement"] >= 0.999 and r.litert_xnnpack["agreement"] >= 0.99
    assert r.litert["max_diff_steps"] <= 1
    # The arena is what TFLite Micro reported, and the evaluation ran in exactly that much.
    assert r.arena_verified and 784 <= r.arena_bytes < 16 * 1024
    assert r.arena_bytes == r.arena_head + r.arena_tail
    assert r.flash_bytes == tiny_models["int8"].stat().st_size
    assert r.ops == ["RESHAPE", "FULLY_CONNECTED"] and r.missing_ops == []
    fits = {f["device"]: f for f in r.fits}
    assert set(fits) == set(dev.DEVICES) and all(f["fits"] for f in fits.values())
    small = fits["m4-64k"]
    assert small["ram_needed"] == r.arena_bytes + dev.RAM_ALLOWANCE
    assert small["flash_headroom"] == 256 * 1024 - r.flash_bytes - dev.FLASH_ALLOWANCE
    json.dumps(r.as_dict())  # the report is plain data


def test_float_model_is_refused_with_a_clear_message(tiny_models):
    with pytest.raises(McuError, match="not an int8 model.*FULLY_CONNECTED.*int8"):
        evaluate(tiny_models["fp32"], images=np.zeros((2, 28, 28), np.uint8), progress=False)
    r = subprocess.run([sys.executable, "-m", "mnistopt", "mcu", "report", str(tiny_models["fp32"])],
                       capture_output=True, text=True)
    assert r.returncode == 2
    assert r.stderr.count("\n") == 1 and "needs" not in r.stdout
    assert "int8" in r.stderr and "Traceback" not in r.stderr


def test_bench_mcu_target_refuses_float_only(tiny_models):
    from mnistopt.targets import Settings, artifact_item, get_target

    with pytest.raises(McuError, match="int8"):
        get_target("mcu").run([artifact_item(tiny_models["fp32"])], Settings(progress=False))


def test_operator_tflite_micro_lacks_is_named(tiny_models):
    assert "TILE" not in TFLM_OPS and {"CONV_2D", "FULLY_CONNECTED", "MEAN"} <= TFLM_OPS
    assert inspect(tiny_models["tile"]).missing_ops == ["TILE"]
    with pytest.raises(McuError, match="no kernel for: TILE"):
        evaluate(tiny_models["tile"], images=np.zeros((2, 28, 28), np.uint8), progress=False)


def test_not_a_model(tmp_path):
    bad = tmp_path / "x.tflite"
    bad.write_bytes(b"hello world, not a flatbuffer")
    with pytest.raises(ModelLoadError, match="not a TFLite model"):
        inspect(bad)
    with pytest.raises(ModelLoadError, match="no such file"):
        inspect(tmp_path / "missing.tflite")


def test_truncated_model(tiny_models, tmp_path):
    cut = tmp_path / "cut.tflite"
    cut.write_bytes(tiny_models["int8"].read_bytes()[:200])
    with pytest.raises(ModelLoadError, match="truncated or corrupt"):
        inspect(cut)


def test_fit_arithmetic_and_device_choice():
    f = dev.fit(arena=100 * 1024, model_bytes=400 * 1024, devices=dev.get_devices(["m4-128k"]))[0]
    assert f.ram_needed == 124 * 1024 and f.ram_headroom == 4 * 1024
    assert f.flash_needed == 528 * 1024 and f.flash_headroom == -16 * 1024 and not f.fits
    esp = dev.fit(0, 0, dev.get_devices(["esp32-s3"]), ram_allowance=0, flash_allowance=0)[0]
    assert esp.ram_available == 512 * 1024 - dev.DEVICES["esp32-s3"].platform_ram
    with pytest.raises(ConfigError, match="unknown device class"):
        dev.get_devices(["cortex-m99"])
    for d in dev.DEVICES.values():  # every figure says where it comes from
        assert d.source and str(d.ram // 1024) in d.source


def test_resolver_method_names():
    assert resolver_method("CONV_2D") == "AddConv2D"
    assert resolver_method("MAX_POOL_2D") == "AddMaxPool2D"
    assert resolver_method("FULLY_CONNECTED") == "AddFullyConnected"
    assert resolver_method("DEPTHWISE_CONV_2D") == "AddDepthwiseConv2D"
    assert resolver_method("PADV2") == "AddPadV2"
    assert symbol_for(Path("edge-keras-int8.tflite")) == "edge_keras_int8"
    assert symbol_for(Path("9lives.tflite")) == "m_9lives"


@needs_tflm
def test_c_array_round_trip(tiny_models, tmp_path):
    model = tiny_models["int8"]
    data = model.read_bytes()
    header, source = write_c_array(model, tmp_path / "fw")
    assert header.name == "linear_test_int8.h" and source.name == "linear_test_int8.c"
    assert read_c_array(source) == data
    h = header.read_text()
    assert "#define LINEAR_TEST_INT8_LEN %du" % len(data) in h
    assert "#define LINEAR_TEST_INT8_INPUT_ZERO_POINT (-128)" in h
    assert "(resolver).AddReshape(); (resolver).AddFullyConnected();" in h
    arena = int(h.split("#define LINEAR_TEST_INT8_ARENA_SIZE ")[1].split("u")[0])
    assert arena > 0 and arena % 16 == 0
    assert "__attribute__((aligned(16)))" in source.read_text()
    # Nothing half-written left behind: fsutil's temp files are hidden `.NAME.xxxx` siblings.
    assert sorted(p.name for p in (tmp_path / "fw").iterdir()) == [source.name, header.name]


def test_c_array_with_a_given_arena_needs_no_tflite_micro(tiny_models, tmp_path):
    header, source = write_c_array(tiny_models["int8"], tmp_path, arena=1000)
    h = header.read_text()
    assert "#define LINEAR_TEST_INT8_ARENA_SIZE 1000u" in h
    assert len(read_c_array(source)) == tiny_models["int8"].stat().st_size


@pytest.mark.skipif(shutil.which("gcc") is None, reason="no C compiler")
def test_c_array_compiles_and_holds_the_bytes(tiny_models, tmp_path):
    data = tiny_models["int8"].read_bytes()
    header, source = write_c_array(tiny_models["int8"], tmp_path, name="g_model")
    main = tmp_path / "main.c"
    main.write_text("""\
#include <stdint.h>
#include <stdio.h>
#include "g_model.h"
int main(void) {
  uint32_t h = 2166136261u;
  for (unsigned i = 0; i < g_model_len; i++) h = (h ^ g_model[i]) * 16777619u;
  printf("%u %u %02x%02x%02x%02x%02x%02x%02x%02x %u %d %.9g %d %.9g %d\\n", g_model_len,
         G_MODEL_LEN, g_model[0], g_model[1], g_model[2], g_model[3], g_model[4], g_model[5],
         g_model[6], g_model[7], (unsigned)h, (int)((uintptr_t)g_model % 16),
         G_MODEL_INPUT_SCALE, G_MODEL_INPUT_ZERO_POINT, G_MODEL_OUTPUT_SCALE,
         G_MODEL_OUTPUT_ZERO_POINT);
  return 0;
}
""")
    h = 2166136261
    for byte in data:
        h = ((h ^ byte) * 16777619) & 0xFFFFFFFF
    report = inspect(tiny_models["int8"])
    builds = [["gcc", "-std=c99", "-Wall", "-Wextra", "-pedantic", "-Werror"]]
    if shutil.which("g++"):
        builds.append(["g++", "-std=c++11", "-Wall", "-Werror", "-x", "c++"])
    for cc in builds:
        exe = tmp_path / f"check-{cc[0]}"
        subprocess.run(cc + ["-o", str(exe), str(main), str(source)], check=True,
                       capture_output=True)
        out = subprocess.run([str(exe)], check=True, capture_output=True, text=True).stdout.split()
        assert out[:5] == [str(len(data)), str(len(data)), data[:8].hex(), str(h), "0"]
        assert float(out[5]) == pytest.approx(report.input.scale, rel=1e-7)
        assert int(out[6]) == report.input.zero_point
        assert float(out[7]) == pytest.approx(report.output.scale, rel=1e-7)
        assert int(out[8]) == report.output.zero_point


def test_cli_c_array_and_devices(tiny_models, tmp_path):
    r = subprocess.run([sys.executable, "-m", "mnistopt", "mcu", "c-array",
                        str(tiny_models["int8"]), "--out", str(tmp_path)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert read_c_array(tmp_path / "linear_test_int8.c") == tiny_models["int8"].read_bytes()
    r = subprocess.run([sys.executable, "-m", "mnistopt", "mcu", "devices", "--json"],
                       capture_output=True, text=True, check=True)
    assert {d["key"] for d in json.loads(r.stdout)["devices"]} == set(dev.DEVICES)
    r = subprocess.run([sys.executable, "-m", "mnistopt", "mcu", "c-array",
                        str(tiny_models["fp32"]), "--out", str(tmp_path / "no")],
                       capture_output=True, text=True)
    assert r.returncode == 2 and "int8" in r.stderr and not (tmp_path / "no").exists()


@needs_tflm
@pytest.mark.slow
def test_keras_int8_model_agrees_with_litert_on_real_mnist(tmp_path, mnist):
    """A real converter's int8 model (conv, pool, dense) on 1,000 MNIST test images."""
    import os

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(0)
    L = keras.layers
    model = keras.Sequential([keras.Input((28, 28, 1)), L.Conv2D(8, 3, activation="relu"),
                              L.MaxPool2D(), L.Conv2D(16, 3, activation="relu"), L.MaxPool2D(),
                              L.Flatten(), L.Dense(10)])
    x = mnist.x_train[:3000, ..., None].astype("float32") / 255
    model.compile(optimizer="adam", metrics=["accuracy"],
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, mnist.y_train[:3000], epochs=1, batch_size=64, verbose=0)
    model.export(str(tmp_path / "sm"), verbose=False)
    conv = tf.lite.TFLiteConverter.from_saved_model(str(tmp_path / "sm"))
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = lambda: ([x[i:i + 1]] for i in range(100))
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    conv.inference_input_type = conv.inference_output_type = tf.int8
    path = tmp_path / "small-keras-int8.tflite"
    path.write_bytes(conv.convert())
    r = evaluate(path, limit=1000, progress=False)
    assert r.accuracy == r.litert["accuracy"] and r.litert["agreement"] >= 0.999
    assert r.accuracy > 0.5 and r.arena_verified
    assert {"CONV_2D", "MAX_POOL_2D", "FULLY_CONNECTED"} <= set(r.ops)
    assert {f["device"]: f["fits"] for f in r.fits}["m4-64k"]


@needs_tflm
def test_bench_mcu_target_records(tiny_models, mnist, tmp_path):
    """Through the real registry: int8 runs on the 10,000 test images, float is not this
    target's to run (a row, not a failure); the device class in the spec limits the fit."""
    from mnistopt.targets import UNSUPPORTED, Settings, artifact_item, get_target

    real = tmp_path / "templates-int8.tflite"  # class means of real MNIST: ~80 % accurate
    real.write_bytes(build_linear_tflite(mnist.x_train[:5000], mnist.y_train[:5000]))
    items = [artifact_item(real), artifact_item(tiny_models["fp32"])]
    target = get_target("mcu:stm32l432kc")
    recs = target.run(items, Settings(progress=False))
    ok, bad = recs
    assert ok["n_images"] == 10_000 and ok["accuracy"] > 0.6 and ok["backend_label"] == "TFLite Micro"
    assert ok["latency"] == {} and ok["latency_source"] == "emulated"
    assert ok["mcu"]["arena_bytes"] > 0 and ok["mcu"]["litert"]["agreement"] >= 0.999
    assert "int8" in bad["error"] and "mcu" not in bad and bad["error_type"] == UNSUPPORTED
    assert [f["device"] for f in ok["mcu"]["fits"]] == ["m4-64k"] and target.failures(recs) == []
