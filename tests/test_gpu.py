"""The GPU paths: where there is no GPU, clear errors and nothing CUDA on a CPU run; where there
is one (`-m gpu`, run by tools/gpu_check.sh), CUDA-graph replay and the fast loop on CUDA. And
the GPU check script itself, in its CPU smoke mode."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from mnistopt.errors import DeviceError
from mnistopt.train import TrainConfig, train

ROOT = Path(__file__).resolve().parents[1]
CUDA = torch.cuda.is_available()


def _tiny_run(tmp_path, tiny_mnist, arch="lenet5", device="cpu"):
    cfg = TrainConfig(arch=arch, epochs=1, batch_size=32, limit=64, val_split=64, device=device)
    return train(cfg, tmp_path / f"torch-{arch}", data=tiny_mnist, progress=False).path


def test_torch_session_on_gpu_without_cuda_is_a_device_error(tmp_path, tiny_mnist):
    from mnistopt.targets.backends import _Torch

    run = _tiny_run(tmp_path, tiny_mnist)
    if CUDA:
        pytest.skip("this machine has a CUDA GPU")
    with pytest.raises(DeviceError, match="--device gpu: torch .* sees no CUDA device"):
        _Torch(run, None, "gpu")


def test_cpu_session_touches_nothing_of_cuda(tmp_path, tiny_mnist, monkeypatch):
    from mnistopt.targets.backends import _Torch

    run = _tiny_run(tmp_path, tiny_mnist)

    def boom(*a, **k):
        raise AssertionError("a CUDA call on a CPU run")

    for name in ("synchronize", "CUDAGraph", "graph", "Stream", "current_stream"):
        monkeypatch.setattr(torch.cuda, name, boom)
    s = _Torch(run, None, "cpu")
    assert s.graphs is None
    out = s.run(s.prepare(tiny_mnist.x_test[:4]))
    assert out.shape == (4, 10) and out.dtype == np.float32


@pytest.mark.skipif(CUDA, reason="this machine has a CUDA GPU")
def test_bench_gpu_native_torch_without_gpu_is_one_line(tmp_path, tiny_mnist):
    run = _tiny_run(tmp_path, tiny_mnist)
    r = subprocess.run([sys.executable, "-m", "mnistopt", "bench", str(run), "--device", "gpu",
                        "--iters", "2", "--quiet"], capture_output=True, text=True)
    assert r.returncode == 2, r.stderr
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: no backend can run on --device gpu"), r.stderr
    assert "sees no CUDA device" in lines[0]


def test_gpu_check_imports_no_tensorflow():
    # The GPU machine has no TensorFlow: the check and everything it imports must do without.
    code = ("import sys; sys.argv = ['x']; sys.path.insert(0, 'tools'); import gpu_check; "
            "import mnistopt.train, mnistopt.train.torch_fast, mnistopt.train.recipes, mnistopt.cli; "
            "import mnistopt.targets.backends, mnistopt.targets.torch_cuda, mnistopt.targets.env; "
            "bad = [m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras', 'tf2onnx')]; "
            "print(bad); sys.exit(1 if bad else 0)")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                       env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert r.returncode == 0, r.stdout + r.stderr


def test_gpu_check_call_is_documented_the_same_everywhere():
    """The device call in the script's header is the one DEVELOPERS.md tells the next session."""
    header = (ROOT / "tools" / "gpu_check.sh").read_text()
    dev = (ROOT / "DEVELOPERS.md").read_text()
    for pattern in (r"command:\s+(bash tools/gpu_check.sh)\n", r"carry:\s+(\[\"\.gpu\"\])", r"timeout_s:\s+(\d+)"):
        want = re.search(pattern, header)
        assert want, pattern
        assert re.search(pattern.replace(r"(\d+)", want.group(1)), dev), (pattern, want.group(1))
    limit = int(re.search(r"timeout -k 10 (\d+) python3", header).group(1))
    assert limit + 10 < int(re.search(r"timeout_s:\s+(\d+)", header).group(1)) <= 600


@pytest.mark.slow
def test_gpu_check_smoke_writes_the_report(tmp_path):
    out = tmp_path / "out"
    r = subprocess.run(["bash", str(ROOT / "tools" / "gpu_check.sh"), "smoke"], capture_output=True, text=True,
                       env={**os.environ, "PYTHON": sys.executable, "OUT": str(out),
                            "MNISTOPT_WORKSPACE": str(tmp_path / "ws")}, timeout=900)
    assert r.returncode == 0, r.stdout + r.stderr
    rep = json.loads((out / "gpu-cpu.json").read_text())
    assert rep["schema"] == "mnistopt.gpu-check/1" and rep["smoke"] and rep["errors"] == {}
    assert {"python", "torch", "cuda", "nvidia_smi", "commit"} <= set(rep["environment"])
    t = rep["time_to_99"]
    assert {"selection", "chosen", "chosen_by", "runs", "summary"} <= set(t)
    assert {"median_time_to_val_target_s", "test_accuracy_mean", "test_at_least_target", "goal_s",
            "met_goal"} <= set(t["summary"])
    run = t["runs"][0]
    assert run["fast"]["device"] == "cpu" and set(run["setup_seconds"]) == {"to_device", "warmup", "compile"}
    b = rep["best_in_10s"]
    assert b["epochs"] >= 1 and 0 <= b["test_accuracy"] <= 1 and "within_budget" in b
    models = rep["bench"]["models"]
    assert {"seed/torch", "edge/torch"} <= set(models), models
    assert all(m["error"] is None and m["p50_us_b1"] > 0 for m in models.values()), models
    assert (out / "bench-gpu.json").is_file() and (out / "bench-gpu.md").is_file()
    assert set(rep["bench"]["graphs_vs_eager"]["edge"]) == {"eager_b1", "eager_b64"}


# --- on a GPU (tools/gpu_check.sh runs these) ------------------------------------------------

@pytest.mark.gpu
@pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU")
def test_cuda_graph_replay_matches_eager(tmp_path, tiny_mnist):
    from mnistopt.targets.backends import _Torch

    run = _tiny_run(tmp_path, tiny_mnist, arch="edge")
    eager, graphs = _Torch(run, None, "gpu", graphs=False), _Torch(run, None, "gpu")
    assert graphs.via.endswith("CUDA graphs")
    for b in (1, 7, 64):
        x = tiny_mnist.x_test[:b]
        np.testing.assert_allclose(graphs.run(graphs.prepare(x)), eager.run(eager.prepare(x)), atol=1e-4)
    first = graphs.prepare(tiny_mnist.x_test[:7])
    again = graphs.prepare(tiny_mnist.x_test[7:14])  # same size: the same captured input buffer
    assert first is again
    np.testing.assert_allclose(graphs.run(again), eager.run(eager.prepare(tiny_mnist.x_test[7:14])), atol=1e-4)


@pytest.mark.gpu
@pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU")
def test_fast_loop_on_cuda_learns_with_bf16(tmp_path, tiny_mnist):
    cfg = TrainConfig(arch="edge", epochs=3, batch_size=32, lr=3e-3, device="gpu", augment=True, val_split=64)
    m = train(cfg, tmp_path / "r", data=tiny_mnist, progress=False).metrics
    assert m["loop"] == "fast" and m["fast"]["amp"] == "bfloat16" and m["fast"]["channels_last"]
    assert m["history"][-1]["loss"] < m["history"][0]["loss"]
    assert m["setup_seconds"]["warmup"] > 0
