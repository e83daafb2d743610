"""The numbers behind the figures (numpy only, tested directly)."""

from __future__ import annotations

import numpy as np

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
