"""`mnistopt parity`: the agreement matrix on hand-built ONNX files (fast: onnxruntime only), and
on a tiny torch run with its real exports and a tampered copy (slow: trains and converts)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import runtime_models as rm

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
SOURCE = {"sha256": "ab" * 32, "run": "runs/torch-linear"}


def _meta(tag: str) -> dict:
    return {"schema": "mnistopt.artifact/1", "format": "onnx", "framework": "torch",
            "arch": "linear", "quantize": {"mode": tag, "tag": tag}, "source": SOURCE}


@pytest.fixture(scope="module")
def linear(tmp_path_factory):
    """Hand-built linear ONNX models that all claim to come from one run: two identical fp32
    files, an fp32 file whose class-0 weights moved by 0.01 per pixel, and one tagged int8."""
    import onnx
    from onnx import numpy_helper

    root = tmp_path_factory.mktemp("linear")
    a = rm.onnx_graph(root, "linear-torch-fp32.onnx", in_shape=(-1, 1, 28, 28), metadata=_meta("fp32"))
    (root / "copy").mkdir()
    b = Path(shutil.copy(a, root / "copy" / "same-fp32.onnx"))
    q = rm.onnx_graph(root, "linear-torch-int8.onnx", in_shape=(-1, 1, 28, 28), metadata=_meta("int8"))
    m = onnx.load(a)
    w = numpy_helper.to_array(m.graph.initializer[0]).copy()
    w[:, 0] += 0.01
    m.graph.initializer[0].CopyFrom(numpy_helper.from_array(w, "w"))
    (root / "bad").mkdir()
    bad = root / "bad" / "moved-fp32.onnx"
    onnx.save(m, bad)
    return {"fp32": a, "copy": b, "int8": q, "bad": bad}


@pytest.fixture(scope="module")
def small(mnist):
    from mnistopt.data import MNIST

    return MNIST(mnist.x_train[:512], mnist.y_train[:512], mnist.x_test[:500], mnist.y_test[:500],
                 source="subset", path=mnist.path, sha256="")


@pytest.fixture(scope="module")
def models(small, tmp_path_factory):
    """A tiny torch run with its fp32 and dynamic ONNX exports in run/export/, and a copy of
    the fp32 file whose last bias is moved by 0.5: still fp32 of the same run by its metadata,
    no longer the same numbers."""
    pytest.importorskip("torch")
    import onnx
    from onnx import numpy_helper

    from mnistopt.export import export
    from mnistopt.train import TrainConfig, train

    root = tmp_path_factory.mktemp("parity")
    run = train(TrainConfig(framework="torch", arch="lenet5", epochs=2, lr=3e-3, batch_size=32, limit=512,
                            val_split=0),
                root / "runs" / "torch-lenet5", data=small, progress=False)
    # One export call (one torch -> ONNX conversion); the matrix does the checking here.
    fp32 = next(a for a in export(run, "onnx", ["none", "dynamic"], data=small, progress=False,
                                  validate=False) if a.metadata["quantize"]["mode"] == "none")
    m = onnx.load(fp32.path)
    bias = next(t for t in m.graph.initializer if list(t.dims) == [10])
    b = numpy_helper.to_array(bias).copy()
    b[0] += 0.5
    bias.CopyFrom(numpy_helper.from_array(b, bias.name))
    bad = root / "tampered" / fp32.path.name
    bad.parent.mkdir()
    onnx.save(m, bad)  # no sidecar: the metadata embedded in the model names the run
    return run.path, fp32.path, bad


def by_pair(result):
    return {frozenset((p["a"], p["b"])): p for p in result["pairs"]}


@pytest.mark.slow
def test_matrix_of_a_run_and_its_exports(models, small):
    from mnistopt.crosscheck import matrix

    run, fp32, bad = models
    r = matrix([run], images=small.x_test, labels=small.y_test, progress=False)
    ids = [m["id"] for m in r["models"]]
    assert ids == ["torch-lenet5:native", "lenet5-torch-dynamic.onnx", "lenet5-torch-fp32.onnx"]
    assert r["failures"] == [] and r["n_images"] == 500 and len(r["pairs"]) == 3
    pairs = by_pair(r)
    nat_fp32 = pairs[frozenset(("torch-lenet5:native", "lenet5-torch-fp32.onnx"))]
    assert nat_fp32["expected_equal"] and nat_fp32["passed"] and nat_fp32["fp32"]
    assert nat_fp32["reference"] == "torch-lenet5:native" and nat_fp32["disagreements"] == 0
    assert nat_fp32["max_abs_diff"] <= nat_fp32["bound"]
    dyn = pairs[frozenset(("torch-lenet5:native", "lenet5-torch-dynamic.onnx"))]
    assert not dyn["expected_equal"] and not dyn["fp32"] and "passed" not in dyn
    # the numbers are parity.compare's, on logits computed in the workers
    native = next(m for m in r["models"] if m["kind"] == "native")
    assert native["quant"] == "fp32" and native["source_sha256"] and 0.5 < native["accuracy"] <= 1  # trained, not chance
    assert {m["source_sha256"] for m in r["models"]} == {native["source_sha256"]}
    assert dyn["disagreements"] == round((1 - dyn["top1_agreement"]) * 500)

    from io import StringIO

    from rich.console import Console

    from mnistopt.crosscheck.show import print_table

    buf = StringIO()
    print_table(r, Console(file=buf, width=200))
    assert "lenet5-torch-fp32.onnx" in buf.getvalue() and "equal" in buf.getvalue()
    assert "NOT EQUAL" not in buf.getvalue() and "FAIL" not in buf.getvalue()

    # The tampered copy names the run in its embedded metadata only: held to FP32 against the
    # native model, it fails by the 0.5 its bias moved.
    r = matrix([run, bad], images=small.x_test,
               labels=small.y_test, progress=False)
    bad_id = next(m["id"] for m in r["models"] if m["path"] == str(bad))
    p = by_pair(r)[frozenset((bad_id, "torch-lenet5:native"))]
    assert p["expected_equal"] and not p["passed"] and p["reference"] == "torch-lenet5:native"
    assert p["max_abs_diff"] == pytest.approx(0.5, abs=1e-3)
    assert any(line.startswith(f"{bad_id} vs torch-lenet5:native") for line in r["failures"])


def test_perturbed_fp32_fails_and_the_cli_exits_1(linear, tmp_path):
    from typer.testing import CliRunner

    from mnistopt.cli import app
    from mnistopt.crosscheck.show import disagreement_matrix

    js, png = tmp_path / "out" / "parity.json", tmp_path / "out" / "parity.png"
    paths = [linear[k] for k in ("fp32", "copy", "int8", "bad")]
    res = CliRunner().invoke(app, ["parity", *map(str, paths), "--json", str(js), "--plot",
                                   str(png), "--quiet"])
    assert res.exit_code == 1, res.output
    r = json.loads(js.read_text())
    assert r["schema"] == "mnistopt.parity/1" and r["n_images"] == 10000
    assert [m["id"] for m in r["models"]] == [p.name for p in paths]
    assert [m["quant"] for m in r["models"]] == ["fp32", "fp32", "int8", "fp32"]
    pairs = by_pair(r)
    same = pairs[frozenset(("linear-torch-fp32.onnx", "same-fp32.onnx"))]
    assert same["expected_equal"] and same["passed"] and same["max_abs_diff"] == 0
    assert same["disagreements"] == 0 and same["top1_agreement"] == 1
    assert not pairs[frozenset(("linear-torch-fp32.onnx", "linear-torch-int8.onnx"))]["expected_equal"]
    failing = [p for p in r["pairs"] if p.get("passed") is False]
    assert {frozenset((p["a"], p["b"])) for p in failing} == {
        frozenset(("moved-fp32.onnx", "linear-torch-fp32.onnx")),
        frozenset(("moved-fp32.onnx", "same-fp32.onnx"))}
    for p in failing:  # the bound between two files: twice FP32's, relative to the reference
        assert p["max_abs_diff"] > p["bound"] == pytest.approx(2e-4 * p["max_abs_diff"] / p["rel_max_diff"])
        assert p["disagreements"] > 0  # class 0's score moved by ~1: answers changed
    assert len(r["failures"]) == 2 and all("moved-fp32.onnx" in line for line in r["failures"])
    assert "NOT EQUAL" in res.output and "FAIL" in res.output
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    d = disagreement_matrix(r)
    assert d.shape == (4, 4) and np.isnan(np.diag(d)).all() and (d == d.T)[~np.isnan(d)].all()

    ok = CliRunner().invoke(app, ["parity", str(linear["fp32"]), str(linear["copy"]), "--quiet"])
    assert ok.exit_code == 0 and "equal" in ok.output and "NOT EQUAL" not in ok.output, ok.output


def test_pair_tolerance_between_two_files_is_the_triangle_bound():
    from mnistopt.crosscheck import pair_tolerance
    from mnistopt.parity import FP32

    assert pair_tolerance(True, False) == FP32 == pair_tolerance(False, True)
    t = pair_tolerance(False, False)
    assert t.rel == pytest.approx(2 * FP32.rel) and t.agreement == pytest.approx(0.9998)


def test_user_errors_are_one_line_before_any_work(tmp_path, linear):
    two = [linear["fp32"], linear["copy"]]
    for args, msg in [([linear["fp32"]], "found only"),
                      ([tmp_path / "nope"], "no such file"),
                      ([*two, "--plot", tmp_path / "x.jpg"], "must end in .png"),
                      ([*two, "--json", tmp_path], "is a directory")]:
        r = subprocess.run([sys.executable, "-m", "mnistopt", "parity", *map(str, args)],
                           capture_output=True, text=True)
        lines = r.stderr.strip().splitlines()
        assert r.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: ") \
            and msg in lines[0], (args, r.stderr)


def test_a_model_that_cannot_run_is_a_failure(linear, tmp_path):
    from mnistopt.crosscheck import matrix

    broken = tmp_path / "broken.onnx"
    broken.write_bytes(linear["fp32"].read_bytes()[:200])
    images = rm.calibration_images(50)
    r = matrix([broken, linear["fp32"], linear["copy"]], images=images,
               labels=np.zeros(50, np.int64), progress=False)
    assert [m.get("error") is not None for m in r["models"]] == [True, False, False]
    assert len(r["pairs"]) == 1 and r["pairs"][0]["passed"]
    assert len(r["failures"]) == 1 and r["failures"][0].startswith("broken.onnx: could not run")
