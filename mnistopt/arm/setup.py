"""`mnistopt arm setup`: prepare, once, what emulating an aarch64 edge device needs.

The cache (``~/.cache/mnistopt/arm``, ``$MNISTOPT_ARM_CACHE`` or ``--cache``) holds:

* ``qemu/qemu-aarch64``: qemu 10 user-mode emulation from Debian trixie's ``qemu-user``
  (statically linked there). Bookworm's qemu 7.2 segfaults inside onnxruntime and LiteRT.
* ``sysroot/``: an arm64 Debian bookworm with python3 (3.11), made with ``debootstrap
  --foreign`` and completed by unpacking its debs with ``dpkg -x`` (``--foreign`` skips the
  second stage, which would need to run arm64 code to configure packages; nothing here needs it).
* ``sysroot/opt/mnistopt/site-packages``: aarch64 wheels of numpy, onnxruntime and
  ai-edge-litert, unzipped, at the host's own versions so that ARM/x86 differences come from
  the architecture, not from the library versions.
* ``manifest.json``: what was built from what, written last (its presence marks a usable cache).

Everything is built in a temp directory beside the cache and renamed into place, so an
interrupted setup leaves nothing half-made. Debian packages come from the mirror in this
machine's own apt configuration; trixie packages are downloaded with a private apt
configuration and unpacked into the cache, never installed on the host.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

from ..errors import DeviceError

SYSROOT_SUITE = "bookworm"      # its python3 is 3.11: the wheels below are cp311
SYSROOT_PYTHON = "3.11"
QEMU_SUITE = "trixie"
QEMU_PACKAGE = "qemu-user"      # static binaries in trixie (qemu-user-static is transitional)
# Every manylinux tag bookworm's glibc (2.36) can run: wheels are tagged 2_17, 2_27 (LiteRT), 2_28...
WHEEL_PLATFORMS = tuple(f"manylinux_2_{minor}_aarch64" for minor in range(36, 16, -1)) \
    + ("manylinux2014_aarch64",)
# Runtime packages the worker needs on the device, pinned to the host's versions if present.
WHEEL_PACKAGES = ("numpy", "onnxruntime", "ai-edge-litert")
SITE_PACKAGES = "opt/mnistopt/site-packages"
MANIFEST = "manifest.json"
LAYOUT_VERSION = 1


class ArmSetupError(DeviceError):
    """The emulated ARM environment could not be prepared."""


def default_cache() -> Path:
    return Path(os.environ.get("MNISTOPT_ARM_CACHE", "~/.cache/mnistopt/arm")).expanduser()


def read_manifest(cache: Path | None = None) -> dict | None:
    """The manifest of a complete cache, or None if there is none (or it is from another layout)."""
    cache = Path(cache) if cache else default_cache()
    try:
        manifest = json.loads((cache / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    if manifest.get("layout") != LAYOUT_VERSION:
        return None
    return manifest


def qemu_binary(cache: Path) -> Path:
    return cache / "qemu" / "qemu-aarch64"


def sysroot(cache: Path) -> Path:
    return cache / "sysroot"


# --- apt configuration -------------------------------------------------------------------

def debian_mirror(etc: Path = Path("/etc/apt")) -> tuple[str, str | None]:
    """(mirror URI, Signed-By keyring or None) of the host's main Debian archive.

    Read from sources.list / sources.list.d (one-line and deb822 formats) so that a machine
    behind its own mirror or proxy keeps using it; ``$MNISTOPT_DEBIAN_MIRROR`` overrides.
    """
    override = os.environ.get("MNISTOPT_DEBIAN_MIRROR")
    if override:
        return override.rstrip("/"), None
    entries = []
    files = [etc / "sources.list"] + sorted((etc / "sources.list.d").glob("*.list")) \
        + sorted((etc / "sources.list.d").glob("*.sources"))
    for path in files:
        try:
            text = path.read_text()
        except OSError:
            continue
        entries += _parse_deb822(text) if path.suffix == ".sources" else _parse_one_line(text)
    # The main archive: a 'deb' entry carrying 'main' for a non-security, non-updates suite.
    for types, uris, suites, components, signed_by in entries:
        if "deb" not in types or "main" not in components:
            continue
        if not any("-" not in suite for suite in suites):  # only -updates / -security
            continue
        for uri in uris:
            if "security" not in uri and uri.startswith(("http://", "https://", "file:/")):
                return uri.rstrip("/"), signed_by
    raise ArmSetupError(
        "no Debian mirror found in /etc/apt/sources.list{,.d}: set MNISTOPT_DEBIAN_MIRROR "
        "(for example http://deb.debian.org/debian)")


def _parse_one_line(text: str) -> list:
    out = []
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        signed_by = None
        match = re.match(r"(deb|deb-src)\s+(\[[^\]]*\]\s+)?(\S+)\s+(\S+)\s*(.*)", line)
        if not match:
            continue
        if match.group(2):
            opt = re.search(r"signed-by=(\S+)", match.group(2))
            signed_by = opt.group(1).rstrip("]") if opt else None
        out.append(({match.group(1)}, [match.group(3)], [match.group(4)],
                    match.group(5).split(), signed_by))
    return out


def _parse_deb822(text: str) -> list:
    out = []
    for stanza in re.split(r"\n\s*\n", text):
        fields, key = {}, None
        for line in stanza.splitlines():
            if line.startswith("#"):
                continue
            if line[:1] in (" ", "\t") and key:
                fields[key] += " " + line.strip()
            elif ":" in line:
                key, _, value = line.partition(":")
                key = key.strip().lower()
                fields[key] = value.strip()
        if fields.get("enabled", "yes").lower() == "no" or "uris" not in fields:
            continue
        signed_by = fields.get("signed-by")
        if signed_by and not signed_by.startswith("/"):
            signed_by = None  # an inline key block: let apt use its default keyrings
        out.append((set(fields.get("types", "").split()), fields["uris"].split(),
                    fields.get("suites", "").split(), fields.get("components", "").split(),
                    signed_by))
    return out


# --- the build ---------------------------------------------------------------------------

def _need_tools() -> None:
    missing = [tool for tool in ("dpkg-deb", "apt-get", "debootstrap")
               if not shutil.which(tool) and not Path("/usr/sbin", tool).exists()]
    if missing:
        raise ArmSetupError(
            f"ARM emulation setup needs Debian's {', '.join(missing)}: on Debian/Ubuntu run "
            "'sudo apt-get install debootstrap' (dpkg and apt come with the system); elsewhere "
            "use a Debian container, an ARM machine (--device arm on aarch64) or --target ssh://...")
    if os.geteuid() != 0 and not shutil.which("fakeroot"):
        raise ArmSetupError(
            "debootstrap needs root: run 'mnistopt arm setup' with sudo, or install fakeroot "
            "('sudo apt-get install fakeroot') to run it as yourself")


def _run(cmd: list[str], log: Path, what: str, env: dict | None = None, cwd: Path | None = None) -> None:
    """Run a build step, its output appended to `log`; on failure say which step and show the tail."""
    with open(log, "a") as f:
        f.write(f"\n$ {' '.join(cmd)}\n")
        f.flush()
        proc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, env=env, cwd=cwd)
    if proc.returncode != 0:
        tail = " | ".join(log.read_text().strip().splitlines()[-4:])
        raise ArmSetupError(f"{what} failed (exit {proc.returncode}; log {log}): {tail}")


def _debootstrap_cmd() -> list[str]:
    exe = shutil.which("debootstrap") or "/usr/sbin/debootstrap"
    return [exe] if os.geteuid() == 0 else ["fakeroot", exe]


def _apt_private(work: Path, mirror: str, signed_by: str | None, suite: str) -> list[str]:
    """apt-get options that use only `work/` for sources, lists and cache: the host is untouched."""
    (work / "lists" / "partial").mkdir(parents=True, exist_ok=True)
    (work / "cache" / "archives" / "partial").mkdir(parents=True, exist_ok=True)
    (work / "parts").mkdir(exist_ok=True)
    opts = f"[signed-by={signed_by}] " if signed_by else ""
    (work / "sources.list").write_text(f"deb {opts}{mirror} {suite} main\n")
    return ["apt-get", "-q",
            "-o", f"Dir::Etc::SourceList={work / 'sources.list'}",
            "-o", f"Dir::Etc::SourceParts={work / 'parts'}",
            "-o", f"Dir::State::Lists={work / 'lists'}",
            "-o", f"Dir::Cache={work / 'cache'}",
            "-o", f"Dir::State::status={work / 'status'}",
            # apt drops to the _apt user for downloads; it may not enter our private temp dirs.
            "-o", "APT::Sandbox::User=root" if os.geteuid() == 0 else "Debug::NoDropPrivs=true"]


def _fetch_qemu(tmp: Path, mirror: str, signed_by: str | None, log: Path) -> str:
    """Download trixie's qemu-user .deb with a private apt config, keep only qemu-aarch64."""
    work = tmp / "apt-trixie"
    work.mkdir()
    (work / "status").touch()
    apt = _apt_private(work, mirror, signed_by, QEMU_SUITE)
    _run(apt + ["update"], log, f"apt-get update for Debian {QEMU_SUITE} ({mirror})")
    _run(apt + ["download", QEMU_PACKAGE], log, f"downloading {QEMU_PACKAGE} from {QEMU_SUITE}", cwd=work)
    debs = sorted(work.glob(f"{QEMU_PACKAGE}_*.deb"))
    if not debs:
        raise ArmSetupError(f"apt-get download {QEMU_PACKAGE} left no .deb (log {log})")
    unpacked = work / "x"
    _run(["dpkg-deb", "-x", str(debs[0]), str(unpacked)], log, f"unpacking {debs[0].name}")
    binary = unpacked / "usr" / "bin" / "qemu-aarch64"
    if not binary.exists():
        raise ArmSetupError(f"{debs[0].name} has no usr/bin/qemu-aarch64 (log {log})")
    (tmp / "qemu").mkdir()
    shutil.copy2(binary, qemu_binary(tmp))
    version = subprocess.run([str(qemu_binary(tmp)), "--version"], capture_output=True, text=True).stdout
    shutil.rmtree(work)
    return version.splitlines()[0] if version else debs[0].name


