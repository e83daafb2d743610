"""Fuzzing the data readers: random bytes and mutated valid files (IDX plain and gzipped,
.npz stored and deflated, the allow-listed pickle) give a result or a `MnistoptError`, never
another exception, and a read of a hostile ~2 KB input never allocates more than 16 MB.
"""

import gzip
import json
import io
import os
import pickle
import struct
import tracemalloc

import numpy as np
import pytest

from mnistopt import data as D
from mnistopt.errors import MnistoptError
from test_hostile_data import good_arrays

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

MEMORY_BOUND = 16 << 20
# MNISTOPT_FUZZ_EXAMPLES=20000 for a long, randomised run; the default is fixed and quick.
EXAMPLES = int(os.environ.get("MNISTOPT_FUZZ_EXAMPLES", "0"))
FUZZ = settings(max_examples=EXAMPLES or 300, deadline=None, derandomize=not EXAMPLES,
                database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
# Header fields an attacker would try: zero, one, MNIST's sizes and one past, the extremes.
INTERESTING = [0, 1, 10, 28, 255, 784, 60000, 60001, 100_001, 2**31 - 1, 2**32 - 1]


def idx(arr):
    return (struct.pack(">HBB", 0, 8, arr.ndim) + b"".join(struct.pack(">I", d) for d in arr.shape)
            + arr.tobytes())


def arrays():
    return good_arrays(2, 1)


def npz(save, **extra) -> bytes:
    b = io.BytesIO()
    save(b, **arrays(), **extra)
    return b.getvalue()


def mnist_pickle(protocol) -> bytes:
    a = arrays()
    x = (a["x_train"].reshape(-1, 784) / 256).astype(np.float32)
    y = a["y_train"].astype(np.int64)
    return pickle.dumps(((x, y), (x[:1], y[:1]), (x, y)), protocol=protocol)


IDX_SEEDS = [idx(np.arange(20, dtype=np.uint8) % 10), idx(arrays()["x_train"])]
IDX_SEEDS += [gzip.compress(s) for s in IDX_SEEDS]
NPZ_SEEDS = [npz(np.savez), npz(np.savez_compressed)]
CACHE_SEEDS = [npz(np.savez, sha256=np.array(D.arrays_sha256(arrays())), source=np.array("s"))]
PICKLE_SEEDS = [mnist_pickle(3), mnist_pickle(4)]


@st.composite
def mutated(draw, seeds):
    """A seed file with a few edits: bit flips, cuts, insertions, deletions, and header-sized
    integers overwritten with the values above."""
    data = bytearray(draw(st.sampled_from(seeds)))
    for _ in range(draw(st.integers(1, 6))):
        op = draw(st.sampled_from(["flip", "cut", "insert", "delete", "int"]))
        pos = draw(st.integers(0, max(len(data) - 1, 0)))
        if op == "flip" and data:
            data[pos] ^= draw(st.integers(1, 255))
        elif op == "cut":
            del data[pos:]
        elif op == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=16))
        elif op == "delete":
            del data[pos:pos + draw(st.integers(1, 16))]
        else:
            fmt = draw(st.sampled_from([">I", "<I", "<H", "<Q"]))
            value = draw(st.sampled_from(INTERESTING)) % (1 << (8 * struct.calcsize(fmt)))
            data[pos:pos + struct.calcsize(fmt)] = struct.pack(fmt, value)
    return bytes(data)


def hostile(seeds):
    return st.one_of(st.binary(max_size=2048), mutated(seeds))


def check(read, raw):
    """`read(raw)` returns or raises a MnistoptError, within the memory bound."""
    tracemalloc.start()
    try:
        try:
            read(raw)
        except MnistoptError:
            pass
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < MEMORY_BOUND + 8 * len(raw), f"{peak:,} bytes for a {len(raw)}-byte input"


def test_seeds_are_valid():
    """The fuzzers start from files the readers accept, so mutations probe real parsing."""
    assert D.read_idx_bytes(IDX_SEEDS[3], "s").shape == (2, 28, 28)
    assert all(D.read_npz(io.BytesIO(s), D.KEYS)["x_train"].shape == (2, 28, 28) for s in NPZ_SEEDS)
    for seed in PICKLE_SEEDS:
        got = D.arrays_from_pickle(seed, "s")
        np.testing.assert_array_equal(got["x_train"][:2], arrays()["x_train"])
    assert D.read_cache(io.BytesIO(CACHE_SEEDS[0])).x_test.shape == (1, 28, 28)


READERS = {
    "idx": (IDX_SEEDS, lambda b: D.read_idx_bytes(b, "fuzz")),
    "npz": (NPZ_SEEDS, lambda b: D.read_npz(io.BytesIO(b), D.KEYS, "fuzz")),
    "pickle": (PICKLE_SEEDS, lambda b: D.arrays_from_pickle(b, "fuzz")),
    "cache": (CACHE_SEEDS, lambda b: D.read_cache(io.BytesIO(b))),
}


