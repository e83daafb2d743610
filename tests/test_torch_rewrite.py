"""The exact torch rewrites applied before litert-torch converts a model (export.torch_rewrite)."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

from mnistopt import archs as A  # noqa: E402
from mnistopt.export import torch_rewrite as R  # noqa: E402
from mnistopt.train.torch_backend import Normalize, build  # noqa: E402

SAMPLE = np.random.default_rng(1).random((32, 1, 28, 28), dtype=np.float32)


def _logits(model, x=SAMPLE):
    with torch.no_grad():
        return model.eval()(torch.from_numpy(x)).numpy()


def _stem_net(k=5, pad=2, c=6, bn=False):
    torch.manual_seed(0)
    layers = [Normalize(0.13, 0.31), nn.Conv2d(1, c, k, padding=pad)]
    if bn:
        norm = nn.BatchNorm2d(c)
        norm.running_mean.uniform_(-1, 1)
        norm.running_var.uniform_(0.5, 2)
        norm.weight.data.uniform_(0.5, 1.5)
        norm.bias.data.uniform_(-0.5, 0.5)
        layers.append(norm)
    side = (28 + 2 * pad - k + 1) // 2
    layers += [nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(c * side * side, 10)]
    return nn.Sequential(*layers).eval()


@pytest.mark.parametrize("k,pad,bn", [(5, 2, False), (3, 1, True), (5, 0, False), (3, 1, False)])
def test_stem_rewrite_is_exact(k, pad, bn):
    model = _stem_net(k, pad, bn=bn)
    new, note = R.space_to_depth_stem(model, SAMPLE)
    assert note and "space-to-depth" in note and ("batch norm" in note) == bn
    assert any(isinstance(m, R.SpaceToDepthStem) for m in new)
    assert not any(isinstance(m, (nn.MaxPool2d, nn.BatchNorm2d)) for m in new)
    # new images, not the ones the rewrite checked itself on
    x = np.random.default_rng(2).random((16, 1, 28, 28), dtype=np.float32)
    np.testing.assert_allclose(_logits(new, x), _logits(model, x), atol=1e-4)
    stem = next(m for m in new if isinstance(m, R.SpaceToDepthStem))
    assert stem.conv.in_channels == 4 and stem.conv.out_channels == 24


def test_lenet5_stem_is_rewritten_and_others_are_checked():
    """Every registered arch: rewritten exactly or left as it is (the same object)."""
    rewritten = set()
    for name, arch in A.ARCHS.items():
        model = build(arch).eval()
        new, note = R.space_to_depth_stem(model, SAMPLE)
        if note is None:
            assert new is model
        else:
            rewritten.add(name)
            np.testing.assert_allclose(_logits(new), _logits(model), atol=1e-4)
    assert "lenet5" in rewritten


@pytest.mark.parametrize("change", ["stride", "reflect", "avgpool", "odd", "no-relu"])
def test_other_stems_are_left_alone(change):
    model = _stem_net()
    if change == "stride":
        model[1] = nn.Conv2d(1, 6, 5, stride=2, padding=2)
    elif change == "reflect":
        model[1] = nn.Conv2d(1, 6, 5, padding=2, dilation=1, groups=1, padding_mode="reflect")
    elif change == "avgpool":
        model[3] = nn.AvgPool2d(2)
    elif change == "odd":  # 28 - 4 + 1 = 25 outputs: a 2x2 pool drops a row, s2d would not
        model = _stem_net(k=4, pad=0)
    elif change == "no-relu":
        model[2] = nn.Identity()
    new, note = R.space_to_depth_stem(model, SAMPLE)
    assert new is model and note is None


def test_a_rewrite_that_changes_the_logits_is_dropped(monkeypatch):
    forward = R.SpaceToDepthStem.forward
    monkeypatch.setattr(R.SpaceToDepthStem, "forward", lambda self, x: forward(self, x) * 2)
    model = _stem_net()
    new, note = R.space_to_depth_stem(model, SAMPLE)
    assert new is model and note is None