def _make_sysroot(tmp: Path, mirror: str, log: Path) -> list[str]:
    """debootstrap's first stage, then unpack every deb it downloaded (the second stage's job)."""
    root = sysroot(tmp)
    _run(_debootstrap_cmd() + ["--foreign", "--arch=arm64", "--variant=minbase",
                               "--include=python3", SYSROOT_SUITE, str(root), mirror],
         log, f"debootstrap (arm64 {SYSROOT_SUITE} from {mirror})")
    archives = root / "var" / "cache" / "apt" / "archives"
    debs = sorted(archives.glob("*.deb"))
    if not debs:
        raise ArmSetupError(f"debootstrap left no packages in {archives} (log {log})")
    for deb in debs:
        _run(["dpkg-deb", "-x", str(deb), str(root)], log, f"unpacking {deb.name}")
        deb.unlink()  # the unpacked tree is all we need; the debs would double the cache size
    # Shadow the host's site directories: qemu -L looks a path up in the sysroot first and
    # falls back to the host's, so a missing guest dir would let x86 packages leak in.
    for d in ("usr/lib/python3/dist-packages", f"usr/local/lib/python{SYSROOT_PYTHON}/dist-packages",
              SITE_PACKAGES):
        (root / d).mkdir(parents=True, exist_ok=True)
    python = root / "usr" / "bin" / f"python{SYSROOT_PYTHON}"
    if not python.exists():
        raise ArmSetupError(f"the sysroot has no python{SYSROOT_PYTHON} (log {log})")
    return [d.name.split("_")[0] for d in debs]


