"""Device targets: the registry, the contract, each registered target exercised, no upward import."""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from mnistopt.errors import ConfigError, DeviceError
from mnistopt.targets import (RECORD_KEYS, TARGETS, UNSUPPORTED, Item, NoOptions, Settings,
                              Target, get_target, make_record, names, register, target_class,
                              unregister, unsupported)
from web_support import exercise_browser

PACKAGE = Path(importlib.import_module("mnistopt").__file__).parent


def quick() -> Settings:
    return Settings(batch_sizes=[1], warmup=1, iters=3, budget_s=0.1, progress=False)


def items(tmp_path) -> list[Item]:
    return [Item("a-torch-fp32.onnx", "artifact", tmp_path / "a-torch-fp32.onnx", "onnxruntime",
                 format="onnx", quant="fp32"),
            Item("b-torch-int8.tflite", "artifact", tmp_path / "b-torch-int8.tflite", "litert",
                 format="tflite", quant="int8"),
            Item("run:native", "native", tmp_path / "run", "torch", format="native", quant="fp32")]


LAT = {"1": {"batch": 1, "n": 3, "p50_us": 50.0, "images_per_s": 2e4}}


# -- each registered target, run on artifacts and a native model -------------------------------
# Really where it can run here; with its device-side step faked where it cannot (no GPU, no
# qemu cache, no TFLite Micro in a fast test). The real runs: test_bench.py (cpu),
# test_arm.py / test_arm_ssh.py (arm), test_mcu.py (mcu).


def _fake_child(monkeypatch, calls):
    from mnistopt.targets import local

    def run_child(item, settings, device, data, workdir, timeout=0):
        calls.append((item.id, device))
        assert data.is_file()
        return {"accuracy": 0.9, "n_images": 10, "latency": LAT, "via": "fake"}

    monkeypatch.setattr(local, "run_child", run_child)
    monkeypatch.setattr("mnistopt.targets.items.write_test_npz", lambda p: Path(p).write_bytes(b""))


def exercise_local(name, tmp_path, monkeypatch):
    calls = []
    _fake_child(monkeypatch, calls)
    its = items(tmp_path)
    recs = get_target(name).run(its, quick())
    assert calls == [(it.id, name) for it in its]  # each in its own child, on this device
    return recs


def exercise_arm(name, tmp_path, monkeypatch):
    from mnistopt.arm import target as T

    monkeypatch.setattr(T.platform, "machine", lambda: "x86_64")
    ref = np.eye(10, dtype=np.float32)[np.arange(20) % 10]

    def run_arm(paths, settings, arm, advance=None, say=None):
        assert [p.name for p in paths] == ["a-torch-fp32.onnx", "b-torch-int8.tflite"]
        return {"mode": "emulated", "info": {"mode": "emulated", "cpu": "cortex-a72"},
                "result": {"environment": {"cpu": {"machine": "aarch64"}},
                           "results": [{"accuracy": 1.0, "n_images": 20, "latency": LAT}] * 2},
                "logits": {0: ref, 1: ref}}

    monkeypatch.setattr(T, "run_arm", run_arm)
    monkeypatch.setattr(T, "reference_logits", lambda path, threads=None: (ref, ref.argmax(1)))
    recs = get_target(name, T.ArmOptions()).run(items(tmp_path), quick())
    assert recs[0]["parity"]["passed"] and recs[0]["arm"]["latency_representative"] is False
    return recs


def exercise_mcu(name, tmp_path, monkeypatch):
    from mnistopt.errors import McuError
    from mnistopt.mcu import micro

    class Report:
        accuracy, n_images, host_ms_per_image = 0.97, 100, 0.5

        def as_dict(self):
            return {"path": "x", "arena_bytes": 9000, "flash_bytes": 20000, "fits": []}

    def inspect(path):
        if "int8" not in Path(path).name:
            raise McuError(f"{path} is not int8")

    monkeypatch.setattr(micro, "inspect", inspect)
    monkeypatch.setattr(micro, "evaluate", lambda path, **kw: Report())
    recs = get_target(name).run(items(tmp_path), quick())
    assert recs[1]["mcu"]["arena_bytes"] == 9000 and recs[1]["latency"] == {}
    return recs


EXERCISE = {"cpu": exercise_local, "gpu": exercise_local, "arm": exercise_arm,
            "mcu": exercise_mcu, "browser": exercise_browser}


