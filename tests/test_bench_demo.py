"""`mnistopt demo`: the whole pipeline on a tiny run, then again with every step skipped."""

from __future__ import annotations

import functools

import pytest
from conftest import with_twins

from mnistopt import pipeline as D
from mnistopt.train import TrainConfig


@pytest.mark.slow
def test_demo_pipeline_then_skips(tmp_path, monkeypatch, capsys, tiny_mnist):
    monkeypatch.setenv("MNISTOPT_WORKSPACE", str(tmp_path))
    monkeypatch.setattr(D, "DEMO_RUNS", (D.DemoRun("torch", "edge", 6, 512, "tiny"),))
    monkeypatch.setattr("mnistopt.data.load_mnist", lambda *a, **k: tiny_mnist)
    # tiny_mnist has 512 training images, fewer than the default validation split of 5,000
    monkeypatch.setattr("mnistopt.train.TrainConfig", functools.partial(TrainConfig, val_split=0))
    monkeypatch.setattr(D, "FORMATS", ("onnx",))
    rep = D.demo(frameworks=("torch",), iters=3, budget_s=0.05, progress=False)
    ids = {r["id"] for r in rep["results"]}
    assert ids == with_twins({"torch-edge:native", "edge-torch-fp32.onnx", "edge-torch-int8.onnx"})
    assert not [r["error"] for r in rep["results"] if r.get("error")]
    for name in ("bench.json", "bench.md", "bench.png"):
        assert (tmp_path / "reports" / name).stat().st_size > 0
    capsys.readouterr()
    D.demo(frameworks=("torch",), iters=3, budget_s=0.05, progress=False)
    err = capsys.readouterr().err
    assert err.count("skipped") == 3, err  # train, export, bench
