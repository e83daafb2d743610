"""Architectures, each defined once as a list of layer specs and built by every framework.

A spec is framework-free, so the parameter and multiply-add counts below are computed here
(no torch, no TensorFlow) and every framework's builder is tested against them. Input is
always the raw image scaled to [0, 1]; the first layer normalises it, so exported models never
need the caller to know mean/std.
"""

from __future__ import annotations

from dataclasses import dataclass

from .errors import ConfigError

# Mean and std of MNIST training pixels in [0, 1]; applied inside every model.
MNIST_MEAN, MNIST_STD = 0.1307, 0.3081


@dataclass(frozen=True)
class Normalize:
    mean: float = MNIST_MEAN
    std: float = MNIST_STD


@dataclass(frozen=True)
class Conv:
    out: int
    k: int = 3
    pad: int = 0  # zeros on every side (explicit, so all frameworks agree even with stride 2)
    bias: bool = True  # False when a BatchNorm follows: its shift makes a bias redundant
    stride: int = 1


@dataclass(frozen=True)
class DepthwiseConv:
    """One k x k filter per input channel (`multiplier` of them), no mixing across channels.

    Followed by a 1x1 Conv (pointwise) it is a depthwise-separable convolution: about k*k
    times fewer weights and multiply-adds than a full k x k Conv of the same width.
    """

    k: int = 3
    pad: int = 0
    bias: bool = True
    stride: int = 1
    multiplier: int = 1


@dataclass(frozen=True)
class BatchNorm:
    eps: float = 1e-3  # Keras' default; torch's is 1e-5. One value so the frameworks agree.
    # Weight of the old running statistic (Keras' convention; torch gets 1 - m). 0.9, torch's
    # default, not Keras' 0.99: with 0.99 the running mean/var still sit near their initial
    # 0/1 after a short run (100 steps), and eval() then scores near chance.
    momentum: float = 0.9


@dataclass(frozen=True)
class ReLU:
    pass


@dataclass(frozen=True)
class MaxPool:
    k: int = 2


@dataclass(frozen=True)
class AvgPool:
    k: int = 2


@dataclass(frozen=True)
class GlobalAvgPool:
    pass


@dataclass(frozen=True)
class Flatten:
    pass


@dataclass(frozen=True)
class Dense:
    out: int


@dataclass(frozen=True)
class Dropout:
    rate: float


Layer = (Normalize | Conv | DepthwiseConv | BatchNorm | ReLU | MaxPool | AvgPool | GlobalAvgPool
         | Flatten | Dense | Dropout)
SPATIAL = (Conv, DepthwiseConv, MaxPool, AvgPool)  # need an (h, w) map, not a flat vector


BN_ARRAYS = ("gamma", "beta", "mean", "var")


def arrays(layer) -> tuple[str, ...]:
    """The arrays a layer holds, by role, in the order Keras' get_weights() gives them: "w" and
    "b" (when it has a bias) for a conv or dense layer, batch norm's scale, shift and running
    mean and variance; () for a layer without weights. Each framework's `layer_names` names
    them its own way."""
    if isinstance(layer, (Conv, DepthwiseConv, Dense)):
        return ("w", "b") if getattr(layer, "bias", True) else ("w",)
    return BN_ARRAYS if isinstance(layer, BatchNorm) else ()


def conv_out(size: int, k: int, pad: int = 0, stride: int = 1) -> int:
    """Output height (or width) of a conv or pool window: the same formula in every framework."""
    return (size + 2 * pad - k) // stride + 1


def separable(out: int, k: int = 3, pad: int = 0, stride: int = 1, bn: bool = True) -> tuple:
    """Depthwise-separable block: depthwise k x k, [BN, ReLU,] pointwise 1x1 to `out`, [BN,] ReLU."""
    dw = (DepthwiseConv(k, pad=pad, stride=stride, bias=not bn),) + ((BatchNorm(), ReLU()) if bn else (ReLU(),))
    pw = (Conv(out, 1, bias=not bn),) + ((BatchNorm(),) if bn else ())
    return dw + pw + (ReLU(),)


@dataclass(frozen=True)
class Arch:
    name: str
    layers: tuple
    summary: str

    def shapes(self) -> list[tuple[int, int, int]]:
        """(channels, height, width) after each layer; a flat vector is (n, 1, 1)."""
        c, h, w = 1, 28, 28
        out = []
        for layer in self.layers:
            if isinstance(layer, (Conv, DepthwiseConv)):
                c = layer.out if isinstance(layer, Conv) else c * layer.multiplier
                h, w = (conv_out(n, layer.k, layer.pad, layer.stride) for n in (h, w))
            elif isinstance(layer, (MaxPool, AvgPool)):
                h, w = h // layer.k, w // layer.k
            elif isinstance(layer, GlobalAvgPool):
                h = w = 1
            elif isinstance(layer, Flatten):
                c, h, w = c * h * w, 1, 1
            elif isinstance(layer, Dense):
                c = layer.out
            out.append((c, h, w))
        return out

    @property
    def params(self) -> int:
        """Trainable parameters (BatchNorm's running statistics are not parameters)."""
        total, c = 0, 1
        for layer, (c_out, _, _) in zip(self.layers, self.shapes()):
            if isinstance(layer, Conv):
                total += layer.k * layer.k * c * c_out + (c_out if layer.bias else 0)
            elif isinstance(layer, DepthwiseConv):
                total += layer.k * layer.k * c_out + (c_out if layer.bias else 0)
            elif isinstance(layer, Dense):
                total += c * c_out + c_out
            elif isinstance(layer, BatchNorm):
                total += 2 * c  # gamma and beta
            c = c_out
        return total

    @property
    def macs(self) -> int:
        """Multiply-adds of one forward pass on one image (conv and dense only)."""
        total, c = 0, 1
        for layer, (c_out, h, w) in zip(self.layers, self.shapes()):
            if isinstance(layer, Conv):
                total += h * w * c_out * layer.k * layer.k * c
            elif isinstance(layer, DepthwiseConv):
                total += h * w * c_out * layer.k * layer.k  # each output sees one input channel
            elif isinstance(layer, Dense):
                total += c * c_out
            c = c_out
        return total