@pytest.mark.parametrize("name", names())
def test_every_registered_target_runs_items(name, tmp_path, monkeypatch):
    if name not in EXERCISE:
        pytest.fail(f"target '{name}' is registered but no test exercises it: add it to EXERCISE")
    cls = target_class(name)
    assert issubclass(cls, Target) and cls.name == name and cls.summary
    its = items(tmp_path)
    recs = EXERCISE[name](name, tmp_path, monkeypatch)
    assert [r["id"] for r in recs] == [it.id for it in its]
    for r in recs:
        own = {"arm", "parity", "mcu", "browser"}  # each target's own entries
        assert r["device"] == name and set(r) <= set(RECORD_KEYS) | own
        assert r["latency_source"] in ("native", "remote", "emulated")
        assert r.get("error") or r["accuracy"] is not None
    # What counts as failed is the target's to say, and a model it does not run is not one.
    failed = get_target(name, cls.default_options()).failures(recs)
    assert all(line.split(":")[0] in {r["id"] for r in recs} for line in failed)
    assert not any(r.get("error_type") == UNSUPPORTED and any(
        line.startswith(r["id"] + ":") for line in failed) for r in recs)


def test_no_target_module_imports_the_bench():
    """Every module of every registered target's package (and mnistopt.targets): no
    `mnistopt.bench` import, at the top or inside a function."""
    packages = {TARGETS[n].partition(":")[0].rpartition(".")[0] for n in names()} | {"mnistopt.targets"}
    offenders = []
    for pkg in sorted(packages):
        folder = PACKAGE.parent / pkg.replace(".", "/")
        for f in sorted(folder.glob("*.py")):
            for target in _imports(f, f"{pkg}.{f.stem}"):
                if target == "mnistopt.bench" or target.startswith("mnistopt.bench."):
                    offenders.append(f"{f.relative_to(PACKAGE.parent)} imports {target}")
    assert packages >= {"mnistopt.targets", "mnistopt.arm", "mnistopt.mcu"}
    assert not offenders, offenders


def _imports(path: Path, module: str) -> list[str]:
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".")[:-node.level]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            out.append(mod)
            out += [f"{mod}.{a.name}" for a in node.names]
    return out


def test_import_checker_sees_relative_imports(tmp_path):
    f = tmp_path / "m.py"
    f.write_text("def f():\n    from ..bench.api import bench\n    from .. import bench\n")
    assert "mnistopt.bench.api" in _imports(f, "mnistopt.arm.m")
    assert "mnistopt.bench" in _imports(f, "mnistopt.arm.m")


def test_importing_a_target_loads_no_bench_and_nothing_heavy():
    code = ("import sys\nfrom mnistopt.targets import target_class, names\n"
            "[target_class(n) for n in names()]\n"
            "bad = [m for m in sys.modules if m.split('.')[0] in ('torch', 'tensorflow', 'keras',"
            " 'onnxruntime') or m.startswith('mnistopt.bench')]\nassert not bad, bad")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


# -- the registry and the device spec ---------------------------------------------------------


def test_registry_names_and_unknown_devices():
    assert names()[:4] == ["cpu", "gpu", "arm", "mcu"]
    with pytest.raises(ConfigError, match="unknown device 'tpu'.*cpu, gpu, arm, mcu"):
        get_target("tpu")
    with pytest.raises(ConfigError, match="takes no ':x'"):
        get_target("cpu:x")


def test_missing_target_module_is_a_device_error():
    register("ghost", "mnistopt.no_such_target:Ghost")
    try:
        with pytest.raises(DeviceError, match="ghost.*not installed"):
            get_target("ghost")
    finally:
        unregister("ghost")


