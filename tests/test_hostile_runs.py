"""Hostile run directories: a SavedModel that writes a file when served, a model.pt that pickles
a call, a model.keras whose config names other code, weights.npz files that lie. mnistopt loads
runs from weights.npz into a model rebuilt from the arch and never runs what a run stores."""

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from mnistopt.data import MNIST
from mnistopt.errors import RunError
from mnistopt.train import TrainConfig, load_run, train

EVIL_SAVEDMODEL = '''
import os, sys
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
import tensorflow as tf

class Evil(tf.Module):
    @tf.function(input_signature=[tf.TensorSpec([None, 28, 28, 1], tf.float32, name="images")])
    def serve(self, images):
        tf.io.write_file(sys.argv[2], "pwned")  # what a SavedModel may do when served
        return {"logits": tf.zeros([tf.shape(images)[0], 10])}

m = Evil()
tf.saved_model.save(m, sys.argv[1], signatures={"serving_default": m.serve})
'''


def tiny_data(n=96):
    rng = np.random.default_rng(0)
    y = rng.integers(0, 10, n).astype(np.uint8)
    x = np.zeros((n, 28, 28), np.uint8)
    for i, label in enumerate(y):
        x[i, 2 + 2 * label: 5 + 2 * label, 4:24] = 255
    return MNIST(x, y, x[:32], y[:32], source="synthetic", path=Path("/nonexistent"), sha256="")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """One small run per framework (edge: batch norm, so moving statistics are weights too)."""
    root = tmp_path_factory.mktemp("runs")
    out = {}
    for fw in ("torch", "keras", "tf"):
        pytest.importorskip("torch" if fw == "torch" else "tensorflow")
        cfg = TrainConfig(framework=fw, arch="edge", epochs=1, limit=64, val_split=0, batch_size=32)
        out[fw] = train(cfg, root / fw, data=tiny_data(), progress=False).path
    return out


def copy_run(src: Path, dst: Path) -> Path:
    import shutil

    shutil.copytree(src, dst)
    return dst


def logits(run_dir):
    return load_run(run_dir).logits(tiny_data().x_test)


def plant_evil_savedmodel(run: Path, marker: Path) -> None:
    import shutil

    shutil.rmtree(run / "saved_model")
    subprocess.run([sys.executable, "-c", EVIL_SAVEDMODEL, str(run / "saved_model"), str(marker)],
                   check=True, capture_output=True, timeout=300)


def test_every_run_records_a_weights_digest(runs):
    for fw, path in runs.items():
        m = json.loads((path / "metrics.json").read_text())
        assert m["weights"]["file"] == "weights.npz" and len(m["weights"]["sha256"]) == 64, fw
        with np.load(path / "weights.npz", allow_pickle=False) as z:
            assert all(z[k].dtype.kind in "fi" for k in z.files)


def test_a_tf_run_with_an_evil_savedmodel_loads_without_running_it(runs, tmp_path):
    want = logits(runs["tf"])
    run = copy_run(runs["tf"], tmp_path / "tf")
    marker = tmp_path / "pwned"
    plant_evil_savedmodel(run, marker)
    np.testing.assert_allclose(logits(run), want, atol=1e-6)  # rebuilt + weights.npz
    assert not marker.exists()


def test_a_tf_run_without_weights_is_refused_unless_trusted(runs, tmp_path, monkeypatch):
    run = copy_run(runs["tf"], tmp_path / "old-tf")
    m = json.loads((run / "metrics.json").read_text())
    del m["weights"]  # as written before weights.npz existed (or by someone hoping for that)
    (run / "metrics.json").write_text(json.dumps(m))
    marker = tmp_path / "pwned"
    plant_evil_savedmodel(run, marker)
    with pytest.raises(RunError, match="--trust-savedmodel") as info:
        logits(run)
    assert "\n" not in str(info.value) and not marker.exists()
    monkeypatch.setenv("MNISTOPT_TRUST_SAVEDMODEL", "1")  # the user's own call: it is served
    logits(run)
    assert marker.read_text() == "pwned"


@pytest.mark.parametrize("fw", ["torch", "keras", "tf"])
def test_weights_that_were_changed_are_refused(runs, tmp_path, fw):
    run = copy_run(runs[fw], tmp_path / fw)
    with np.load(run / "weights.npz") as z:
        arrays = {k: z[k] for k in z.files}
    name = sorted(k for k in arrays if arrays[k].dtype.kind == "f")[0]
    arrays[name] = arrays[name] + 1
    np.savez(run / "weights.npz", **arrays)
    with pytest.raises(RunError, match="does not match the sha256 recorded"):
        logits(run)
    # The digest recomputed too (metrics.json edited as well): the shapes still have to fit.
    arrays[name] = np.zeros((3, 3), np.float32)
    np.savez(run / "weights.npz", **arrays)
    m = json.loads((run / "metrics.json").read_text())
    from mnistopt.fsutil import sha256_file

    m["weights"]["sha256"] = sha256_file(run / "weights.npz")
    (run / "metrics.json").write_text(json.dumps(m))
    with pytest.raises(RunError, match=rf"{name} is float32\[3, 3\], the arch needs"):
        logits(run)


