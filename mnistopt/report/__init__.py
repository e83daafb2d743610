"""Figures for the documentation, drawn from real runs, artifacts and benchmark reports.

Each figure is one small PNG (matplotlib, Agg backend). Predictions come from a native run
(`load_run(dir).logits`) or an exported artifact through the lean runtime
(`mnistopt.runtime.load(path)`); weight figures need a PyTorch run; the Pareto plot needs a
benchmark JSON. A figure whose input is missing is skipped with a reason, never faked.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import ConfigError, MnistoptError, require

# Figure name -> what it shows (also the CLI's --figure choices and the PNG file stem).
FIGURES: dict[str, str] = {
    "digits": "ten training images of each digit: how differently people write them",
    "predictions": "test digits with the model's prediction and confidence",
    "confusion": "confusion matrix on the 10,000 test images",
    "misclassified": "the test digits the model gets wrong, most confident first",
    "curves": "test accuracy per epoch of every run in the workspace",
    "features": "the first conv layer's 3x3 filters and what each one sees in a test digit",
    "weights": "per-channel weight ranges and int8 rounding error, per-tensor vs per-channel",
    "pareto": "latency vs accuracy of every benchmarked model",
}

DPI = 100  # with the small figure sizes below, every PNG stays well under 150 KB


@dataclass
class Report:
    written: list[Path] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)  # figure -> why
    facts: dict = field(default_factory=dict)  # the numbers behind the figures


# --------------------------------------------------------------------------------------------
# numbers (numpy only, tested directly)


# ONNX Runtime's symmetric int8 weight range, full and with reduce_range (7 bits, [-64, 64]).
QMAX_INT8, QMAX_REDUCED = 127, 64


def quantize_symmetric(w: np.ndarray, per_channel: bool, qmax: int = QMAX_INT8) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric int8 rounding of conv/dense weights (output channel first), as ONNX Runtime
    and TFLite do for weights: scale = max|w| / qmax, zero point 0, q in [-qmax, qmax].

    Returns (dequantized weights, scale per output channel).
    """
    w = np.asarray(w, np.float64)
    flat = w.reshape(len(w), -1)
    amax = np.abs(flat).max(axis=1) if per_channel else np.full(len(w), np.abs(flat).max())
    scale = np.where(amax > 0, amax / qmax, 1.0)
    q = np.clip(np.round(flat / scale[:, None]), -qmax, qmax)
    return (q * scale[:, None]).reshape(w.shape), scale


def sqnr_db(w: np.ndarray, w_hat: np.ndarray) -> float:
    """Signal-to-quantization-noise ratio in dB (higher is better; ~6 dB per bit)."""
    noise = float(np.sum((np.asarray(w, np.float64) - w_hat) ** 2))
    signal = float(np.sum(np.asarray(w, np.float64) ** 2))
    return float("inf") if noise == 0 else 10 * np.log10(signal / noise)


def confusion_matrix(y: np.ndarray, pred: np.ndarray, n: int = 10) -> np.ndarray:
    cm = np.zeros((n, n), np.int64)
    np.add.at(cm, (np.asarray(y, np.int64), np.asarray(pred, np.int64)), 1)
    return cm


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


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


# --------------------------------------------------------------------------------------------
# sources


def predictions(images: np.ndarray, run: str | os.PathLike | None = None,
                model: str | os.PathLike | None = None) -> tuple[np.ndarray, str]:
    """Class probabilities (N, 10) for uint8 images, and a label naming where they came from."""
    if model is not None:
        from .. import runtime

        m = runtime.load(model)
        out = np.asarray(_runtime_scores(m, images), np.float32)
        label = Path(model).name
    else:
        from ..train import load_run

        r = load_run(run)
        out = r.logits(images)
        label = f"{r.framework}/{r.arch} ({Path(run).name})"
    if out.ndim != 2 or out.shape[1] != 10:
        raise MnistoptError(f"expected (N, 10) scores from {label}, got shape {out.shape}")
    # Logits or probabilities: softmax only what is not already a distribution.
    is_prob = np.all(out >= 0) and np.allclose(out.sum(axis=1), 1, atol=1e-3)
    return (out if is_prob else softmax(out.astype(np.float64)).astype(np.float32)), label


