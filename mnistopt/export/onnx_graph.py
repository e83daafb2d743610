"""Exact rewrites of exported ONNX graphs, each a function `ModelProto -> what it did`.

They change how onnxruntime runs a model, never what it computes (up to float rounding):
- `hoist_input_layout`: tf2onnx's Reshape/Transpose after the input's scalar Mul/Add moves to
  the front, so the elementwise ops run on (N,1,28,28), not on (N,28,28,1) whose trailing 1
  sends onnxruntime's broadcast down a slow path;
- `global_average_pool`: ReduceMean over H and W -> GlobalAveragePool, which the quantizer turns
  into a QLinearGlobalAveragePool instead of leaving a float island inside the int8 graph;
- `fold_input_affine`: the input normalisation (x - mean) / std (or tf2onnx's x * a + b) folded
  into the first Conv's weights and bias, which is exact only when that Conv does not pad;
- `pad_input_channels`: zero filters appended to a Conv so the next Conv's input channels are a
  multiple of 4 (the extra channels are 0 after ReLU / MaxPool and meet zero weights);
- `flatten_channels_last`: a flatten of an int8 conv stack's output into a dense layer takes
  the NHWC order (a Transpose before it, the dense weights' rows permuted to match), so the
  Transpose back to NCHW that onnxruntime puts after its channels-last int8 ops cancels;
- `integer_pixel_input`: uint8 pixels in where the graph quantizes its [0, 1] input with scale
  1/255 and zero point 0 (the runtime maps uint8 pixels through a lookup table, or passes them).
  The logits stay float: the final DequantizeLinear costs less inside the graph than the
  runtime's dequantization of integer logits in numpy (edge int8 through mnistopt.runtime at
  batch 1: 0.85x its fp32 with float logits, 0.90x with uint8 ones).
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

_ELEMENTWISE = ("Sub", "Div", "Mul", "Add")
_LAYOUT = ("Reshape", "Transpose")


def _inits(model) -> dict:
    return {t.name: t for t in model.graph.initializer}


def _consumers(model, name: str) -> list:
    return [n for n in model.graph.node if name in n.input]


def _producer(model, name: str):
    return next((n for n in model.graph.node if name in n.output), None)


def _attr(node, name, default=None):
    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


def _scalar(model, name: str) -> float | None:
    """The value of a one-element constant input, else None."""
    t = _inits(model).get(name)
    if t is None:
        node = _producer(model, name)
        if node is None or node.op_type != "Constant":
            return None
        t = _attr(node, "value")
        if t is None:
            return None
    a = numpy_helper.to_array(t)
    return float(a.reshape(-1)[0]) if a.size == 1 else None


def _rename_input(model, old: str, new: str) -> None:
    for n in model.graph.node:
        n.input[:] = [new if i == old else i for i in n.input]


def _drop_value_info(model, names) -> None:
    keep = [v for v in model.graph.value_info if v.name not in set(names)]
    del model.graph.value_info[:]
    model.graph.value_info.extend(keep)


def _sole_consumer(model, name: str):
    users = _consumers(model, name)
    outs = {o.name for o in model.graph.output}
    return users[0] if len(users) == 1 and name not in outs else None


def input_chain(model) -> tuple[list, object]:
    """The scalar elementwise / layout nodes from the graph input up to the first Conv, and
    that Conv (None when the input does not reach a Conv through such nodes only)."""
    chain, t = [], model.graph.input[0].name
    while True:
        node = _sole_consumer(model, t)
        if node is None:
            return chain, None
        if node.op_type == "Conv" and node.input[0] == t:
            return chain, node
        if node.input[0] == t and (node.op_type in _LAYOUT or (
                node.op_type in _ELEMENTWISE and _scalar(model, node.input[1]) is not None)):
            chain.append(node)
            t = node.output[0]
            continue
        return chain, None


def hoist_input_layout(model) -> bool:
    """input -> scalar ops -> Reshape/Transpose becomes input -> Reshape/Transpose -> scalar ops."""
    chain, _ = input_chain(model)
    layout = next((i for i, n in enumerate(chain) if n.op_type in _LAYOUT), None)
    if not layout or any(n.op_type in _ELEMENTWISE for n in chain[layout + 1:]):
        return False  # no scalar op before the first layout op, or more after it
    head, move = chain[:layout], chain[layout]
    # What read the layout op's output now reads the last scalar op's; the first scalar op
    # reads the layout op's output, which reads the graph input.
    _rename_input(model, move.output[0], head[-1].output[0])
    head[0].input[0] = move.output[0]
    move.input[0] = model.graph.input[0].name
    _drop_value_info(model, [n.output[0] for n in chain])
    nodes = [n for n in model.graph.node if n is not move]
    at = nodes.index(head[0])
    del model.graph.node[:]
    model.graph.node.extend(nodes[:at] + [move] + nodes[at:])
    return True


def global_average_pool(model) -> int:
    """ReduceMean over the spatial axes -> GlobalAveragePool (+ a Reshape when keepdims=0).

    Handles NCHW (axes 2, 3: the torch exporter) and tf2onnx's Transpose(0,2,3,1) followed by
    a mean over axes 1, 2; returns how many were rewritten."""
    done = 0
    for node in list(model.graph.node):
        if node.op_type != "ReduceMean":
            continue
        axes = _attr(node, "axes")
        if axes is None and len(node.input) > 1 and node.input[1]:
            t = _inits(model).get(node.input[1])
            axes = None if t is None else numpy_helper.to_array(t).tolist()
        if axes is None:
            continue
        axes = sorted(int(a) % 4 for a in axes)
        keep = _attr(node, "keepdims", 1)
        src, drop = node.input[0], []
        if axes == [1, 2]:
            tr = _producer(model, src)
            if tr is None or tr.op_type != "Transpose" or list(_attr(tr, "perm", [])) != [0, 2, 3, 1] \
                    or _sole_consumer(model, src) is not node or keep:
                continue
            src, drop = tr.input[0], [tr]
        elif axes != [2, 3]:
            continue
        out = node.output[0]
        new = [helper.make_node("GlobalAveragePool", [src], [out if keep else out + "_gap"],
                                name=node.name + "_gap")]
        if not keep:
            shape = out + "_gap_shape"
            model.graph.initializer.append(numpy_helper.from_array(np.array([0, -1], np.int64), shape))
            new.append(helper.make_node("Reshape", [out + "_gap", shape], [out],
                                        name=node.name + "_flatten"))
        at = list(model.graph.node).index(node)
        for n in [node] + drop:
            model.graph.node.remove(n)
        at -= len(drop)
        for i, n in enumerate(new):
            model.graph.node.insert(at + i, n)
        _drop_value_info(model, [out] + [n.output[0] for n in drop])
        done += 1
    return done


def fold_input_affine(model) -> bool:
    """Fold the input's scalar ops (x - m) / s or x * a + b into the first Conv; True if done.

    conv(a*x + b) = conv_{a*W}(x) + b * sum(W), exactly, when the Conv adds no padding (padded
    zeros would stand for -b/a in the raw input)."""
    chain, conv = input_chain(model)
    ops = [n for n in chain if n.op_type in _ELEMENTWISE]
    if conv is None or not ops or any(p for p in (_attr(conv, "pads") or [])) \
            or _attr(conv, "auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET", b"VALID", "VALID"):
        return False
    inits = _inits(model)
    if conv.input[1] not in inits or (len(conv.input) > 2 and conv.input[2] not in inits):
        return False
    a, b = 1.0, 0.0
    for n in ops:
        c = _scalar(model, n.input[1])
        if n.op_type == "Sub":
            b -= c
        elif n.op_type == "Add":
            b += c
        elif n.op_type == "Mul":
            a, b = a * c, b * c
        elif c == 0:
            return False
        else:
            a, b = a / c, b / c
    w = numpy_helper.to_array(inits[conv.input[1]]).astype(np.float64)
    bias = (numpy_helper.to_array(inits[conv.input[2]]).astype(np.float64) if len(conv.input) > 2
            else np.zeros(w.shape[0]))
    w2, b2 = w * a, bias + b * w.sum(axis=(1, 2, 3))
    wn, bn = conv.input[1] + "_folded", conv.name + "_bias_folded"
    model.graph.initializer.extend([numpy_helper.from_array(w2.astype(np.float32), wn),
                                    numpy_helper.from_array(b2.astype(np.float32), bn)])
    # The layout ops stay (they now feed the Conv); the scalar ops go.
    src = model.graph.input[0].name
    for n in chain:
        if n.op_type in _ELEMENTWISE:
            _rename_input(model, n.output[0], n.input[0])
            model.graph.node.remove(n)
    conv.input[:] = [conv.input[0], wn, bn]
    _drop_value_info(model, [n.output[0] for n in chain])
    _prune_initializers(model)
    assert src == model.graph.input[0].name
    return True


def pad_input_channels(model, multiple: int = 4) -> list[str]:
    """Zero-pad the filters of each Conv whose output reaches another Conv only through ReLU /
    MaxPool, so that Conv's input channels become a multiple of `multiple`; names padded."""
    inits, padded = _inits(model), []
    for conv in [n for n in model.graph.node if n.op_type == "Conv"]:
        if conv.input[1] not in inits or _attr(conv, "group", 1) != 1:
            continue
        w = numpy_helper.to_array(inits[conv.input[1]])
        extra = (-w.shape[1]) % multiple
        if extra == 0 or w.shape[1] == 1:
            continue
        src = _producer(model, conv.input[0])
        while src is not None and src.op_type in ("Relu", "MaxPool") and \
                _sole_consumer(model, src.output[0]) is not None:
            src = _producer(model, src.input[0])
        if src is None or src.op_type != "Conv" or src.input[1] not in inits or \
                _attr(src, "group", 1) != 1 or (len(src.input) > 2 and src.input[2] not in inits):
            continue
        pw = numpy_helper.to_array(inits[src.input[1]])
        pb = (numpy_helper.to_array(inits[src.input[2]]) if len(src.input) > 2
              else np.zeros(pw.shape[0], pw.dtype))
        arrays = {
            src.input[1] + "_padded": np.concatenate([pw, np.zeros((extra,) + pw.shape[1:], pw.dtype)]),
            src.name + "_bias_padded": np.concatenate([pb, np.zeros(extra, pb.dtype)]),
            conv.input[1] + "_padded": np.concatenate(
                [w, np.zeros((w.shape[0], extra) + w.shape[2:], w.dtype)], axis=1),
        }
        for name, arr in arrays.items():
            model.graph.initializer.append(numpy_helper.from_array(arr, name))
        src.input[:] = [src.input[0], src.input[1] + "_padded", src.name + "_bias_padded"]
        conv.input[1] = conv.input[1] + "_padded"
        padded.append(src.name)
        inits = _inits(model)
    if padded:
        del model.graph.value_info[:]  # channel counts changed; shape inference redoes them
        _prune_initializers(model)
    return padded