def test_arm_spec_and_options(monkeypatch):
    from mnistopt.arm import target as T

    monkeypatch.setattr(T.platform, "machine", lambda: "x86_64")
    for var in ("TARGET", "EMULATE", "CPU", "CACHE", "REMOTE_PYTHON", "REMOTE_VENV"):
        monkeypatch.delenv(f"MNISTOPT_ARM_{var}", raising=False)
    monkeypatch.setenv("MNISTOPT_SSH_OPTIONS", "-i /k -o Foo=bar")
    o = get_target("arm:ssh://pi@dev:2222").options
    assert o.target == "ssh://pi@dev:2222" and o.ssh_options == ["-i", "/k", "-o", "Foo=bar"]
    o = get_target("arm:emulate:cortex-a53", set_options=["limit=100", "keep=yes"]).options
    assert (o.emulate, o.cpu, o.limit, o.keep) == (True, "cortex-a53", 100, True)
    o = get_target("arm", set_options=["ssh_options=-i '/a b/key'", "cache=~/c"]).options
    assert o.ssh_options == ["-i", "/a b/key"] and o.cache == Path("~/c").expanduser()
    for spec, opts, needle in [("arm:bogus", (), "use arm:ssh://"),
                               ("arm:ssh://u:secret@h", (), "passwords are not accepted"),
                               ("arm", ["nope=1"], "unknown target option 'nope'.*limit"),
                               ("arm", ["limit=lots"], "limit='lots': must be an int"),
                               ("arm", ["limit=0"], "limit must be >= 1"),
                               ("arm", ["emulate"], "KEY=VALUE"),
                               ("arm:emulate", ["target=ssh://h"], "exclude")]:
        with pytest.raises(ConfigError, match=needle) as e:
            get_target(spec, set_options=opts)
        assert "secret" not in str(e.value)


def test_mcu_spec_takes_classes_or_part_numbers():
    from mnistopt.mcu.target import device_keys

    t = get_target("mcu:STM32L432KC,m7-512k", set_options=["limit=50", "compare=false"])
    assert device_keys(t.options.device_classes) == ["m4-64k", "m7-512k"]
    assert t._evaluate_kwargs() == {"limit": 50, "compare": False, "devices": ["m4-64k", "m7-512k"]}
    with pytest.raises(ConfigError, match="unknown device class nrf9999.*m4-64k"):
        get_target("mcu:nrf9999")


def test_settings_are_validated_once():
    assert Settings().batch_sizes == [1, 32, 256]
    for bad in (dict(batch_sizes=[]), dict(batch_sizes=[0]), dict(iters=0), dict(warmup=-1),
                dict(budget_s=0), dict(threads=0)):
        with pytest.raises(ConfigError):
            Settings(**bad)


def test_make_record_keeps_the_contract(tmp_path):
    it = items(tmp_path)[0]
    rec = make_record(it, {"accuracy": 0.5, "latency": LAT, "junk": 1}, "cpu", "native", "ORT")
    assert rec["path"] == str(it.path) and rec["backend_label"] == "ORT" and "junk" not in rec
    assert set(rec) <= set(RECORD_KEYS)
    assert unsupported(it, "no", "arm")["error_type"] == UNSUPPORTED
    with pytest.raises(ValueError):
        make_record(it, {}, "cpu", "guessed")


# -- a plug-in target through the real registry and `mnistopt bench` -------------------------


@dataclass(frozen=True)
class FakeOptions:
    speed: float = 1.0
    label: str | None = None


class FakeTarget(Target):
    name = "fake"
    summary = "a test double"
    options_type = FakeOptions
    spec_usage = "LABEL"
    seen: list = []

    @classmethod
    def parse_arg(cls, arg, options):
        from dataclasses import replace

        return replace(options, label=arg)

    def run(self, items, settings):
        FakeTarget.seen.append((self.options, [it.id for it in items], settings.batch_sizes))
        recs = []
        for it in items:
            if it.kind == "native":
                recs.append(unsupported(it, "not here", self.name))
            elif "broken" in it.id:
                recs.append(make_record(it, {"error": "boom", "error_type": "Crash"}, self.name, "native"))
            else:
                recs.append(make_record(it, {"accuracy": 0.9, "n_images": 1, "latency": LAT},
                                        self.name, "native"))
        return recs


@pytest.fixture
def fake_target():
    register("fake", FakeTarget)
    FakeTarget.seen.clear()
    yield FakeTarget
    unregister("fake")


def _bench_cli(*args):
    from typer.testing import CliRunner

    from mnistopt.cli import app

    return CliRunner().invoke(app, ["bench", *map(str, args)])


