"""Exporters: every registered (framework, format, quantize) path, validated on tiny real runs.

Tiny = LeNet-5 trained one epoch on 4,000 MNIST images, validated on 1,000 test images. torch
-> ONNX is the fast set; Keras / TF conversions are slow-marked; torch -> TFLite needs the
`litert` extra and checks the clear error where it is missing.
"""

from __future__ import annotations

import importlib.util
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mnistopt.errors import ConfigError, MissingExtraError, RunError, ToleranceError
from mnistopt.export import EXPORTERS, MODES, export, read_metadata

HAS_LITERT = importlib.util.find_spec("litert_torch") is not None
SLOW_FRAMEWORKS = {"keras", "tf"}


def _case(fw: str, fmt: str, mode: str):
    marks = []
    if fw in SLOW_FRAMEWORKS:
        marks.append(pytest.mark.slow)
    if (fw, fmt) == ("torch", "tflite"):
        marks += [pytest.mark.slow,
                  pytest.mark.skipif(not HAS_LITERT, reason="needs the litert extra (litert-torch)")]
    return pytest.param(fw, fmt, mode, marks=marks, id=f"{fw}-{fmt}-{mode}")


# Written out, not generated from the registry: a new registration must add its cases here.
CASES = [_case(fw, fmt, mode)
         for fw, fmt in [("torch", "onnx"), ("keras", "onnx"), ("tf", "onnx"),
                         ("keras", "tflite"), ("tf", "tflite"), ("torch", "tflite")]
         for mode in ("none", "dynamic", "int8", "fp16")]


def test_every_registered_combination_has_a_case():
    registered = {(fw, fmt, mode) for (fw, fmt), exp in EXPORTERS.items() for mode in exp.modes}
    covered = {tuple(c.values) for c in CASES}
    assert registered == covered, f"untested: {registered - covered}; stale: {covered - registered}"
    for exp in EXPORTERS.values():
        assert set(exp.modes) <= set(MODES) and set(exp.modes) <= set(exp.tolerances)


def test_every_registered_path_implements_the_protocol():
    from mnistopt.export.registry import ExportPath, load_path_module

    for exp in EXPORTERS.values():
        assert isinstance(load_path_module(exp.module), ExportPath), exp.module


def test_a_path_short_of_the_protocol_fails_before_any_work(monkeypatch):
    import types

    from mnistopt.export.registry import load_path_module

    fake = types.ModuleType("fake_path")
    fake.convert = lambda run, workdir, ctx: None
    fake.quantize = lambda fp32, mode, workdir, ctx: None  # the old signature, without run
    fake.embed = lambda src, dst, meta: None
    fake.read_embedded = lambda path: None
    monkeypatch.setitem(sys.modules, "fake_path", fake)
    with pytest.raises(TypeError) as e:
        load_path_module("fake_path")
    assert "lacks tools()" in str(e.value)
    assert "quantize(fp32, mode, workdir, ctx) should be quantize(run, fp32, mode, workdir, ctx)" in str(e.value)


@pytest.fixture(scope="module")
def small(mnist):
    from mnistopt.data import MNIST

    return MNIST(mnist.x_train[:4000], mnist.y_train[:4000], mnist.x_test[:1000],
                 mnist.y_test[:1000], source="subset", path=mnist.path, sha256="")


@pytest.fixture(scope="module")
def runs(small, tmp_path_factory):
    """framework -> tiny trained Run, trained on first use."""
    from mnistopt.train import TrainConfig, train

    cache = {}

    def get(fw: str):
        if fw not in cache:
            cfg = TrainConfig(framework=fw, arch="lenet5", epochs=1, lr=3e-3, batch_size=32, limit=4000,
                              val_split=0)
            cache[fw] = train(cfg, out=tmp_path_factory.mktemp(f"{fw}-run") / "run", data=small,
                              progress=False)
        return cache[fw]

    return get


@pytest.fixture(scope="module")
def exported(runs, small, tmp_path_factory):
    """(framework, format) -> {mode: Artifact}, all four modes exported in one call."""
    cache = {}

    def get(fw: str, fmt: str):
        if (fw, fmt) not in cache:
            out = tmp_path_factory.mktemp(f"{fw}-{fmt}")
            arts = export(runs(fw), fmt, list(MODES), calib_samples=256, out=out, data=small,
                          progress=False)
            cache[(fw, fmt)] = {a.metadata["quantize"]["mode"]: a for a in arts}
        return cache[(fw, fmt)]

    return get


