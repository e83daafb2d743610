"""Building the peers of one torch run into RUN/peers/, cached across bench runs.

`RUN/peers/peers.json` records, per peer, the file it built, the run's native model checksum
and the tool versions it was built with; a peer is rebuilt when any of them changed or a file
is gone. Nothing here writes outside RUN/peers/ (mnistopt's own files stay in RUN/export/).
"""

from __future__ import annotations

import importlib
import json
import shutil
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..fsutil import write_json
from .registry import Peer, choose, missing, tool_versions

SCHEMA = "mnistopt.peers/1"
MANIFEST = "peers.json"
CALIB_SAMPLES = 512  # what the exporter's int8 paths calibrate with (export.api.DEFAULT_CALIB)


@dataclass
class Built:
    """One peer of one run: its file (or run directory), or why there is none."""

    peer: Peer
    run: Path
    path: Path | None = None
    info: dict = field(default_factory=dict)  # the record's "peer" entry
    unsupported: str | None = None  # not installed here: shown, not a failure
    error: str | None = None  # the build failed


@dataclass
class Context:
    """What a builder gets: the run, its peers folder, the calibration images, the batch sizes
    the bench will time, and `need(name)` for the file of another peer (built if needed)."""

    run: object  # mnistopt.train.Run
    dir: Path
    batch_sizes: list
    progress: bool = True
    _need: object = None
    _data: object = None  # an mnistopt.data.MNIST; None: MNIST itself, when first needed
    _calib: np.ndarray | None = None

    @property
    def calib(self) -> np.ndarray:
        """uint8 (512, 28, 28): the exporter's calibration images (training set, seed 0)."""
        if self._calib is None:
            from ..data import load_mnist
            from ..export.api import calibration_images

            self._calib = calibration_images(self._data or load_mnist(), CALIB_SAMPLES)
        return self._calib

    def calib_input(self) -> np.ndarray:
        """The calibration images as the native model takes them (float32 [0, 1], its layout)."""
        from ..train import to_input

        return to_input(self.calib, self.run.layout)

    def need(self, name: str) -> Path:
        return self._need(name)

    @contextmanager
    def staging(self, name: str):
        """A temp folder inside RUN/peers/ to write `name`'s files into; `publish` moves them."""
        self.dir.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=self.dir))
        try:
            yield tmp
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def publish(self, tmp: Path, main: str) -> Path:
        """Move every file of `tmp` into RUN/peers/, `main` (the file others point to) last, so
        a reader never finds the main file without the rest."""
        files = sorted(tmp.iterdir(), key=lambda p: p.name == main)
        for f in files:
            dest = self.dir / f.name
            if dest.is_dir():
                shutil.rmtree(dest)
            f.replace(dest)
        return self.dir / main


@contextmanager
def _tool_output(log: Path):
    """The tools' prints, warnings and progress bars go to RUN/peers/NAME.log, not the bench's
    terminal (torch.onnx, onnxruntime's quantizer and NNCF all talk)."""
    import contextlib
    import io
    import logging
    import warnings

    buf = io.StringIO()
    handler = logging.StreamHandler(buf)
    root = logging.getLogger()
    saved, root.handlers = root.handlers, [handler]
    try:
        with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(buf), \
                warnings.catch_warnings():
            warnings.simplefilter("default")
            warnings.showwarning = lambda m, c, f, n, file=None, line=None: buf.write(
                f"{c.__name__}: {m}\n")
            yield
    finally:
        root.handlers = saved
        if buf.getvalue():
            log.parent.mkdir(parents=True, exist_ok=True)
            log.write_text(buf.getvalue())


