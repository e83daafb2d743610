"""ARM target: command construction, option resolution and report merging (fast, no qemu),
plus the real emulated run (marked arm + slow: needs `mnistopt arm setup`, ~1-2 min cold)."""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from mnistopt.errors import ConfigError


# --- apt mirror and setup commands ------------------------------------------------------------

def test_mirror_from_deb822_skips_security_and_updates(tmp_path, monkeypatch):
    from mnistopt.arm.setup import debian_mirror

    monkeypatch.delenv("MNISTOPT_DEBIAN_MIRROR", raising=False)
    (tmp_path / "sources.list.d").mkdir()
    (tmp_path / "sources.list.d" / "debian.sources").write_text(
        "Types: deb\nURIs: http://mirror.example/debian-security\nSuites: bookworm-security\n"
        "Components: main\n\nTypes: deb\nURIs: http://mirror.example/debian\n"
        "Suites: bookworm bookworm-updates\nComponents: main\n"
        "Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n")
    assert debian_mirror(tmp_path) == ("http://mirror.example/debian",
                                       "/usr/share/keyrings/debian-archive-keyring.gpg")


def test_mirror_from_one_line_format_and_override(tmp_path, monkeypatch):
    from mnistopt.arm.setup import ArmSetupError, debian_mirror

    monkeypatch.delenv("MNISTOPT_DEBIAN_MIRROR", raising=False)
    (tmp_path / "sources.list.d").mkdir()
    (tmp_path / "sources.list").write_text(
        "# comment\ndeb http://security.debian.org/debian-security bookworm-security main\n"
        "deb [arch=amd64 signed-by=/k.gpg] http://ftp.example.org/debian/ bookworm main contrib\n")
    assert debian_mirror(tmp_path) == ("http://ftp.example.org/debian", "/k.gpg")
    monkeypatch.setenv("MNISTOPT_DEBIAN_MIRROR", "http://local/debian/")
    assert debian_mirror(tmp_path)[0] == "http://local/debian"
    monkeypatch.delenv("MNISTOPT_DEBIAN_MIRROR")
    (tmp_path / "sources.list").write_text("")
    with pytest.raises(ArmSetupError, match="MNISTOPT_DEBIAN_MIRROR"):
        debian_mirror(tmp_path)


def test_private_apt_config_leaves_the_host_alone(tmp_path):
    from mnistopt.arm.setup import _apt_private

    cmd = _apt_private(tmp_path, "http://m/debian", "/k.gpg", "trixie")
    joined = " ".join(cmd)
    for key in ("Dir::Etc::SourceList", "Dir::Etc::SourceParts", "Dir::State::Lists",
                "Dir::Cache", "Dir::State::status"):
        assert f"{key}={tmp_path}" in joined
    assert (tmp_path / "sources.list").read_text() == "deb [signed-by=/k.gpg] http://m/debian trixie main\n"


def test_pip_download_targets_the_sysroot_python():
    from mnistopt.arm.setup import pip_download_cmd, wheel_requirements

    reqs = wheel_requirements()
    assert [r.split("==")[0] for r in reqs] == ["numpy", "onnxruntime", "ai-edge-litert"]
    cmd = pip_download_cmd(Path("/w"), reqs)
    assert "--only-binary=:all:" in cmd and cmd[cmd.index("--python-version") + 1] == "3.11"
    plats = [cmd[i + 1] for i, c in enumerate(cmd) if c == "--platform"]
    assert "manylinux_2_17_aarch64" in plats and "manylinux_2_28_aarch64" in plats
    assert all("aarch64" in p for p in plats) and "manylinux_2_37_aarch64" not in plats


def test_setup_reuses_a_complete_cache(tmp_path, monkeypatch):
    from mnistopt.arm import setup as S

    (tmp_path / S.MANIFEST).write_text(json.dumps({"layout": S.LAYOUT_VERSION, "qemu": "q"}))
    monkeypatch.setattr(S, "_need_tools", lambda: pytest.fail("must not rebuild"))
    assert S.setup(tmp_path)["qemu"] == "q"
    (tmp_path / S.MANIFEST).write_text("{broken")
    assert S.read_manifest(tmp_path) is None