@pytest.mark.parametrize("fw,fmt,mode", CASES)
def test_export_validates_and_describes_itself(exported, runs, fw, fmt, mode):
    art = exported(fw, fmt)[mode]
    run = runs(fw)
    m = art.metadata
    assert art.path.is_file() and art.sidecar == art.path.with_name(art.path.name + ".json")
    tag = {"none": "fp32"}.get(mode, mode)
    assert art.path.name == f"lenet5-{fw}-{tag}.{fmt}"
    assert json.loads(art.sidecar.read_text()) == m
    # the embedded copy is the sidecar less the file's own hash
    embedded = {k: v for k, v in m.items() if k != "file"}
    if fmt == "onnx":
        from mnistopt.export.onnx_paths import read_embedded
    else:
        from mnistopt.export.tflite_meta import read_embedded
    assert read_embedded(art.path) == json.loads(json.dumps(embedded))

    assert m["schema"] == "mnistopt.artifact/1" and m["format"] == fmt
    assert m["framework"] == fw and m["arch"] == "lenet5"
    assert m["labels"] == [str(i) for i in range(10)]
    assert m["source"]["sha256"] == run.metrics["native_sha256"]
    assert m["quantize"]["mode"] == mode and m["quantize"]["reason"]
    assert m["input"]["layout"] == run.layout
    assert m["input"]["shape"][0] in (-1, 1) and m["output"]["kind"] == "logits"
    if m["input"]["dtype"] in ("int8", "uint8"):
        assert m["input"]["scale"] > 0 and m["input"]["zero_point"] is not None
    assert m["file"]["bytes"] == art.path.stat().st_size
    # LeNet-5's stem is rewritten on the way to TFLite from torch (export.torch_rewrite), and
    # only there; the metadata says so.
    rewritten = (fw, fmt) == ("torch", "tflite")
    assert [("space-to-depth" in line) for line in m["graph"]] == ([True] if rewritten else [])

    v = art.report
    assert v["passed"] and v["n"] == 1000
    if mode == "none":
        assert v["max_abs_diff"] <= 1e-4 * v["max_abs_logit"] and v["top1_agreement"] >= 0.9999
    else:
        assert v["top1_agreement"] >= 0.99 and v["accuracy_drop"] <= 0.003
    ratio = v["size_ratio_to_fp32"]
    expected = {"none": (1, 1), "fp16": (0.4, 0.6), "dynamic": (0.2, 0.45), "int8": (0.2, 0.45)}[mode]
    assert expected[0] <= ratio <= expected[1], ratio
    if mode == "int8":
        s = m["quantize"]["settings"]
        assert s["calibration_samples"] == 256 and "training" in s["calibration_source"]


@pytest.mark.slow
def test_onnx_int8_and_tflite_int8_agree(exported, small):
    onnx_int8 = exported("keras", "onnx")["int8"].path
    tflite_int8 = exported("keras", "tflite")["int8"].path
    from mnistopt.crosscheck import matrix

    m = matrix([onnx_int8, tflite_int8], images=small.x_test, labels=small.y_test, progress=False)
    assert not m["failures"] and len(m["pairs"]) == 1, m
    r = m["pairs"][0]
    assert r["top1_agreement"] >= 0.99 and not r["expected_equal"], r


def test_read_metadata_without_sidecar(exported):
    art = exported("torch", "onnx")["int8"]
    assert read_metadata(art.path)["quantize"]["mode"] == "int8"
    data = art.path.read_bytes()
    lone = art.path.parent / "lone" / "m.onnx"
    lone.parent.mkdir()
    lone.write_bytes(data)
    meta = read_metadata(lone)
    assert meta["input"]["name"] == "input" and "file" not in meta


def test_int8_preset_follows_the_cpu():
    from mnistopt.export.onnx_paths import int8_preset
    from mnistopt.hw import parse_cpuinfo

    avx2 = parse_cpuinfo("model name : X\nflags : sse4_1 avx2\n", "x86_64")
    vnni = parse_cpuinfo("model name : X\nflags : avx2 avx512f avx512_vnni\n", "x86_64")
    arm = parse_cpuinfo("Features : fp asimd asimddp\nCPU implementer : 0x41\nCPU part : 0xd0c\n",
                        "aarch64")
    s, why = int8_preset(avx2)
    assert s["reduce_range"] is True and "saturate" in why
    s, why = int8_preset(vnni)
    assert s["reduce_range"] is False and "VNNI" in why
    s, why = int8_preset(arm)
    assert s["reduce_range"] is False and "dot-product" in why


