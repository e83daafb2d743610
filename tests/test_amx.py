"""Keeping XNNPACK off AMX (runtime/amx.py): the seccomp program refuses exactly one call, the
filter works where the CPU offers AMX, and the LiteRT backend takes the option."""

from __future__ import annotations

import struct
import subprocess
import sys

import pytest
from test_runtime import models  # noqa: F401  (the session's tiny models)

from mnistopt.errors import ConfigError
from mnistopt.runtime import amx, open_backend


def _run_bpf(program, nr: int, arch: int, arg0: int) -> int:
    """A classic-BPF interpreter for the three instructions the program uses, over a
    struct seccomp_data {int nr; u32 arch; u64 ip; u64 args[6]} (little-endian)."""
    data = struct.pack("<iIQ6Q", nr, arch, 0, arg0, 0, 0, 0, 0, 0)
    acc, pc = 0, 0
    while True:
        code, jt, jf, k = program[pc]
        if code == 0x20:
            acc = struct.unpack_from("<I", data, k)[0]
            pc += 1
        elif code == 0x15:
            pc += 1 + (jt if acc == k else jf)
        elif code == 0x06:
            return k
        else:
            raise AssertionError(f"unexpected BPF code {code:#x}")


def test_the_filter_refuses_only_the_amx_request():
    x86 = 0xC000003E
    refuse, allow = 0x00050001, 0x7FFF0000
    assert _run_bpf(amx.PROGRAM, 158, x86, amx.ARCH_REQ_XCOMP_PERM) == refuse
    assert _run_bpf(amx.PROGRAM, 158, x86, amx.ARCH_GET_XCOMP_PERM) == allow
    assert _run_bpf(amx.PROGRAM, 158, x86, 0x1002) == allow  # ARCH_SET_FS and the rest
    assert _run_bpf(amx.PROGRAM, 1, x86, amx.ARCH_REQ_XCOMP_PERM) == allow  # write(0x1023, ...)
    assert _run_bpf(amx.PROGRAM, 158, 0x40000003, amx.ARCH_REQ_XCOMP_PERM) == allow  # i386 ABI


def test_the_filter_denies_amx_in_a_fresh_process():
    if not amx.offered():
        pytest.skip("this CPU or kernel offers no AMX tile data")
    code = (
        "import ctypes, os\n"
        "from mnistopt.runtime import amx\n"
        "assert amx.state() == 'free', amx.state()\n"
        "assert amx.deny_xtiledata() == 'denied' == amx.deny_xtiledata()\n"
        "libc = ctypes.CDLL(None, use_errno=True)\n"
        "assert libc.syscall(158, amx.ARCH_REQ_XCOMP_PERM, 18) == -1\n"
        "assert ctypes.get_errno() == 1\n"
        "assert not amx.held()\n"
        "assert os.system('true') == 0\n"  # other calls, and children, still work
        "print('ok')\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


def test_without_amx_nothing_is_installed(monkeypatch):
    monkeypatch.setattr(amx, "offered", lambda: False)
    monkeypatch.setattr(amx, "_denied", False)
    assert amx.deny_xtiledata() == "none" and amx._denied is False


def test_litert_takes_the_amx_option(models):  # noqa: F811
    with pytest.raises(ConfigError, match="litert amx must be one of auto, on, got 'off'"):
        open_backend(models["tflite"], "litert", options={"amx": "off"})
    b = open_backend(models["tflite"], "litert", options={"amx": "auto"})
    assert b.providers[0].startswith("LiteRT/XNNPACK")
    assert ("AMX" in b.providers[0]) == (amx.offered() or amx.held())


def test_a_refused_filter_leaves_xnnpack_its_way(models, monkeypatch):  # noqa: F811
    from mnistopt.runtime.litert import LiteRTBackend

    def refused():
        raise OSError(1, "seccomp filter refused: Operation not permitted")

    monkeypatch.setattr(amx, "deny_xtiledata", refused)
    monkeypatch.setattr(amx, "offered", lambda: True)
    monkeypatch.setattr(amx, "held", lambda: False)
    monkeypatch.setattr(amx, "_denied", False)
    monkeypatch.setattr(LiteRTBackend, "_xnnpack_amx", None)
    b = open_backend(models["tflite"], "litert")
    assert b.providers == ["LiteRT/XNNPACK (AMX on)"]