def wheel_requirements() -> list[str]:
    """numpy, onnxruntime, ai-edge-litert at the host's versions (unpinned where absent)."""
    from importlib import metadata

    out = []
    for name in WHEEL_PACKAGES:
        try:
            out.append(f"{name}=={metadata.version(name)}")
        except metadata.PackageNotFoundError:
            out.append(name)
    return out


def pip_download_cmd(dest: Path, requirements: list[str]) -> list[str]:
    """pip resolving for the sysroot's interpreter (cp311, glibc aarch64), binaries only."""
    cmd = [sys.executable, "-m", "pip", "download", "-q", "--only-binary=:all:", "-d", str(dest),
           "--python-version", SYSROOT_PYTHON, "--implementation", "cp",
           "--abi", "cp" + SYSROOT_PYTHON.replace(".", "")]
    for plat in WHEEL_PLATFORMS:
        cmd += ["--platform", plat]
    return cmd + list(requirements)


def _install_wheels(tmp: Path, log: Path, requirements: list[str]) -> dict:
    dest = tmp / "wheels"
    _run(pip_download_cmd(dest, requirements), log,
         f"pip download of aarch64 wheels ({' '.join(requirements)})")
    site = sysroot(tmp) / SITE_PACKAGES
    installed = {}
    for wheel in sorted(dest.glob("*.whl")):
        with zipfile.ZipFile(wheel) as z:
            z.extractall(site)
        name, version = wheel.name.split("-")[:2]
        installed[name] = version
        # A wheel's NAME.data/{purelib,platlib} belong in site-packages too; scripts do not.
        for data in site.glob(f"{name}-{version}.data"):
            for sub in ("purelib", "platlib"):
                if (data / sub).is_dir():
                    shutil.copytree(data / sub, site, dirs_exist_ok=True)
            shutil.rmtree(data)
    shutil.rmtree(dest)
    return installed


