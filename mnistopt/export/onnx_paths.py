"""ONNX: torch (dynamo exporter) or keras / tf (tf2onnx from the SavedModel), then quantize.

Every file has one input ``input`` (float32 pixels / 255, dynamic batch) and one float32 output
``logits``. int8 files (`onnx_int8`) may take uint8 pixels where that is exact.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import onnx

from ..errors import ConfigError, ExportError
from .onnx_int8 import int8_preset  # noqa: F401  (the int8 settings for a CPU)

INPUT, OUTPUT = "input", "logits"


# --- fp32 ---------------------------------------------------------------------------------

def convert(run, workdir: Path, ctx) -> Path:
    """The fp32 ONNX file for `run`, in `workdir`."""
    out = workdir / "fp32.onnx"
    if run.framework == "torch":
        model = _from_torch(run, ctx.opset)
    else:
        model = _from_saved_model(_saved_model_dir(run, workdir), ctx.opset)
    _rename_io(model)
    try:
        onnx.checker.check_model(model, full_check=True)
    except onnx.checker.ValidationError as exc:
        raise ExportError(f"the converted ONNX model is invalid: {exc}") from None
    onnx.save_model(model, str(out))
    return out


def _from_torch(run, opset: int) -> onnx.ModelProto:
    import logging

    import torch

    # The dynamo exporter warns once per torchvision operator it cannot register when
    # torchvision is absent (this project never installs it); failures still raise.
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)

    model = run.model.eval()
    # A batch of 2, not 1: a batch-1 example lets the exporter specialise the batch dim away.
    example = torch.zeros(2, 1, 28, 28)
    batch = torch.export.Dim("batch", min=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            program = torch.onnx.export(model, (example,), None, dynamo=True,
                                        input_names=[INPUT], output_names=[OUTPUT],
                                        dynamic_shapes=({0: batch},), opset_version=opset,
                                        external_data=False, verbose=False)
        except Exception as exc:
            raise ExportError(f"torch.onnx.export failed for {run.path}: {exc}") from None
    program.optimize()
    return program.model_proto


def _saved_model_dir(run, workdir: Path) -> Path:
    """A SavedModel of `run.model` (rebuilt from the arch and its weights), written here: the
    one in a tf run directory is never read, since serving it runs whatever graph it holds."""
    sm = workdir / "saved_model"
    if sm.exists():
        return sm
    if run.framework == "tf":
        import tensorflow as tf

        tf.saved_model.save(run.model, str(sm), signatures={"serving_default": run.model.serve})
        return sm
    import contextlib
    import io

    # Keras prints the endpoint summary on stdout; the CLI's --json output must stay clean.
    with contextlib.redirect_stdout(io.StringIO()):
        run.model.export(str(sm), format="tf_saved_model", verbose=False)
    return sm


def _from_saved_model(sm_dir: Path, opset: int) -> onnx.ModelProto:
    import logging

    import tensorflow as tf
    import tf2onnx

    logging.getLogger("tf2onnx").setLevel(logging.ERROR)  # per-op INFO lines drown the report
    loaded = tf.saved_model.load(str(sm_dir))  # keep a reference: `sig` needs its variables
    sig = loaded.signatures["serving_default"]
    (arg, spec), = sig.structured_input_signature[1].items()
    out_key = next(iter(sig.structured_outputs))
    spec = tf.TensorSpec([None, *spec.shape[1:]], tf.float32, name=INPUT)

    # tf2onnx.convert.from_keras breaks on Keras 3; a tf.function over the serving signature
    # with an explicit input signature works for both Keras and plain-TF runs.
    @tf.function(input_signature=[spec])
    def serve(x):
        return loaded.signatures["serving_default"](**{arg: x})[out_key]

    try:
        model, _ = tf2onnx.convert.from_function(serve, input_signature=[spec], opset=opset)
    except Exception as exc:
        raise ExportError(f"tf2onnx failed on {sm_dir}: {exc}") from None
    from .onnx_graph import hoist_input_layout

    # tf2onnx scales the NHWC input before reshaping it to NCHW; onnxruntime's broadcast of a
    # scalar over a trailing dimension of 1 is 3x slower than over (N,1,28,28) (~15 µs a call).
    hoist_input_layout(model)
    return model


def _rename_io(model: onnx.ModelProto) -> None:
    """One input named ``input`` and one output named ``logits``, whatever the exporter chose."""
    g = model.graph
    if len(g.input) != 1 or len(g.output) != 1:
        raise ExportError(f"expected one input and one output, got {len(g.input)} and {len(g.output)}")
    for old, new in ((g.input[0].name, INPUT), (g.output[0].name, OUTPUT)):
        if old == new:
            continue
        for node in g.node:
            node.input[:] = [new if n == old else n for n in node.input]
            node.output[:] = [new if n == old else n for n in node.output]
        for v in (*g.input, *g.output, *g.value_info):
            if v.name == old:
                v.name = new


# --- quantized variants ---------------------------------------------------------------------

def quantize(run, fp32: Path, mode: str, workdir: Path, ctx) -> tuple[Path, dict, str]:
    """(file, settings, reason) for `mode` in dynamic | int8 | fp16; the same for every run."""
    if mode == "int8":
        return _static_int8(fp32, workdir, ctx)
    if mode == "dynamic":
        return _dynamic(fp32, workdir)
    if mode == "fp16":
        return _fp16(fp32, workdir)
    raise ConfigError(f"ONNX has no quantize mode '{mode}'")


def _pre_process(fp32: Path, workdir: Path) -> Path:
    from onnxruntime.quantization.shape_inference import quant_pre_process

    pre = workdir / "fp32-pre.onnx"
    if not pre.exists():
        # Symbolic shape inference + ORT's graph optimisations (constant folding, Conv fusion)
        # before quantizing, as onnxruntime recommends.
        quant_pre_process(str(fp32), str(pre), skip_symbolic_shape=False)
    return pre


def _static_int8(fp32: Path, workdir: Path, ctx) -> tuple[Path, dict, str]:
    from .onnx_int8 import static_int8

    return static_int8(fp32, workdir, ctx)


def _dynamic(fp32: Path, workdir: Path) -> tuple[Path, dict, str]:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    pre = _gemm_to_matmul(_pre_process(fp32, workdir), workdir)
    out = workdir / "dynamic.onnx"
    # Only MatMul: onnxruntime's ConvInteger takes uint8 weights alone and runs slower than
    # the float Conv it replaces; the dense layers hold nearly all weights anyway.
    quantize_dynamic(str(pre), str(out), weight_type=QuantType.QInt8, per_channel=True,
                     op_types_to_quantize=["MatMul"])
    settings = {"method": "quantize_dynamic", "weight_type": "int8", "per_channel": True,
                "op_types": ["MatMul"], "activations": "uint8, scale computed per batch at run time"}
    return out, settings, ("int8 weights of the dense layers (MatMulInteger), activations "
                           "quantized on the fly; convolutions stay float32")


def _gemm_to_matmul(path: Path, workdir: Path) -> Path:
    """Gemm(x, W, b) -> MatMul + Add, so quantize_dynamic (which knows MatMul only) sees it."""
    from onnx import numpy_helper

    model = onnx.load(str(path))
    g = model.graph
    inits = {t.name: t for t in g.initializer}
    nodes = []
    for node in g.node:
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        if (node.op_type != "Gemm" or node.input[1] not in inits or attrs.get("transA", 0)
                or attrs.get("alpha", 1.0) != 1.0 or attrs.get("beta", 1.0) != 1.0):
            nodes.append(node)
            continue
        w = numpy_helper.to_array(inits[node.input[1]])
        if attrs.get("transB", 0):
            w = w.T
        wname = node.input[1] + "_matmul"
        g.initializer.append(numpy_helper.from_array(np.ascontiguousarray(w), wname))
        mm_out = node.output[0] + ("_mm" if len(node.input) > 2 else "")
        nodes.append(onnx.helper.make_node("MatMul", [node.input[0], wname], [mm_out],
                                           name=node.name + "_matmul"))
        if len(node.input) > 2:
            nodes.append(onnx.helper.make_node("Add", [mm_out, node.input[2]], [node.output[0]],
                                               name=node.name + "_add"))
    del g.node[:]
    g.node.extend(nodes)
    used = {i for n in g.node for i in n.input}
    keep = [t for t in g.initializer if t.name in used]
    del g.initializer[:]
    g.initializer.extend(keep)
    out = workdir / "fp32-matmul.onnx"
    onnx.save_model(model, str(out))
    return out


def _fp16(fp32: Path, workdir: Path) -> tuple[Path, dict, str]:
    """float16 weights and arithmetic inside, float32 input and output (keep_io_types)."""
    from onnx import TensorProto, helper, numpy_helper

    model = onnx.load(str(fp32))
    g = model.graph

    def half(t):
        if t.data_type != TensorProto.FLOAT:
            return t
        a = numpy_helper.to_array(t)
        # Clip so a huge float32 weight becomes the largest float16, not inf.
        h = numpy_helper.from_array(np.clip(a, -65504, 65504).astype(np.float16), t.name)
        return h

    for i, t in enumerate(list(g.initializer)):
        g.initializer[i].CopyFrom(half(t))
    for node in g.node:
        for a in node.attribute:
            if a.type == onnx.AttributeProto.TENSOR:
                a.t.CopyFrom(half(a.t))
            if node.op_type == "Cast" and a.name == "to" and a.i == TensorProto.FLOAT:
                a.i = TensorProto.FLOAT16
    # float32 in -> Cast -> float16 graph -> Cast -> float32 out
    for node in g.node:
        node.input[:] = [INPUT + "_fp16" if n == INPUT else n for n in node.input]
        node.output[:] = [OUTPUT + "_fp16" if n == OUTPUT else n for n in node.output]
    g.node.insert(0, helper.make_node("Cast", [INPUT], [INPUT + "_fp16"], to=TensorProto.FLOAT16,
                                      name="input_to_fp16"))
    g.node.append(helper.make_node("Cast", [OUTPUT + "_fp16"], [OUTPUT], to=TensorProto.FLOAT,
                                   name="logits_to_fp32"))
    del g.value_info[:]  # stale float32 types; shape inference recomputes them
    model = onnx.shape_inference.infer_shapes(model)
    onnx.checker.check_model(model)
    out = workdir / "fp16.onnx"
    onnx.save_model(model, str(out))
    return out, {"method": "mnistopt float16 conversion", "keep_io_types": True}, \
        "float16 weights and activations inside, float32 I/O: half the size; fast where the " \
        "runtime has fp16 kernels (GPU, ARMv8.2), elsewhere onnxruntime casts back to float32"


# --- metadata -------------------------------------------------------------------------------

def embed(src: Path, dst: Path, meta: dict) -> None:
    """Write `src` to `dst` with `meta` in metadata_props["mnistopt"]."""
    model = onnx.load(str(src))
    props = [p for p in model.metadata_props if p.key != "mnistopt"]
    del model.metadata_props[:]
    model.metadata_props.extend(props)
    model.metadata_props.add(key="mnistopt", value=json.dumps(meta, sort_keys=True))
    model.producer_name = "mnistopt"
    onnx.save_model(model, str(dst))


def read_embedded(path: Path) -> dict | None:
    model = onnx.load(str(path), load_external_data=False)
    for p in model.metadata_props:
        if p.key == "mnistopt":
            return json.loads(p.value)
    return None


def tools(framework: str) -> dict:
    import onnxruntime

    v = {"onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__}
    if framework == "torch":
        import onnxscript
        import torch

        v.update(torch=torch.__version__, onnxscript=onnxscript.__version__)
    else:
        import tensorflow as tf
        import tf2onnx

        v.update(tensorflow=tf.__version__, tf2onnx=tf2onnx.__version__)
        if framework == "keras":
            import keras

            v["keras"] = keras.__version__
    return v
