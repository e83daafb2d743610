"""`mnistopt bench` on hostile files: a failure per bad model, listed, exit 1, no traceback."""

import json
import os
import subprocess
import sys

import pytest
from conftest import with_twins

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")


def test_bench_lists_each_hostile_file_as_a_failure_and_exits_1(tmp_path):
    from hostile_models import onnx_model

    good = onnx_model(tmp_path / "good.onnx")
    (tmp_path / "junk.onnx").write_text("not a model, just text")
    (tmp_path / "cut.tflite").write_bytes(b"\x1c\x00\x00\x00TFL3" + bytes(40))
    liar = onnx_model(tmp_path / "liar.onnx")  # a sidecar the schema refuses: warned, still runs
    (tmp_path / "liar.onnx.json").write_text(json.dumps({"labels": 5, "input": "x"}))
    env = dict(os.environ, MNISTOPT_WORKSPACE=str(tmp_path / "ws"))
    r = subprocess.run(
        [sys.executable, "-m", "mnistopt", "bench", str(good), str(tmp_path / "junk.onnx"),
         str(tmp_path / "cut.tflite"), str(liar), "--batch-sizes", "1", "--warmup", "1",
         "--iters", "3", "--budget", "0.2", "--quiet", "--json", str(tmp_path / "r.json")],
        capture_output=True, text=True, env=env, timeout=600)
    out = r.stdout + r.stderr
    assert r.returncode == 1, out
    assert "Traceback" not in out
    rep = json.loads((tmp_path / "r.json").read_text())
    failed = {line.split(":")[0] for line in rep["failures"]}
    # each .onnx file also runs on OpenVINO where it is installed: it must refuse junk too
    assert failed == with_twins({"junk.onnx"}) | {"cut.tflite"}, rep["failures"]
    ok = {rec["id"]: rec for rec in rep["results"] if not rec.get("error")}
    assert set(ok) == with_twins({"good.onnx", "liar.onnx"})
    assert ok["liar.onnx"]["accuracy"] == ok["good.onnx"]["accuracy"]
