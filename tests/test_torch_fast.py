"""The device-resident torch loop (train/torch_fast.py), exercised on the CPU: it learns, it is
deterministic there, it reads nothing back from the device inside an epoch, and its CUDA-only
options stay off unless asked for. Recipes and the new train options."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

from mnistopt.errors import ConfigError
from mnistopt.train import TrainConfig, fit, load_run, train
from mnistopt.train import torch_fast as F
from mnistopt.train.loop import EpochLog, make_splits
from mnistopt.train.recipes import RECIPES, get_recipe, with_recipe


def small(**kw) -> TrainConfig:
    base = dict(arch="lenet5", epochs=2, batch_size=32, lr=3e-3, loop="fast", limit=128, val_split=64)
    return TrainConfig(**{**base, **kw})


def fast_fit(cfg, data, opts=None):
    """torch_fast.fit on a fresh model; returns (model, facts, history)."""
    from mnistopt.archs import get_arch
    from mnistopt.train.torch_backend import build

    model = build(get_arch(cfg.arch), seed=cfg.seed)
    splits = make_splits(cfg, data)
    with EpochLog(cfg, len(splits.y_train), len(splits.y_val), progress=False) as log:
        facts = F.fit(model, cfg, splits, log, opts)
    return model, facts, log.history


def test_fast_loop_learns_and_round_trips(tiny_mnist, tmp_path):
    run = train(small(epochs=3, augment=True), tmp_path / "r", data=tiny_mnist, progress=False)
    m = run.metrics
    assert m["loop"] == "fast" and m["config"]["loop"] == "fast"
    assert m["history"][-1]["loss"] < m["history"][0]["loss"]
    assert m["fast"]["device"] == "cpu" and m["fast"]["amp"] is None and not m["fast"]["channels_last"]
    assert m["fast"]["images_per_epoch"] == 128 and m["fast"]["steps_per_epoch"] == 4
    assert set(m["setup_seconds"]) == {"to_device", "warmup", "compile"}
    np.testing.assert_allclose(run.logits(tiny_mnist.x_test[:16]),
                               load_run(tmp_path / "r").logits(tiny_mnist.x_test[:16]), atol=1e-5)


def test_fast_loop_is_deterministic_on_cpu_and_warm_up_changes_nothing(tiny_mnist):
    cfg = small(augment=True)
    a, _, ha = fast_fit(cfg, tiny_mnist)
    b, _, hb = fast_fit(cfg, tiny_mnist)
    c, facts, hc = fast_fit(cfg, tiny_mnist, F.FastOptions(warmup_steps=2))
    assert facts["fast"]["warmup_steps"] == 2
    for name, t in a.state_dict().items():
        assert torch.equal(t, b.state_dict()[name]), name
        assert torch.equal(t, c.state_dict()[name]), name
    assert [h["loss"] for h in ha] == [h["loss"] for h in hb] == [h["loss"] for h in hc]
    d, _, _ = fast_fit(small(augment=True, seed=1), tiny_mnist)
    assert not torch.equal(a.state_dict()["1.weight"], d.state_dict()["1.weight"])


HOST_READS = ("item", "tolist", "numpy", "cpu", "__float__", "__int__", "__bool__", "__index__")


def count_host_reads(monkeypatch) -> dict:
    """Count the reads of a tensor's value by code of this package (torch's own internals,
    e.g. the non-fused CPU Adam reading its step count, are not the loop's doing)."""
    counts = dict.fromkeys(HOST_READS, 0)
    for name in HOST_READS:
        orig = getattr(torch.Tensor, name)

        def wrapper(self, *a, _orig=orig, _name=name, **kw):
            if sys._getframe(1).f_globals.get("__name__", "").startswith("mnistopt."):
                counts[_name] += 1
            return _orig(self, *a, **kw)

        monkeypatch.setattr(torch.Tensor, name, wrapper)
    return counts


def test_no_host_read_inside_an_epoch(tiny_mnist, monkeypatch):
    # 4 steps per epoch, then 16: a read per step would make the counts differ.
    counts = count_host_reads(monkeypatch)
    fast_fit(small(limit=128, augment=True), tiny_mnist)
    few = dict(counts)
    for k in counts:
        counts[k] = 0
    fast_fit(small(limit=512 - 64, batch_size=28), tiny_mnist)  # 16 steps
    assert counts == few, (few, counts)
    # what remains: per epoch, the loss, the training and the validation accuracy
    assert sum(few.values()) <= 3 * 2, few


