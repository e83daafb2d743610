"""A small ONNX MNIST classifier built with onnx.helper, for the hostile-input tests: no
exporter, no training, a fraction of a second."""

import numpy as np
from onnx import TensorProto, helper, numpy_helper


def onnx_model(path, *, uint8_input=False, softmax=False, embedded=None):
    """784 -> 10 linear scores; uint8 input cast and scaled by 1/255 inside; softmax on top."""
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.normal(0, 0.05, (784, 10)).astype(np.float32), "w")
    shape = numpy_helper.from_array(np.array([-1, 784], np.int64), "shape")
    k = numpy_helper.from_array(np.array(1 / 255, np.float32), "k")
    nodes, x = [], "images"
    if uint8_input:
        nodes += [helper.make_node("Cast", [x], ["xf"], to=TensorProto.FLOAT),
                  helper.make_node("Mul", ["xf", "k"], ["x01"])]
        x = "x01"
    nodes += [helper.make_node("Reshape", [x, "shape"], ["flat"]),
              helper.make_node("MatMul", ["flat", "w"], ["scores" if softmax else "logits"])]
    if softmax:
        nodes.append(helper.make_node("Softmax", ["scores"], ["logits"], axis=1))
    dtype = TensorProto.UINT8 if uint8_input else TensorProto.FLOAT
    graph = helper.make_graph(
        nodes, "m", [helper.make_tensor_value_info("images", dtype, ["N", 1, 28, 28])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 10])], [w, shape, k])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    if embedded is not None:
        helper.set_model_props(model, {"mnistopt": embedded})
    import onnx

    onnx.save(model, str(path))
    return path