def _manifest(path: Path) -> dict:
    """The manifest, or an empty one when it is missing or not ours (then everything rebuilds)."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {"schema": SCHEMA, "peers": {}}
    ok = isinstance(data, dict) and data.get("schema") == SCHEMA and isinstance(
        data.get("peers"), dict)
    return data if ok else {"schema": SCHEMA, "peers": {}}


def _call(peer_fn: str, ctx):
    module, _, func = peer_fn.partition(":")
    return getattr(importlib.import_module(f"{__package__}.{module}"), func)(ctx)


def _cached(entry, peers_dir: Path, key: dict, sizes: list) -> Path | None:
    """The entry's file when it is still what a build would make now; else None."""
    if not isinstance(entry, dict) or any(entry.get(k) != v for k, v in key.items()) or \
            not isinstance(entry.get("file"), str):
        return None
    path = Path(entry["file"])
    if not path.is_absolute():
        path = peers_dir / path
    # A relative name must stay inside RUN/peers/; an absolute one is a source outside (the
    # run's own ONNX file) and is only ever read.
    if ".." in Path(entry["file"]).parts or not path.exists():
        return None
    built = entry.get("batch_sizes")
    if isinstance(built, list) and not set(sizes) <= set(built):
        return None
    return path


def build_peers(run_dir: Path, names=None, *, batch_sizes=(1,), progress: bool = True,
                rebuild: bool = False, data=None) -> list[Built]:
    """The peers `names` (default: all) of the torch run `run_dir`, built or from the cache.

    `data`: an `mnistopt.data.MNIST` to draw the calibration images from (default: MNIST).
    Never raises for a peer: one that is not installed has `unsupported`, one whose build
    failed has `error` (one line). Only a run that is not a torch run is a RunError.
    """
    from ..errors import RunError
    from ..progress import progress_bar
    from ..train import load_run

    run = load_run(run_dir)
    if run.framework != "torch":
        raise RunError(f"{run_dir}: peers are built from torch runs; this is a "
                       f"{run.framework} run")
    peers_dir = run.path / "peers"
    man_path = peers_dir / MANIFEST
    man = _manifest(man_path)
    native = run.metrics.get("native_sha256")
    sizes = sorted({1, *batch_sizes})
    results: dict[str, Built] = {}

    def need(name: str) -> Path:
        b = one(choose([name])[0])
        if b.path is None:
            raise RuntimeError(f"needs peer '{name}': {b.unsupported or b.error}")
        return b.path

    ctx = Context(run=run, dir=peers_dir, batch_sizes=sizes, progress=progress, _need=need,
                  _data=data)

    def one(peer: Peer) -> Built:
        if peer.name in results:
            return results[peer.name]
        b = results[peer.name] = Built(peer, run.path)
        tool = tool_versions(peer)
        b.info = {"name": peer.name, "tool": tool, "how": peer.how, "source_run": str(run.path),
                  "build_s": None, "cached": False}
        why = missing(peer)
        if why:
            b.unsupported = why
            return b
        if peer.builder is None:  # runs the run's own model (torch.compile)
            b.path = run.path
            return b
        entry = man["peers"].get(peer.name)
        try:
            key = {"native_sha256": native, "tool": tool,
                   "inputs": _call(peer.inputs, ctx) if peer.inputs else None}
        except Exception as exc:
            b.error = f"build failed: {type(exc).__name__}: {exc}"[:300]
            return b
        hit = None if rebuild or not peer.cache else _cached(entry, peers_dir, key, sizes)
        if hit is not None:
            b.path, b.info["cached"] = hit, True
            b.info["build_s"] = entry.get("build_s")
            b.info.update(entry.get("notes") or {})
            return b
        t0 = time.perf_counter()
        try:
            with progress_bar(f"peer {peer.name} ({run.path.name})", 1,
                              progress and peer.cache) as advance, _tool_output(
                                  peers_dir / f"{peer.name}.log"):
                path, notes = _call(peer.builder, ctx)
                advance(1)
        except Exception as exc:  # a tool's failure is this peer's result, not the bench's
            text = str(exc).strip().splitlines()
            b.error = f"build failed: {type(exc).__name__}: {text[0] if text else ''}"[:300]
            return b
        b.path = Path(path)
        b.info.update(notes or {})
        if not peer.cache:
            return b
        b.info["build_s"] = round(time.perf_counter() - t0, 2)
        rel = b.path.relative_to(peers_dir) if b.path.is_relative_to(peers_dir) else b.path
        man["peers"][peer.name] = {
            "file": str(rel), **key, "build_s": b.info["build_s"], "notes": notes or {},
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            **({"batch_sizes": sizes} if peer.format == "pte" else {})}
        write_json(man_path, man)
        return b

    return [one(p) for p in choose(names)]