def test_cuda_only_features_can_be_forced_on_the_cpu(tiny_mnist):
    # bf16 autocast and channels-last run on the CPU too, so their code paths are tested here.
    model, facts, h = fast_fit(small(epochs=3), tiny_mnist, F.FastOptions(amp="bf16", channels_last=True))
    assert facts["fast"]["amp"] == "bfloat16" and facts["fast"]["channels_last"]
    assert h[-1]["loss"] < h[0]["loss"]
    assert all(p.is_contiguous() for p in model.parameters())  # saved in the ordinary layout


def test_compile_path_reports_compile_time(tiny_mnist):
    # "aot_eager": dynamo and AOT autograd (forward and backward graphs) without generating
    # code, so the wrapping is tested in seconds; inductor itself runs in tools/gpu_check.py.
    _, facts, h = fast_fit(small(epochs=1, compile=True), tiny_mnist,
                           F.FastOptions(compile=True, compile_backend="aot_eager"))
    assert facts["fast"]["compile"] and facts["fast"]["warmup_steps"] == 3
    assert facts["setup_seconds"]["compile"] > 0 and np.isfinite(h[0]["loss"])


def test_resolve_picks_cuda_features_only_on_cuda():
    cpu = F.resolve(F.FastOptions(), torch.device("cpu"))
    assert cpu.amp is None and not cpu.channels_last and cpu.warmup_steps == 0 and not cpu.cuda
    assert F.resolve(F.FastOptions(compile=True), torch.device("cpu")).warmup_steps == 3


def test_sync_never_touches_cuda_on_a_cpu_run(tiny_mnist, monkeypatch):
    def boom(*a, **k):
        raise AssertionError("torch.cuda.synchronize on a CPU run")

    monkeypatch.setattr(torch.cuda, "synchronize", boom)
    fast_fit(small(epochs=1), tiny_mnist)


def test_betas_reach_adam(tiny_mnist, monkeypatch):
    seen = {}
    orig = torch.optim.Adam.__init__

    def spy(self, params, **kw):
        seen.update(kw)
        orig(self, params, **kw)

    monkeypatch.setattr(torch.optim.Adam, "__init__", spy)
    fast_fit(small(epochs=1, betas=(0.7, 0.9)), tiny_mnist)
    assert seen["betas"] == (0.7, 0.9) and "fused" not in seen  # fused: CUDA only


@pytest.mark.parametrize("kwargs, message", [
    (dict(framework="keras", loop="fast"), "fast is the torch trainer's"),
    (dict(compile=True), "applies to the torch fast loop"),
    (dict(betas=(0.7, 0.9)), "applies to the torch fast loop"),
    (dict(loop="fast", betas=(0.7,)), "two numbers"),
    (dict(loop="warp"), "--loop must be one of auto, standard, fast"),
])
def test_bad_fast_config(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        TrainConfig(**kwargs).validate()


def test_auto_loop_is_fast_on_gpu_only():
    assert TrainConfig(device="gpu").uses_fast_loop()
    assert not TrainConfig(device="cpu").uses_fast_loop()
    assert not TrainConfig(framework="tf", device="gpu").uses_fast_loop()


def test_recipe_values_and_explicit_options_win():
    got = with_recipe("gpu-fast", {"arch": "edge", "epochs": 1, "seed": 3}, explicit={"arch"})
    assert got["arch"] == "edge" and got["epochs"] == RECIPES["gpu-fast"].values["epochs"]
    assert got["device"] == "gpu" and got["seed"] == 3
    for name, r in RECIPES.items():
        TrainConfig(**{**r.values, "device": "cpu", "framework": "torch"}).validate()
    with pytest.raises(ConfigError, match="unknown recipe 'nope'; choose one of: cpu-fast, gpu-fast"):
        get_recipe("nope")


@pytest.mark.slow
def test_cli_recipe_on_the_cpu_with_overrides(tiny_npz, tmp_path):
    npz = tiny_npz
    r = subprocess.run([sys.executable, "-m", "mnistopt", "train", "--recipe", "gpu-fast", "--device", "cpu",
                        "--epochs", "1", "--limit", "256", "--val-split", "64", "--quiet",
                        "--data", str(npz), "--out", str(tmp_path / "r")], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "off the clock: data to the device" in r.stdout
    m = load_run(tmp_path / "r").metrics
    assert m["loop"] == "fast" and m["config"]["betas"] == [0.7, 0.9] and m["epochs"] == 1


def test_fit_api_runs_the_fast_loop(tiny_mnist):
    _, m = fit(small(epochs=1), tiny_mnist, progress=False)
    assert m["loop"] == "fast" and 0 <= m["test_accuracy"] <= 1
