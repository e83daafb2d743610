"""What a careless user types: bad output locations, out-of-range options, Ctrl-C in the middle,
and an interrupted run replacement. One line each, before any work, exit 2 (130 for Ctrl-C)."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from mnistopt import fsutil
from mnistopt.errors import ConfigError


def mnistopt(*args, env=None, timeout=300):
    return subprocess.run([sys.executable, "-m", "mnistopt", *map(str, args)], capture_output=True,
                          text=True, timeout=timeout, env={**os.environ, **(env or {})})


def one_line_error(r, *says):
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert r.returncode == 2, r.stdout + r.stderr
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    assert all(s in lines[0] for s in says), lines[0]


@pytest.fixture
def fake_run(tmp_path):
    """Enough of a run for export to get as far as its output check (the model is never read)."""
    run = tmp_path / "run"
    run.mkdir()
    (run / "model.pt").write_bytes(b"")
    (run / "metrics.json").write_text(json.dumps(
        {"framework": "torch", "arch": "lenet5", "native": "model.pt", "layout": "NCHW"}))
    return run


# --- output locations: the one checker ------------------------------------------------------


@pytest.mark.parametrize("case, says", [
    ("a directory named x.onnx", "is a directory; give a file name"),
    ("under /proc", "cannot create files in /proc"),
    ("under a file", "is a file, not a directory"),
    ("/dev/null", "not a regular file"),
])
def test_check_output_refuses_bad_file_locations(tmp_path, case, says):
    (tmp_path / "x.onnx").mkdir()
    (tmp_path / "afile").write_text("x")
    path = {"a directory named x.onnx": tmp_path / "x.onnx", "under /proc": "/proc/m.onnx",
            "under a file": tmp_path / "afile" / "m.onnx", "/dev/null": "/dev/null"}[case]
    with pytest.raises(ConfigError, match=says):
        fsutil.check_output(path, "--out")
    fsutil.check_output(tmp_path / "new" / "deeper" / "m.onnx")  # creatable: fine
    assert not (tmp_path / "new").exists()  # and nothing was created to find out


def test_check_output_for_directories(tmp_path):
    (tmp_path / "afile").write_text("x")
    with pytest.raises(ConfigError, match="is a file, not a directory"):
        fsutil.check_output(tmp_path / "afile", "--out", directory=True)
    with pytest.raises(ConfigError, match="cannot create files in /proc"):
        fsutil.check_output("/proc/runs/r", "--out", directory=True)
    assert fsutil.check_output(tmp_path, directory=True) == tmp_path


def test_atomic_write_never_replaces_a_device_or_a_folder(tmp_path):
    with pytest.raises(ConfigError, match="not a regular file"):
        fsutil.write_text("/dev/null", "x")
    assert not os.path.isfile("/dev/null")
    (tmp_path / "d").mkdir()
    with pytest.raises(ConfigError):
        fsutil.write_text(tmp_path / "d", "x")


@pytest.mark.parametrize("command", ["train-file", "train-proc", "export-dir", "export-proc",
                                     "export-under-file", "bench-json", "bench-report", "bench-plot",
                                     "mcu-c-array", "report-out", "parity-plot", "arm-json",
                                     "search-out", "data-cache"])
def test_cli_bad_output_is_one_line_before_any_work(command, tmp_path, fake_run):
    (tmp_path / "afile").write_text("x")
    (tmp_path / "x.onnx").mkdir()
    args = {
        "train-file": ("train", "--out", tmp_path / "afile"),
        "train-proc": ("train", "--out", "/proc/runs/r"),
        "export-dir": ("export", fake_run, "--out", tmp_path / "x.onnx"),
        "export-proc": ("export", fake_run, "--out", "/proc/m.onnx"),
        "export-under-file": ("export", fake_run, "--out", tmp_path / "afile" / "m.onnx"),
        "bench-json": ("bench", fake_run, "--json", tmp_path / "x.onnx"),
        "bench-report": ("bench", fake_run, "--report", "/proc/r.md"),
        "bench-plot": ("bench", fake_run, "--plot", tmp_path / "afile" / "p.png"),
        "mcu-c-array": ("mcu", "c-array", tmp_path / "m.tflite", "--out", tmp_path / "afile"),
        "report-out": ("report", "--out", tmp_path / "afile"),
        "parity-plot": ("parity", fake_run, "--plot", tmp_path / "x.onnx" / "p.txt"),
        "arm-json": ("arm", "bench", fake_run, "--emulate", "--json", "/proc/a.json"),
        "search-out": ("search", "--out", tmp_path / "afile"),
        "data-cache": ("data", "--source", tmp_path, "--cache", tmp_path / "afile" / "c.npz"),
    }[command]
    r = mnistopt(*args, env={"MNISTOPT_WORKSPACE": str(tmp_path / "ws")})
    one_line_error(r, "error: ")
    # The option is named, and nothing ran first: no MNIST read, no model loaded (the fake
    # run's empty model.pt would have failed differently), no workspace made.
    assert any(f"error: {opt} " in r.stderr
               for opt in ("--out", "--json", "--report", "--plot", "--cache"))
    assert not (tmp_path / "ws").exists()


# --- train options --------------------------------------------------------------------------


@pytest.mark.parametrize("args, says", [
    (["--limit", "-5"], "--limit is a whole number in [1, 10,000,000], got -5"),
    (["--limit", "0"], "--limit is a whole number in [1, 10,000,000], got 0"),
    (["--weight-decay", "-1"], "--weight-decay is a number in [0, 1), got -1.0"),
    (["--label-smoothing", "2"], "--label-smoothing is a number in [0, 1), got 2.0"),
    (["--lr", "nan"], "--lr is a number in (0, 10], got nan"),
    (["--seed", "-3"], "--seed is a whole number in [0, 2,147,483,647], got -3"),
    (["--batch-size", "0"], "--batch-size is a whole number in [1, 65,536], got 0"),
    (["--val-split", "-1"], "--val-split is a whole number in [0, 10,000,000], got -1"),
    (["--target-acc", "1.5"], "--target-acc is a number in (0, 1], got 1.5"),
])
def test_train_options_out_of_range_are_one_line(args, says, tmp_path):
    r = mnistopt("train", "--quiet", "--out", tmp_path / "r", *args,
                 env={"MNISTOPT_WORKSPACE": str(tmp_path)})
    one_line_error(r, says)
    assert not (tmp_path / "r").exists()


# --- Ctrl-C ---------------------------------------------------------------------------------


def blocked_reading(pid: int, path) -> bool:
    """Whether process `pid` sleeps inside a system call on its descriptor for `path`.

    A SIGINT sent between the open() and the read() that follows it is handled before the read
    starts, and the read then blocks for good (a real race of signals and blocking calls, seen
    in CI): the signal has to reach the process inside the read. Where /proc does not say
    (not Linux), a second's wait stands in.
    """
    try:
        fields = open(f"/proc/{pid}/syscall").read().split()
    except OSError:
        time.sleep(1)
        return True
    if len(fields) < 2 or not fields[0].isdigit():  # "running", or not in a system call
        return False
    try:
        return os.readlink(f"/proc/{pid}/fd/{int(fields[1], 16)}") == str(path)
    except (OSError, ValueError):
        return False


@pytest.mark.parametrize("command", ["data", "train"])
def test_real_ctrl_c_in_the_middle_is_one_line_and_writes_nothing(tmp_path, command):
    """A real SIGINT while the command is blocked reading its data (a FIFO nobody writes)."""
    fifo = tmp_path / "mnist.pkl.gz"
    os.mkfifo(fifo)
    args = {"data": ("data", "--source", fifo, "--cache", tmp_path / "cache.npz"),
            "train": ("train", "--data", fifo, "--out", tmp_path / "run", "--quiet")}[command]
    proc = subprocess.Popen([sys.executable, "-m", "mnistopt", *map(str, args)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "MNISTOPT_WORKSPACE": str(tmp_path / "ws")},
                            # a shell without job control starts background jobs with SIGINT
                            # ignored, and Python keeps it so: give the command a real Ctrl-C
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        deadline = time.monotonic() + 120
        while True:  # opening the write end succeeds once the command has it open for reading
            try:
                writer = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
                break
            except OSError:
                assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read()
                time.sleep(0.05)
        while not blocked_reading(proc.pid, fifo):
            assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read()
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
        os.close(writer)
    finally:
        proc.kill()
    assert proc.returncode == 130, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"interrupted: mnistopt {command} stopped"), err
    assert "nothing half-written" in lines[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mnist.pkl.gz"]


# --- replacing a run ------------------------------------------------------------------------


def make_dir(path, text):
    path.mkdir()
    (path / "metrics.json").write_text(text)
    return path


@pytest.mark.parametrize("exchange", [True, False])
def test_replace_dir_interrupted_leaves_one_whole(tmp_path, monkeypatch, exchange):
    old, new = make_dir(tmp_path / "run", "old"), make_dir(tmp_path / ".run-new", "new")
    if not exchange:
        monkeypatch.setattr(fsutil, "_exchange", lambda a, b: False)
        real = os.replace
        calls = []

        def interrupted_second(src, dst):
            calls.append(src)
            if len(calls) == 2:  # old moved aside, now Ctrl-C before the new one lands
                raise KeyboardInterrupt
            real(src, dst)

        monkeypatch.setattr(fsutil.os, "replace", interrupted_second)
        with pytest.raises(KeyboardInterrupt):
            fsutil.replace_dir(new, old)
        monkeypatch.setattr(fsutil.os, "replace", real)
        assert (old / "metrics.json").read_text() == "old"  # put back, whole
        assert (new / "metrics.json").read_text() == "new"
    else:
        def interrupted_cleanup(*a, **k):
            raise KeyboardInterrupt

        # Ctrl-C while the replaced run is being removed: the new one is in place already.
        monkeypatch.setattr(fsutil.shutil, "rmtree", interrupted_cleanup)
        with pytest.raises(KeyboardInterrupt):
            fsutil.replace_dir(new, old)
        assert (old / "metrics.json").read_text() == "new"  # swapped in one step, whole


def test_train_replaces_a_run_and_keeps_it_whole_if_interrupted(tmp_path, monkeypatch):
    pytest.importorskip("torch")
    from test_hostile_runs import tiny_data

    from mnistopt.train import TrainConfig, load_run, train

    cfg = TrainConfig(framework="torch", arch="lenet5", epochs=1, limit=32, val_split=0)
    first = train(cfg, tmp_path / "run", data=tiny_data(), progress=False)
    before = first.metrics["weights"]["sha256"]

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr("mnistopt.train.rundir.replace_dir", interrupted)
    with pytest.raises(KeyboardInterrupt):
        train(TrainConfig(**{**cfg.__dict__, "seed": 1}), tmp_path / "run", data=tiny_data(),
              progress=False)
    assert load_run(tmp_path / "run").metrics["weights"]["sha256"] == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]  # the new one cleaned up
    monkeypatch.undo()
    again = train(TrainConfig(**{**cfg.__dict__, "seed": 1}), tmp_path / "run", data=tiny_data(),
                  progress=False)
    assert again.metrics["weights"]["sha256"] != before
    assert np.isfinite(load_run(tmp_path / "run").logits(tiny_data().x_test)).all()
