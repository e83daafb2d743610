"""Figures of images: sample digits, predictions, the confusion matrix, the errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..plotting import pyplot, save
from .numbers import confusion_matrix


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
    plt = pyplot()
    rng = np.random.default_rng(0)
    idx = [i for d in range(10) for i in rng.choice(np.flatnonzero(y == d), per_class, replace=False)]
    fig, ax = plt.subplots(figsize=(per_class * 0.5, 10 * 0.5 + 0.3))
    _mosaic(ax, x[idx], per_class)
    ax.set_title("MNIST training images, one row per digit")
    return save(fig, path)


def fig_predictions(x, y, prob, label: str, path: Path, n: int = 24) -> Path:
    plt = pyplot()
    pred = prob.argmax(1)
    n = min(n, len(x))
    ok = pred[:n] == y[:n]
    caps = [f"{pred[k]} ({prob[k, pred[k]]:.0%})" + ("" if ok[k] else f" ≠{y[k]}") for k in range(n)]
    fig, ax = plt.subplots(figsize=(7, 3.2))
    # The first n test images: no cherry-picking.
    _mosaic(ax, x[:n], 8, caps, ["black" if o else "red" for o in ok], gap=6, cap_h=9)
    ax.set_title(f"First {n} test images: prediction (confidence) by {label}")
    return save(fig, path)


def fig_confusion(y, pred, label: str, path: Path) -> Path:
    plt = pyplot()
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
    return save(fig, path)


def fig_misclassified(x, y, prob, label: str, path: Path, n: int = 32) -> Path:
    plt = pyplot()
    pred = prob.argmax(1)
    all_wrong = np.flatnonzero(pred != y)
    wrong = all_wrong[np.argsort(-prob[all_wrong, pred[all_wrong]])][:n]  # most confident first
    caps = [f"{y[i]}→{pred[i]} {prob[i, pred[i]]:.0%}\n#{i}" for i in wrong]
    rows = max(1, -(-len(wrong) // 8))
    fig, ax = plt.subplots(figsize=(7, 0.3 + rows * 1.2))
    _mosaic(ax, x[wrong], 8, caps, ["darkred"] * len(wrong), gap=8, cap_h=16)
    ax.set_title(f"The {len(wrong)} most confident of {len(all_wrong)} misclassified test digits\n"
                 f"(true→predicted, confidence, test index) by {label}")
    return save(fig, path)
