"""Which ops of a torch -> TFLite int8 file stay float, picked from the target CPU's flags.

XNNPACK, LiteRT's CPU kernels, runs an int8 convolution on an x86 CPU without VNNI by widening
int8 to int16 (`vpmovsxbw` + `vpmaddwd`: its `qs8_qc8w_igemm ... c8__avx2` kernel) and reads
each tap's input channels in groups of 8; its float kernels run FMA at full width. Sampled
with `perf` on a Zen 3 (AVX2, LeNet-5 and edge at batch 1, one thread), the int8 kernel did
about 9.5 multiply-adds a cycle against the float kernel's 16, and a convolution reading the
one-channel image (or its 4-channel space-to-depth form) did 8x (2x) the work it needs.

So on such a CPU the *stem* stays float: every op before the first convolution or dense
layer that reads more than STEM_CHANNELS channels, i.e. the normalisation and the convolution
of the image at one channel (LeNet-5: its space-to-depth stem through the max-pool). The file
quantizes once, after the stem. Measured on that Zen 3 (LiteRT, one thread at batch 1, two at
256; the time of the int8 file with its stem float over the all-int8 file's):
lenet5 0.74x at batch 1 (0.98x its fp32 file), edge 0.85x, wide 0.86x, seed 0.89x; at batch
256 1.08-1.21x the throughput. The other convolutions read 8 or more channels and stay int8:
the file is int8 where it was before, and 0.3x the fp32 file's size as before.

With VNNI (`vpdpbusd`) the int8 kernels gain 4x per instruction and the whole file is int8
(measured on a Zen 5: int8 0.38-0.55x fp32 at batch 1); on ARM too (not measured).
`full_int8` asks for every op in integer arithmetic whatever the CPU: microcontrollers
(TFLite Micro) and NPUs take nothing else.
"""

from __future__ import annotations

# Channels the stem works at: the image (1), or its 2x2 space-to-depth form (4).
STEM_CHANNELS = 4
# Ops that read a feature map with a weight tensor: where a stem ends.
_LAYERS = {"CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED"}


def float_stem_plan(cpu, full_int8: bool = False) -> tuple[bool, str]:
    """(keep the stem float?, why) for int8 files made for `cpu` (an `hw.CpuInfo`)."""
    if full_int8:
        return False, "full integer (asked for): every op int8, as microcontrollers and NPUs need"
    if cpu.is_x86 and not cpu.vnni:
        return True, ("without VNNI, XNNPACK's int8 convolution (int16 multiply-adds) is slower "
                      "than its float FMA and pads the one-channel image to 8 channels, so the "
                      "stem stays float and the file quantizes after it")
    return False, ""


def stem_ops(model) -> list[int]:
    """Indices of the stem's ops in a parsed TFLite model (`runtime.flatbuf.TFLiteModel`):
    every op before the first layer reading more than STEM_CHANNELS channels; [] when no
    layer does (nothing to keep float then)."""
    for i, op in enumerate(model.operators):
        if op.name in _LAYERS and op.inputs:
            shape = model.tensors[op.inputs[0]].shape
            if shape and shape[-1] > STEM_CHANNELS:
                return list(range(i))
    return []


def op_scope(model, index: int) -> str:
    """ai-edge-quantizer's name for an op: its output tensors' names, each followed by ';'."""
    return "".join(f"{model.tensors[t].name};" for t in model.operators[index].outputs if t >= 0)