@pytest.mark.parametrize("reader", READERS)
@FUZZ
@given(data=st.data())
def test_fuzz_reader(reader, data):
    seeds, read = READERS[reader]
    check(read, data.draw(hostile(seeds)))


# --- the sidecar validator ------------------------------------------------------------------

VALID_SIDECAR = {
    "schema": "mnistopt.artifact/1", "format": "onnx", "framework": "torch", "arch": "lenet5",
    "labels": [str(i) for i in range(10)],
    "input": {"name": "images", "shape": [-1, 1, 28, 28], "layout": "NCHW", "dtype": "uint8",
              "range": [0.0, 1.0], "scale": 1 / 255, "zero_point": 0},
    "output": {"name": "logits", "shape": [-1, 10], "dtype": "float32", "scale": None,
               "zero_point": None, "kind": "logits"},
    "quantize": {"mode": "int8", "tag": "int8", "settings": {}, "reason": "r"},
    "source": {"run": "r", "native": "model.pt", "sha256": "ab" * 32, "test_accuracy": 0.99},
    "file": {"name": "m.onnx", "bytes": 10, "sha256": "cd" * 32},
}
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12)
    | st.sampled_from(["NCHW", "probabilities", "logits", "uint8", "int8", "onnx"]),
    lambda inner: st.lists(inner, max_size=11) | st.dictionaries(
        st.sampled_from(list(VALID_SIDECAR) + ["scale", "zero_point", "kind", "dtype"])
        | st.text(max_size=6), inner, max_size=5),
    max_leaves=24)


@st.composite
def sidecars(draw):
    """The valid sidecar with one to three values replaced (or removed) at random paths."""
    meta = json.loads(json.dumps(VALID_SIDECAR))
    for _ in range(draw(st.integers(1, 3))):
        key = draw(st.sampled_from(list(VALID_SIDECAR)))
        target = meta
        if isinstance(meta.get(key), dict) and meta[key] and draw(st.booleans()):
            target, key = meta[key], draw(st.sampled_from(sorted(meta[key])))
        if draw(st.integers(0, 5)) == 0:
            target.pop(key, None)
        else:
            target[key] = draw(json_values)
    return meta


class FakeBackend:
    """A linear MNIST model behind the backend interface: truth known, any tensor types."""

    format, threads, device, providers, custom_metadata = "onnx", 1, "cpu", ["fake"], {}

    def __init__(self, quantized):
        from mnistopt.runtime.backends import TensorInfo

        self.w = np.random.default_rng(5).normal(0, 0.05, (784, 10)).astype(np.float32)
        if quantized:  # int8 in and out, parameters in the model's own tensors
            self.input = TensorInfo("x", (-1, 1, 28, 28), np.int8, 1 / 255, -128)
            self.output = TensorInfo("y", (-1, 10), np.int8, 0.25, 3)
        else:  # uint8 in without parameters (an ONNX graph input), float out
            self.input = TensorInfo("x", (-1, 1, 28, 28), np.uint8)
            self.output = TensorInfo("y", (-1, 10), np.float32)

    def run(self, x):
        if x.dtype == np.int8:
            y = ((x.reshape(len(x), -1).astype(np.float32) + 128) / 255) @ self.w
            return np.clip(np.round(y / 0.25) + 3, -128, 127).astype(np.int8)
        return x.reshape(len(x), -1).astype(np.float32) @ self.w


@FUZZ
@given(st.one_of(json_values, sidecars()))
def test_fuzz_sidecar_validator_never_raises(meta):
    from mnistopt.artifact import check_metadata

    problems = check_metadata(meta)
    assert isinstance(problems, list) and all(isinstance(p, str) for p in problems)
    assert all(p.isprintable() for p in problems)


@FUZZ
@given(sidecars(), st.booleans())
def test_fuzz_an_accepted_sidecar_never_gives_a_wrong_answer(meta, quantized):
    """Whatever passes the schema: confidences are probabilities, the model's own quantization
    wins where it has one, and the float model's label is its own argmax."""
    import warnings

    from mnistopt.artifact import check_metadata
    from mnistopt.runtime.classifier import Classifier

    if check_metadata(meta):
        return
    backend = FakeBackend(quantized)
    x = np.random.default_rng(7).integers(0, 256, (8, 28, 28), dtype=np.uint8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        clf = Classifier("fuzz.onnx", backend, meta)
        proba = clf.predict_proba(x)
    assert np.isfinite(proba).all() and proba.min() >= 0 and proba.max() <= 1 + 1e-6
    np.testing.assert_allclose(proba.sum(1), 1, atol=1e-5)
    assert len(clf.labels) == 10 and all(s.isprintable() for s in clf.labels)
    if quantized:
        assert (clf.in_quant, clf.out_quant) == ((1 / 255, -128), (0.25, 3))
    else:
        scale, zp = clf.in_quant
        assert np.isfinite(scale) and scale > 0 and 0 <= zp <= 255
        if clf.in_quant == (1 / 255, 0):  # the default: the model's own reading of its bytes
            truth = (x.reshape(8, -1) @ backend.w).argmax(1)
            assert (proba.argmax(1) == truth).all()