def _flatten_source(model, name: str):
    """The Conv whose output reaches tensor `name` through ReLU / pooling only, else None."""
    node = _producer(model, name)
    while node is not None and node.op_type in ("Relu", "MaxPool", "AveragePool", "Clip"):
        node = _producer(model, node.input[0])
    return node if node is not None and node.op_type == "Conv" else None


def flatten_channels_last(model, float_convs=()) -> list[str]:
    """Conv -> (ReLU, pool) -> Flatten/Reshape (N, C*H*W) -> Gemm/MatMul with constant weights
    becomes ... -> Transpose (N, H, W, C) -> Flatten -> the same layer with its weights' input
    axis permuted from (c, h, w) to (h, w, c) order: the same products summed in another order.
    onnxruntime runs int8 convs and pools channels-last and puts a Transpose back to NCHW before
    the flatten; the added Transpose meets it and both go (seed, batch 256, Zen 3: 0.9-2.5 ms
    of 35-60 ms). Only where that conv is int8, not named in `float_convs`: after a float conv
    (NCHWc) the Transpose would be one pass more. Returns the flatten nodes rewritten."""
    from onnx import shape_inference

    shapes = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim]
              for v in shape_inference.infer_shapes(model).graph.value_info}
    inits, done = _inits(model), []
    for flat in [n for n in model.graph.node if n.op_type in ("Flatten", "Reshape")]:
        chw = shapes.get(flat.input[0], [])[1:]
        if len(chw) != 3 or not all(chw) or chw[1] * chw[2] == 1:
            continue
        if flat.op_type == "Flatten" and _attr(flat, "axis", 1) != 1:
            continue
        if flat.op_type == "Reshape" and shapes.get(flat.output[0], [])[1:] != [int(np.prod(chw))]:
            continue
        src, dense = _flatten_source(model, flat.input[0]), _sole_consumer(model, flat.output[0])
        if src is None or src.name in set(float_convs) or dense is None or \
                dense.input[0] != flat.output[0] or dense.input[1] not in inits:
            continue
        trans_b = dense.op_type == "Gemm" and _attr(dense, "transB", 0) == 1
        if dense.op_type not in ("Gemm", "MatMul") or _attr(dense, "transA", 0):
            continue
        w = numpy_helper.to_array(inits[dense.input[1]])
        w = w if trans_b else w.T  # (out, C*H*W)
        w = w.reshape((len(w), *chw)).transpose(0, 2, 3, 1).reshape(len(w), -1)
        wname = dense.input[1] + "_nhwc"
        model.graph.initializer.append(numpy_helper.from_array(
            np.ascontiguousarray(w if trans_b else w.T), wname))
        dense.input[1] = wname
        nhwc = flat.input[0] + "_nhwc"
        tr = helper.make_node("Transpose", [flat.input[0]], [nhwc], perm=[0, 2, 3, 1],
                              name=f"{flat.name or flat.output[0]}_nhwc")
        flat.input[0] = nhwc
        model.graph.node.insert(list(model.graph.node).index(flat), tr)
        done.append(flat.name or flat.output[0])
    if done:
        _prune_initializers(model)
    return done


