"""The command line as users type it: light start-up, one-line errors, Ctrl-C, bare --quantize,
and TensorFlow's start-up chatter kept off the terminal."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from mnistopt.cli import main

HEAVY = ("torch", "tensorflow", "keras", "tf2onnx", "onnx", "onnxruntime", "ai_edge_litert")


def run_main(argv, capsys) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as e:
        main(argv)
    out, err = capsys.readouterr()
    return e.value.code, out, err


def test_help_imports_no_framework():
    code = ("import sys; from mnistopt.cli import main\n"
            "try:\n    main(['--help'])\nexcept SystemExit as e:\n    rc = e.code\n"
            f"print(rc, ' '.join(m for m in {HEAVY!r} if m in sys.modules), file=sys.stderr)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert "train" in r.stdout and "export" in r.stdout
    assert r.stderr.split() == ["0"], f"`mnistopt --help` exited or imported: {r.stderr}"


USAGE_ERRORS = [
    (["frobnicate"], "No such command 'frobnicate'", "mnistopt"),
    (["train", "--epochs", "x"], "Invalid value for '--epochs'", "mnistopt train"),
    (["train", "--nope"], "No such option: --nope", "mnistopt train"),
    (["export", "--format"], "'--format' requires an argument", "mnistopt export"),
    (["export", "--opset", "new"], "Invalid value for '--opset'", "mnistopt export"),
    (["bench", "--iters", "many"], "Invalid value for '--iters'", "mnistopt bench"),
    (["predict"], "Missing argument", "mnistopt predict"),
    (["data", "--bogus"], "No such option: --bogus", "mnistopt data"),
    (["mcu", "report"], "Missing argument", "mnistopt mcu report"),
    (["mcu", "nope"], "No such command 'nope'", "mnistopt mcu"),
    (["arm", "bench", "--bogus"], "No such option: --bogus", "mnistopt arm bench"),
]


@pytest.mark.parametrize("argv, message, command", USAGE_ERRORS, ids=[" ".join(a) for a, _, _ in USAGE_ERRORS])
def test_usage_error_is_one_line_and_a_hint(argv, message, command, capsys):
    rc, out, err = run_main(argv, capsys)
    assert rc == 2 and out == ""
    lines = err.splitlines()
    assert len(lines) == 2, err
    assert lines[0].startswith("error: ") and message in lines[0], err
    assert lines[1] == f"try: {command} --help"
    assert not set(err) & set("╭╮╰╯│─"), "a rich box"


def test_usage_error_through_the_real_entry_point():
    r = subprocess.run([sys.executable, "-m", "mnistopt", "train", "--framework"],
                       capture_output=True, text=True)
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.splitlines() == ["error: Option '--framework' requires an argument.",
                                     "try: mnistopt train --help"]


def test_a_bad_choice_is_one_line_from_the_api(capsys):
    rc, out, err = run_main(["export", "/nonexistent/run", "--format", "coreml"], capsys)
    assert rc == 2 and err.splitlines() == [
        "error: unknown export format 'coreml'; choose one of: onnx, tflite, all"]


def test_ctrl_c_is_one_line_exit_130(capsys, monkeypatch):
    import mnistopt.data

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(mnistopt.data, "load_mnist", interrupted)
    rc, out, err = run_main(["data"], capsys)
    assert rc == 130
    assert err.splitlines() == ["interrupted: mnistopt data stopped; nothing half-written was left "
                                "(every file is written whole or not at all)"]


def test_export_without_a_run_in_an_empty_workspace(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MNISTOPT_WORKSPACE", str(tmp_path))
    (tmp_path / "runs" / "half-written").mkdir(parents=True)  # no metrics.json: not a run
    for argv in (["export"], ["export", "--quantize"]):
        rc, out, err = run_main(argv, capsys)
        assert rc == 2 and out == ""
        assert err.splitlines() == [f"error: no trained run in {tmp_path / 'runs'}; "
                                    "run 'mnistopt train' first"]


@pytest.mark.parametrize("args, parsed", [
    (["--quantize"], ["--quantize", "int8"]),
    (["-q"], ["-q", "int8"]),
    (["--quantize", "dynamic"], ["--quantize", "dynamic"]),
    (["-q", "all", "-q"], ["-q", "all", "-q", "int8"]),
    (["--quantize", "--format", "tflite"], ["--quantize", "int8", "--format", "tflite"]),
    (["--quantize", "runs/torch-seed"], ["--quantize", "int8", "runs/torch-seed"]),
    (["-q", "int4"], ["-q", "int4"]),  # not a mode, not a path: export() names the choices
    (["--quantize=fp16"], ["--quantize=fp16"]),
    (["--", "-q"], ["--", "-q"]),
])
def test_bare_quantize_means_int8(args, parsed):
    from mnistopt.export.cli import bare_quantize

    assert bare_quantize(args) == parsed


def test_bare_quantize_before_an_existing_run_dir(tmp_path, monkeypatch):
    from mnistopt.export.cli import bare_quantize

    monkeypatch.chdir(tmp_path)
    (tmp_path / "myrun").mkdir()
    assert bare_quantize(["--quantize", "myrun"]) == ["--quantize", "int8", "myrun"]


def test_export_help_documents_the_bare_flag(capsys):
    rc, out, _ = run_main(["export", "--help"], capsys)
    assert rc == 0
    flat = " ".join(out.translate(str.maketrans("", "", "╭╮╰╯│─")).split())
    assert "bare --quantize: int8" in flat and "none | dynamic | int8 | fp16 | all" in flat


# --- TensorFlow's start-up chatter ----------------------------------------------------------

def test_tensorflow_chatter_is_recognised():
    from mnistopt.tfquiet import chatter

    for line in [
        "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
        "I0000 00:00:1796172309.515206   11011 port.cc:153] oneDNN custom operations are on.",
        "E0000 00:00:1796173140.519532   24072 node_def_util.cc:682] NodeDef mentions attribute",
        "2024-01-11 05:40:05.061907: I tensorflow/core/platform/cpu_feature_guard.cc:182] This",
        "To enable the following instructions: AVX512F, in other operations, rebuild TensorFlow "
        "with the appropriate compiler flags.",
        "fully_quantize: 0, inference_type: 6, input_inference_type: INT8, output_inference_type: INT8",
        "INFO: Created TensorFlow Lite XNNPACK delegate for CPU.",
    ]:
        assert chatter(line), line
    for line in ["Traceback (most recent call last):", "error: no trained run",
                 "F0000 00:00:1.5 1 x.cc:1] Check failed", "UserWarning: something real"]:
        assert not chatter(line), line


def test_quiet_stderr_drops_native_chatter_and_keeps_the_rest(capfd):
    from mnistopt.tfquiet import quiet_stderr

    with quiet_stderr():
        os.write(2, b"I0000 00:00:1796172309.515206   11011 port.cc:153] oneDNN custom operations\n")
        os.write(2, b"a real problem\n")
    assert capfd.readouterr().err == "a real problem\n"


def test_children_inherit_the_log_level():
    import mnistopt  # noqa: F401  (installs the settings)

    r = subprocess.run([sys.executable, "-c", "import os; print(os.environ['TF_CPP_MIN_LOG_LEVEL'])"],
                       capture_output=True, text=True)
    assert r.stdout.strip() == "3"


@pytest.mark.slow
def test_importing_tensorflow_after_mnistopt_prints_nothing():
    pytest.importorskip("tensorflow")
    env = {k: v for k, v in os.environ.items() if not k.startswith("TF_")}
    r = subprocess.run([sys.executable, "-c", "import mnistopt, keras, tensorflow as tf; "
                        "print(float(tf.reduce_sum(tf.ones([2]))))"],
                       capture_output=True, text=True, env=env)
    assert r.returncode == 0 and r.stdout.strip() == "2.0"
    assert r.stderr == "", r.stderr


@pytest.mark.parametrize("args, full", [([], False), (["--full-int8"], True),
                                        (["--c-array", "fw"], True)])
def test_export_full_int8_flag_and_c_array_imply_it(args, full, capsys, monkeypatch, tmp_path):
    """Firmware runs integer ops only: --c-array asks the exporter for a full-integer file."""
    import mnistopt.export as ex

    seen = {}
    monkeypatch.setattr(ex, "export", lambda *a, **kw: seen.update(kw) or [])
    rc, _, err = run_main(["export", str(tmp_path), "-f", "tflite", "-q", "int8",
                           *[str(tmp_path / a) if a == "fw" else a for a in args]], capsys)
    assert rc == 0, err
    assert seen["full_int8"] is full
