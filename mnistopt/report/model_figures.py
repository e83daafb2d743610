"""Figures of models: accuracy per epoch, the first conv layer's filters, int8 weight error."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..plotting import pyplot, save
from .numbers import QMAX_REDUCED, quantize_symmetric, sqnr_db


def fig_curves(runs: list[dict], path: Path) -> Path:
    """Validation accuracy per epoch of each run (test accuracy is measured once, at the end);
    a bar of test accuracy per run when no run has more than one validated epoch."""
    plt = pyplot()
    from matplotlib.ticker import MaxNLocator

    def name(m):
        return f"{m['framework']}/{m['arch']} ({m['params']:,} params)"

    def validated(m):
        return [e for e in m["history"] if e["val_accuracy"] is not None]

    if max(len(validated(m)) for m in runs) <= 1:
        fig, ax = plt.subplots(figsize=(5.5, 0.45 * len(runs) + 0.9))
        acc = [100 * m["test_accuracy"] for m in runs]
        ax.barh(range(len(runs)), acc, color="tab:blue", height=0.6)
        for k, (m, a) in enumerate(zip(runs, acc)):
            ax.text(a, k, f" {a:.2f} %, {m['train_seconds']:.0f} s", va="center", fontsize=7)
        ax.set_yticks(range(len(runs)), [name(m) for m in runs])
        ax.invert_yaxis()
        lo = min(acc)
        ax.set_xlim(max(0, lo - 2), 100.4)
        ax.set_xlabel("test accuracy (%), and training time")
        ax.set_title("Test accuracy of each run in the workspace (metrics.json)")
        return save(fig, path)
    fig, ax = plt.subplots(figsize=(5.5, 3.2))
    for m in runs:
        h = validated(m)
        ax.plot([e["epoch"] for e in h], [100 * e["val_accuracy"] for e in h], marker="o", ms=3,
                label=name(m))
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch"), ax.set_ylabel("validation accuracy (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    ax.set_title("Validation accuracy after each epoch (metrics.json history)")
    return save(fig, path)


def fig_weights(layers: list[tuple[str, np.ndarray]], label: str, path: Path) -> tuple[Path, dict]:
    """Per-channel min/max of the layer with the widest spread of ranges, its per-channel
    int8 rounding error per-tensor vs per-channel, and the SQNR of every conv layer."""
    plt = pyplot()
    stats = []
    for name, w in layers:
        flat = w.reshape(len(w), -1)
        amax = np.abs(flat).max(1)
        t, _ = quantize_symmetric(w, per_channel=False)
        c, _ = quantize_symmetric(w, per_channel=True)
        r, _ = quantize_symmetric(w, per_channel=True, qmax=QMAX_REDUCED)
        stats.append({"layer": name, "channels": len(w),
                      "range_ratio": float(amax.max() / max(amax.min(), 1e-12)),
                      "sqnr_per_tensor_db": sqnr_db(w, t), "sqnr_per_channel_db": sqnr_db(w, c),
                      "sqnr_per_channel_reduce_range_db": sqnr_db(w, r)})
    show = int(np.argmax([s["range_ratio"] for s in stats]))
    name, w = layers[show]
    flat = w.reshape(len(w), -1)
    order = np.argsort(np.abs(flat).max(1))  # channels sorted by range: the spread is visible
    t, _ = quantize_symmetric(w, per_channel=False)
    c, _ = quantize_symmetric(w, per_channel=True)

    def rms(a):
        return np.sqrt(np.mean(a.reshape(len(a), -1) ** 2, axis=1))

    fig, axes = plt.subplots(1, 3, figsize=(12, 3.4), gridspec_kw={"width_ratios": [1.3, 1.3, 1]})
    ch = np.arange(len(w))
    ax = axes[0]
    ax.vlines(ch, flat.min(1)[order], flat.max(1)[order], color="tab:blue", lw=2)
    amax = np.abs(flat).max()
    ax.axhline(amax, color="tab:red", ls="--", lw=1)
    ax.axhline(-amax, color="tab:red", ls="--", lw=1, label="per-tensor range ±max|w|")
    ax.set_xlabel("output channel (sorted by range)"), ax.set_ylabel("weight value")
    ax.set_title(f"{name}: per-channel min..max")
    ax.legend(fontsize=7, loc="lower right")

    ax = axes[1]
    et, ec = rms(w - t)[order], rms(w - c)[order]
    sig = rms(w)[order]
    ax.semilogy(ch, et / sig, "o-", ms=2.5, lw=1, color="tab:red", label="per-tensor scale")
    ax.semilogy(ch, ec / sig, "o-", ms=2.5, lw=1, color="tab:green", label="per-channel scale")
    ax.set_xlabel("output channel (sorted by range)"), ax.set_ylabel("RMS rounding error / RMS weight")
    ax.set_title("int8 rounding error of each channel")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3, which="both")

    ax = axes[2]
    pos = np.arange(len(stats))
    ax.barh(pos - 0.27, [s["sqnr_per_tensor_db"] for s in stats], 0.27, color="tab:red", label="per-tensor")
    ax.barh(pos, [s["sqnr_per_channel_db"] for s in stats], 0.27, color="tab:green", label="per-channel")
    ax.barh(pos + 0.27, [s["sqnr_per_channel_reduce_range_db"] for s in stats], 0.27,
            color="tab:olive", label="per-channel 7-bit (reduce_range)")
    ax.set_yticks(pos, [s["layer"].replace(" +BN folded", "+BN") for s in stats], fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("SQNR (dB, higher is better)")
    ax.set_title("int8 weight SQNR of every conv")
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.4, -0.2), ncol=2, frameon=False)
    fig.suptitle(f"Weights of {label}, symmetric int8 (scale = max|w|/127)")
    fig.tight_layout()
    return save(fig, path), {"shown": name, "layers": stats}


def first_conv_maps(run, image: np.ndarray, n: int = 16) -> tuple[np.ndarray, np.ndarray, int]:
    """The first conv layer's first n kernels (n, k, k), their feature maps (n, H, W) for one
    uint8 image after the layer's activation (and batch norm, if any), and the layer's
    channel count, from a PyTorch run."""
    import torch
    from torch import nn

    from ..train import to_input

    mods = list(run.model)
    first = next(i for i, m in enumerate(mods) if isinstance(m, nn.Conv2d))
    upto = first + 1
    while upto < len(mods) and isinstance(mods[upto], (nn.BatchNorm2d, nn.ReLU)):
        upto += 1  # what the next layer receives: conv -> (BN) -> ReLU
    with torch.no_grad():
        maps = nn.Sequential(*mods[:upto]).eval()(torch.from_numpy(to_input(image[None], "NCHW")))
    kernels = mods[first].weight.detach()[:, 0].numpy()
    return kernels[:n], maps[0, :n].numpy(), len(kernels)


def fig_features(kernels: np.ndarray, maps: np.ndarray, total: int, image: np.ndarray, label: str,
                 path: Path) -> Path:
    plt = pyplot()
    n = len(kernels)
    fig, axes = plt.subplots(2, n + 1, figsize=(max(6.0, 0.75 * (n + 1)), 1.9),
                             gridspec_kw={"wspace": 0.08, "hspace": 0.12})
    axes[0, 0].imshow(image, cmap="gray_r", interpolation="nearest")
    axes[0, 0].set_title("input", fontsize=7)
    axes[1, 0].axis("off")
    lim = np.abs(kernels).max()
    for j in range(n):
        # Kernels in a diverging map (red positive, blue negative); maps in gray, bright = strong.
        axes[0, j + 1].imshow(kernels[j], cmap="RdBu_r", vmin=-lim, vmax=lim, interpolation="nearest")
        axes[1, j + 1].imshow(maps[j], cmap="magma", interpolation="nearest")
    for ax in axes.flat:
        ax.set_xticks([]), ax.set_yticks([])
    fig.suptitle(f"First conv layer of {label}\ntop: {'its' if n == total else f'{n} of its'} {total} "
                 f"{kernels.shape[-1]}x{kernels.shape[-1]} filters (red +, blue -); bottom: each one's output for "
                 f"this digit after ReLU (bright = strong)", y=1.1, fontsize=8)
    return save(fig, path)


def torch_conv_weights(run) -> list[tuple[str, np.ndarray]]:
    """(name, weights O x I x k x k) of every conv layer of a PyTorch run, with a following
    BatchNorm folded in (w * gamma / sqrt(var + eps)): that folded tensor is what an exporter
    writes and a quantizer rounds, and folding is what spreads the per-channel ranges."""
    from torch import nn

    mods = list(run.model)
    out, k = [], 0
    for i, m in enumerate(mods):
        if not isinstance(m, nn.Conv2d):
            continue
        k += 1
        w = m.weight.detach().double().numpy()
        name = f"conv{k} ({m.in_channels}->{m.out_channels})"
        nxt = mods[i + 1] if i + 1 < len(mods) else None
        if isinstance(nxt, nn.BatchNorm2d):
            g = (nxt.weight.detach().double() / (nxt.running_var.double() + nxt.eps).sqrt()).numpy()
            w = w * g[:, None, None, None]
            name += " +BN folded"
        out.append((name, w))
    return out