@pytest.mark.slow
@pytest.mark.skipif(not HAS_LITERT, reason="needs the litert extra (litert-torch)")
def test_torch_tflite_int8_float_part_follows_the_cpu(runs, small, tmp_path):
    """Without VNNI a torch -> TFLite int8 file computes through its last convolution in float
    from int8 weights and is int8 after it (tflite_int8); with VNNI, or asked for full integer,
    every op is int8 and TFLite Micro takes the file."""
    from mnistopt.errors import McuError
    from mnistopt.hw import parse_cpuinfo
    from mnistopt.mcu.micro import check_int8
    from mnistopt.runtime.flatbuf import mac_split, read_tflite
    from mnistopt.targets.items import artifact_item

    avx2 = parse_cpuinfo("model name : X\nflags : sse4_1 avx2 fma\n", "x86_64")
    vnni = parse_cpuinfo("model name : X\nflags : avx2 fma avx512f avx512_vnni\n", "x86_64")
    files = {}
    for name, cpu, full in [("avx2", avx2, False), ("vnni", vnni, False), ("full", avx2, True)]:
        [art] = export(runs("torch"), "tflite", "int8", calib_samples=64, out=tmp_path / name,
                       data=small, progress=False, cpu=cpu, full_int8=full)
        assert art.report["passed"] and art.report["top1_agreement"] >= 0.99
        files[name] = art
    part = files["avx2"].metadata["quantize"]["settings"]
    assert part["full_int8"] is False and part["float_ops"][-1] == "CONV_2D"
    assert "compute in float from int8 weights" in files["avx2"].metadata["quantize"]["reason"]
    model = read_tflite(files["avx2"].path.read_bytes())
    convs = [op for op in model.operators if op.name == "CONV_2D"]
    dense = [op for op in model.operators if op.name == "FULLY_CONNECTED"]
    # LeNet-5: both convs float, from int8 weights (a DEQUANTIZE feeds each); its dense head int8
    assert all(model.tensors[c.outputs[0]].dtype == "float32" for c in convs)
    assert all(model.tensors[c.inputs[1]].dtype == "float32" for c in convs)
    assert {model.tensors[op.inputs[0]].dtype for op in model.operators if op.name == "DEQUANTIZE"
            and model.tensors[op.outputs[0]].name in {model.tensors[c.inputs[1]].name for c in convs}} == {"int8"}
    assert all(model.tensors[d.outputs[0]].dtype == "int8" for d in dense)
    # float in (the float part starts at the input), int8 out (the head's last layer)
    assert model.tensors[model.operators[0].inputs[0]].dtype == "float32"
    assert "float in, int8 out" in files["avx2"].metadata["quantize"]["reason"]
    # The bench's % of peak reads the same split from the file: convs float, head int8.
    fl, it = mac_split(model)
    assert it == sum(math.prod(model.tensors[d.inputs[1]].shape) for d in dense) and fl > 6 * it
    assert artifact_item(files["avx2"].path).float_mac_share == pytest.approx(fl / (fl + it))
    assert artifact_item(files["full"].path).float_mac_share == 0.0
    with pytest.raises(McuError, match="--full-int8"):
        check_int8(model, "avx2")
    assert files["avx2"].path.stat().st_size < 1.1 * files["full"].path.stat().st_size
    assert files["full"].path.name == "lenet5-torch-int8-full.tflite"  # another file, another name
    assert files["vnni"].path.name == "lenet5-torch-int8.tflite"
    for name in ("vnni", "full"):
        s = files[name].metadata["quantize"]["settings"]
        assert s["float_ops"] == [] and s["full_int8"] is True
        check_int8(read_tflite(files[name].path.read_bytes()), name)


# --- errors --------------------------------------------------------------------------------

def test_failed_validation_writes_nothing(runs, small, tmp_path):
    out = tmp_path / "out"
    with pytest.raises(ToleranceError) as e:
        export(runs("torch"), "onnx", "none", atol=1e-12, out=out, data=small, progress=False)
    assert "max |diff|" in str(e.value) and "nothing written" in str(e.value)
    assert e.value.report["max_abs_diff"] > 1e-12
    assert not out.exists() or list(out.rglob("*")) == []


def test_unknown_format_and_mode(runs):
    with pytest.raises(ConfigError, match="unknown export format 'coreml'"):
        export(runs("torch"), "coreml")
    with pytest.raises(ConfigError, match="unknown quantize mode 'int4'; choose one of: none, dynamic, int8, fp16, all"):
        export(runs("torch"), "onnx", "int4")
    with pytest.raises(ConfigError, match="unknown export format 'coreml'"):
        export("/nonexistent", "coreml")  # the choice is checked before the run is read