def test_missing_debian_tools_say_what_to_install(monkeypatch):
    from mnistopt.arm import setup as S

    monkeypatch.setattr(S.shutil, "which", lambda name: None)
    monkeypatch.setattr(S.Path, "exists", lambda self: False)
    with pytest.raises(S.ArmSetupError, match="apt-get install debootstrap"):
        S._need_tools()


# --- qemu command --------------------------------------------------------------------------------

def test_guest_command_and_clean_env(tmp_path, monkeypatch):
    from mnistopt.arm.emulated import guest_command, guest_env

    monkeypatch.setenv("VIRTUAL_ENV", "/host/venv")
    cmd = guest_command(tmp_path, ["-m", "mnistopt.targets.worker", "--data", "d.npz"], cpu="cortex-a53")
    assert cmd[:5] == [str(tmp_path / "qemu" / "qemu-aarch64"), "-L", str(tmp_path / "sysroot"),
                       "-cpu", "cortex-a53"]
    assert cmd[5] == str(tmp_path / "sysroot/usr/bin/python3.11") and cmd[-2:] == ["--data", "d.npz"]
    env = guest_env(tmp_path, ["/stage/pkg"])
    assert env["PYTHONPATH"] == f"/stage/pkg:{tmp_path}/sysroot/opt/mnistopt/site-packages"
    assert "VIRTUAL_ENV" not in env and "PYTHONHOME" not in env


def test_unknown_cpu(tmp_path, monkeypatch):
    from mnistopt.arm import emulated

    monkeypatch.setattr(emulated, "available_cpus", lambda cache: ("cortex-a53", "cortex-a72", "max"))
    assert emulated.check_cpu(tmp_path, "cortex-a53") == "cortex-a53"
    with pytest.raises(ConfigError, match="cortex-a53, cortex-a72, max"):
        emulated.check_cpu(tmp_path, "pentium")


# --- options and ssh commands ---------------------------------------------------------------------

def test_mode_resolution(monkeypatch):
    from mnistopt.arm import target as T

    monkeypatch.setattr(T.platform, "machine", lambda: "x86_64")
    assert T.ArmOptions().mode == "emulated"
    assert T.ArmOptions(target="ssh://pi@h").mode == "remote"
    monkeypatch.setattr(T.platform, "machine", lambda: "aarch64")
    assert T.ArmOptions().mode == "native" and T.ArmOptions(emulate=True).mode == "emulated"
    with pytest.raises(ConfigError, match="exclude"):
        T.ArmOptions(target="ssh://h", emulate=True).mode
    with pytest.raises(ConfigError, match="--cpu"):
        T.ArmOptions(cpu="cortex-a53").mode


def test_options_from_env(monkeypatch):
    from mnistopt.arm.target import options_from_env
    from mnistopt.targets import get_target

    env = {"MNISTOPT_ARM_CPU": "cortex-a76", "MNISTOPT_SSH_OPTIONS": "-i /k -o Foo=bar",
           "MNISTOPT_ARM_EMULATE": "yes", "MNISTOPT_ARM_CACHE": "/c"}
    a = options_from_env(env)
    assert a.cpu == "cortex-a76" and a.ssh_options == ["-i", "/k", "-o", "Foo=bar"]
    assert a.emulate is True and a.cache == Path("/c") and a.target is None
    assert options_from_env({}) == type(a)()
    monkeypatch.setenv("MNISTOPT_ARM_TARGET", "ssh://pi@dev")
    assert get_target("arm").options.target == "ssh://pi@dev"  # no options given: the env's