def test_a_registered_target_runs_from_the_cli(fake_target, tmp_path):
    good = tmp_path / "good.onnx"
    good.write_bytes(b"x")
    r = _bench_cli(good, "--device", "fake:pi", "--target-option", "speed=2.5", "--quiet",
                   "--batch-sizes", "1,4", "--json", tmp_path / "r.json")
    assert r.exit_code == 0, r.output
    assert fake_target.seen == [(FakeOptions(speed=2.5, label="pi"), ["good.onnx"], [1, 4])]
    import json

    rep = json.loads((tmp_path / "r.json").read_text())
    assert rep["device"] == "fake" and rep["options"]["target_options"] == {"speed": 2.5, "label": "pi"}
    r = _bench_cli(good, "--device", "fake", "--target-option", "speed=fast")
    assert isinstance(r.exception, ConfigError)  # mnistopt.cli.main prints it as one line, exit 2
    assert "speed='fast': must be a float" in str(r.exception) and not fake_target.seen[1:]


def test_a_failed_model_exits_1_and_is_listed(fake_target, tmp_path):
    (tmp_path / "broken.onnx").write_bytes(b"x")
    r = _bench_cli(tmp_path / "broken.onnx", "--device", "fake", "--quiet")
    assert r.exit_code == 1
    assert "1 model(s) failed" in r.output and "broken.onnx: boom" in r.output


def test_no_options_target_refuses_keys():
    with pytest.raises(ConfigError, match="this target's options: none"):
        get_target("cpu", set_options=["threads=2"])
    assert get_target("cpu").options == NoOptions()


def test_with_runtimes_twins_onnx_files_on_the_cpu_only(tmp_path, monkeypatch):
    from mnistopt.errors import RunError
    from mnistopt.targets import items as I

    def item(name, **kw):
        return Item(id=name, kind="artifact", path=tmp_path / name,
                    backend=I.ARTIFACT_BACKEND[Path(name).suffix], **kw)

    onnx, tfl = item("m-torch-int8.onnx", quant="int8"), item("m-torch-int8.tflite", quant="int8")
    peer = Item(id="r/peer:tutorial-fp32", kind="artifact", path=tmp_path / "p.onnx",
                backend="onnxruntime-plain", peer={"name": "tutorial-fp32"})
    nat = Item(id="r:native", kind="native", path=tmp_path, backend="torch")
    every = [onnx, tfl, peer, nat]
    monkeypatch.setattr(I, "_installed", lambda name: True)
    out = I.with_runtimes(every, None, "cpu")
    assert [(i.id, i.backend) for i in out] == [
        ("m-torch-int8.onnx", "onnxruntime"), ("m-torch-int8.onnx@openvino", "openvino"),
        ("m-torch-int8.tflite", "litert"), ("r/peer:tutorial-fp32", "onnxruntime-plain"),
        ("r:native", "torch")]
    assert out[1].path == onnx.path and out[1].quant == "int8"  # the same file, another runtime
    # not installed, or another device: the format's own runtime only
    assert [i.id for i in I.with_runtimes(every, None, "gpu")] == [i.id for i in every]
    monkeypatch.setattr(I, "_installed", lambda name: name != "openvino")
    assert [i.id for i in I.with_runtimes(every, None, "cpu")] == [i.id for i in every]
    # asked for: only those runtimes' rows (peers and native models stay)
    assert [i.id for i in I.with_runtimes(every, ["litert"], "cpu")] == [
        "m-torch-int8.tflite", "r/peer:tutorial-fp32", "r:native"]
    assert [i.id for i in I.with_runtimes([onnx], ["openvino"], "cpu")] == [
        "m-torch-int8.onnx@openvino"]
    with pytest.raises(ConfigError, match="unknown runtime 'tvm'"):
        I.with_runtimes(every, ["tvm"], "cpu")
    with pytest.raises(ConfigError, match="runs on --device cpu"):
        I.with_runtimes(every, ["openvino"], "gpu")
    with pytest.raises(RunError, match="nothing to benchmark on litert"):
        I.with_runtimes([onnx], ["litert"], "cpu")
    assert set(I.runtime_names()) == {"onnxruntime", "openvino", "litert"}


def test_every_runtime_of_a_format_is_a_registered_artifact_backend():
    from mnistopt.runtime.backends import BACKENDS as RUNTIME_BACKENDS
    from mnistopt.targets.backends import ARTIFACT_RUNTIMES, BACKENDS

    for names in ARTIFACT_RUNTIMES.values():
        for n in names:
            assert BACKENDS[n].kind == "artifact" and n in RUNTIME_BACKENDS, n
