"""Exact rewrites of a torch model before litert-torch converts it, for XNNPACK's kernels.

`space_to_depth_stem`: the first layers Conv(1 -> C, k x k, stride 1) [+ BatchNorm] + ReLU +
MaxPool(2) become one convolution on the image's 2x2 space-to-depth form, followed by a max
over the four sub-pixel positions:

    y[c, 2h+a, 2w+b] = sum_ij W[c, i, j] xp[2h+a+i, 2w+b+j]            (a, b in {0, 1})
                     = sum_{s,t,u,v} W2[(a,b,c), (s,t), u, v] X[(s,t), h+u, w+v]

with X[(s,t), h, w] = xp[2h+s, 2w+t] (xp: the padded input) and W2 = W[c, 2u+s-a, 2v+t-b]
where that index is inside the kernel, else 0. MaxPool(2) of ReLU(y) is then the max over
(a, b) of the new conv's 4C output channels.

Why: XNNPACK's int8 convolution kernels on x86 (VNNI: 4 or 8 int8 products per lane) pad
each tap's input channels to a multiple of 8, so a conv reading one channel does 8x the work
it needs, and 6 or 8 output channels fill half of a 16-wide tile. LeNet-5's first conv
(1 -> 6, 5x5, 28x28 outputs) took most of the int8 file's time. In space-to-depth form it
reads 4 channels over 3x3 taps and writes 24 channels at a quarter of the positions
(measured on Zen 5, LiteRT 1 thread, batch 1: the int8 file 10.0 -> 5.8 µs, fp32 12.5 ->
10.6 µs; batch 256 on 2 threads: int8 207k -> 391k images/s). The space-to-depth itself is
a stride-2 2x2 convolution with one-hot filters (it copies pixels); litert-torch lowers it
to one depthwise conv, where `pixel_unshuffle` became three transposes.

The rewritten model gives the same logits to float rounding (checked here on the given
images; the rewrite is dropped if it does not) and every exported file is validated against
the native model as before.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

# A rewrite must reproduce the model's float logits to this (absolute, after the checks'
# own scale: logits of a trained MNIST net are O(10)).
ATOL = 1e-3


def space_to_depth_stem(model, sample: np.ndarray):
    """(model, note): the model with its stem rewritten, or the model itself and None when its
    first layers are not [Normalize], Conv(1 -> C), [BatchNorm], ReLU, MaxPool(2) with even
    sizes. `sample`: float32 NCHW images the result is checked on."""
    layers = list(model) if isinstance(model, nn.Sequential) else None
    if not layers:
        return model, None
    from ..train.torch_backend import Normalize

    i = 1 if isinstance(layers[0], Normalize) else 0  # elementwise: it stays where it is
    if i + 3 > len(layers) or not isinstance(layers[i], nn.Conv2d):
        return model, None
    conv, j = layers[i], i + 1
    bn = layers[j] if isinstance(layers[j], nn.BatchNorm2d) else None
    j += bn is not None
    if j + 1 >= len(layers) or not isinstance(layers[j], nn.ReLU) \
            or not _is_pool2(layers[j + 1]) or not _plain(conv):
        return model, None
    h = sample.shape[-1]
    k, p = conv.kernel_size[0], conv.padding[0]
    if sample.shape[-2] != h or (h + 2 * p) % 2 or (h + 2 * p - k + 1) % 2:
        return model, None
    stem = SpaceToDepthStem(conv, bn)
    new = nn.Sequential(*layers[:i], stem, *layers[j + 2:]).eval()
    with torch.no_grad():
        x = torch.from_numpy(np.ascontiguousarray(sample, dtype=np.float32))
        diff = float((model.eval()(x) - new(x)).abs().max())
    if not diff <= ATOL:
        return model, None
    c = conv.out_channels
    return new, (f"space-to-depth stem: conv 1->{c} {k}x{k}{' + batch norm' if bn else ''} + "
                 f"ReLU + max-pool 2 as a {stem.conv.kernel_size[0]}x{stem.conv.kernel_size[0]} "
                 f"conv 4->{4 * c} on the 2x2 space-to-depth image and a max over the 4 "
                 f"sub-pixel positions (exact: max |diff| {diff:.1e} on {len(sample)} images)")


def _plain(conv) -> bool:
    return (isinstance(conv.padding, tuple) and conv.in_channels == 1 and conv.groups == 1
            and conv.stride == (1, 1) and conv.dilation == (1, 1)
            and conv.kernel_size[0] == conv.kernel_size[1]
            and conv.padding[0] == conv.padding[1] and conv.padding_mode == "zeros")


def _is_pool2(m) -> bool:
    def two(v):
        return v in (2, (2, 2))

    return (isinstance(m, nn.MaxPool2d) and two(m.kernel_size) and two(m.stride)
            and m.padding in (0, (0, 0)) and m.dilation in (1, (1, 1)) and not m.ceil_mode)


class SpaceToDepthStem(nn.Module):
    """conv(1 -> C) [+ BN] + ReLU + MaxPool(2), computed as described in the module docstring."""

    def __init__(self, conv, bn=None):
        super().__init__()
        w = conv.weight.detach().double()[:, 0]  # (C, k, k)
        b = conv.bias.detach().double() if conv.bias is not None else torch.zeros(len(w), dtype=torch.float64)
        if bn is not None:  # eval-mode batch norm is an affine map per channel: fold it
            g = bn.weight.detach().double() / torch.sqrt(bn.running_var.double() + bn.eps)
            w, b = w * g[:, None, None], (b - bn.running_mean.double()) * g + bn.bias.detach().double()
        c, k = w.shape[0], w.shape[1]
        kk = k // 2 + 1
        w2 = torch.zeros(2, 2, c, 2, 2, kk, kk, dtype=torch.float64)  # (a, b, c, s, t, u, v)
        for a in range(2):
            for bb in range(2):
                for s in range(2):
                    for t in range(2):
                        for u in range(kk):
                            for v in range(kk):
                                i, j = 2 * u + s - a, 2 * v + t - bb
                                if 0 <= i < k and 0 <= j < k:
                                    w2[a, bb, :, s, t, u, v] = w[:, i, j]
        self.channels, self.pad = c, conv.padding[0]
        self.conv = nn.Conv2d(4, 4 * c, kk)
        self.conv.weight.data = w2.reshape(4 * c, 4, kk, kk).float()
        self.conv.bias.data = b.repeat(4).float()
        onehot = torch.zeros(4, 1, 2, 2)
        for s in range(2):
            for t in range(2):
                onehot[2 * s + t, 0, s, t] = 1.0
        self.register_buffer("onehot", onehot)

    def forward(self, x):
        if self.pad:
            x = F.pad(x, (self.pad,) * 4)
        x = F.conv2d(x, self.onehot, stride=2)  # (N, 4, H/2, W/2): space-to-depth
        y = F.relu(self.conv(x))  # (N, 4C, H, W): channel (2a + b) * C + c
        # The max over the four groups as a max-pool (1 x 4) over (N, C, H*W, 4): litert-torch
        # lowers it to MAX_POOL_2D, which has int8 kernels in XNNPACK and TFLite Micro. An
        # amax over the group axis became a REDUCE_MAX the quantizer leaves float, between a
        # dequantize and a quantize, so a full-integer file could not be had.
        n, _, h, w = y.shape
        z = y.reshape(n, 4, self.channels, h * w).permute(0, 2, 3, 1)
        return F.max_pool2d(z, (1, 4)).reshape(n, self.channels, h, w)
