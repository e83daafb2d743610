"""ONNX int8 for onnxruntime's CPU kernels: quantize_static plus the graph choices that decide
whether the file is faster than its float twin, each picked from the target CPU's flags.

What decides it (onnxruntime's MLAS, measured on the models here):
- A QLinearConv runs the fast symmetric indirect-conv kernel ("ConvSym") only when its weights
  are symmetric and its channel counts fit the kernel (`convsym_fits`); any other int8 conv
  goes through im2col + a generic int8 GEMM + a requantize pass and is slower than the float
  conv it replaced (the one-input-channel first conv: 4x slower on AVX-512 VNNI). Such convs
  stay float; the float first conv keeps its dedicated one-channel NCHWc kernel.
- U8S8 (uint8 activations, int8 weights) per channel, weights symmetric. Never U8U8 (no
  u8 x u8 dot product: 1.8x slower); not S8S8 on x86 (it runs as U8S8 and leaves convs unfused).
- reduce_range (7-bit weights) only without VNNI, where vpmaddubsw sums u8*s8 pairs into int16.
- The exact rewrites of `onnx_graph` around it: mean -> GlobalAveragePool, the input
  normalisation folded into a conv that does not pad, channels padded to a multiple of 4,
  uint8 pixels in where the input is quantized exactly so.
- `full_int8` (Context): every conv int8, for integer-only targets, whatever the speed.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx

from . import onnx_graph as G

INPUT = "input"


def int8_preset(cpu=None) -> tuple[dict, str]:
    """onnxruntime int8 settings for this CPU (or `cpu`), and why, in one line."""
    from ..hw import cpu_info

    cpu = cpu or cpu_info()
    base = {"format": "QDQ", "activation_type": "uint8", "weight_type": "int8",
            "per_channel": True, "calibrate_method": "MinMax",
            "cpu": cpu.model, "cpu_int8_flags": cpu.int8_flags()}
    if cpu.is_x86 and cpu.vnni:
        return ({**base, "reduce_range": False},
                "U8S8: VNNI (vpdpbusd) accumulates u8*s8 in int32, nothing saturates; full 8-bit weights")
    if cpu.is_arm:
        why = ("the dot-product (sdot/udot) kernels accumulate in int32" if cpu.arm_dotprod
               else "the NEON kernels widen to int16 products before accumulating")
        return {**base, "reduce_range": False}, f"U8S8: on ARM {why}, no saturation; full 8-bit weights"
    return ({**base, "reduce_range": True},
            "U8S8 with 7-bit weights (reduce_range): without VNNI the AVX2 kernel (vpmaddubsw) sums "
            "u8*s8 pairs into int16, which can saturate with full-range weights")


def convsym_fits(cin: int, cout: int, kernel: int, cpu) -> tuple[bool, str]:
    """Whether a group-1 QLinearConv with these channels takes MLAS's ConvSym kernel on `cpu`,
    and if not, why (onnxruntime/core/mlas/lib/convsym.cpp, MlasConvSymPackWSize)."""
    if cpu.is_x86:
        if not cpu.avx2:
            return False, "no AVX2: MLAS has no symmetric int8 conv kernel"
        # AVX-512 kernels take output channels in multiples of 4, AVX2 / AVX-VNNI of 8;
        # all pack 16 output channels and 4 input channels at a time.
        align = 4 if "avx512bw" in cpu.flags or "avx512_vnni" in cpu.flags else 8
        if cin % 4:
            return False, f"{cin} input channel{'' if cin == 1 else 's'}, not a multiple of 4"
        if cout < 16:
            return False, f"{cout} output channels, fewer than 16"
        if cout % align:
            return False, f"{cout} output channels, not a multiple of {align}"
        return True, ""
    # ARM64's ConvSym wants >= 64 input channels, but its other int8 conv path (a symmetric
    # int8 GEMM) is a NEON kernel too; only a conv with almost no input channels (a GEMM of
    # depth k*k) is left float, as on x86. Not measured on ARM.
    if cin < 4:
        return False, f"{cin} input channel(s): a {kernel}x{kernel}-deep int8 GEMM"
    return True, ""


def depthwise_fits(group: int, cin: int, cout: int, cpu) -> tuple[bool, str]:
    """The same for a grouped conv: MLAS's ConvSym has a depthwise kernel (one input and one
    output channel per group) for group counts that are a multiple of 16 (8 on ARM)."""
    if not (cin == cout == group):
        return False, f"grouped conv ({group} groups of {cin // group}->{cout // group})"
    align = 16 if cpu.is_x86 else 8
    if cpu.is_x86 and not cpu.avx2:
        return False, "no AVX2: MLAS has no symmetric int8 conv kernel"
    if group % align:
        return False, f"depthwise over {group} channels, not a multiple of {align}"
    return True, ""


def _convs(model) -> list[dict]:
    inits = {t.name: t for t in model.graph.initializer}
    out = []
    for n in model.graph.node:
        if n.op_type != "Conv" or n.input[1] not in inits:
            continue
        shape = list(inits[n.input[1]].dims)  # (Cout, Cin/group, kH, kW)
        group = next((a.i for a in n.attribute if a.name == "group"), 1)
        out.append({"name": n.name, "cout": shape[0], "cin": shape[1] * group,
                    "k": shape[2] if len(shape) > 2 else 1, "group": group})
    return out


def float_convs(model, cpu) -> list[dict]:
    """The Conv nodes of `model` to keep float on `cpu`: {name, cin, cout, why}."""
    keep = []
    for c in _convs(model):
        if c["group"] == 1:
            fits, why = convsym_fits(c["cin"], c["cout"], c["k"], cpu)
        else:
            fits, why = depthwise_fits(c["group"], c["cin"], c["cout"], cpu)
        if not fits:
            keep.append({"name": c["name"], "cin": c["cin"], "cout": c["cout"], "why": why})
    return keep


def rewrite_float(model, cpu) -> list[str]:
    """The exact float rewrites before quantizing; the list of what was done."""
    done = []
    taken = {n.name for n in model.graph.node}
    for i, n in enumerate(model.graph.node):
        if not n.name:  # the quantizer excludes nodes by name
            n.name = next(c for c in (f"{n.op_type}_{i}", f"{n.op_type}_{i}_n") if c not in taken)
            taken.add(n.name)
    if G.hoist_input_layout(model):
        done.append("input Reshape/Transpose moved before the scalar normalisation")
    n = G.global_average_pool(model)
    if n:
        done.append(f"{n} ReduceMean -> GlobalAveragePool")
    if G.fold_input_affine(model):
        done.append("input normalisation folded into the first conv (it does not pad)")
    if cpu.is_x86:
        padded = G.pad_input_channels(model, 4)
        if padded:
            done.append(f"zero filters appended to {', '.join(padded)} so the next conv's input "
                        "channels are a multiple of 4 (ConvSym)")
    return done


def static_int8(fp32: Path, workdir: Path, ctx) -> tuple[Path, dict, str]:
    """(int8 file, settings, reason) for `fp32`: rewrite, pre-process, quantize with the convs
    that would be slower as int8 left float, then integer pixels in where exact."""
    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat,
                                          QuantType, quantize_static)
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from ..hw import cpu_info
    from ..runtime import input_layout

    cpu = ctx.cpu or cpu_info()
    settings, reason = int8_preset(cpu)
    model = onnx.load(str(fp32))
    rewrites = rewrite_float(model, cpu)
    shape = [d.dim_value or -1 for d in model.graph.input[0].type.tensor_type.shape.dim]
    rewritten = workdir / "int8-float.onnx"
    onnx.save_model(model, str(rewritten))
    pre = workdir / "int8-pre.onnx"
    # Symbolic shape inference + onnxruntime's graph optimisations (constant folding, Conv
    # fusion) before quantizing, as onnxruntime recommends.
    quant_pre_process(str(rewritten), str(pre), skip_symbolic_shape=False)
    pre_model = onnx.load(str(pre))
    keep = [] if ctx.full_int8 else float_convs(pre_model, cpu)
    exclude = [c["name"] for c in keep]
    first = G.input_chain(pre_model)
    if first[1] is not None and first[1].name in exclude:
        # A float first conv must read a float tensor: its input ops stay float too, or
        # onnxruntime re-quantizes the conv from their DequantizeLinear.
        exclude += [n.name for n in first[0]]
    flat = G.flatten_channels_last(pre_model, exclude)
    if flat:
        rewrites.append(f"{', '.join(flat)}: flatten in channels-last order, the dense weights "
                        "permuted to match (onnxruntime's NHWC Transpose before it cancels)")
        onnx.save_model(pre_model, str(pre))

    layout = input_layout(shape, "onnx")
    x = ctx.calib.astype(np.float32) / 255.0
    x = x[:, None] if layout == "NCHW" else x[..., None]

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.batches = iter(np.array_split(x, max(1, len(x) // 64)))

        def get_next(self):
            b = next(self.batches, None)
            return None if b is None else {INPUT: np.ascontiguousarray(b)}

    quantized = workdir / "int8-qdq.onnx"
    quantize_static(str(pre), str(quantized), Reader(),
                    quant_format=QuantFormat.QDQ, per_channel=settings["per_channel"],
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                    reduce_range=settings["reduce_range"],
                    calibrate_method=CalibrationMethod.MinMax, nodes_to_exclude=exclude,
                    extra_options={"ActivationSymmetric": False, "WeightSymmetric": True})

    model = onnx.load(str(quantized))
    if G.integer_pixel_input(model):
        rewrites.append("uint8 pixels in (the input's scale was 1/255, zero point 0)")
        # Until export() embeds the full metadata, the file says how its input is quantized:
        # validation opens it through the runtime, which maps pixels with it.
        props = [p for p in model.metadata_props if p.key != "mnistopt"]
        del model.metadata_props[:]
        model.metadata_props.extend(props)
        model.metadata_props.add(key="mnistopt", value=json.dumps(
            {"input": {"dtype": "uint8", "scale": 1 / 255, "zero_point": 0}}))
    onnx.checker.check_model(model)
    out = workdir / "int8.onnx"
    onnx.save_model(model, str(out))

    settings["float_convs"] = keep
    settings["full_int8"] = not keep
    settings["rewrites"] = rewrites
    settings["calibration_samples"] = int(len(ctx.calib))
    settings["calibration_source"] = ctx.calib_source
    if keep:
        reason += ("; convs kept float where MLAS's fast int8 conv does not apply: "
                   + ", ".join(f"{c['cin']}->{c['cout']} ({c['why']})" for c in keep))
    elif ctx.full_int8:
        reason += "; every conv int8 (full integer asked for), also where MLAS's fast kernel does not apply"
    return out, settings, reason