def test_worker_args_scaled_down_under_emulation():
    from mnistopt.arm.target import worker_args
    from mnistopt.targets import Settings

    o = Settings(batch_sizes=[1, 32], warmup=20, iters=300, budget_s=3.0, threads=2)
    assert worker_args(o, "remote") == ["--batch-sizes", "1,32", "--warmup", "20", "--iters",
                                        "300", "--budget", "3.0", "--threads", "2"]
    emu = worker_args(o, "emulated")
    assert emu[emu.index("--iters") + 1] == "10" and emu[emu.index("--warmup") + 1] == "1"
    assert emu[emu.index("--batch-sizes") + 1] == "1"


@pytest.mark.parametrize("url, dest, port", [
    ("ssh://pi@raspberry", "pi@raspberry", None),
    ("ssh://pi@10.0.0.7:2222", "pi@10.0.0.7", 2222),
    ("ssh://jetson", "jetson", None),
    ("ssh://u@[::1]:22", "u@::1", 22),
])
def test_parse_target(url, dest, port):
    from mnistopt.arm.remote import parse_target

    t = parse_target(url)
    assert (t.dest, t.port) == (dest, port)


def test_parse_target_rejects_passwords_without_echoing_them():
    from mnistopt.arm.remote import parse_target

    with pytest.raises(ConfigError) as e:
        parse_target("ssh://pi:hunter2@raspberry")
    assert "hunter2" not in str(e.value) and "key authentication" in str(e.value)
    for bad in ("pi@raspberry", "ssh://h:port", "ssh://h/path"):
        with pytest.raises(ConfigError):
            parse_target(bad)


def test_ssh_and_scp_commands_are_batch_mode():
    from mnistopt.arm.remote import Remote, SshTarget

    r = Remote(SshTarget("h", "pi", 2222), ["-i", "/key"])
    ssh = r.ssh_cmd("uname -m")
    assert ssh[0] == "ssh" and "BatchMode=yes" in ssh and "Port=2222" in ssh
    assert ssh[-2:] == ["pi@h", "uname -m"] and ssh[ssh.index("-i") + 1] == "/key"
    up = r.upload_cmd([Path("/s/a"), Path("/s/b")], "/tmp/run")
    assert up[:2] == ["scp", "-q"] and "BatchMode=yes" in up and up[-3:] == ["/s/a", "/s/b", "pi@h:/tmp/run/"]
    assert r.download_cmd("/tmp/run/out", Path("/l"))[-2:] == ["pi@h:/tmp/run/out", "/l"]


@pytest.mark.parametrize("stderr, expect", [
    ("pi@h: Permission denied (publickey).", "key authentication failed"),
    ("ssh: connect to host h port 22: Connection refused", "cannot reach"),
    ("ssh: Could not resolve hostname h: Name or service not known", "cannot reach"),
    ("Host key verification failed.", "host key"),
])
def test_ssh_failures_are_explained(stderr, expect):
    from mnistopt.arm.remote import Remote, SshTarget

    assert expect in Remote(SshTarget("h", "pi"))._explain(stderr, "connecting")


def test_wheel_is_installable_shape(tmp_path):
    from mnistopt.arm.remote import build_wheel, stage_package

    pkg = stage_package(tmp_path / "pkg")
    assert (pkg / "targets" / "worker.py").is_file() and not list(pkg.rglob("__pycache__"))
    wheel = build_wheel(pkg, tmp_path)
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        meta = z.read(next(n for n in names if n.endswith("dist-info/METADATA"))).decode()
    assert "mnistopt/runtime/__init__.py" in names and "Provides-Extra: runtime" in meta
    assert any("onnxruntime" in line and "runtime" in line for line in meta.splitlines())
    # Importable straight from the zip, as a wheel must be for pip and zipimport.
    code = "import mnistopt.parity as p; print(p.__file__)"
    out = subprocess.run([sys.executable, "-c", code], env={"PYTHONPATH": str(wheel)},
                         capture_output=True, text=True, cwd=tmp_path)
    assert str(wheel) in out.stdout, out.stderr


# --- report merging -------------------------------------------------------------------------------

