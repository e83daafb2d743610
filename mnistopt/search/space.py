"""The search space: small MNIST CNNs in the `mnistopt.archs` vocabulary, and hand-made seeds.

A network is a stem conv, then 2-3 stages; each stage may first halve the map (max-pool,
average-pool or a stride-2 first block), then stacks 1-3 blocks of one kind: a full k x k conv
or a depthwise-separable one (depthwise k x k + pointwise 1x1), each with or without batch
norm; the head is global average pooling (or a flatten of a small map) and one dense layer.
Training's learning rate is searched too. `params_to_arch` is a pure function of the sampled
values, so a study's trials, the seeds below and the tests all build archs the same way.
"""

from __future__ import annotations

from .. import archs as A

STEM_CH = (6, 8, 10, 12, 16, 24)
STAGE_CH = (8, 12, 16, 20, 24, 32, 40, 48, 64)
KERNELS = (3, 5)
DOWN = ("none", "max", "avg", "stride")
BLOCKS = ("conv", "sep")
HEADS = ("gap", "flatten")
DROPOUT = (0.0, 0.05, 0.1)
LR = (1e-3, 1e-2)


def suggest(trial) -> dict:
    """Sample one point of the space with an Optuna trial; the dict `params_to_arch` takes."""
    p = {
        "stem_ch": trial.suggest_categorical("stem_ch", STEM_CH),
        "stem_k": trial.suggest_categorical("stem_k", KERNELS),
        "stem_pad": trial.suggest_categorical("stem_pad", ("valid", "same")),
        "pad": trial.suggest_categorical("pad", ("valid", "same")),
        "bn": trial.suggest_categorical("bn", (True, False)),
        "stages": trial.suggest_int("stages", 2, 3),
    }
    for i in range(1, p["stages"] + 1):
        p[f"s{i}_down"] = trial.suggest_categorical(f"s{i}_down", DOWN)
        p[f"s{i}_type"] = trial.suggest_categorical(f"s{i}_type", BLOCKS)
        p[f"s{i}_ch"] = trial.suggest_categorical(f"s{i}_ch", STAGE_CH)
        p[f"s{i}_blocks"] = trial.suggest_int(f"s{i}_blocks", 1, 3)
        p[f"s{i}_k"] = trial.suggest_categorical(f"s{i}_k", KERNELS)
    p["head"] = trial.suggest_categorical("head", HEADS)
    p["dropout"] = trial.suggest_categorical("dropout", DROPOUT)
    p["lr"] = trial.suggest_float("lr", *LR, log=True)
    return p


def _block(kind: str, ch: int, k: int, pad: int, stride: int, bn: bool) -> tuple:
    if kind == "sep":
        return A.separable(ch, k, pad=pad, stride=stride, bn=bn)
    return (A.Conv(ch, k, pad=pad, stride=stride, bias=not bn),) + ((A.BatchNorm(),) if bn else ()) + (A.ReLU(),)


