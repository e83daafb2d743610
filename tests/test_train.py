"""Trainers: every framework builds every arch to its declared size, learns, saves and loads back.

Fast tests train on the synthetic `tiny_mnist` (512 training images, so a small validation
split) for a handful of steps; the real-MNIST checks (accuracy after an epoch) are marked slow.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest

from mnistopt.archs import ARCHS, get_arch
from mnistopt.errors import ConfigError, DeviceError, RunError
from mnistopt.train import FRAMEWORKS, TrainConfig, backend, load_run, train

FWS = sorted(FRAMEWORKS)


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def count_params(framework, model) -> int:
    if framework == "torch":
        return sum(p.numel() for p in model.parameters() if p.requires_grad)
    if framework == "keras":
        return sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    return sum(int(np.prod(v.shape)) for v in model.trainable_variables)


@pytest.mark.parametrize("arch", sorted(ARCHS))
@pytest.mark.parametrize("framework", FWS)
def test_build_matches_declared_params(framework, arch):
    model = backend(framework).build(get_arch(arch), seed=0)
    assert count_params(framework, model) == get_arch(arch).params


@pytest.mark.parametrize("framework", FWS)
def test_logits_shape_and_layout(framework):
    mod = backend(framework)
    model = mod.build(get_arch("edge"), seed=0)
    shape = (3, 1, 28, 28) if mod.LAYOUT == "NCHW" else (3, 28, 28, 1)
    out = mod.logits(model, np.random.default_rng(0).random(shape, dtype=np.float32))
    assert out.shape == (3, 10) and out.dtype == np.float32 and np.isfinite(out).all()


def test_every_framework_has_a_backend_module():
    from mnistopt.train import Backend

    for fw in FRAMEWORKS:
        assert isinstance(backend(fw), Backend), f"{fw} backend does not implement Backend"


def test_a_backend_missing_a_function_fails_at_lookup(monkeypatch):
    import types

    import mnistopt.train as T

    fake = types.ModuleType("mnistopt.train.fake_backend")
    fake.LAYOUT, fake.build = "NCHW", lambda arch, seed=0: None
    monkeypatch.setitem(sys.modules, fake.__name__, fake)
    monkeypatch.setitem(T.FRAMEWORKS, "fake", T.Framework(fake.__name__, "torch", "model.pt", "numpy"))
    with pytest.raises(TypeError, match="lacks fit, save, weights, layer_names, set_weights, load, logits, device_check"):
        backend("fake")


@pytest.mark.parametrize("framework", FWS)
def test_training_lowers_loss_and_round_trips(framework, tiny_mnist, tmp_path):
    cfg = TrainConfig(framework=framework, arch="edge", epochs=3, batch_size=64, lr=3e-3,
                      schedule="constant", limit=256, val_split=128)
    run = train(cfg, tmp_path / "run", data=tiny_mnist, progress=False)
    h = run.metrics["history"]
    assert h[-1]["loss"] < h[0]["loss"] * 0.9, h
    m = json.loads((tmp_path / "run" / "metrics.json").read_text())
    for key in ("framework", "arch", "params", "epochs", "history", "val_accuracy", "test_accuracy",
                "train_seconds", "train_images_per_second", "native", "layout", "split"):
        assert key in m
    assert m["params"] == get_arch("edge").params
    assert m["split"] == {"train": 256, "val": 128, "val_images": [384, 512]}
    assert [set(e) for e in h] == [{"epoch", "loss", "train_accuracy", "val_accuracy", "seconds"}] * 3
    # Validation is the held-out tail of the training images, the test score the test set.
    def acc(x, y):
        return float((run.logits(x).argmax(1) == y).mean())
    assert h[-1]["val_accuracy"] == pytest.approx(acc(tiny_mnist.x_train[384:], tiny_mnist.y_train[384:]), abs=1 / 128)
    assert m["val_accuracy"] == h[-1]["val_accuracy"]
    assert m["test_accuracy"] == acc(tiny_mnist.x_test, tiny_mnist.y_test)
    # Logits of the trained model in memory == logits of the model loaded back from disk,
    # batch-norm statistics included (the test images are not the training ones).
    before = run.logits(tiny_mnist.x_test[:64])
    after = load_run(tmp_path / "run").logits(tiny_mnist.x_test[:64])
    np.testing.assert_allclose(before, after, rtol=0, atol=1e-5)
    # No temp directories left beside the run.
    assert [p.name for p in tmp_path.iterdir()] == ["run"]


@pytest.mark.parametrize("framework", FWS)
def test_same_seed_same_result(framework, tiny_mnist, tmp_path):
    cfg = TrainConfig(framework=framework, arch="edge", epochs=1, batch_size=64, augment=True, limit=128,
                      val_split=64)
    a = train(cfg, tmp_path / "a", data=tiny_mnist, progress=False)
    b = train(cfg, tmp_path / "b", data=tiny_mnist, progress=False)
    np.testing.assert_array_equal(a.logits(tiny_mnist.x_test[:32]), b.logits(tiny_mnist.x_test[:32]))


def test_target_accuracy_stops_early_on_validation(tiny_mnist, tmp_path):
    cfg = TrainConfig(framework="torch", arch="lenet5", epochs=20, lr=3e-3, target_acc=0.5,
                      schedule="constant", val_split=128)
    m = train(cfg, tmp_path / "run", data=tiny_mnist, progress=False).metrics
    vals = [e["val_accuracy"] for e in m["history"]]
    assert m["epochs"] < 20 and vals[-1] >= 0.5 and all(v < 0.5 for v in vals[:-1]), vals
    assert m["stopped_early"] == "target"
    assert m["time_to_target_seconds"] == pytest.approx(m["train_seconds"])


def test_on_epoch_callback_sees_validation_and_can_stop(tiny_mnist, tmp_path):
    calls = []

    def on_epoch(epoch, val_accuracy):
        calls.append((epoch, val_accuracy))
        return epoch == 2

    cfg = TrainConfig(framework="torch", arch="lenet5", epochs=5, val_split=64, limit=256)
    m = train(cfg, tmp_path / "run", data=tiny_mnist, progress=False, on_epoch=on_epoch).metrics
    assert m["epochs"] == 2 and m["stopped_early"] == "callback"
    assert calls == [(e["epoch"], e["val_accuracy"]) for e in m["history"]]
    assert m["time_to_target_seconds"] is None


def test_on_epoch_callback_raising_writes_nothing(tiny_mnist, tmp_path):
    class Pruned(Exception):
        pass

    def on_epoch(epoch, val_accuracy):
        raise Pruned

    cfg = TrainConfig(framework="torch", arch="lenet5", epochs=3, val_split=64, limit=128)
    with pytest.raises(Pruned):
        train(cfg, tmp_path / "run", data=tiny_mnist, progress=False, on_epoch=on_epoch)
    assert list(tmp_path.iterdir()) == []


def test_validation_split_edges(tiny_mnist, tmp_path):
    with pytest.raises(ConfigError, match="leaves no training images"):
        train(TrainConfig(framework="torch", arch="lenet5"), tmp_path / "r", data=tiny_mnist,
              progress=False)  # the default 5,000 of 512 images
    with pytest.raises(ConfigError, match="needs val_split"):
        train(TrainConfig(framework="torch", arch="lenet5", val_split=0, limit=64), tmp_path / "r",
              data=tiny_mnist, progress=False, on_epoch=lambda e, v: False)
    m = train(TrainConfig(framework="torch", arch="lenet5", val_split=0, limit=64), tmp_path / "r",
              data=tiny_mnist, progress=False).metrics
    assert m["val_accuracy"] is None and m["history"][0]["val_accuracy"] is None
    assert m["split"] == {"train": 64, "val": 0, "val_images": None}


@pytest.mark.parametrize("kwargs, message", [
    ({"arch": "nope"}, "unknown architecture"),
    ({"framework": "jax"}, "unknown framework"),
    ({"epochs": 0}, "--epochs"),
    ({"batch_size": -1}, "--batch-size"),
    ({"lr": 0}, "--lr"),
    ({"target_acc": 99.0}, "--target-acc"),
    ({"target_acc": 0.99, "val_split": 0}, "needs --val-split"),
    ({"val_split": -1}, "--val-split"),
    ({"limit": 0}, "--limit"),
    ({"device": "tpu"}, "--device"),
    ({"schedule": "cosine"}, "--schedule"),
])
def test_bad_config(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        TrainConfig(**kwargs).validate()


@pytest.mark.parametrize("framework", ["torch", "tf"])
def test_gpu_absent_is_a_clear_error(framework):
    mod = backend(framework)
    try:
        mod.device_check("gpu")
    except DeviceError as exc:
        assert "sees no" in str(exc) and "--device cpu" in str(exc)
    else:  # a machine with a GPU: nothing to check here
        pytest.skip("a GPU is present")


def test_load_run_errors(tmp_path):
    with pytest.raises(RunError, match="not a run directory"):
        load_run(tmp_path / "missing")
    with pytest.raises(RunError, match="no metrics.json"):
        load_run(tmp_path)
    (tmp_path / "metrics.json").write_text(json.dumps(
        {"framework": "torch", "arch": "edge", "native": "model.pt", "layout": "NCHW"}))
    with pytest.raises(RunError, match="missing"):
        load_run(tmp_path)
    (tmp_path / "model.pt").write_bytes(b"not a model")
    with pytest.raises(RunError, match="cannot load"):
        load_run(tmp_path).logits(np.zeros((1, 28, 28), np.uint8))


@pytest.mark.parametrize("args, message", [
    (["--arch", "nope"], "unknown architecture 'nope'"),
    (["--epochs", "0"], "--epochs is a whole number in [1, 10,000], got 0"),
    (["--data", "/nonexistent/mnist"], "no such file or directory"),
    (["--framework", "jax"], "unknown framework 'jax'; choose one of: torch, keras, tf"),
    (["--target-acc", "0.99", "--val-split", "0"], "needs --val-split > 0"),
    (["--loop", "fast", "--framework", "tf"], "--loop fast is the torch trainer's"),
    pytest.param(["--recipe", "gpu-fast"], "sees no CUDA device", marks=pytest.mark.skipif(
        _cuda(), reason="this machine has a CUDA GPU")),
])
def test_cli_bad_arguments_exit_2_one_line(args, message, tmp_path):
    r = subprocess.run([sys.executable, "-m", "mnistopt", "train", "--quiet", "--out", str(tmp_path / "r"), *args],
                       capture_output=True, text=True, env={**os.environ, "MNISTOPT_WORKSPACE": str(tmp_path)})
    assert r.returncode == 2, r.stderr
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and message in lines[0], r.stderr
    assert not (tmp_path / "r").exists()


@pytest.mark.slow
def test_cli_trains_from_a_data_path(tiny_npz, tmp_path):
    npz = tiny_npz
    r = subprocess.run([sys.executable, "-m", "mnistopt", "train", "--arch", "lenet5", "--quiet", "--json",
                        "--val-split", "64", "--data", str(npz), "--out", str(tmp_path / "r")],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout.splitlines()[-1])["arch"] == "lenet5"
    assert load_run(tmp_path / "r").arch == "lenet5"


@pytest.mark.slow
@pytest.mark.parametrize("framework", FWS)
def test_seed_round_trip(framework, tiny_mnist, tmp_path):
    run = train(TrainConfig(framework=framework, arch="seed", epochs=1, limit=128, val_split=64), tmp_path / "r",
                data=tiny_mnist, progress=False)
    np.testing.assert_allclose(run.logits(tiny_mnist.x_test[:32]),
                               load_run(tmp_path / "r").logits(tiny_mnist.x_test[:32]), atol=1e-5)


@pytest.mark.slow
def test_torch_edge_learns_real_mnist(mnist, tmp_path):
    # 10k real images, one epoch: far above chance, proving the loop and eval() are right.
    cfg = TrainConfig(framework="torch", arch="edge", epochs=1, batch_size=128, lr=3e-3, limit=10000)
    assert train(cfg, tmp_path / "r", data=mnist, progress=False).metrics["test_accuracy"] > 0.9


def test_out_that_is_not_a_run_is_refused(tiny_mnist, tmp_path):
    (tmp_path / "precious.txt").write_text("keep me")
    with pytest.raises(ConfigError, match="not a run directory"):
        train(TrainConfig(framework="torch", arch="edge", limit=64), tmp_path, data=tiny_mnist, progress=False)
    assert (tmp_path / "precious.txt").exists()


@pytest.mark.gpu
@pytest.mark.parametrize("framework", FWS)
def test_gpu_training_round_trips(framework, tiny_mnist, tmp_path):
    try:
        backend(framework).device_check("gpu")
    except DeviceError as exc:
        pytest.skip(str(exc))
    run = train(TrainConfig(framework=framework, arch="edge", epochs=2, device="gpu", augment=True, val_split=64),
                tmp_path / "r", data=tiny_mnist, progress=False)
    assert run.metrics["history"][-1]["loss"] < run.metrics["history"][0]["loss"]
    # Saved from the GPU, loaded on the CPU: same logits up to kernel differences.
    np.testing.assert_allclose(run.logits(tiny_mnist.x_test[:32]),
                               load_run(tmp_path / "r").logits(tiny_mnist.x_test[:32]), atol=1e-3)


@pytest.mark.slow
def test_speed_benchmark_runs(capsys):
    from mnistopt.train.speed import main

    main(["--batches", "3", "--frameworks", "torch", "--skip-target"])
    out = capsys.readouterr().out
    assert "seed document" in out
    # the trainer's images/s and its ratio to the per-sample pipeline, both numbers
    assert re.search(r"mnistopt torch trainer .*: +\d+ images/s +x\d+\.\d\d", out), out
