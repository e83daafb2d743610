"""TFLite: keras / tf through the SavedModel and TFLiteConverter; torch through litert-torch.

keras / tf files take NHWC float32 pixels / 255 with a free batch dim; full-int8 files take
int8 in and give int8 out (scale 1/255, zero point -128 in: the pixel byte minus 128).
torch files keep PyTorch's NCHW layout and, since litert-torch 0.10 cannot export a dynamic
batch, a fixed batch: 1, or N with `export(batch=N)` (one call per N images: edge int8 at 256
images ran 1.26-1.33x the throughput of 256 batch-1 calls); their quantized variants come
from ai-edge-quantizer (the PT2E int8 path in litert-torch fails on small ConvNets,
litert-torch #752). Before litert-torch sees a torch model, exact rewrites for XNNPACK's
kernels are applied (`torch_rewrite`: LeNet-5's one-channel stem as a space-to-depth conv),
recorded in the metadata's `graph` lines.
"""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

import numpy as np

from ..errors import ConfigError, ExportError
from .tflite_meta import embed, read_embedded  # noqa: F401  (ExportPath's metadata pair)

# Bytes per weight, by mode: a file much smaller than params * this kept its weights as
# variables (seen with TFLiteConverter on a bare concrete function: a 7 KB file, 5x slower).
_BYTES_PER_WEIGHT = {"none": 4, "fp16": 2, "dynamic": 1, "int8": 1}


def convert(run, workdir: Path, ctx) -> Path:
    if run.framework == "torch":
        return _torch_fp32(run, workdir, ctx.batch, ctx.graph)
    return _from_saved_model(run, _saved_model_dir(run, workdir), "none", workdir, ctx)


def _saved_model_dir(run, workdir: Path) -> Path:
    from .onnx_paths import _saved_model_dir  # the one Keras -> SavedModel step, shared

    return _saved_model_dir(run, workdir)


def quantize(run, fp32: Path, mode: str, workdir: Path, ctx) -> tuple[Path, dict, str]:
    if run.framework == "torch":
        return _aeq(run, fp32, mode, workdir, ctx)
    # The SavedModel convert() used (a Keras run's export sits in workdir already).
    path = _from_saved_model(run, _saved_model_dir(run, workdir), mode, workdir, ctx)
    settings, reason = _TF_SETTINGS[mode]
    settings = dict(settings)
    if mode == "int8":
        settings.update(calibration_samples=int(len(ctx.calib)), calibration_source=ctx.calib_source)
    return path, settings, reason


_TF_SETTINGS = {
    "dynamic": ({"converter": "TFLiteConverter", "optimizations": ["DEFAULT"],
                 "weights": "int8", "activations": "float32, quantized on the fly per batch"},
                "dynamic-range: int8 weights, float activations quantized at run time; no "
                "calibration needed"),
    "fp16": ({"converter": "TFLiteConverter", "optimizations": ["DEFAULT"],
              "supported_types": ["float16"]},
             "float16 weights (half the size); GPU delegates compute in fp16, CPUs dequantize "
             "to float32"),
    "int8": ({"converter": "TFLiteConverter", "optimizations": ["DEFAULT"],
              "supported_ops": ["TFLITE_BUILTINS_INT8"], "inference_input_type": "int8",
              "inference_output_type": "int8", "per_channel": True, "full_int8": True},
             "full-integer: int8 weights (per channel) and activations calibrated on training "
             "images, int8 I/O so integer-only accelerators (Edge TPU, MCUs, NPUs) run it whole"),
}


def _from_saved_model(run, sm: Path, mode: str, workdir: Path, ctx) -> Path:
    import tensorflow as tf

    conv = tf.lite.TFLiteConverter.from_saved_model(str(sm), signature_keys=["serving_default"])
    if mode != "none":
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
    if mode == "fp16":
        conv.target_spec.supported_types = [tf.float16]
    elif mode == "int8":
        x = ctx.calib.astype(np.float32)[..., None] / 255.0  # NHWC, [0, 1]

        def representative():
            for i in range(len(x)):
                yield [x[i:i + 1]]

        conv.representative_dataset = representative
        conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        conv.inference_input_type = tf.int8
        conv.inference_output_type = tf.int8
    try:
        with _quiet():
            data = conv.convert()
    except Exception as exc:
        raise ExportError(f"TFLiteConverter failed on {sm} ({mode}): {exc}") from None
    out = workdir / f"{mode}.tflite"
    out.write_bytes(data)
    _check_size(out, mode, run)
    return out