def _runtime_scores(m, images: np.ndarray) -> np.ndarray:
    """Scores from a lean-runtime model: its logits/probabilities if offered, else predict()."""
    for name in ("logits", "probabilities", "predict_proba"):
        fn = getattr(m, name, None)
        if callable(fn):
            return fn(images)
    out = m.predict(images)
    out = getattr(out, "logits", getattr(out, "probabilities", out))
    out = np.asarray(out)
    if out.ndim == 1:  # labels only: one-hot, so accuracy and confusion still work
        out = np.eye(10, dtype=np.float32)[out.astype(np.int64)]
    return out


def default_run(root: Path) -> Path | None:
    """The run the docs are drawn from: torch-seed if trained, else any finished run."""
    for name in ("torch-seed", "torch-edge", "keras-seed", "tf-seed"):
        if (root / name / "metrics.json").is_file():
            return root / name
    runs = sorted(p.parent for p in root.glob("*/metrics.json"))
    return runs[0] if runs else None


def default_bench(reports: Path) -> Path | None:
    """The newest benchmark JSON under reports/ (one that holds result rows)."""
    files = sorted(reports.glob("**/*.json"), key=lambda p: p.stat().st_mtime, reverse=True)
    for p in files:
        try:
            if bench_rows(json.loads(p.read_text())):
                return p
        except (OSError, ValueError):
            continue
    return None


# Keys a benchmark row may use, most specific first: the harness' schema is its own, so read
# it tolerantly rather than pin a format here.
_LAT_KEYS = ("p50_ms", "latency_p50_ms", "latency_ms_p50", "median_ms", "p50", "latency_ms", "mean_ms")
_ACC_KEYS = ("accuracy", "test_accuracy", "top1", "acc")


def _pick(row: dict, keys: tuple[str, ...]):
    for k in keys:
        v = row.get(k)
        if isinstance(v, dict):  # e.g. {"latency_ms": {"p50": ...}}
            v = _pick(v, ("p50", "median", "mean"))
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            return float(v)
    for v in row.values():  # one level of nesting: {"latency": {"p50_ms": ...}}
        if isinstance(v, dict):
            got = _pick(v, keys)
            if got is not None:
                return got
    return None


def bench_rows(doc) -> list[dict]:
    """[{name, latency_ms, accuracy, batch?}] from a benchmark JSON: `mnistopt bench`'s schema
    (batch-1 p50), else whatever rows with a latency and an accuracy it holds."""
    if isinstance(doc, dict) and str(doc.get("schema", "")).startswith("mnistopt.bench/"):
        out = []
        for r in doc.get("results") or []:
            lat = ((r.get("latency") or {}).get("1") or {}).get("p50_us")
            if r.get("error") or lat is None or r.get("accuracy") is None:
                continue
            out.append({"name": r.get("id") or Path(str(r.get("path", "?"))).name,
                        "latency_ms": lat / 1000, "accuracy": float(r["accuracy"]), "batch": 1,
                        "backend": r.get("backend"), "quant": r.get("quant"),
                        "latency_source": r.get("latency_source"), "file_bytes": r.get("file_bytes")})
        return out
    rows = doc if isinstance(doc, list) else next(
        (doc[k] for k in ("results", "rows", "models", "entries") if isinstance(doc.get(k), list)), [])
    out = []
    for r in rows:
        if not isinstance(r, dict):
            continue
        lat, acc = _pick(r, _LAT_KEYS), _pick(r, _ACC_KEYS)
        if lat is None or acc is None:
            continue
        if acc > 1:  # a percentage
            acc /= 100
        name = r.get("name") or r.get("model") or r.get("artifact") or r.get("label") or "?"
        out.append({"name": Path(str(name)).name, "latency_ms": lat, "accuracy": acc,
                    "batch": r.get("batch") or r.get("batch_size"),
                    "backend": r.get("backend") or r.get("runtime") or r.get("format")})
    return out


# --------------------------------------------------------------------------------------------
# drawing


def _plt():
    require("matplotlib", "bench", "report figures")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update({"font.size": 8, "axes.titlesize": 9, "figure.titlesize": 10})
    return plt


def _save(fig, path: Path) -> Path:
    """Write atomically: a crash never leaves a truncated PNG that the docs would show."""
    from ..fsutil import atomic_path

    try:
        with atomic_path(path, suffix=".png") as tmp:
            fig.savefig(tmp, dpi=DPI, bbox_inches="tight", pil_kwargs={"optimize": True})
    finally:
        fig.clf()
        import matplotlib.pyplot as plt

        plt.close(fig)
    return path