ARCHS: dict[str, Arch] = {}


def register(arch: Arch) -> Arch:
    ARCHS[arch.name] = arch
    return arch


register(Arch(
    "seed",
    (Normalize(), Conv(32, 3, pad=1), ReLU(), Conv(64, 3, pad=1), ReLU(), MaxPool(2),
     Flatten(), Dense(128), ReLU(), Dense(10)),
    "the classic simple CNN: two 3x3 convs, max-pool, a 12544->128 dense layer",
))

register(Arch(
    "lenet5",
    # LeNet-5 as usually written today: ReLU for tanh, max- for average-pooling, a padded
    # first conv so 28x28 input gives the original 32x32 geometry.
    (Normalize(), Conv(6, 5, pad=2), ReLU(), MaxPool(2), Conv(16, 5), ReLU(), MaxPool(2),
     Flatten(), Dense(120), ReLU(), Dense(84), ReLU(), Dense(10)),
    "LeNet-5 (LeCun et al. 1998), modern form: ReLU, max-pool",
))

register(Arch(
    "edge",
    # Small 3x3 convs with batch norm, two pools, then global average pooling instead of a big
    # dense layer: ~18k parameters and ~1/12 of seed's multiply-adds.
    (Normalize(),
     Conv(8, 3, bias=False), BatchNorm(), ReLU(),        # 26x26x8
     Conv(16, 3, bias=False), BatchNorm(), ReLU(),       # 24x24x16
     MaxPool(2),                                         # 12x12x16
     Conv(16, 3, bias=False), BatchNorm(), ReLU(),       # 10x10x16
     Conv(32, 3, bias=False), BatchNorm(), ReLU(),       # 8x8x32
     MaxPool(2),                                         # 4x4x32
     Conv(32, 3, pad=1, bias=False), BatchNorm(), ReLU(),  # 4x4x32
     GlobalAvgPool(), Dense(10)),
    "device model: 5 BN convs, global average pooling, <20k parameters",
))

register(Arch(
    "wide",
    # edge with twice the channels: ~4x its multiply-adds (still 1/3 of seed's), for the
    # last tenths of a percent of accuracy.
    (Normalize(),
     Conv(16, 3, bias=False), BatchNorm(), ReLU(),       # 26x26x16
     Conv(32, 3, bias=False), BatchNorm(), ReLU(),       # 24x24x32
     MaxPool(2),                                         # 12x12x32
     Conv(32, 3, bias=False), BatchNorm(), ReLU(),       # 10x10x32
     Conv(64, 3, bias=False), BatchNorm(), ReLU(),       # 8x8x64
     MaxPool(2),                                         # 4x4x64
     Conv(64, 3, pad=1, bias=False), BatchNorm(), ReLU(),  # 4x4x64
     GlobalAvgPool(), Dense(10)),
    "edge, twice as wide: the accuracy model",
))


register(Arch(
    "tiny",
    # Sized for the smallest microcontroller class (64 KB RAM / 256 KB flash) with room to
    # spare: thin maps at full resolution (the TFLite Micro arena holds the largest pair of
    # neighbouring maps, here 26x26x6 and 24x24x8), three 16-channel convs after the pool.
    # Measured (tf, 15 epochs, augment, label smoothing 0.1): 99.40 % on the validation split,
    # int8 the same; int8 TFLite 14.4 KB, arena 11.8 KB. It is `mnistopt search`'s seed
    # conv6-8-16.
    (Normalize(),
     Conv(6, 3, bias=False), BatchNorm(), ReLU(),         # 26x26x6
     Conv(8, 3, bias=False), BatchNorm(), ReLU(),         # 24x24x8
     MaxPool(2),                                          # 12x12x8
     Conv(16, 3, bias=False), BatchNorm(), ReLU(),        # 10x10x16
     Conv(16, 3, bias=False), BatchNorm(), ReLU(),        # 8x8x16
     Conv(16, 3, bias=False), BatchNorm(), ReLU(),        # 6x6x16
     GlobalAvgPool(), Dense(10)),
    "microcontroller model: 6.5k parameters, 12 KB arena, 14 KB int8 file",
))


def get_arch(name_or_path: str) -> Arch:
    """A registered arch by name, or the arch in a JSON file (`mnistopt.archspec`, checked)."""
    if name_or_path in ARCHS:
        return ARCHS[name_or_path]
    if name_or_path.endswith(".json") or "/" in name_or_path or "\\" in name_or_path:
        from .archspec import load_file

        return load_file(name_or_path)
    raise ConfigError(f"unknown architecture '{name_or_path}'; choose one of: {', '.join(ARCHS)}, "
                      "or give a .json file")
