"""The parity helper (numpy only) and the CPU detection it sits beside."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from mnistopt import parity
from mnistopt.errors import ShapeMismatchError, ToleranceError, ValidationError
from mnistopt.parity import FP32, QUANTIZED, Tolerance


def logits(n=1000, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.normal(size=(n, 10)) * 5).astype(np.float32)


def test_identical_passes_fp32():
    a = logits()
    labels = a.argmax(1)
    r = parity.check(a, a.copy(), labels, FP32)
    assert r["passed"] and r["max_abs_diff"] == 0 and r["top1_agreement"] == 1.0
    assert r["reference_accuracy"] == r["candidate_accuracy"] == 1.0 and r["accuracy_drop"] == 0


def test_fp32_bound_is_relative_to_the_largest_logit():
    a = logits()
    bound = 1e-4 * np.abs(a).max()
    assert parity.compare(a, a + 0.5 * bound, tolerance=FP32)["passed"]
    r = parity.compare(a, a + 2 * bound, tolerance=FP32)
    assert not r["passed"] and "max |diff|" in r["failures"][0]


def test_atol_overrides_the_relative_bound():
    a = logits()
    assert not parity.compare(a, a + 1.0, tolerance=FP32)["passed"]
    assert parity.compare(a, a + 1.0, tolerance=FP32.with_atol(1.5))["passed"]


def test_tolerance_error_prints_the_numbers():
    a = logits()
    b = a.copy()
    b[:50] = -b[:50]  # flip 5% of the decisions
    with pytest.raises(ToleranceError) as e:
        parity.check(a, b, a.argmax(1), QUANTIZED, what="torch -> onnx int8")
    msg = str(e.value)
    assert "torch -> onnx int8" in msg and "top-1 agreement" in msg and "max |diff|" in msg
    assert "accuracy" in msg and "pp" in msg
    assert isinstance(e.value, ValidationError)
    assert e.value.report["disagreements"] >= 45 and e.value.report["passed"] is False


def test_accuracy_drop_is_checked():
    a = logits()
    labels = a.argmax(1)
    b = a.copy()
    b[:5] = -b[:5]  # 0.5 pp drop but 99.5 % agreement
    r = parity.compare(a, b, labels, QUANTIZED)
    assert r["top1_agreement"] >= 0.99
    assert not r["passed"] and any("accuracy drop" in f for f in r["failures"])
    assert r["accuracy_drop"] == pytest.approx(0.005)


def test_shape_mismatch():
    with pytest.raises(ShapeMismatchError) as e:
        parity.compare(logits(10), logits(10)[:, :9])
    assert e.value.report["candidate_shape"] == [10, 9]


def test_nonfinite_outputs_fail():
    a = logits(10)
    b = a.copy()
    b[0, 0] = np.nan
    r = parity.compare(a, b, tolerance=Tolerance(agreement=0.0))
    assert not r["passed"] and r["nonfinite"] == 1


def test_top1_agreement_and_summary():
    a = logits(100)
    assert parity.top1_agreement(a, a) == 1.0
    assert parity.top1_agreement(a[:0], a[:0]) == 1.0
    line = parity.summary(parity.compare(a, a, a.argmax(1)))
    assert "top-1 agreement 100.00%" in line


def test_parity_imports_numpy_only():
    code = ("import sys, mnistopt.parity, mnistopt.hw; "
            "print(' '.join(m for m in ('torch', 'tensorflow', 'onnx', 'onnxruntime', "
            "'ai_edge_litert') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


# --- hw ---------------------------------------------------------------------------------------

X86 = """processor\t: 0
vendor_id\t: AuthenticAMD
model name\t: AMD EPYC
flags\t\t: fpu sse sse2 sse4_1 sse4_2 avx avx2 fma

processor\t: 1
model name\t: AMD EPYC
flags\t\t: fpu sse sse2 sse4_1 sse4_2 avx avx2 fma
"""
X86_VNNI = X86.replace("fma", "fma avx512f avx512bw avx512_vnni")
ARM = """processor\t: 0
BogoMIPS\t: 50.00
Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp
CPU implementer\t: 0x41
CPU architecture: 8
CPU variant\t: 0x3
CPU part\t: 0xd0c
"""


def test_parse_x86():
    from mnistopt.hw import parse_cpuinfo

    c = parse_cpuinfo(X86, "x86_64")
    assert c.model == "AMD EPYC" and c.cores == 2 and c.is_x86
    assert c.avx2 and not c.vnni and not c.avx512_vnni and not c.avx_vnni
    assert c.int8_flags() == ["sse4_1", "avx2"]
    v = parse_cpuinfo(X86_VNNI, "x86_64")
    assert v.vnni and v.avx512_vnni


def test_parse_arm():
    from mnistopt.hw import parse_cpuinfo

    c = parse_cpuinfo(ARM, "aarch64")
    assert c.is_arm and c.arm_dotprod and not c.avx2
    assert c.model.startswith("Neoverse-N1")


def test_this_machine():
    from mnistopt.hw import cpu_info

    c = cpu_info()
    assert c.model and c.cores >= 1
    assert cpu_info("/nonexistent/cpuinfo").flags == frozenset()


def test_physical_cores_from_core_ids():
    """Two hyper-threads of one core count once; no core ids (ARM, containers) means unknown."""
    from mnistopt.hw import parse_cpuinfo

    ht = ("processor\t: 0\nphysical id\t: 0\ncore id\t: 0\n\n"
          "processor\t: 1\nphysical id\t: 0\ncore id\t: 0\n\n"
          "processor\t: 2\nphysical id\t: 0\ncore id\t: 1\n")
    c = parse_cpuinfo(ht, "x86_64")
    assert c.cores == 3 and c.physical_cores == 2
    assert parse_cpuinfo(ARM, "aarch64").physical_cores == 0
