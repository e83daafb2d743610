"""The benchmark: statistics, report schema, performance targets, baseline, the worker, the CLI.

The device targets themselves (registry, contract, each target exercised) are in
test_targets.py."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import with_twins

from mnistopt.bench import report as R
from mnistopt.errors import ConfigError
from mnistopt.targets.stats import accuracy, parse_batch_sizes, settle, summarize, time_calls


def linear_onnx(path: Path, mnist, n: int = 3000) -> Path:
    """A least-squares linear classifier as a hand-built ONNX graph: real accuracy (~85 %),
    no torch, built in a fraction of a second."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    x = mnist.x_train[:n].reshape(n, -1).astype(np.float32) / 255
    y = np.eye(10, dtype=np.float32)[mnist.y_train[:n]]
    w = np.linalg.lstsq(np.c_[x, np.ones(n, np.float32)], y, rcond=None)[0].astype(np.float32)
    g = helper.make_graph(
        [helper.make_node("Flatten", ["images"], ["f"]), helper.make_node("Gemm", ["f", "W", "b"], ["logits"])],
        "linear", [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["N", 1, 28, 28])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 10])],
        [numpy_helper.from_array(w[:-1], "W"), numpy_helper.from_array(w[-1], "b")])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


@pytest.fixture(scope="module")
def lin_model(tmp_path_factory, mnist):
    return linear_onnx(tmp_path_factory.mktemp("bench") / "linear-onnx-fp32.onnx", mnist)


# -- statistics ----------------------------------------------------------------------------


def test_summarize_known_samples():
    s = summarize([i * 1000 for i in range(1, 101)], batch=4)  # 1..100 µs
    assert s["n"] == 100 and s["batch"] == 4
    assert s["mean_us"] == pytest.approx(50.5)
    assert s["p50_us"] == pytest.approx(50.5)
    assert s["p90_us"] == pytest.approx(90.1)
    assert s["p99_us"] == pytest.approx(99.01)
    assert s["p99_9_us"] == pytest.approx(99.901)
    assert (s["min_us"], s["max_us"]) == (1.0, 100.0)
    assert s["images_per_s"] == pytest.approx(4 / 50.5e-6)
    assert summarize([7000], 1)["p99_9_us"] == 7.0
    with pytest.raises(ValueError):
        summarize([], 1)


def test_time_calls_discards_warmup_and_respects_budget():
    calls = []
    samples = time_calls(lambda: calls.append(1), warmup=7, iters=20, budget_s=None)
    assert len(samples) == 20 and len(calls) == 27 and all(s >= 0 for s in samples)
    import time

    slow = time_calls(lambda: time.sleep(0.01), warmup=0, iters=1000, budget_s=0.05, min_iters=3)
    assert 3 <= len(slow) < 20


def test_settle_calls_until_the_runtime_has_decided():
    class Session:  # a runtime still timing its thread counts for 5 more calls of 1 image
        def __init__(self, left):
            self.left, self.sizes = left, []

        def deciding(self, batch):
            return batch < 16 and self.left > 0

        def run(self, x):
            self.sizes.append(len(x))
            self.left -= 1

    s = Session(5)
    settle(s, np.zeros((1, 28, 28)))
    assert s.sizes == [1] * 5 and not s.deciding(1)
    settle(s, np.zeros((1, 28, 28)))
    assert len(s.sizes) == 5  # decided: nothing more
    big = Session(5)
    settle(big, np.zeros((256, 28, 28)))
    assert big.sizes == []  # not a size the trial times
    stuck = Session(10**9)
    settle(stuck, np.zeros((1, 28, 28)), limit=30)
    assert len(stuck.sizes) == 30  # bounded
    settle(object(), np.zeros((1, 28, 28)))  # a native model's session: no trials, no calls


def test_accuracy_and_batch_sizes():
    assert accuracy(np.eye(10)[[1, 2, 3]], np.array([1, 2, 0])) == pytest.approx(2 / 3)
    assert parse_batch_sizes("1, 32,256") == [1, 32, 256]
    for bad in ("", "0", "a,b", "-1"):
        with pytest.raises(ValueError):
            parse_batch_sizes(bad)