def params_to_arch(p: dict, name: str = "trial") -> A.Arch:
    """The network a point of the space describes (not yet checked: see archspec.check)."""
    bn = bool(p["bn"])
    pad_of = {"valid": lambda k: 0, "same": lambda k: k // 2}
    layers = [A.Normalize(), *_block("conv", p["stem_ch"], p["stem_k"], pad_of[p["stem_pad"]](p["stem_k"]), 1, bn)]
    for i in range(1, p["stages"] + 1):
        down, k = p[f"s{i}_down"], p[f"s{i}_k"]
        if down in ("max", "avg"):
            layers.append(A.MaxPool(2) if down == "max" else A.AvgPool(2))
        for b in range(p[f"s{i}_blocks"]):
            stride = 2 if down == "stride" and b == 0 else 1
            layers += _block(p[f"s{i}_type"], p[f"s{i}_ch"], k, pad_of[p["pad"]](k), stride, bn)
    layers.append(A.GlobalAvgPool() if p["head"] == "gap" else A.Flatten())
    if p["dropout"]:
        layers.append(A.Dropout(p["dropout"]))
    layers.append(A.Dense(10))
    return A.Arch(name, tuple(layers), describe(p))


def describe(p: dict) -> str:
    """One line: 'stem 12 k3 valid / max sep 24x2 k3 / max sep 48x2 k3 / gap, bn, pad same'."""
    stages = [f"{p[f's{i}_down']} {p[f's{i}_type']} {p[f's{i}_ch']}x{p[f's{i}_blocks']} k{p[f's{i}_k']}"
              for i in range(1, p["stages"] + 1)]
    return " / ".join([f"stem {p['stem_ch']} k{p['stem_k']} {p['stem_pad']}", *stages,
                       f"{p['head']}{', bn' if p['bn'] else ''}, pad {p['pad']}"])


# Hand-made starting points, enqueued before the sampler's own trials, each within 8,000
# parameters and meant for >= 99.5 % on MNIST (BN, 3x3 kernels, global average pooling, as
# the smallest published MNIST CNNs). What they trade, measured as int8 TFLite: a map kept at
# 26x26 fills the TFLite Micro arena (it holds the largest pair of neighbouring maps), and
# every conv adds ~24 bytes per output channel of quantization parameters to the file, so a
# deep separable net is cheap in MACs but not in flash.
SEEDS = {
    # MCU: pool right after a small stem (arena ~11 KB), full convs at 13x13, separable at 6x6.
    "conv8-16-sep32": {"stem_ch": 8, "stem_k": 3, "stem_pad": "valid", "pad": "same", "bn": True,
                       "stages": 2, "s1_down": "max", "s1_type": "conv", "s1_ch": 16, "s1_blocks": 2,
                       "s1_k": 3, "s2_down": "max", "s2_type": "sep", "s2_ch": 32, "s2_blocks": 2,
                       "s2_k": 3, "head": "gap", "dropout": 0.0, "lr": 0.006},
    # MCU, full convs only: fewer tensors than separable blocks, so less flash per parameter
    # (~6.1k params; ~11 KB arena, 26x26x8 next to 13x13x8 at most).
    "conv8-16-16": {"stem_ch": 8, "stem_k": 3, "stem_pad": "valid", "pad": "same", "bn": True,
                    "stages": 2, "s1_down": "max", "s1_type": "conv", "s1_ch": 16, "s1_blocks": 2,
                    "s1_k": 3, "s2_down": "max", "s2_type": "conv", "s2_ch": 16, "s2_blocks": 1,
                    "s2_k": 3, "head": "gap", "dropout": 0.0, "lr": 0.006},
    # MCU, the classic shape shrunk: two convs before the pool but thin ones (26x26x6 next to
    # 24x24x8: ~9 KB of arena), three 16-channel convs after it, all unpadded (~6.5k params).
    "conv6-8-16": {"stem_ch": 6, "stem_k": 3, "stem_pad": "valid", "pad": "valid", "bn": True,
                   "stages": 2, "s1_down": "none", "s1_type": "conv", "s1_ch": 8, "s1_blocks": 1,
                   "s1_k": 3, "s2_down": "max", "s2_type": "conv", "s2_ch": 16, "s2_blocks": 3,
                   "s2_k": 3, "head": "gap", "dropout": 0.0, "lr": 0.006},
    # The classic small-MNIST shape: two full 3x3 convs before the pool, three after; ~6.4k
    # params, the most MACs: the accuracy reference.
    "conv10-16": {"stem_ch": 10, "stem_k": 3, "stem_pad": "valid", "pad": "valid", "bn": True,
                  "stages": 2, "s1_down": "none", "s1_type": "conv", "s1_ch": 16, "s1_blocks": 1,
                  "s1_k": 3, "s2_down": "max", "s2_type": "conv", "s2_ch": 16, "s2_blocks": 2,
                  "s2_k": 3, "head": "gap", "dropout": 0.0, "lr": 0.005},
    # CPU: stride and pooling early, three separable stages, the fewest MACs (~0.31 M).
    "sep8-stride": {"stem_ch": 8, "stem_k": 3, "stem_pad": "same", "pad": "same", "bn": True,
                    "stages": 3, "s1_down": "max", "s1_type": "sep", "s1_ch": 24, "s1_blocks": 1,
                    "s1_k": 3, "s2_down": "stride", "s2_type": "sep", "s2_ch": 40, "s2_blocks": 2,
                    "s2_k": 3, "s3_down": "stride", "s3_type": "sep", "s3_ch": 64, "s3_blocks": 1,
                    "s3_k": 3, "head": "gap", "dropout": 0.0, "lr": 0.006},
}
