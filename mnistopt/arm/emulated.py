"""Running aarch64 Python under qemu user-mode emulation, from the cache `setup` prepares.

qemu's ``-L SYSROOT`` makes the guest's file lookups try ``SYSROOT/path`` first and fall back
to the host's ``path``: the guest finds its own loader, libc and stdlib in the sysroot and can
still read the artifacts and data where they are on the host (and write its results there).
"""

from __future__ import annotations

import functools
import subprocess
from pathlib import Path

from ..errors import ConfigError
from .setup import SITE_PACKAGES, SYSROOT_PYTHON, qemu_binary, sysroot

# A Raspberry Pi 4's core: the most common small ARM board, without the int8 dot-product
# instructions (asimddp) that cortex-a76 and newer have, so int8 takes the older kernels.
DEFAULT_CPU = "cortex-a72"


def guest_python(cache: Path) -> Path:
    return sysroot(cache) / "usr" / "bin" / f"python{SYSROOT_PYTHON}"


def guest_command(cache: Path, python_args: list[str], cpu: str | None = None) -> list[str]:
    """argv running the sysroot's python3 under qemu-aarch64 with `python_args`."""
    cache = Path(cache)
    cmd = [str(qemu_binary(cache)), "-L", str(sysroot(cache))]
    if cpu:
        cmd += ["-cpu", cpu]
    # -s: no user site; -B: no .pyc written into the host's source tree.
    return cmd + [str(guest_python(cache)), "-s", "-B"] + list(python_args)


def guest_env(cache: Path, extra_paths: list[str | Path] = ()) -> dict:
    """A clean environment: the host's PYTHONHOME / VIRTUAL_ENV must not reach the guest."""
    paths = [str(p) for p in extra_paths] + [str(sysroot(Path(cache)) / SITE_PACKAGES)]
    return {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": "/tmp",
            "PYTHONPATH": ":".join(paths), "PYTHONNOUSERSITE": "1",
            "PYTHONDONTWRITEBYTECODE": "1"}


@functools.lru_cache(maxsize=4)
def available_cpus(cache: Path) -> tuple[str, ...]:
    """The -cpu names this qemu knows (``qemu-aarch64 -cpu help``)."""
    out = subprocess.run([str(qemu_binary(Path(cache))), "-cpu", "help"], capture_output=True,
                         text=True).stdout
    # "Available CPUs:" then one indented name per line.
    names = [line.split()[0] for line in out.splitlines() if line.startswith((" ", "\t")) and line.strip()]
    return tuple(dict.fromkeys(names))


def check_cpu(cache: Path, cpu: str | None) -> str | None:
    if cpu is None:
        return None
    known = available_cpus(Path(cache))
    if known and cpu not in known:
        arm = [c for c in known if c.startswith(("cortex", "neoverse", "a64fx", "max"))]
        raise ConfigError(f"unknown ARM cpu '{cpu}' for qemu: pick one of {', '.join(arm or known)}")
    return cpu