# -- report: schema, Pareto, targets, baseline ---------------------------------------------


def rec(id, kind="artifact", backend="onnxruntime", arch="seed", quant="fp32", fmt="onnx",
        acc=0.99, p50s=None, framework="torch"):
    p50s = p50s or {1: 100.0}
    lat = {str(b): {**summarize([v * 1000] * 5, b)} for b, v in p50s.items()}
    return {"id": id, "kind": kind, "backend": backend, "arch": arch, "quant": quant,
            "format": fmt, "framework": framework, "accuracy": acc, "latency": lat,
            "file_bytes": 1000, "path": id, "device": "cpu", "latency_source": "native"}


def sample_report():
    recs = [rec("torch-seed:native", kind="native", backend="torch", fmt="native", acc=0.990, p50s={1: 1500, 256: 50000}),
            rec("seed-torch-fp32.onnx", acc=0.990, p50s={1: 600, 256: 100000}),
            rec("seed-torch-int8.onnx", quant="int8", acc=0.989, p50s={1: 60, 256: 40000}),
            rec("edge-torch-int8.tflite", arch="edge", quant="int8", fmt="tflite", backend="litert", acc=0.985, p50s={1: 25, 256: 3000}),
            rec("broken.onnx", acc=None)]
    recs[-1]["error"] = "ModelLoadError: truncated"
    return R.build_report(recs, {"batch_sizes": [1, 256], "warmup": 1, "iters": 5, "budget_s": 1},
                          {"cpu": {"model": "test"}, "libraries": {}}, "cpu")


def test_json_round_trip(tmp_path):
    rep = sample_report()
    path = R.save_json(rep, tmp_path / "sub" / "bench.json")
    assert R.load_json(path) == json.loads(json.dumps(rep))
    assert not list(path.parent.glob(".*"))  # no temp file left behind
    bad = tmp_path / "bad.json"
    for text in ("{not json", json.dumps({"schema": "other/1", "results": []}),
                 json.dumps({"schema": "mnistopt.bench/0", "results": []})):
        bad.write_text(text)
        with pytest.raises(ConfigError):
            R.load_json(bad)
    with pytest.raises(ConfigError):
        R.load_json(tmp_path / "missing.json")


def test_pareto_and_targets():
    rep = sample_report()
    # torch native is dominated by the fp32 ONNX (slower, no more accurate); broken is skipped
    assert set(rep["pareto"]) == {"seed-torch-fp32.onnx", "seed-torch-int8.onnx", "edge-torch-int8.tflite"}
    vs_torch = next(x for x in rep["targets"] if x["name"].startswith("int8 vs torch"))
    assert vs_torch["ok"] is True and vs_torch["value"] == pytest.approx(60)  # edge int8 vs seed eager
    assert "same arch: seed-torch-int8.onnx 60 µs, 25.0x" in vs_torch["detail"]
    edge = next(x for x in rep["targets"] if x["name"].startswith("edge"))
    assert edge["ok"] is True and edge["value"] == pytest.approx(25)
    thr = next(x for x in rep["targets"] if x["name"].startswith("int8/fp32"))
    assert thr["ok"] is True and thr["value"] == pytest.approx(2.5)
    # No VNNI in this environment: int8 must not be slower than fp32 (seed: 0.1x, 2.5x)
    seed = next(x for x in rep["targets"] if x["name"] == "int8 vs fp32, fastest runtime (seed)")
    assert seed["ok"] is True and seed["value"] == pytest.approx(0.1)
    assert {x["name"] for x in rep["targets"] if x["ok"] is None} == {
        "int8 vs fp32, fastest runtime (edge)", "mnistopt vs best peer (seed)",
        "mnistopt vs best peer (edge)"}
    empty = R.check_targets([])
    assert all(x["ok"] is None and "not measured" in x["detail"] for x in empty)