def _mosaic(ax, images, cols: int, captions=None, colors=None, gap: int = 2, cap_h: int = 0):
    """Draw images on one axes as a grid (one imshow, not one axes per digit: ~10x faster),
    each with an optional caption in the `cap_h` pixels above it."""
    n = len(images)
    rows = max(1, -(-n // cols))
    ch, cw = 28 + gap + cap_h, 28 + gap
    canvas = np.zeros((rows * ch, cols * cw), np.uint8)
    for k, img in enumerate(images):
        r, c = divmod(k, cols)
        canvas[r * ch + cap_h:r * ch + cap_h + 28, c * cw:c * cw + 28] = img
    ax.imshow(canvas, cmap="gray_r", vmin=0, vmax=255, interpolation="nearest")
    ax.set_axis_off()
    for k, text in enumerate(captions or []):
        r, c = divmod(k, cols)
        ax.text(c * cw + 14, r * ch + cap_h - 1, text, ha="center", va="bottom", fontsize=6.5,
                color=(colors[k] if colors else "black"), linespacing=1.0)


def fig_digits(x: np.ndarray, y: np.ndarray, path: Path, per_class: int = 10) -> Path:
    plt = _plt()
    rng = np.random.default_rng(0)
    idx = [i for d in range(10) for i in rng.choice(np.flatnonzero(y == d), per_class, replace=False)]
    fig, ax = plt.subplots(figsize=(per_class * 0.5, 10 * 0.5 + 0.3))
    _mosaic(ax, x[idx], per_class)
    ax.set_title("MNIST training images, one row per digit")
    return _save(fig, path)


def fig_predictions(x, y, prob, label: str, path: Path, n: int = 24) -> Path:
    plt = _plt()
    pred = prob.argmax(1)
    n = min(n, len(x))
    ok = pred[:n] == y[:n]
    caps = [f"{pred[k]} ({prob[k, pred[k]]:.0%})" + ("" if ok[k] else f" ≠{y[k]}") for k in range(n)]
    fig, ax = plt.subplots(figsize=(7, 3.2))
    # The first n test images: no cherry-picking.
    _mosaic(ax, x[:n], 8, caps, ["black" if o else "red" for o in ok], gap=6, cap_h=9)
    ax.set_title(f"First {n} test images: prediction (confidence) by {label}")
    return _save(fig, path)


def fig_confusion(y, pred, label: str, path: Path) -> Path:
    plt = _plt()
    cm = confusion_matrix(y, pred)
    off = cm.copy()
    np.fill_diagonal(off, 0)
    fig, ax = plt.subplots(figsize=(5.2, 4.6))
    # Colour the errors only: the diagonal (~1000 per class) would wash out the off-diagonal.
    im = ax.imshow(off, cmap="Reds", vmin=0, vmax=max(1, off.max()))
    for i in range(10):
        for j in range(10):
            v = cm[i, j]
            if v:
                ax.text(j, i, str(v), ha="center", va="center", fontsize=6.5,
                        color="tab:blue" if i == j else ("white" if v > off.max() * 0.6 else "black"),
                        fontweight="bold" if i == j else "normal")
    ax.set_xticks(range(10)), ax.set_yticks(range(10))
    ax.set_xlabel("predicted"), ax.set_ylabel("true")
    acc = np.trace(cm) / cm.sum()
    ax.set_title(f"{label}: {cm.sum() - np.trace(cm)} errors in {cm.sum()} ({acc:.2%} correct)")
    fig.colorbar(im, ax=ax, shrink=0.8, label="errors (diagonal in blue: correct)")
    return _save(fig, path)


def fig_misclassified(x, y, prob, label: str, path: Path, n: int = 32) -> Path:
    plt = _plt()
    pred = prob.argmax(1)
    all_wrong = np.flatnonzero(pred != y)
    wrong = all_wrong[np.argsort(-prob[all_wrong, pred[all_wrong]])][:n]  # most confident first
    caps = [f"{y[i]}→{pred[i]} {prob[i, pred[i]]:.0%}\n#{i}" for i in wrong]
    rows = max(1, -(-len(wrong) // 8))
    fig, ax = plt.subplots(figsize=(7, 0.3 + rows * 1.2))
    _mosaic(ax, x[wrong], 8, caps, ["darkred"] * len(wrong), gap=8, cap_h=16)
    ax.set_title(f"The {len(wrong)} most confident of {len(all_wrong)} misclassified test digits\n"
                 f"(true→predicted, confidence, test index) by {label}")
    return _save(fig, path)


def fig_curves(runs: list[dict], path: Path) -> Path:
    """Validation accuracy per epoch of each run (test accuracy is measured once, at the end);
    a bar of test accuracy per run when no run has more than one validated epoch."""
    plt = _plt()
    from matplotlib.ticker import MaxNLocator

    def name(m):
        return f"{m['framework']}/{m['arch']} ({m['params']:,} params)"

    def validated(m):
        return [e for e in m["history"] if e.get("val_accuracy") is not None]

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
        return _save(fig, path)
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
    return _save(fig, path)


def fig_weights(layers: list[tuple[str, np.ndarray]], label: str, path: Path) -> tuple[Path, dict]:
    """Per-channel min/max of the layer with the widest spread of ranges, its per-channel
    int8 rounding error per-tensor vs per-channel, and the SQNR of every conv layer."""
    plt = _plt()
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
    return _save(fig, path), {"shown": name, "layers": stats}


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
    plt = _plt()
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
    return _save(fig, path)


def fig_pareto(rows: list[dict], source: str, path: Path) -> Path:
    """Accuracy against batch-1 p50 latency (log x): colour by runtime, marker by quantization,
    the Pareto front as a step line, and labels nudged apart so clustered models stay legible."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7.5, 4.4))
    lat = np.array([r["latency_ms"] for r in rows])
    acc = np.array([100 * r["accuracy"] for r in rows])
    # A model is on the front if no other is both faster and at least as accurate.
    front = [i for i in range(len(rows))
             if not any((lat[j] <= lat[i] and acc[j] >= acc[i]) and (lat[j] < lat[i] or acc[j] > acc[i])
                        for j in range(len(rows)))]
    colors = {"onnxruntime": "tab:blue", "litert": "tab:orange", "torch": "tab:red",
              "keras": "tab:green", "tf": "tab:purple"}
    markers = {"int8": "^", "dynamic": "D", "fp16": "s", "fp32": "o", "none": "o"}
    for i, r in enumerate(rows):
        ax.scatter(lat[i], acc[i], s=60 if i in front else 36, zorder=3,
                   color=colors.get(r.get("backend"), "tab:gray"),
                   marker=markers.get(r.get("quant") or "", "o"),
                   edgecolors="black" if i in front else "none", linewidths=0.8)
    f = sorted(front, key=lambda i: lat[i])
    ax.step(lat[f], acc[f], where="post", color="black", ls="--", lw=0.8, alpha=0.6, zorder=2)
    ax.set_xscale("log")
    pad = max(0.02, (acc.max() - acc.min()) * 0.15)
    ax.set_ylim(acc.min() - pad, acc.max() + pad * 1.5)
    ax.set_xlim(lat.min() / 1.25, lat.max() * 2.2)  # room right of the slowest for its label
    fig.canvas.draw()
    placed = []  # label boxes in display pixels: shift a label down until it is clear
    for i in sorted(range(len(rows)), key=lambda i: (-acc[i], lat[i])):
        x, y = ax.transData.transform((lat[i], acc[i]))
        w, h = 4.3 * len(rows[i]["name"]), 9
        dy = 0
        while any(abs((y + 3 - dy) - py) < h and x + 5 < px + pw and px < x + 5 + w for px, py, pw in placed):
            dy += h
        placed.append((x + 5, y + 3 - dy, w))
        ax.annotate(rows[i]["name"], (lat[i], acc[i]), xytext=(5, 3 - dy), textcoords="offset points",
                    fontsize=6.5, va="center",
                    arrowprops={"arrowstyle": "-", "lw": 0.4, "color": "gray"} if dy else None)
    for name, c in colors.items():
        if any(r.get("backend") == name for r in rows):
            ax.scatter([], [], color=c, label=name)
    for q, m in markers.items():
        if q != "none" and any((r.get("quant") or "") == q for r in rows):
            ax.scatter([], [], color="gray", marker=m, label=q)
    ax.plot([], [], color="black", ls="--", lw=0.8, label="Pareto front")
    ax.set_xlabel("latency p50 at batch 1 (ms, log scale; lower is better)")
    ax.set_ylabel("test accuracy (%)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=6.5, loc="lower right", ncol=2)
    ax.set_title(f"Latency vs accuracy ({source})")
    return _save(fig, path)


# --------------------------------------------------------------------------------------------
# the whole report


def build_report(out: Path, figures: list[str] | None = None, run: Path | None = None,
                 model: Path | None = None, bench: Path | None = None, data=None,
                 workspace_dir: Path | None = None) -> Report:
    """Draw the requested figures (default: all) into `out`; skip those without inputs."""
    from ..workspace import workspace

    figures = list(figures or FIGURES)
    for f in figures:
        if f not in FIGURES:
            raise ConfigError(f"unknown figure '{f}'; choose from: {', '.join(FIGURES)}")
    ws = Path(workspace_dir) if workspace_dir else workspace()
    rep = Report()
    out = Path(out)
    if run is None and model is None:
        run = default_run(ws / "runs")
    if data is None:
        from ..data import load_mnist

        data = load_mnist()
    x, y = data.x_test, data.y_test.astype(np.int64)

    if "digits" in figures:
        rep.written.append(fig_digits(data.x_train, data.y_train, out / "digits.png"))

    needs_pred = {"predictions", "confusion", "misclassified"} & set(figures)
    if needs_pred and run is None and model is None:
        for f in needs_pred:
            rep.skipped[f] = "no run or model (train one with 'mnistopt train', or pass --run/--model)"
    elif needs_pred:
        prob, label = predictions(x, run=run, model=model)
        pred = prob.argmax(1)
        cm = confusion_matrix(y, pred)
        off = cm - np.diag(np.diag(cm))
        i, j = np.unravel_index(np.argmax(off), off.shape)
        rep.facts["predictions"] = {
            "source": label, "accuracy": float((pred == y).mean()), "errors": int((pred != y).sum()),
            "most_confused": {"true": int(i), "predicted": int(j), "count": int(off[i, j])},
            "per_class_errors": (cm.sum(1) - np.diag(cm)).tolist(),
        }
        if "predictions" in figures:
            rep.written.append(fig_predictions(x, y, prob, label, out / "predictions.png"))
        if "confusion" in figures:
            rep.written.append(fig_confusion(y, pred, label, out / "confusion.png"))
        if "misclassified" in figures:
            rep.written.append(fig_misclassified(x, y, prob, label, out / "misclassified.png"))

    if "curves" in figures:
        runs = []
        for p in sorted((ws / "runs").glob("*/metrics.json")):
            try:
                m = json.loads(p.read_text())
                if m.get("history"):
                    runs.append(m)
            except (OSError, ValueError):
                continue
        if runs:
            rep.written.append(fig_curves(runs, out / "curves.png"))
        else:
            rep.skipped["curves"] = f"no runs with a history under {ws / 'runs'}"

    if "features" in figures:
        frun = _torch_run(run, ws)
        if frun is None:
            rep.skipped["features"] = "needs a PyTorch run (mnistopt train --framework torch)"
        else:
            from ..train import load_run

            r = load_run(frun)
            k, maps, total = first_conv_maps(r, x[0])
            rep.written.append(fig_features(k, maps, total, x[0], f"{r.framework}/{r.arch} ({frun.name})",
                                            out / "features.png"))

    if "weights" in figures:
        wrun = _torch_run(run, ws)
        if wrun is None:
            rep.skipped["weights"] = "needs a PyTorch run (mnistopt train --framework torch)"
        else:
            from ..train import load_run

            r = load_run(wrun)
            p, facts = fig_weights(torch_conv_weights(r), f"{r.framework}/{r.arch} ({wrun.name})",
                                   out / "weights.png")
            rep.written.append(p)
            rep.facts["weights"] = {"run": str(wrun), **facts}

    if "pareto" in figures:
        bench = Path(bench) if bench else default_bench(ws / "reports")
        if bench is None:
            rep.skipped["pareto"] = "no benchmark JSON (run 'mnistopt bench', or pass --bench)"
        else:
            try:
                rows = bench_rows(json.loads(bench.read_text()))
            except (OSError, ValueError) as exc:
                raise ConfigError(f"{bench}: not a readable benchmark JSON ({exc})") from None
            if not rows:
                raise ConfigError(f"{bench}: no rows with both a latency and an accuracy")
            rep.written.append(fig_pareto(rows, bench.name, out / "pareto.png"))
            rep.facts["pareto"] = {"bench": str(bench), "rows": rows}
    return rep


def _torch_run(run: Path | None, ws: Path) -> Path | None:
    """`run` if it is a PyTorch run, else the workspace's torch-seed (or any torch run)."""
    def is_torch(p: Path) -> bool:
        try:
            return json.loads((p / "metrics.json").read_text()).get("framework") == "torch"
        except (OSError, ValueError):
            return False

    if run is not None and is_torch(Path(run)):
        return Path(run)
    cands = [ws / "runs" / "torch-seed"] + sorted((ws / "runs").glob("torch-*"))
    return next((p for p in cands if is_torch(p)), None)