def test_records_merge_arm_results_and_x86_parity(tmp_path, monkeypatch):
    """run(): one record per item in order, with arm info, parity bounds by quantization."""
    from mnistopt.arm import target as T
    from mnistopt.targets import Item, Settings

    monkeypatch.setattr(T.platform, "machine", lambda: "x86_64")
    rng = np.random.default_rng(0)
    ref = rng.normal(0, 3, (50, 10)).astype(np.float32)
    labels = ref.argmax(1)
    near = ref * (1 + 1e-7)
    flipped = ref.copy()
    flipped[0] = -flipped[0]  # one of 50 disagrees: 98 % < 99.9 %
    items = [Item("a-fp32.onnx", "artifact", tmp_path / "a-fp32.onnx", "onnxruntime", quant="fp32"),
             Item("run:native", "native", tmp_path / "run", "torch"),
             Item("b-int8.tflite", "artifact", tmp_path / "b-int8.tflite", "litert", quant="int8")]

    def fake_run_arm(paths, settings, arm, advance=None, say=None):
        assert paths == [items[0].path, items[2].path]
        lat = {"1": {"batch": 1, "n": 3, "p50_us": 900.0}}
        return {"mode": "emulated", "info": {"mode": "emulated", "cpu": "cortex-a53", "qemu": "q10"},
                "result": {"environment": {"cpu": {"machine": "aarch64", "model": "ARMv8"}},
                           "results": [{"accuracy": 1.0, "n_images": 50, "latency": lat},
                                       {"accuracy": 0.98, "n_images": 50, "latency": lat}]},
                "logits": {0: near, 1: flipped}}

    monkeypatch.setattr(T, "run_arm", fake_run_arm)
    monkeypatch.setattr(T, "reference_logits", lambda path, threads=None: (ref, labels))
    target = T.ArmTarget(T.ArmOptions())
    recs = target.run(items, Settings(progress=False))
    assert [r["id"] for r in recs] == ["a-fp32.onnx", "run:native", "b-int8.tflite"]
    fp32, native, int8 = recs
    assert fp32["latency_source"] == "emulated" and fp32["arm"]["cpu"] == "cortex-a53"
    assert fp32["arm"]["latency_representative"] is False and "not representative" in fp32["arm"]["note"]
    assert fp32["parity"]["passed"] and fp32["parity"]["tolerance"]["rel"] == 1e-5
    assert native["error_type"] == "Unsupported" and "exported" in native["error"]
    assert int8["parity"]["passed"] is False and int8["parity"]["disagreements"] == 1
    assert int8["parity"]["tolerance"]["agreement"] == 0.999
    # The native model is not the ARM target's to run; the int8 file's parity miss fails the run.
    (failure,) = target.failures(recs)
    assert failure.startswith("b-int8.tflite: ARM parity outside its bounds")


def test_bench_cli_table_and_exit_code(capsys):
    from mnistopt.arm.cli import print_arm_table

    rep = {"results": [
        {"id": "a.onnx", "accuracy": 0.99, "latency": {"1": {"p50_us": 1500.0}},
         "latency_source": "emulated", "parity": {"max_abs_diff": 1e-6, "rel_max_diff": 1e-7,
                                                   "top1_agreement": 1.0, "passed": True},
         "arm": {"mode": "emulated", "cpu": "cortex-a72", "qemu": "qemu 10",
                 "note": "latency measured under qemu emulation: not representative"}},
        {"id": "b.tflite", "error": "boom"}]}
    assert print_arm_table(rep) == 1
    out = capsys.readouterr().out
    assert "a.onnx" in out and "ok" in out and "1.50 ms" in out and "not representative" in out


def test_cli_conflicting_options_one_line():
    r = subprocess.run([sys.executable, "-m", "mnistopt", "arm", "bench", "x.onnx", "--target",
                        "ssh://h", "--emulate"], capture_output=True, text=True)
    assert r.returncode == 2 and r.stderr.strip().count("\n") == 0 and "exclude" in r.stderr


# --- the real thing, under qemu -----------------------------------------------------------------