def integer_pixel_input(model, pixel_scale: float = 1 / 255) -> str | None:
    """Float input in [0, 1] that is first quantized with scale 1/255 and zero point 0 (layout
    ops in between allowed) -> the quantized tensor becomes the input: uint8 pixels, exactly.
    Returns the new input dtype name, or None when the graph's input is not quantized so."""
    inp = model.graph.input[0]
    t, layout = inp.name, []
    while True:
        node = _sole_consumer(model, t)
        if node is not None and node.op_type in _LAYOUT:
            layout.append(node)
            t = node.output[0]
            continue
        break
    if node is None or node.op_type != "QuantizeLinear" or len(node.input) < 3:
        return None
    scale, zp = _scalar(model, node.input[1]), _scalar(model, node.input[2])
    if scale is None or zp != 0 or abs(scale - pixel_scale) > 1e-6 * pixel_scale:
        return None
    zp_init = _inits(model).get(node.input[2])
    if zp_init is None or zp_init.data_type != onnx.TensorProto.UINT8:
        return None
    zp_type = zp_init.data_type
    # Layout ops run on the integer pixels instead; the QuantizeLinear goes.
    _rename_input(model, node.output[0], t)
    model.graph.node.remove(node)
    inp.type.tensor_type.elem_type = zp_type
    _drop_value_info(model, [n.output[0] for n in layout] + [node.output[0]])
    _prune_initializers(model)
    return "uint8"


def _prune_initializers(model) -> None:
    used = {i for n in model.graph.node for i in n.input}
    used |= {o.name for o in model.graph.output}
    keep = [t for t in model.graph.initializer if t.name in used]
    del model.graph.initializer[:]
    model.graph.initializer.extend(keep)