def test_zero_calibration_samples(runs, tmp_path):
    with pytest.raises(ConfigError, match="calib-samples"):
        export(runs("torch"), "onnx", "int8", calib_samples=0, out=tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_full_int8_needs_int8(runs, tmp_path):
    with pytest.raises(ConfigError, match="--full-int8 is about int8 files"):
        export(runs("torch"), "onnx", "none", out=tmp_path, full_int8=True, progress=False)


def test_fixed_batch_only_where_files_have_one(runs, tmp_path):
    from mnistopt.export.api import default_path

    with pytest.raises(ConfigError, match="--batch is for files with a fixed batch"):
        export(runs("torch"), "onnx", "none", batch=256, out=tmp_path)
    with pytest.raises(ConfigError, match="--batch must be"):
        export(runs("torch"), "tflite", "none", batch=0, out=tmp_path)
    assert default_path(runs("torch"), "tflite", "int8", 256).name == "lenet5-torch-int8-b256.tflite"
    assert list(tmp_path.iterdir()) == []


def test_out_file_for_several_artifacts(runs, tmp_path):
    with pytest.raises(ConfigError, match="names one file"):
        export(runs("torch"), "onnx", ["none", "int8"], out=tmp_path / "x.onnx")


def test_corrupt_native_model(runs, small, tmp_path):
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(runs("torch").path, bad)
    (bad / "weights.npz").write_bytes(b"not an npz")  # what mnistopt reads a run from
    with pytest.raises(RunError, match="weights.npz: does not match the sha256"):
        export(bad, "onnx", out=tmp_path / "o", data=small, progress=False)
    assert not (tmp_path / "o").exists()


def test_unsupported_framework_and_missing_run(runs, tmp_path):
    import shutil

    odd = tmp_path / "odd"
    shutil.copytree(runs("torch").path, odd)
    m = json.loads((odd / "metrics.json").read_text())
    m["framework"] = "jax"
    (odd / "metrics.json").write_text(json.dumps(m))
    with pytest.raises(ConfigError, match="no exporter from jax to onnx"):
        export(odd, "onnx")
    with pytest.raises(RunError):
        export(tmp_path / "nowhere", "onnx")


def test_torch_tflite_without_extra_names_it(runs, monkeypatch):
    monkeypatch.setitem(sys.modules, "litert_torch", None)  # as if not installed
    with pytest.raises(MissingExtraError, match=r"mnistopt\[litert\]"):
        export(runs("torch"), "tflite")


def test_cli_json_and_errors(runs, tmp_path):
    run = runs("torch").path
    cmd = [sys.executable, "-m", "mnistopt", "export", str(run), "--quantize", "int8",
           "--calib-samples", "64", "--out", str(tmp_path / "m.onnx"), "--json"]
    r = subprocess.run(cmd, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    (row,) = json.loads(r.stdout)
    assert row["quantize"] == "int8" and row["top1_agreement"] >= 0.99
    assert row["native_accuracy"] and row["exported_accuracy"] and row["size_ratio_to_fp32"] < 0.5
    assert Path(row["path"]).is_file() and Path(row["sidecar"]).is_file()

    r = subprocess.run([sys.executable, "-m", "mnistopt", "export", str(run), "--format", "coreml"],
                       capture_output=True, text=True)
    assert r.returncode == 2 and r.stderr.splitlines() == [
        "error: unknown export format 'coreml'; choose one of: onnx, tflite, all"]
    r = subprocess.run([sys.executable, "-m", "mnistopt", "export", str(run), "-q", "int8",
                        "--calib-samples", "0"], capture_output=True, text=True)
    assert r.returncode == 2 and r.stderr.splitlines() == [
        "error: --calib-samples must be at least 1 for int8, got 0"]


def test_cli_bare_quantize_exports_the_newest_run(runs, tmp_path):
    """`mnistopt export --quantize` as typed: the workspace's newest run, static int8, validated."""
    import os
    import shutil
    import time

    ws = tmp_path / "ws"
    shutil.copytree(runs("torch").path, ws / "runs" / "torch-old")
    time.sleep(0.01)
    shutil.copytree(runs("torch").path, ws / "runs" / "torch-lenet5")
    os.utime(ws / "runs" / "torch-old" / "metrics.json", (1, 1))  # older than torch-lenet5's
    (ws / "runs" / "unfinished").mkdir()  # no metrics.json: never chosen
    r = subprocess.run([sys.executable, "-m", "mnistopt", "export", "--quantize", "--calib-samples", "64",
                        "--json"], capture_output=True, text=True,
                       env={**os.environ, "MNISTOPT_WORKSPACE": str(ws)})
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stderr.splitlines() == [f"exporting {ws / 'runs' / 'torch-lenet5'} (the newest run in the workspace)"]
    (row,) = json.loads(r.stdout)
    assert row["quantize"] == "int8" and row["format"] == "onnx" and row["validated"]
    assert Path(row["path"]) == ws / "runs" / "torch-lenet5" / "export" / "lenet5-torch-int8.onnx"
    assert row["top1_agreement"] >= 0.99