def test_baseline_comparison_both_ways():
    old = sample_report()
    assert R.compare_baseline(old, old) == []
    new = copy.deepcopy(old)
    new["results"][1]["accuracy"] -= 0.0005  # -0.05 pp: within the allowance
    new["results"][1]["latency"]["1"]["p50_us"] *= 1.2  # +20 %: noise
    assert R.compare_baseline(new, old) == []
    new["results"][2]["accuracy"] -= 0.002  # -0.2 pp
    new["results"][3]["latency"]["1"]["p50_us"] = 25 * 1.25 + 10 + 1  # past rel + floor
    new["results"][0]["error"] = "Crash"
    msgs = R.compare_baseline(new, old)
    assert len(msgs) == 3
    assert any("seed-torch-int8.onnx: accuracy" in m and "-0.20 pp" in m for m in msgs)
    assert any("edge-torch-int8.tflite: batch 1 p50" in m for m in msgs)
    assert any("torch-seed:native: failed now" in m for m in msgs)


def test_markdown_table_and_plot(tmp_path):
    rep = sample_report()
    md = R.markdown(rep, "plot.png")
    assert "| seed-torch-int8.onnx * |" in md and "## Targets" in md and "![" in md
    assert "error: ModelLoadError" in md
    png = R.plot(rep, tmp_path / "p.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    from io import StringIO

    from rich.console import Console

    buf = StringIO()
    R.print_table(rep, Console(file=buf, width=250))
    assert "PASS" in buf.getvalue() and "seed-torch-int8.onnx" in buf.getvalue()


# -- the worker (runs on devices: numpy + runtime only) ------------------------------------


def test_worker_runtime_only(tmp_path, lin_model, mnist):
    data = tmp_path / "test.npz"
    np.savez(data, x_test=mnist.x_test[:300], y_test=mnist.y_test[:300])
    out = tmp_path / "r.json"
    code = ("import runpy, sys; sys.argv = sys.argv[1:]; "
            "rc = 0\ntry:\n    runpy.run_module('mnistopt.targets.worker', run_name='__main__')\n"
            "except SystemExit as e:\n    rc = e.code\n"
            "heavy = [m for m in ('torch', 'tensorflow', 'keras', 'typer', 'rich', 'matplotlib',\n"
            "                     'mnistopt.bench', 'mnistopt.train', 'mnistopt.export') if m in sys.modules]\n"
            "assert not heavy, heavy\nsys.exit(rc)")
    r = subprocess.run([sys.executable, "-c", code, "worker", "--data", str(data), "--out", str(out),
                        "--logits-dir", str(tmp_path / "lg"), "--batch-sizes", "1,4", "--warmup", "2",
                        "--iters", "5", str(lin_model), str(tmp_path / "missing.onnx")],
                       capture_output=True, text=True)
    assert r.returncode == 1, r.stderr  # the missing file fails, the other still measured
    res = json.loads(out.read_text())
    assert res["schema"] == "mnistopt.bench.worker/1"
    good, bad = res["results"]
    assert "error" in bad and "error" not in good
    assert set(good["latency"]) == {"1", "4"} and good["latency"]["4"]["n"] == 5
    logits = np.load(good["logits"])
    assert logits.shape == (300, 10)
    assert good["accuracy"] == accuracy(logits, mnist.y_test[:300])


# -- the CLI end to end --------------------------------------------------------------------


def cli(*args):
    from typer.testing import CliRunner

    from mnistopt.cli import app

    return CliRunner().invoke(app, ["bench", *map(str, args)])


def test_cli_end_to_end_smoke(tmp_path, lin_model, mnist):
    """The one real run of the bench here: a model in a fresh process, every output written."""
    js, md, png = tmp_path / "b.json", tmp_path / "b.md", tmp_path / "b.png"
    r = cli(lin_model, "--batch-sizes", "1,8", "--iters", "5", "--warmup", "1", "--quiet",
            "--json", js, "--report", md, "--plot", png)
    assert r.exit_code == 0, r.output
    rep = R.load_json(js)
    by = {x["id"]: x for x in rep["results"]}
    assert set(by) == with_twins({lin_model.name})
    res = by[lin_model.name]
    assert res["latency_source"] == "native" and res["backend"] == "onnxruntime"
    for twin in set(by) - {lin_model.name}:  # the same file on OpenVINO: same answers
        assert by[twin]["backend"] == "openvino" and not by[twin].get("error"), by[twin]
        assert abs(by[twin]["accuracy"] - res["accuracy"]) <= 0.0002
    assert set(res["latency"]) == {"1", "8"} and res["latency"]["8"]["n"] >= 5
    assert res["coldstart"]["total_s"] > 0 and res["coldstart"]["peak_rss_bytes"] > 0
    assert rep["failures"] == [] and rep["options"]["device"] == "cpu"
    assert "targets:" in r.output and "linear-onnx-fp32.onnx" in r.output
    assert md.read_text().startswith("# Benchmark") and png.stat().st_size > 0

    # The benchmark's accuracy is exactly what the runtime gives on the same file.
    from mnistopt.runtime import load

    direct = float((load(lin_model).predict(mnist.x_test) == mnist.y_test).mean())
    assert res["accuracy"] == direct and res["n_images"] == 10000


def test_paired_child_times_two_files_in_rounds(lin_model, tmp_path):
    """The paired timing's child: two real files in one process; its failures come back as data."""
    from mnistopt.bench.paired import MOST_ROUNDS, attach, run_pair

    a = {"id": "a", "backend": "onnxruntime", "path": str(lin_model)}
    res = run_pair(a, {**a, "id": "b"}, 4, "cpu", threads=1, rounds=3)
    # 3 rounds, 3 more at a time while they stray (a noisy host), never over MOST_ROUNDS
    assert res["rounds"] % 3 == 0 and res["rounds"] <= MOST_ROUNDS
    assert res["ratio"] > 0 and res["p50_us"] > 0 and res["vs_p50_us"] > 0
    bad = run_pair(a, {**a, "path": str(tmp_path / "gone.onnx")}, 1, "cpu", rounds=1)
    assert set(bad) == {"error"} and "gone.onnx" in bad["error"]
    late = run_pair(a, {**a, "id": "b"}, 1, "cpu", rounds=1, timeout=0.01)  # each in its process
    from mnistopt.bench.paired import _threads

    assert _threads({"latency": {"1": {"threads": 2}}}, 1) == 2  # as the bench ran it
    assert _threads({"latency": {"1": {"threads": 2}}}, 256) is None and _threads({}, 1) is None
    assert late == {"error": "a: timed out"}
    # Records of one arch's int8 and fp32 files: the int8 record gets the pair's timing.
    recs = [{"id": f"edge-{q}.onnx", "arch": "edge", "quant": q, "kind": "artifact",
             "framework": "torch", "backend": "onnxruntime", "path": str(lin_model), "accuracy": 0.9,
             "latency": {"1": {"p50_us": 50.0, "images_per_s": 2e4}}} for q in ("int8", "fp32")]
    # ... and a peer of the same arch (any registered backend): mnistopt's best file gets that pair
    recs.append({**recs[1], "id": "torch-edge/peer:tutorial", "peer": {"name": "tutorial"},
                 "backend": "onnxruntime-plain", "latency": {"1": {"p50_us": 60.0}}})
    attach(recs, "cpu", threads=1, rounds=2, progress=False)
    assert recs[0]["paired"]["1"]["vs"] == "edge-fp32.onnx" and recs[0]["paired"]["1"]["rounds"] % 2 == 0
    assert "paired" not in recs[1]
    # (both files 50 µs: the first, the int8 one, is mnistopt's best)
    assert recs[0]["paired_peer"]["1"]["vs"] == "torch-edge/peer:tutorial"
    assert recs[0]["paired_peer"]["1"]["ratio"] > 0 and "paired_peer" not in recs[1]


@pytest.fixture
def canned_bench(monkeypatch):
    """`mnistopt bench` on a synthetic report: the CLI's decisions without a clock."""
    reports = []

    def fake_bench(paths, settings, device, peers=None, runtimes=None, paired=False):
        rep = copy.deepcopy(reports[-1])
        rep.setdefault("failures", [])
        return rep

    monkeypatch.setattr("mnistopt.bench.api.bench", fake_bench)
    return reports


def test_cli_baseline_exit_codes(tmp_path, canned_bench, lin_model):
    now = sample_report()
    canned_bench.append(now)
    same = tmp_path / "same.json"
    R.save_json(now, same)
    r = cli(lin_model, "--quiet", "--baseline", same)
    assert r.exit_code == 0, r.output
    assert "no regression" in r.output

    better = copy.deepcopy(now)
    better["results"][1]["accuracy"] += 0.01
    better["results"][2]["latency"]["1"]["p50_us"] = 1.0
    R.save_json(better, tmp_path / "better.json")
    r = cli(lin_model, "--quiet", "--baseline", tmp_path / "better.json")
    assert r.exit_code == 1
    assert "REGRESSION" in r.output and "seed-torch-fp32.onnx: accuracy" in r.output
    assert "seed-torch-int8.onnx: batch 1 p50" in r.output


def test_cli_exits_1_when_a_model_failed_and_lists_it(canned_bench, lin_model):
    rep = sample_report()
    rep["failures"] = ["broken.onnx: ModelLoadError: truncated"]
    canned_bench.append(rep)
    r = cli(lin_model, "--quiet")
    assert r.exit_code == 1
    table_end = r.output.index("targets:")
    assert r.output.index("1 model(s) failed") > table_end
    assert "broken.onnx: ModelLoadError: truncated" in r.output


def test_cli_user_errors(tmp_path, lin_model):
    for args, needle in [((tmp_path / "nope.onnx",), "no such"),
                         ((lin_model, "--batch-sizes", "0"), "batch"),
                         ((lin_model, "--baseline", tmp_path / "nope.json"), "no such benchmark report"),
                         ((lin_model, "--runtime", "tvm"), "unknown runtime 'tvm'"),
                         ((tmp_path,), "nothing to benchmark")]:
        r = subprocess.run([sys.executable, "-m", "mnistopt", "bench", *map(str, args)],
                           capture_output=True, text=True)
        assert r.returncode == 2 and needle in r.stderr and "Traceback" not in r.stderr, r.stderr


def _cuda_available() -> bool:
    import onnxruntime as ort

    return "CUDAExecutionProvider" in ort.get_available_providers()


@pytest.mark.skipif(_cuda_available(), reason="this machine has a CUDA GPU")
def test_gpu_without_gpu_is_a_clear_device_error(lin_model):
    r = subprocess.run([sys.executable, "-m", "mnistopt", "bench", str(lin_model), "--device", "gpu",
                        "--iters", "2", "--quiet"], capture_output=True, text=True)
    assert r.returncode == 2, r.stderr
    assert "gpu" in r.stderr.lower() and "onnxruntime" in r.stderr.lower() and "Traceback" not in r.stderr


@pytest.mark.slow
def test_cli_native_torch_run_and_its_export(tmp_path, tiny_mnist):
    """A tiny torch run benchmarked natively beside its ONNX export, discovered from the folder."""
    import torch

    from mnistopt.train import TrainConfig, load_run, train

    run = train(TrainConfig(framework="torch", arch="edge", limit=256, batch_size=64, val_split=64),
                tmp_path / "runs" / "torch-edge", data=tiny_mnist, progress=False)
    exp = run.path / "export"
    exp.mkdir()
    model = load_run(run.path).model
    torch.onnx.export(model, (torch.rand(2, 1, 28, 28),), str(exp / "edge-torch-fp32.onnx"),
                      dynamo=True, external_data=False, input_names=["images"],
                      dynamic_shapes=({0: torch.export.Dim("batch", min=1, max=4096)},), verbose=False)
    js = tmp_path / "b.json"
    # --runtime: the ONNX file on onnxruntime only, not also on OpenVINO
    r = cli(tmp_path / "runs", "--batch-sizes", "1,4", "--iters", "5", "--warmup", "1", "--quiet",
            "--json", js, "--runtime", "onnxruntime")
    assert r.exit_code == 0, r.output
    by = {x["id"]: x for x in R.load_json(js)["results"]}
    assert set(by) == {"torch-edge:native", "edge-torch-fp32.onnx"}
    nat, art = by["torch-edge:native"], by["edge-torch-fp32.onnx"]
    assert not nat.get("error") and not art.get("error"), (nat.get("error"), art.get("error"))
    assert nat["backend"] == "torch" and nat["params"] == art["params"] > 0
    # the export computes the same function: same accuracy on the real test set to 0.05 pp
    assert abs(nat["accuracy"] - art["accuracy"]) <= 0.0005