def test_weights_holding_an_object_array_are_refused(runs, tmp_path):
    run = copy_run(runs["torch"], tmp_path / "t")
    with np.load(run / "weights.npz") as z:
        arrays = {k: z[k] for k in z.files}
    arrays[next(iter(arrays))] = np.array([{"x": 1}], dtype=object)
    np.savez(run / "weights.npz", **arrays, allow_pickle=True)
    m = json.loads((run / "metrics.json").read_text())
    from mnistopt.fsutil import sha256_file

    m["weights"]["sha256"] = sha256_file(run / "weights.npz")
    (run / "metrics.json").write_text(json.dumps(m))
    with pytest.raises(RunError, match="not a plain number"):
        logits(run)


def legacy(run: Path) -> Path:
    """The run as mnistopt wrote it before weights.npz: no file, no digest."""
    m = json.loads((run / "metrics.json").read_text())
    del m["weights"]
    (run / "metrics.json").write_text(json.dumps(m))
    (run / "weights.npz").unlink()
    return run


def test_legacy_torch_run_with_a_pickled_call_is_one_line(runs, tmp_path):
    import torch

    run = legacy(copy_run(runs["torch"], tmp_path / "t"))
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    torch.save({"weight": Evil()}, run / "model.pt")
    with pytest.raises(RunError) as info:
        logits(run)
    msg = str(info.value)
    assert "\n" not in msg and "refused" in msg and "system" in msg, msg
    assert "weights_only=False" not in msg and not marker.exists()


def test_legacy_torch_run_of_another_arch_is_one_line(runs, tmp_path):
    import torch

    run = legacy(copy_run(runs["torch"], tmp_path / "t"))
    torch.save({"0.weight": torch.zeros(3, 3), "junk": torch.zeros(1)}, run / "model.pt")
    with pytest.raises(RunError, match="not the weights of this arch") as info:
        logits(run)
    assert "\n" not in str(info.value)


def test_legacy_torch_and_keras_runs_still_load(runs, tmp_path):
    for fw in ("torch", "keras"):
        want = logits(runs[fw])
        run = legacy(copy_run(runs[fw], tmp_path / fw))
        np.testing.assert_allclose(logits(run), want, atol=1e-6)


def test_legacy_keras_config_is_never_deserialized(runs, tmp_path):
    """config.json naming a non-Keras function (CVE-2025-1550's shape): it is not read at all;
    the weights come from model.weights.h5 into the rebuilt arch."""
    want = logits(runs["keras"])
    run = legacy(copy_run(runs["keras"], tmp_path / "k"))
    src = run / "model.keras"
    with zipfile.ZipFile(src) as zf:
        members = {n: zf.read(n) for n in zf.namelist()}
    members["config.json"] = json.dumps({"module": "os", "class_name": "system",
                                         "config": {"command": "touch pwned"}}).encode()
    with zipfile.ZipFile(src, "w") as zf:
        for n, raw in members.items():
            zf.writestr(n, raw)
    np.testing.assert_allclose(logits(run), want, atol=1e-6)


def mnistopt(*args, env=None):
    return subprocess.run([sys.executable, "-m", "mnistopt", *map(str, args)], capture_output=True,
                          text=True, timeout=900, env={**os.environ, **(env or {})})


@pytest.mark.slow
def test_cli_export_and_bench_of_an_evil_tf_run_run_nothing(runs, tmp_path):
    """The issue's attack, end to end: mnistopt export RUN and mnistopt bench RUN."""
    run = copy_run(runs["tf"], tmp_path / "tf")
    marker = tmp_path / "pwned"
    plant_evil_savedmodel(run, marker)
    env = {"MNISTOPT_WORKSPACE": str(tmp_path / "ws")}
    r = mnistopt("export", run, "--format", "all", "--no-validate", "--quiet", env=env)
    assert r.returncode == 0, r.stderr
    r = mnistopt("bench", run, "--batch-sizes", "1", "--warmup", "1", "--iters", "3",
                 "--budget", "0.2", "--quiet", env=env)
    assert "tf.function" in r.stdout, r.stdout + r.stderr
    assert not marker.exists()
