import subprocess
import sys
import time


def test_help_is_fast_and_light():
    code = ("import sys, time; t = time.perf_counter(); import mnistopt.cli; "
            "print(time.perf_counter() - t); "
            "print(' '.join(m for m in ('torch', 'tensorflow', 'keras', 'tf2onnx', 'onnx', 'onnxruntime') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.splitlines()
    assert float(out[0]) < 1.0
    assert out[1:] in ([], [""]), f"CLI start-up imported {out[1]}"
    t = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "mnistopt", "--help"], capture_output=True, text=True)
    assert r.returncode == 0 and "train" in r.stdout
    assert time.perf_counter() - t < 3.0  # generous: interpreter start on a loaded CI machine


def test_unknown_command_exit_code():
    r = subprocess.run([sys.executable, "-m", "mnistopt", "frobnicate"], capture_output=True, text=True)
    assert r.returncode == 2