def _template_onnx(path: Path, mnist) -> Path:
    """A nearest-class-mean linear classifier on real MNIST (~60 %): clear margins, no training."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    x = mnist.x_train[:6000].reshape(-1, 784).astype(np.float32) / 255
    means = np.stack([x[mnist.y_train[:6000] == c].mean(0) for c in range(10)])
    w = (means - means.mean(0)).T * 10
    graph = helper.make_graph(
        [helper.make_node("Flatten", ["x"], ["flat"], axis=1),
         helper.make_node("MatMul", ["flat", "w"], ["y"])], "templates",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 1, 28, 28])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 10])],
        [numpy_helper.from_array(w.astype(np.float32), "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


@pytest.mark.arm
@pytest.mark.slow
@pytest.mark.network  # the first run prepares the emulator: pip downloads aarch64 wheels
def test_emulated_run_matches_x86(tmp_path, mnist):
    """ONNX fp32 and int8 (QDQ) on aarch64 under qemu: fp32 within 1e-5 relative, int8 top-1
    agreement >= 99.9 %, on 2,000 real test images. Prepares the cache first if needed."""
    from onnxruntime.quantization import (CalibrationDataReader, QuantFormat, QuantType,
                                          quantize_static)

    from mnistopt.bench.api import bench
    from mnistopt.targets import Settings

    fp32 = _template_onnx(tmp_path / "lin-x-fp32.onnx", mnist)
    calib = iter([{"x": mnist.x_train[i:i + 32, None].astype(np.float32) / 255}
                  for i in range(0, 256, 32)])

    class Reader(CalibrationDataReader):
        def get_next(self):
            return next(calib, None)

    int8 = tmp_path / "lin-x-int8.onnx"
    # reduce_range: U8S8 without it saturates on AVX2 CPUs without VNNI (DEVELOPERS.md), and
    # the x86 reference would then differ from ARM for x86's reasons.
    quantize_static(str(fp32), str(int8), Reader(), quant_format=QuantFormat.QDQ,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                    reduce_range=True)
    rep = bench([fp32, int8], Settings(batch_sizes=[1], progress=False),
                device="arm:emulate:cortex-a53", set_options=["limit=2000"])
    assert rep["failures"] == []
    by = {r["id"]: r for r in rep["results"]}
    for r in by.values():
        assert "error" not in r, r.get("error")
        assert r["arm"]["machine"] == "aarch64" and r["latency_source"] == "emulated"
        assert r["n_images"] == 2000 and r["accuracy"] > 0.5
        assert r["parity"]["passed"], r["parity"]
    assert by["lin-x-fp32.onnx"]["parity"]["rel_max_diff"] <= 1e-5
    assert by["lin-x-int8.onnx"]["parity"]["top1_agreement"] >= 0.999


def test_remote_venv_path_is_a_plain_path():
    from mnistopt.arm.remote import check_venv_path

    assert check_venv_path("$HOME/venvs/arm/") == "$HOME/venvs/arm"
    for bad in ('/x"; rm -rf /', "/x/`id`", "/x/$(id)"):
        with pytest.raises(ConfigError):
            check_venv_path(bad)


def test_staging_keeps_sidecars_beside_renamed_models(tmp_path):
    from mnistopt.arm.target import stage

    src = tmp_path / "src"
    src.mkdir()
    for n in ("a-fp32.onnx", "a-fp32.onnx.json", "b-int8.tflite", "b-int8.json"):
        (src / n).write_text(n)
    data = tmp_path / "test.npz"
    data.write_bytes(b"npz")
    st = stage(tmp_path / "w", [src / "a-fp32.onnx", src / "b-int8.tflite"], data)
    assert sorted(p.name for p in (st / "art").iterdir()) == [
        "00-a-fp32.onnx", "00-a-fp32.onnx.json", "01-b-int8.json", "01-b-int8.tflite"]
    assert (st / "test.npz").read_bytes() == b"npz" and (st / "pkg" / "mnistopt").is_dir()
    assert len(list(st.glob("mnistopt-*.whl"))) == 1
