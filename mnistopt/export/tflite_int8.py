"""Which ops of a torch -> TFLite int8 file compute in float, picked from the target CPU's flags.

XNNPACK, LiteRT's CPU kernels, runs an int8 convolution on an x86 CPU without VNNI by widening
int8 to int16 (`vpmovsxbw` + `vpmaddwd`: its `qs8_qc8w_igemm ... c8__avx2` kernel) and reads
each tap's input channels in groups of 8; its float kernels run FMA at full width. Sampled
with `perf` on a Zen 3 (AVX2, LeNet-5 and edge at batch 1, one thread), the int8 kernel did
about 9.5 multiply-adds a cycle against the float kernel's 16.

Measured layer by layer on that Zen 3 (edge, LiteRT, one thread, batch 1, files that keep the
first k ops float and quantize the rest, timed in alternating rounds): every convolution was
slower in int8 than in float, the big ones most (edge's second conv +9 µs, the next three
+2.7, +2.5 and +1 µs; seed's 32->64 conv +54 µs), while dense layers were faster in int8
(seed's 12544x128 layer reads a quarter of the bytes; LeNet-5's three dense layers).

So on such a CPU the file is float *through its last convolution* and int8 after it: the
convolutions keep int8 weights (the file stays small) that are dequantized for float compute,
the ops between them stay float, and the file quantizes once, before the dense head. Where
that head is too small to repay the quantize (HEAD_WEIGHTS), the whole file computes in float
from int8 weights, with float input and output.
Measured on that Zen 3 (LiteRT, alternating rounds; int8 file time / fp32 file time): batch 1
on one thread lenet5 0.69x, seed 0.76x, edge 1.00x, wide 1.00x (was 1.00x, 0.89x, 1.37x,
1.21x with only the stem float); batch 256 on two threads 0.93-1.09x the fp32 throughput in
two noisy runs (was 0.69-0.97x). Sizes: within 5 % of the all-int8 file's.

With VNNI (`vpdpbusd`) the int8 kernels gain 4x per instruction and the whole file is int8
(measured on a Zen 5: int8 0.38-0.55x fp32 at batch 1); on ARM too (not measured).
`full_int8` asks for every op in integer arithmetic whatever the CPU: microcontrollers
(TFLite Micro) and NPUs take nothing else.
"""

from __future__ import annotations

import math

# The ops that slide a kernel over a feature map: slower in int8 than in float on x86
# without VNNI (above).
CONVS = {"CONV_2D", "DEPTHWISE_CONV_2D"}
# The ops whose weights the float part keeps in int8 (dequantized for float compute).
WEIGHTED = CONVS | {"FULLY_CONNECTED"}
# A dense head with fewer weights than this gains less in int8 than the quantize between it
# and the float part costs: edge's 32x10 head made its file 1.04-1.07x the fp32 file's time
# through the runtime (Zen 3, alternating rounds), so such a file is float throughout, from
# int8 weights. LeNet-5's head (59k weights) and seed's (1.6M) gain.
HEAD_WEIGHTS = 4096


def float_part_plan(cpu, full_int8: bool = False) -> tuple[bool, str]:
    """(compute through the last convolution in float?, why) for int8 files made for `cpu` (an
    `hw.CpuInfo`)."""
    if full_int8:
        return False, "full integer (asked for): every op int8, as microcontrollers and NPUs need"
    if cpu.is_x86 and not cpu.vnni:
        return True, ("without VNNI, XNNPACK's int8 convolutions (int16 multiply-adds) are slower "
                      "than its float FMA, so the ops through the last convolution compute in "
                      "float from int8 weights")
    return False, ""


def float_part(model) -> list[int]:
    """Indices of the ops of a parsed TFLite model (`runtime.flatbuf.TFLiteModel`) that run in
    float under the plan: every op up to and including the last convolution, or every op when
    the dense layers after it hold fewer than HEAD_WEIGHTS weights; [] when there is no
    convolution."""
    ops = model.operators
    last = [i for i, op in enumerate(ops) if op.name in CONVS]
    if not last:
        return []
    head = sum(math.prod(model.tensors[op.inputs[1]].shape) for op in ops[last[-1] + 1:]
               if op.name == "FULLY_CONNECTED" and len(op.inputs) > 1 and op.inputs[1] >= 0)
    return list(range(len(ops) if head < HEAD_WEIGHTS else last[-1] + 1))


def op_scope(model, index: int) -> str:
    """ai-edge-quantizer's name for an op: its output tensors' names, each followed by ';'."""
    return "".join(f"{model.tensors[t].name};" for t in model.operators[index].outputs if t >= 0)