def smoke_test(cache: Path, cpu: str | None = None) -> str:
    """Import the runtime stack under emulation; returns what the guest says it is."""
    from .emulated import guest_command, guest_env

    code = ("import platform, numpy, onnxruntime, ai_edge_litert.interpreter; "
            "print(platform.machine(), platform.python_version(), numpy.__version__, "
            "onnxruntime.__version__)")
    proc = subprocess.run(guest_command(cache, ["-c", code], cpu=cpu), capture_output=True,
                          text=True, timeout=600, env=guest_env(cache))
    if proc.returncode != 0:
        raise ArmSetupError(f"the emulated python could not import the runtime stack: "
                            f"{(proc.stderr or proc.stdout).strip().splitlines()[-1:]}")
    return proc.stdout.strip()


def setup(cache: Path | None = None, force: bool = False, say=None) -> dict:
    """Build the emulation cache unless a complete one is there; return its manifest."""
    cache = Path(cache).expanduser() if cache else default_cache()
    say = say or (lambda msg: print(msg, file=sys.stderr))
    manifest = read_manifest(cache)
    if manifest and not force:
        return manifest
    _need_tools()
    mirror, signed_by = debian_mirror()
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{cache.name}.tmp-", dir=cache.parent))
    log = cache.parent / f"{cache.name}-setup.log"
    log.write_text(f"mnistopt arm setup {time.strftime('%Y-%m-%d %H:%M:%S')} mirror {mirror}\n")
    steps, t0 = [], time.perf_counter()

    def step(n, text):
        steps.append((text, time.perf_counter()))
        say(f"[{n}/4] {text}")

    try:
        step(1, f"qemu: {QEMU_PACKAGE} from Debian {QEMU_SUITE} ({mirror})")
        qemu_version = _fetch_qemu(tmp, mirror, signed_by, log)
        step(2, f"sysroot: debootstrap arm64 {SYSROOT_SUITE} minbase + python3 (about a minute)")
        packages = _make_sysroot(tmp, mirror, log)
        requirements = wheel_requirements()
        step(3, f"wheels: {' '.join(requirements)} for aarch64 cp311")
        wheels = _install_wheels(tmp, log, requirements)
        step(4, "check: importing numpy, onnxruntime, ai_edge_litert under qemu")
        guest = smoke_test(tmp)
        manifest = {
            "layout": LAYOUT_VERSION, "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "mirror": mirror, "qemu": qemu_version, "qemu_suite": QEMU_SUITE,
            "sysroot_suite": SYSROOT_SUITE, "python": SYSROOT_PYTHON,
            "debs": len(packages), "wheels": wheels, "guest": guest,
            "seconds": round(time.perf_counter() - t0, 1),
        }
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
        old = None
        if cache.exists():  # --force, or an incomplete cache from an older layout
            old = cache.parent / f".{cache.name}.old-{os.getpid()}"
            cache.rename(old)
        tmp.rename(cache)
        if old:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    say(f"ready in {manifest['seconds']:.0f} s: {cache} ({guest})")
    return manifest


def ensure(cache: Path | None = None, say=None) -> Path:
    """The cache directory, built first if missing."""
    cache = Path(cache).expanduser() if cache else default_cache()
    if read_manifest(cache) is None:
        (say or (lambda m: print(m, file=sys.stderr)))(
            f"ARM emulation environment not prepared yet; preparing it in {cache}")
        setup(cache, say=say)
    return cache
