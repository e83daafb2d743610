"""Trainers: every framework builds every arch to its declared size, learns, saves and loads back.

Fast tests train on the synthetic `tiny_mnist` for a handful of steps; the real-MNIST checks
(accuracy after an epoch) are marked slow.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from mnistopt.archs import ARCHS, get_arch
from mnistopt.errors import ConfigError, DeviceError, RunError
from mnistopt.train import FRAMEWORKS, TrainConfig, backend, load_run, train

FWS = sorted(FRAMEWORKS)


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
    for fw in FRAMEWORKS:
        mod = backend(fw)
        for name in ("LAYOUT", "build", "fit", "save", "load", "logits", "device_check"):
            assert hasattr(mod, name), f"{fw} backend lacks {name}"


@pytest.mark.parametrize("framework", FWS)
def test_training_lowers_loss_and_round_trips(framework, tiny_mnist, tmp_path):
    cfg = TrainConfig(framework=framework, arch="edge", epochs=3, batch_size=64, lr=3e-3,
                      schedule="constant", limit=256)
    run = train(cfg, tmp_path / "run", data=tiny_mnist, progress=False)
    h = run.metrics["history"]
    assert h[-1]["loss"] < h[0]["loss"] * 0.9, h
    m = json.loads((tmp_path / "run" / "metrics.json").read_text())
    for key in ("framework", "arch", "params", "epochs", "history", "test_accuracy",
                "train_seconds", "train_images_per_second", "native", "layout"):
        assert key in m
    assert m["params"] == get_arch("edge").params
    # Logits of the trained model in memory == logits of the model loaded back from disk,
    # batch-norm statistics included (the test images are not the training ones).
    before = run.logits(tiny_mnist.x_test[:64])
    after = load_run(tmp_path / "run").logits(tiny_mnist.x_test[:64])
    np.testing.assert_allclose(before, after, rtol=0, atol=1e-5)
    # No temp directories left beside the run.
    assert [p.name for p in tmp_path.iterdir()] == ["run"]


@pytest.mark.parametrize("framework", FWS)
def test_same_seed_same_result(framework, tiny_mnist, tmp_path):
    cfg = TrainConfig(framework=framework, arch="edge", epochs=1, batch_size=64, augment=True, limit=128)
    a = train(cfg, tmp_path / "a", data=tiny_mnist, progress=False)
    b = train(cfg, tmp_path / "b", data=tiny_mnist, progress=False)
    np.testing.assert_array_equal(a.logits(tiny_mnist.x_test[:32]), b.logits(tiny_mnist.x_test[:32]))


def test_target_accuracy_stops_early(tiny_mnist, tmp_path):
    cfg = TrainConfig(framework="torch", arch="lenet5", epochs=20, lr=3e-3, target_acc=0.5,
                      schedule="constant")
    m = train(cfg, tmp_path / "run", data=tiny_mnist, progress=False).metrics
    assert m["epochs"] < 20 and m["test_accuracy"] >= 0.5
    assert m["time_to_target_seconds"] == pytest.approx(m["train_seconds"])


@pytest.mark.parametrize("kwargs, message", [
    ({"arch": "nope"}, "unknown architecture"),
    ({"framework": "jax"}, "unknown framework"),
    ({"epochs": 0}, "--epochs"),
    ({"batch_size": -1}, "--batch-size"),
    ({"lr": 0}, "--lr"),
    ({"target_acc": 99.0}, "--target-acc"),
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
    (["--epochs", "0"], "--epochs must be at least 1"),
    (["--data", "/nonexistent/mnist"], "no such file or directory"),
])
def test_cli_bad_arguments_exit_2_one_line(args, message, tmp_path):
    r = subprocess.run([sys.executable, "-m", "mnistopt", "train", "--quiet", "--out", str(tmp_path / "r"), *args],
                       capture_output=True, text=True, env={**os.environ, "MNISTOPT_WORKSPACE": str(tmp_path)})
    assert r.returncode == 2, r.stderr
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and message in lines[0], r.stderr
    assert not (tmp_path / "r").exists()


@pytest.mark.slow
def test_cli_trains_from_a_data_path(tiny_mnist, tmp_path):
    npz = tmp_path / "mnist.npz"
    np.savez(npz, x_train=tiny_mnist.x_train, y_train=tiny_mnist.y_train,
             x_test=tiny_mnist.x_test, y_test=tiny_mnist.y_test)
    r = subprocess.run([sys.executable, "-m", "mnistopt", "train", "--arch", "lenet5", "--quiet", "--json",
                        "--data", str(npz), "--out", str(tmp_path / "r")], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout.splitlines()[-1])["arch"] == "lenet5"
    assert load_run(tmp_path / "r").arch == "lenet5"


@pytest.mark.slow
@pytest.mark.parametrize("framework", FWS)
def test_seed_round_trip(framework, tiny_mnist, tmp_path):
    run = train(TrainConfig(framework=framework, arch="seed", epochs=1, limit=128), tmp_path / "r",
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
    run = train(TrainConfig(framework=framework, arch="edge", epochs=2, device="gpu", augment=True),
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
    assert "seed document" in out and "images/s" in out and "x" in out
