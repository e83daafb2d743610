"""Atomic file writes (stdlib only): a temp file beside the target, then a rename; and the one
check of an output location, made before the work.

A crash or Ctrl-C never leaves a half-written file where a reader would take it for whole, and
the result gets the permissions a plain `open()` would give (mkstemp's own are 0600).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator


@contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = "") -> Iterator[Path]:
    """Yield a temp path beside `path`; on success it replaces `path`, on failure it is removed.

    `suffix` keeps the extension for writers that look at it (matplotlib, converters).
    """
    path = Path(path)
    if path.exists() and not path.is_file():  # a rename would replace /dev/null or a folder
        from .errors import ConfigError

        raise ConfigError(f"{path}: exists and is not a regular file; not replaced")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    tmp = Path(tmp)
    try:
        yield tmp
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)  # gone already after a successful replace


def write_text(path: str | os.PathLike, text: str) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def write_json(path: str | os.PathLike, obj: Any, **dump_kw) -> Path:
    return write_text(path, json.dumps(obj, indent=2, **dump_kw) + "\n")


def sha256_file(path: str | os.PathLike) -> str:
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def check_output(path: str | os.PathLike, option: str = "--out", *, suffix: str | None = None,
                 directory: bool = False) -> Path:
    """Fail before the work, not after it, on an output location that cannot take the result:
    a directory where a file goes (or a file where a directory goes), something that is not a
    regular file, a parent that is a file, or a place where no file can be created (/proc, a
    read-only mount, no permission: tried by creating and removing a temp file in the nearest
    existing directory; nothing else is created). One line, naming `option`."""
    from .errors import ConfigError

    path = Path(path).expanduser()
    where = f"{option} {path}"
    if suffix and path.suffix.lower() != suffix:
        raise ConfigError(f"{where}: the file name must end in {suffix}")
    if directory:
        if path.exists() and not path.is_dir():
            raise ConfigError(f"{where}: is a file, not a directory")
    elif path.is_dir():
        raise ConfigError(f"{where}: is a directory; give a file name")
    elif path.exists() and not path.is_file():
        raise ConfigError(f"{where}: exists and is not a regular file")
    base = path if directory and path.is_dir() else path.parent
    while not base.exists() and base != base.parent:
        base = base.parent
    if not base.is_dir():
        raise ConfigError(f"{where}: {base} is a file, not a directory")
    try:
        fd, probe = tempfile.mkstemp(prefix=".mnistopt-probe-", dir=base)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise ConfigError(f"{where}: cannot create files in {base} "
                          f"({exc.strerror or exc})") from None
    return path


def replace_dir(new: str | os.PathLike, target: str | os.PathLike) -> None:
    """Put the directory `new` at `target`, then remove the one it replaces.

    At every instant `target` is one whole directory, the old or the new: Linux exchanges the
    two names in one step (renameat2 RENAME_EXCHANGE); elsewhere the old one is renamed aside
    first and put back if the second rename fails, so an interruption leaves it whole there.
    """
    new, target = Path(new), Path(target)
    if not target.exists():
        os.replace(new, target)
        return
    if _exchange(new, target):
        shutil.rmtree(new, ignore_errors=True)  # `new` now names the old directory
        return
    aside = Path(tempfile.mkdtemp(prefix=f".{target.name}-old-", dir=target.parent))
    os.replace(target, aside)  # an empty directory is replaced by a rename onto it
    try:
        os.replace(new, target)
    except BaseException:
        os.replace(aside, target)
        raise
    shutil.rmtree(aside, ignore_errors=True)


def _exchange(a: Path, b: Path) -> bool:
    """Swap the names `a` and `b` atomically; False where the system cannot (not Linux, an
    old kernel or libc, a file system without RENAME_EXCHANGE)."""
    import ctypes

    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p,
                          ctypes.c_uint]
    return renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0
