"""`mnistopt web setup`: onnxruntime-web's files, fetched once from the npm registry.

The page loads ONNX Runtime's WebAssembly build from this server only (never a CDN), so it
works offline. The files come from the npm package at a pinned version whose tarball must hash
to the registry's published sha512 (recorded below); each extracted file's sha256 goes in the
cache's manifest and is checked again before the server hands it out.

Cache: ``~/.cache/mnistopt/web`` or ``$MNISTOPT_WEB_CACHE``, one folder per version, built in a
temp folder beside it and renamed into place (an interrupted set-up leaves nothing half-made).
The tarball is fetched with ``npm pack`` when npm is installed (it honours the user's registry,
proxy and certificates), else over HTTPS from ``$MNISTOPT_NPM_REGISTRY`` or registry.npmjs.org.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import urllib.request
from pathlib import Path

from ..errors import ChecksumError, DeviceError

PACKAGE = "onnxruntime-web"
VERSION = "1.30.0"
# `npm view onnxruntime-web@1.30.0 dist.integrity`: the sha512 of the tarball, base64.
INTEGRITY = ("sha512-q0y+JrrtukXSzsBWEMccVfqX25LRmosXHF+CaRJmg8pZClzcV7svNc4rKY3jL02Vb7QmRMDs1S"
             "igqR4CXAfKYQ==")
TARBALL_BYTES = 33_106_585
# The WebAssembly-only build: the ES module API, its loader, and the SIMD + threads binary
# (the one variant 1.30 ships for the CPU; threads are used only where the page is
# cross-origin isolated).
FILES = {"package/dist/ort.wasm.min.mjs": "ort.wasm.min.mjs",
         "package/dist/ort-wasm-simd-threaded.mjs": "ort-wasm-simd-threaded.mjs",
         "package/dist/ort-wasm-simd-threaded.wasm": "ort-wasm-simd-threaded.wasm"}
PACKAGE_JSON = "package/package.json"
MAX_FILE_BYTES = 64 << 20
MANIFEST = "manifest.json"
LAYOUT = 1


class WebSetupError(DeviceError):
    """onnxruntime-web could not be fetched or its cache is unusable."""


def default_cache() -> Path:
    return Path(os.environ.get("MNISTOPT_WEB_CACHE", "~/.cache/mnistopt/web")).expanduser()


def asset_dir(cache: Path | None = None) -> Path:
    return (Path(cache) if cache else default_cache()) / f"{PACKAGE}-{VERSION}"


def read_manifest(cache: Path | None = None) -> dict | None:
    """The manifest of a complete cache for the pinned version, or None."""
    try:
        manifest = json.loads((asset_dir(cache) / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    ok = (isinstance(manifest, dict) and manifest.get("layout") == LAYOUT
          and manifest.get("version") == VERSION and isinstance(manifest.get("files"), dict))
    return manifest if ok else None


def verify(cache: Path | None = None) -> dict:
    """The manifest, after checking every file against its recorded sha256 and size."""
    manifest = read_manifest(cache)
    if manifest is None:
        raise WebSetupError(f"no onnxruntime-web {VERSION} in {asset_dir(cache)}: run "
                            "'mnistopt web setup'")
    for name, rec in manifest["files"].items():
        path = asset_dir(cache) / name
        if name not in FILES.values() or not path.is_file() or \
                path.stat().st_size != rec.get("bytes") or \
                hashlib.sha256(path.read_bytes()).hexdigest() != rec.get("sha256"):
            raise ChecksumError(f"{path}: missing or changed since set-up (run 'mnistopt web "
                                "setup --force')")
    return manifest


def ensure(cache: Path | None = None, quiet: bool = False) -> Path:
    """The folder of verified assets, set up first if there is none (the implicit set-up)."""
    if read_manifest(cache) is None:
        setup(cache, quiet=quiet)
    verify(cache)
    return asset_dir(cache)


def setup(cache: Path | None = None, force: bool = False, quiet: bool = False) -> dict:
    """Fetch, check and unpack the pinned onnxruntime-web; returns the manifest."""
    root = Path(cache) if cache else default_cache()
    final = asset_dir(root)
    if not force and read_manifest(root) is not None:
        return verify(root)
    root.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{PACKAGE}-", dir=root))
    try:
        if not quiet:
            print(f"web setup: fetching {PACKAGE} {VERSION} from the npm registry "
                  f"({TARBALL_BYTES / 1e6:.0f} MB, once)", file=sys.stderr)
        tarball = fetch_tarball(work)
        check_integrity(tarball, INTEGRITY)
        out = work / "assets"
        files, package = extract(tarball, out)
        manifest = {"layout": LAYOUT, "package": PACKAGE, "version": VERSION,
                    "license": package.get("license"), "integrity": INTEGRITY, "files": files}
        (out / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")  # last: marks it whole
        if final.exists():
            shutil.rmtree(final)
        os.replace(out, final)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if not quiet:
        print(f"web setup: {len(files)} files in {final}", file=sys.stderr)
    return manifest


def fetch_tarball(work: Path) -> Path:
    """The package tarball in `work`: through npm if present, else over HTTPS."""
    spec = f"{PACKAGE}@{VERSION}"
    npm = shutil.which("npm")
    if npm:
        proc = subprocess.run([npm, "pack", spec, "--silent", "--pack-destination", str(work)],
                              capture_output=True, text=True, timeout=900)
        found = sorted(work.glob("*.tgz"))
        if proc.returncode == 0 and found:
            return found[0]
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no tarball"]
        raise WebSetupError(f"npm pack {spec} failed: {tail[0]}")
    registry = os.environ.get("MNISTOPT_NPM_REGISTRY", "https://registry.npmjs.org").rstrip("/")
    url = f"{registry}/{PACKAGE}/-/{PACKAGE}-{VERSION}.tgz"
    dest = work / f"{PACKAGE}-{VERSION}.tgz"
    try:
        with urllib.request.urlopen(url, timeout=60) as resp, open(dest, "wb") as f:
            got = 0
            for block in iter(lambda: resp.read(1 << 20), b""):
                got += len(block)
                if got > 2 * TARBALL_BYTES:
                    raise WebSetupError(f"{url}: larger than the pinned tarball; refused")
                f.write(block)
    except OSError as exc:
        raise WebSetupError(f"cannot fetch {url}: {exc} (install npm, or set "
                            "MNISTOPT_NPM_REGISTRY to a reachable registry)") from None
    return dest


def check_integrity(path: Path, integrity: str) -> None:
    """Subresource-integrity check (``sha512-<base64>``, npm's format) of a file (the tarball
    is bounded: `fetch_tarball` stops at twice the pinned size)."""
    algo, _, want = integrity.partition("-")
    got = base64.b64encode(hashlib.new(algo, path.read_bytes()).digest()).decode()
    if got != want:
        raise ChecksumError(f"{path.name}: {algo} {got[:16]}... differs from the registry's "
                            f"published {want[:16]}...; refusing to use it")


def extract(tarball: Path, out: Path) -> tuple[dict, dict]:
    """Unpack the files in FILES (regular files, bounded sizes) into `out`.

    Returns ({name: {bytes, sha256}}, package.json), after checking that package.json names
    the pinned package and version. Members are written under FILES' names only.
    """
    out.mkdir(parents=True)
    files, package = {}, None
    with tarfile.open(tarball, "r:gz") as tar:
        for member in tar:
            name = FILES.get(member.name)
            if name is None and member.name != PACKAGE_JSON:
                continue
            if not member.isreg() or member.size > MAX_FILE_BYTES:
                raise WebSetupError(f"{tarball.name}: {member.name} is not a plain file of at "
                                    f"most {MAX_FILE_BYTES >> 20} MiB")
            data = tar.extractfile(member).read()
            if name is None:
                try:
                    package = json.loads(data)
                except ValueError:
                    raise WebSetupError(f"{tarball.name}: {PACKAGE_JSON} is not JSON") from None
                continue
            (out / name).write_bytes(data)
            files[name] = {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    missing = sorted(set(FILES.values()) - set(files))
    if missing:
        raise WebSetupError(f"{tarball.name}: lacks {', '.join(missing)}")
    if not isinstance(package, dict) or package.get("name") != PACKAGE \
            or package.get("version") != VERSION:
        raise WebSetupError(f"{tarball.name}: its package.json does not describe {PACKAGE} "
                            f"{VERSION}")
    return files, package