@contextlib.contextmanager
def _quiet():
    """The converters' and quantizer's own output off the terminal: what they print (endpoint
    summaries, a calibration progress bar), their Python warnings, their native log lines.
    Failures still raise; their messages go into the ExportError."""
    import warnings

    from ..tfquiet import quiet_stderr

    # quiet_stderr outermost: native lines it keeps are written back after sys.stderr is restored.
    with quiet_stderr(), contextlib.redirect_stdout(io.StringIO()), \
            contextlib.redirect_stderr(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def _check_size(path: Path, mode: str, run) -> None:
    params = run.metrics.get("params")
    if params and path.stat().st_size < 0.8 * params * _BYTES_PER_WEIGHT[mode]:
        raise ExportError(f"{path.name} is {path.stat().st_size} bytes for {params} parameters: "
                          "the weights were not folded into constants")


# --- torch ---------------------------------------------------------------------------------

def _torch_fp32(run, workdir: Path, batch: int = 1, notes: list | None = None) -> Path:
    import torch

    import litert_torch

    from .torch_rewrite import space_to_depth_stem

    out = workdir / "none.tflite"
    # Exact, checked on images in [0, 1] (the rewrite is a reorganisation, not data-dependent).
    sample = np.random.default_rng(0).random((64, 1, 28, 28), dtype=np.float32)
    model, note = space_to_depth_stem(run.model.eval(), sample)
    if note and notes is not None:
        notes.append(note)
    # A fixed batch: litert-torch 0.10 fails (AssertionError) on a dynamic batch dim.
    try:
        with _quiet():
            edge = litert_torch.convert(model, (torch.zeros(batch, 1, 28, 28),))
            edge.export(str(out))
    except Exception as exc:
        raise ExportError(f"litert-torch failed to convert {run.path}: {exc}") from None
    return out


def _aeq(run, fp32: Path, mode: str, workdir: Path, ctx) -> tuple[Path, dict, str]:
    """Quantize a float .tflite with ai-edge-quantizer."""
    from ai_edge_quantizer import qtyping, quantizer, recipe

    q = quantizer.Quantizer(str(fp32))
    if mode == "int8":
        q.load_quantization_recipe(recipe.static_wi8_ai8())
        settings = {"tool": "ai-edge-quantizer", "recipe": "static_wi8_ai8",
                    "weights": "int8 per channel", "activations": "int8, calibrated",
                    "calibration_samples": int(len(ctx.calib)),
                    "calibration_source": ctx.calib_source}
        names, why, io = _float_part(q, fp32, ctx)
        settings["float_ops"], settings["full_int8"] = names, not names
        if names:
            settings["activations"] = (
                "float throughout: the dense head is too small to repay a quantize"
                if io == "float" else "float through the last convolution, int8 after it (calibrated)")
        reason = ("int8 weights" + ("" if names else " and activations") + " via ai-edge-quantizer "
                  "(litert-torch's PT2E int8 path fails on small ConvNets, #752); "
                  + ("int8 in and out, on the scales the file records" if io == "int8" else
                     "float in, int8 out" if io == "float-int8" else "float in and out"))
        if why:
            reason += f"; {why}"
    elif mode == "dynamic":
        q.load_quantization_recipe(recipe.dynamic_wi8_afp32())
        settings = {"tool": "ai-edge-quantizer", "recipe": "dynamic_wi8_afp32"}
        reason = "dynamic-range: int8 weights, float activations quantized at run time"
    elif mode == "fp16":
        q.update_quantization_recipe(
            regex=".*", operation_name=qtyping.TFLOperationName.ALL_SUPPORTED,
            algorithm_key=quantizer.AlgorithmName.FLOAT_CASTING,
            op_config=qtyping.OpQuantizationConfig(
                weight_tensor_config=qtyping.TensorQuantizationConfig(
                    num_bits=16, dtype=qtyping.TensorDataType.FLOAT),
                compute_precision=qtyping.ComputePrecision.FLOAT, explicit_dequantize=True))
        settings = {"tool": "ai-edge-quantizer", "algorithm": "float_casting", "weights": "float16"}
        reason = "float16 weights (half the size), dequantized to float32 for compute"
    else:
        raise ConfigError(f"TFLite has no quantize mode '{mode}'")
    try:
        with _quiet():
            if q.need_calibration:
                x = ctx.calib.astype(np.float32)[:, None] / 255.0  # NCHW, the file's batch
                (name,) = _signature_inputs(fp32)
                b = ctx.batch
                calib = q.calibrate({"serving_default": [{name: x[i:i + b]}
                                                         for i in range(0, len(x) - b + 1, b)]})
                result = q.quantize(calib)
            else:
                result = q.quantize()
    except Exception as exc:
        raise ExportError(f"ai-edge-quantizer failed ({mode}) on {fp32.name}: {exc}") from None
    out = workdir / f"{mode}.tflite"
    out.write_bytes(bytes(result.quantized_model))
    _check_size(out, mode, run)
    return out, settings, reason


def _float_part(q, fp32: Path, ctx) -> tuple[list[str], str, str]:
    """Compute the ops through the last convolution (or all) in float where the CPU wants it
    (`tflite_int8`): the layers from int8 weights, the ops between them unquantized.
    (those ops' names, why, the file's input/output: "int8", "float-int8" or "float")."""
    from ai_edge_quantizer import qtyping, quantizer

    from ..hw import cpu_info
    from ..runtime.flatbuf import read_tflite
    from .tflite_int8 import WEIGHTED, float_part, float_part_plan, op_scope

    wanted, why = float_part_plan(ctx.cpu or cpu_info(), ctx.full_int8)
    if not wanted:
        return [], why, "int8"
    weights_only = qtyping.OpQuantizationConfig(
        weight_tensor_config=qtyping.TensorQuantizationConfig(
            num_bits=8, symmetric=True, granularity=qtyping.QuantGranularity.CHANNELWISE,
            dtype=qtyping.TensorDataType.INT),
        compute_precision=qtyping.ComputePrecision.FLOAT, explicit_dequantize=True)
    model = read_tflite(fp32.read_bytes(), str(fp32))
    part = float_part(model)
    for i in part:
        name = model.operators[i].name
        if not hasattr(qtyping.TFLOperationName, name):  # the others it never quantizes
            continue
        # The latest matching entry wins over the recipe's catch-all.
        scope, op = f"^{re.escape(op_scope(model, i))}$", getattr(qtyping.TFLOperationName, name)
        if name in WEIGHTED:
            q.update_quantization_recipe(regex=scope, operation_name=op, op_config=weights_only,
                                         algorithm_key=quantizer.AlgorithmName.MIN_MAX_UNIFORM_QUANT)
        else:
            q.update_quantization_recipe(regex=scope, operation_name=op,
                                         algorithm_key=quantizer.AlgorithmName.NO_QUANTIZE)
    if not part:
        return [], "", "int8"  # no convolution: nothing this plan keeps float
    # The float part starts at the input: an int8 input would only be dequantized again.
    ends = ["INPUT"] + (["OUTPUT"] if len(part) == len(model.operators) else [])
    for end in ends:
        q.update_quantization_recipe(regex=".*", operation_name=getattr(qtyping.TFLOperationName, end),
                                     algorithm_key=quantizer.AlgorithmName.NO_QUANTIZE)
    names = [model.operators[i].name for i in part]
    why += ("; its dense head is too small to repay a quantize, so the file computes in float "
            "throughout" if len(ends) == 2 else " and the file quantizes after them")
    return names, f"{why} ({', '.join(names)})", "float" if len(ends) == 2 else "float-int8"


def _signature_inputs(path: Path) -> list[str]:
    from ..runtime.flatbuf import read_tflite

    return read_tflite(Path(path).read_bytes(), str(path)).signatures["serving_default"]["inputs"]


def tools(framework: str) -> dict:
    import ai_edge_litert

    v = {"ai_edge_litert": getattr(ai_edge_litert, "__version__", "unknown")}
    if framework == "torch":
        import ai_edge_quantizer  # noqa: F401
        import litert_torch
        import torch
        from importlib.metadata import version

        v.update(torch=torch.__version__, litert_torch=litert_torch.__version__,
                 ai_edge_quantizer=version("ai-edge-quantizer"))
    else:
        import tensorflow as tf

        v["tensorflow"] = tf.__version__
        if framework == "keras":
            import keras

            v["keras"] = keras.__version__
    return v
