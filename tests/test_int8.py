"""ONNX int8: the exact graph rewrites (tiny hand-built models, same outputs before and after),
the per-CPU choice of float convs (and of the TFLite files' float stem), the int8 file's integer
edges through the runtime, and the runtime's automatic threads."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from mnistopt.export import onnx_graph as G
from mnistopt.hw import parse_cpuinfo

RNG = np.random.default_rng(0)
ZEN4 = parse_cpuinfo("vendor_id : AuthenticAMD\ncpu family : 25\nmodel : 17\nmodel name : AMD EPYC\n"
                     "flags : avx2 fma avx512f avx512bw avx512_vnni\n", "x86_64")
AVX2 = parse_cpuinfo("vendor_id : AuthenticAMD\ncpu family : 23\nmodel : 49\nmodel name : AMD EPYC\n"
                     "flags : avx2 fma\n", "x86_64")
ARM = parse_cpuinfo("Features : fp asimd asimddp\nCPU implementer : 0x41\nCPU part : 0xd0c\n",
                    "aarch64")


def _w(*shape, scale=0.3):
    return (RNG.standard_normal(shape) * scale).astype(np.float32)


def _model(nodes, inits, in_shape, out_shape, name="m", in_type=TensorProto.FLOAT):
    g = helper.make_graph(nodes, name, [helper.make_tensor_value_info("input", in_type, in_shape)],
                          [helper.make_tensor_value_info("logits", TensorProto.FLOAT, out_shape)],
                          [numpy_helper.from_array(v, k) for k, v in inits.items()])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)])
    m.ir_version = 9
    onnx.checker.check_model(m)
    return m


def torch_like(pad1=0, c1=8):
    """Normalize (Sub, Div) -> conv1 (1 input channel) -> ReLU -> conv2 -> ReLU -> mean -> dense."""
    nodes = [helper.make_node("Sub", ["input", "mean"], ["s"]),
             helper.make_node("Div", ["s", "std"], ["d"]),
             helper.make_node("Conv", ["d", "w1", "b1"], ["c1"], kernel_shape=[3, 3], pads=[pad1] * 4),
             helper.make_node("Relu", ["c1"], ["r1"]),
             helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], kernel_shape=[3, 3]),
             helper.make_node("Relu", ["c2"], ["r2"]),
             helper.make_node("ReduceMean", ["r2", "axes"], ["m"], keepdims=1),
             helper.make_node("Reshape", ["m", "shape"], ["f"]),
             helper.make_node("Gemm", ["f", "wd", "bd"], ["logits"], transB=1)]
    inits = {"mean": np.array(0.1307, np.float32), "std": np.array(0.3081, np.float32),
             "w1": _w(c1, 1, 3, 3), "b1": _w(c1), "w2": _w(16, c1, 3, 3), "b2": _w(16),
             "axes": np.array([-1, -2], np.int64), "shape": np.array([-1, 16], np.int64),
             "wd": _w(10, 16), "bd": _w(10)}
    return _model(nodes, inits, ["N", 1, 28, 28], ["N", 10])


def tf2onnx_like():
    """NHWC input scaled (Mul, Add) before its Reshape to NCHW; NHWC mean at the end."""
    nodes = [helper.make_node("Mul", ["input", "a"], ["mul"]),
             helper.make_node("Add", ["mul", "b"], ["add"]),
             helper.make_node("Reshape", ["add", "nchw"], ["x"]),
             helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], kernel_shape=[3, 3]),
             helper.make_node("Relu", ["c1"], ["r1"]),
             helper.make_node("Transpose", ["r1"], ["t"], perm=[0, 2, 3, 1]),
             helper.make_node("ReduceMean", ["t", "axes"], ["m"], keepdims=0),
             helper.make_node("MatMul", ["m", "wd"], ["mm"]),
             helper.make_node("Add", ["mm", "bd"], ["logits"])]
    inits = {"a": np.array(3.2457, np.float32), "b": np.array(-0.4242, np.float32),
             "nchw": np.array([-1, 1, 28, 28], np.int64), "w1": _w(8, 1, 3, 3), "b1": _w(8),
             "axes": np.array([1, 2], np.int64), "wd": _w(8, 10), "bd": _w(10)}
    return _model(nodes, inits, ["N", 28, 28, 1], ["N", 10])


def run(model, x):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3
    s = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    return s.run(None, {s.get_inputs()[0].name: x})[0]


def pixels(n=4, shape=(1, 28, 28)):
    return (RNG.integers(0, 256, (n, *shape)) / 255).astype(np.float32)


def ops(model):
    return [n.op_type for n in model.graph.node]


def test_global_average_pool_and_fold_are_exact():
    m, x = torch_like(), pixels()
    ref = run(m, x)
    assert G.global_average_pool(m) == 1 and "ReduceMean" not in ops(m)
    assert G.fold_input_affine(m)
    assert ops(m)[:2] == ["Conv", "Relu"] and m.graph.node[0].input[0] == "input"
    onnx.checker.check_model(m)
    np.testing.assert_allclose(run(m, x), ref, rtol=1e-4, atol=1e-5)


def test_fold_refuses_a_padding_conv():
    m = torch_like(pad1=1)
    assert not G.fold_input_affine(m) and ops(m)[:2] == ["Sub", "Div"]


def test_tf2onnx_layout_hoist_and_nhwc_mean():
    m, x = tf2onnx_like(), pixels(shape=(28, 28, 1))
    ref = run(m, x)
    assert G.hoist_input_layout(m)
    assert ops(m)[:3] == ["Reshape", "Mul", "Add"] and m.graph.node[0].input[0] == "input"
    assert G.global_average_pool(m) == 1
    assert "Transpose" not in ops(m) and "GlobalAveragePool" in ops(m)
    assert G.fold_input_affine(m) and ops(m)[:2] == ["Reshape", "Conv"]
    onnx.checker.check_model(m)
    np.testing.assert_allclose(run(m, x), ref, rtol=1e-4, atol=1e-5)
    assert not G.hoist_input_layout(m)  # nothing left to move


def test_pad_input_channels_is_exact():
    m, x = torch_like(pad1=1, c1=6), pixels()
    ref = run(m, x)
    assert G.pad_input_channels(m, 4) == [m.graph.node[2].name]
    w = {t.name: numpy_helper.to_array(t) for t in m.graph.initializer}
    assert w[m.graph.node[2].input[1]].shape[0] == 8 and w[m.graph.node[4].input[1]].shape[1] == 8
    np.testing.assert_allclose(run(m, x), ref, rtol=1e-5, atol=1e-6)


def _qdq_edges():
    """input -Q(1/255, 0)-> DQ -> Conv -> Flatten -> Q -> DQ -> logits."""
    s_in, s_out = np.array(1 / 255, np.float32), np.array(0.05, np.float32)
    nodes = [helper.make_node("QuantizeLinear", ["input", "s_in", "z_in"], ["q"]),
             helper.make_node("DequantizeLinear", ["q", "s_in", "z_in"], ["dq"]),
             helper.make_node("Conv", ["dq", "w1", "b1"], ["c"], kernel_shape=[28, 28]),
             helper.make_node("Flatten", ["c"], ["f"]),
             helper.make_node("QuantizeLinear", ["f", "s_out", "z_out"], ["qo"]),
             helper.make_node("DequantizeLinear", ["qo", "s_out", "z_out"], ["logits"])]
    inits = {"s_in": s_in, "z_in": np.array(0, np.uint8), "w1": _w(10, 1, 28, 28, scale=0.01),
             "b1": _w(10), "s_out": s_out, "z_out": np.array(128, np.uint8)}
    return _model(nodes, inits, ["N", 1, 28, 28], ["N", 10])


def test_integer_pixel_input():
    m = _qdq_edges()
    raw = RNG.integers(0, 256, (3, 1, 28, 28)).astype(np.uint8)
    ref = run(m, raw.astype(np.float32) / 255)
    assert G.integer_pixel_input(m) == "uint8"
    assert ops(m)[0] == "DequantizeLinear" and m.graph.node[0].input[0] == "input"
    onnx.checker.check_model(m)
    np.testing.assert_allclose(run(m, raw), ref, atol=1e-6)


def test_integer_input_only_where_exact():
    m = _qdq_edges()
    m.graph.initializer[0].CopyFrom(numpy_helper.from_array(np.array(0.01, np.float32), "s_in"))
    assert G.integer_pixel_input(m) is None


def test_convsym_rule_per_cpu():
    from mnistopt.export.onnx_int8 import convsym_fits, depthwise_fits

    assert convsym_fits(1, 8, 3, ZEN4) == (False, "1 input channel, not a multiple of 4")
    assert convsym_fits(8, 16, 3, ZEN4)[0] and convsym_fits(16, 20, 3, ZEN4)[0]
    assert not convsym_fits(16, 20, 3, AVX2)[0]  # AVX2 kernels take multiples of 8
    assert "fewer than 16" in convsym_fits(8, 8, 3, ZEN4)[1]
    assert not convsym_fits(6, 16, 5, ZEN4)[0]
    assert not convsym_fits(1, 32, 3, ARM)[0] and convsym_fits(6, 16, 5, ARM)[0]
    assert depthwise_fits(32, 32, 32, ZEN4)[0] and not depthwise_fits(24, 24, 24, ZEN4)[0]
    assert depthwise_fits(24, 24, 24, ARM)[0] and "grouped" in depthwise_fits(2, 16, 16, ZEN4)[1]


def _tflite(ops, shapes):
    """A parsed-TFLite stand-in: ops [(name, [input tensors], [output tensors])], tensor shapes."""
    return SimpleNamespace(
        operators=[SimpleNamespace(name=n, inputs=tuple(i), outputs=tuple(o)) for n, i, o in ops],
        tensors=[SimpleNamespace(name=f"t{k}", shape=list(s)) for k, s in enumerate(shapes)])


def test_tflite_float_part_per_cpu_and_where_it_ends():
    from mnistopt.export.tflite_int8 import float_part, float_part_plan, op_scope

    assert float_part_plan(AVX2)[0] and "VNNI" in float_part_plan(AVX2)[1]
    assert float_part_plan(ZEN4) == (False, "") and float_part_plan(ARM) == (False, "")
    keep, why = float_part_plan(AVX2, full_int8=True)
    assert not keep and "full integer" in why
    # edge as litert-torch writes it: NCHW normalisation, reshape, the one-channel conv, more
    # convs with a pool between, then the dense head.
    edge = _tflite([("SUB", [0, 9], [1]), ("MUL", [1, 9], [2]), ("RESHAPE", [2], [3]),
                    ("DEPTHWISE_CONV_2D", [3, 9], [4]), ("MAX_POOL_2D", [4], [5]),
                    ("CONV_2D", [5, 9], [6]), ("MEAN", [6], [7]), ("FULLY_CONNECTED", [7, 9], [8])],
                   [(1, 1, 28, 28)] * 3 + [(1, 28, 28, 1), (1, 26, 26, 8), (1, 13, 13, 8),
                                           (1, 11, 11, 16), (1, 16), (1, 10), (9,)])
    assert float_part(edge) == [0, 1, 2, 3, 4, 5, 6, 7]  # a 9-weight head: all float
    big_head = _tflite([(n, i, o) for n, i, o in [
        ("CONV_2D", [0, 5], [1]), ("RESHAPE", [1], [2]), ("FULLY_CONNECTED", [2, 6], [3]),
        ("FULLY_CONNECTED", [3, 7], [4])]], [(1, 28, 28, 1), (1, 26, 26, 8), (1, 5408),
                                             (1, 128), (1, 10), (8, 3, 3, 1), (128, 5408), (10, 128)])
    assert float_part(big_head) == [0]  # float through the conv, the 692k-weight head int8
    # A net with no convolution (a dense-only head) has nothing to keep float.
    assert float_part(_tflite([("FULLY_CONNECTED", [0, 1], [2])], [(1, 784), (10, 784), (1, 10)])) == []
    assert op_scope(edge, 3) == "t4;"


def test_static_int8_keeps_the_first_conv_float(tmp_path):
    """The whole int8 path on a tiny model: first conv (1 input channel) float, the rest int8,
    close to the float model through the runtime."""
    from mnistopt.export.onnx_int8 import static_int8
    from mnistopt.runtime import load

    fp32 = tmp_path / "fp32.onnx"
    onnx.save(torch_like(), str(fp32))
    calib = RNG.integers(0, 256, (128, 28, 28)).astype(np.uint8)
    ctx = SimpleNamespace(cpu=ZEN4, calib=calib, calib_source="random", full_int8=False)
    path, settings, reason = static_int8(fp32, tmp_path, ctx)
    assert [c["cin"] for c in settings["float_convs"]] == [1] and "kept float" in reason
    assert settings["full_int8"] is False
    assert settings["reduce_range"] is False
    assert any("GlobalAveragePool" in r for r in settings["rewrites"])
    model = onnx.load(str(path))
    convs = [n for n in model.graph.node if n.op_type == "Conv"]
    init_names = {t.name for t in model.graph.initializer}
    assert convs[0].input[1] in init_names  # float weights: not behind a DequantizeLinear
    assert convs[1].input[1] not in init_names
    clf = load(path, threads=1)
    assert clf.input_spec["dtype"] == clf.output_spec["dtype"] == "float32"
    x = calib[:64]
    ref, got = run(onnx.load(str(fp32)), x[:, None].astype(np.float32) / 255), clf.logits(x)
    assert np.abs(got - ref).max() <= 0.1 * np.abs(ref).max()
    (tmp_path / "avx2").mkdir()
    _, avx2, why = static_int8(fp32, tmp_path / "avx2", SimpleNamespace(**{**vars(ctx), "cpu": AVX2}))
    assert avx2["reduce_range"] is True and "saturate" in why
    # Full integer: the one-channel conv is int8 too, and still close to the float model.
    (tmp_path / "full").mkdir()
    path, full, why = static_int8(fp32, tmp_path / "full", SimpleNamespace(**{**vars(ctx), "full_int8": True}))
    assert full["float_convs"] == [] and full["full_int8"] is True and "full integer" in why
    model = onnx.load(str(path))
    init_names = {t.name for t in model.graph.initializer}
    assert all(n.input[1] not in init_names for n in model.graph.node if n.op_type == "Conv")
    got = load(path, threads=1).logits(x)
    # One more quantized layer on a random net: a looser bound than the float-stem file's.
    assert np.abs(got - ref).max() <= 0.2 * np.abs(ref).max()


def test_runtime_threads_automatic_and_asked(tmp_path):
    from mnistopt.hw import physical_cores
    from mnistopt.runtime import load

    p = tmp_path / "m.onnx"
    onnx.save(torch_like(), str(p))
    auto = load(p)
    assert auto.backend.threads_for(1) == 1 and auto.backend.threads_for(256) == physical_cores()
    x = auto.prepare(np.zeros((20, 28, 28), np.uint8))
    np.testing.assert_allclose(auto.run_raw(x), load(p, threads=1).run_raw(x), rtol=1e-5)
    asked = load(p, threads=2)
    assert asked.threads == 2 and asked.backend.threads_for(1) == 2


def conv_flatten_dense(flatten="Flatten", dense="Gemm"):
    """conv (1 -> 16, 3x3) -> ReLU -> 2x2 max pool -> flatten (16 x 13 x 13) -> dense -> 10."""
    k = 16 * 13 * 13
    nodes = [helper.make_node("Conv", ["input", "w1", "b1"], ["c1"], kernel_shape=[3, 3], name="conv"),
             helper.make_node("Relu", ["c1"], ["r1"]),
             helper.make_node("MaxPool", ["r1"], ["p1"], kernel_shape=[2, 2], strides=[2, 2]),
             helper.make_node("Flatten", ["p1"], ["f"], axis=1, name="flat") if flatten == "Flatten"
             else helper.make_node("Reshape", ["p1", "shape"], ["f"], name="flat")]
    inits = {"w1": _w(16, 1, 3, 3), "b1": _w(16), "bd": _w(10)}
    if flatten != "Flatten":
        inits["shape"] = np.array([-1, k], np.int64)
    if dense == "Gemm":
        nodes.append(helper.make_node("Gemm", ["f", "wd", "bd"], ["logits"], transB=1))
        inits["wd"] = _w(10, k, scale=0.05)
    else:
        nodes += [helper.make_node("MatMul", ["f", "wd"], ["mm"]),
                  helper.make_node("Add", ["mm", "bd"], ["logits"])]
        inits["wd"] = _w(k, 10, scale=0.05)
    return _model(nodes, inits, ["N", 1, 28, 28], ["N", 10])


@pytest.mark.parametrize("flatten,dense", [("Flatten", "Gemm"), ("Reshape", "MatMul")])
def test_flatten_channels_last_is_exact_and_only_after_an_int8_conv(flatten, dense):
    m, x = conv_flatten_dense(flatten, dense), pixels()
    ref = run(m, x)
    assert G.flatten_channels_last(m, float_convs=["conv"]) == [] and "Transpose" not in ops(m)
    assert G.flatten_channels_last(m) == ["flat"]
    t = next(n for n in m.graph.node if n.op_type == "Transpose")
    assert list(t.attribute[0].ints) == [0, 2, 3, 1] and m.graph.node[ops(m).index(flatten)].input[0] == t.output[0]
    onnx.checker.check_model(m)
    np.testing.assert_allclose(run(m, x), ref, rtol=1e-4, atol=1e-5)
    assert G.flatten_channels_last(m) == []  # its input is now NHWC, not a conv stack's NCHW


def test_flatten_channels_last_lets_onnxruntime_drop_its_transpose(tmp_path):
    """Quantized, onnxruntime runs the conv and pool channels-last; before the rewrite it puts
    a Transpose back to NCHW ahead of the flatten, after it that Transpose and ours cancel."""
    import onnxruntime as ort
    from onnxruntime.quantization import CalibrationDataReader, QuantType, quantize_static

    x = pixels(8)

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.it = iter([{"input": x}])

        def get_next(self):
            return next(self.it, None)

    def transposes_after_optimizing(model, name):
        f, q, opt = tmp_path / f"{name}.onnx", tmp_path / f"{name}-q.onnx", tmp_path / f"{name}-opt.onnx"
        onnx.save(model, f)
        quantize_static(str(f), str(q), Reader(), activation_type=QuantType.QUInt8,
                        weight_type=QuantType.QInt8, per_channel=True,
                        extra_options={"WeightSymmetric": True})
        so = ort.SessionOptions()
        so.optimized_model_filepath = str(opt)
        s = ort.InferenceSession(str(q), so, providers=["CPUExecutionProvider"])
        out = s.run(None, {"input": x})[0]
        return sum(n.op_type == "Transpose" for n in onnx.load(opt).graph.node), out

    m = conv_flatten_dense()
    before, a = transposes_after_optimizing(m, "before")
    assert G.flatten_channels_last(m) == ["flat"]
    after, b = transposes_after_optimizing(m, "after")
    assert after == before - 1, (before, after)
    # Same scales, same integer products summed in another order: the same logits.
    np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-5)
