"""What to measure: files, run directories and folders -> `Item`s, in a stable order.

`artifact_item(path)` for one exported file, `native_item(run_dir)` for a run's native model,
`discover(paths)` for anything a user names (default: the workspace's runs).
"""

from __future__ import annotations

import importlib.util
from dataclasses import replace
from pathlib import Path

from ..artifact import read_sidecar
from ..errors import ConfigError, RunError
from .backends import ARTIFACT_BACKEND, ARTIFACT_RUNTIMES, NATIVE_FOR_FRAMEWORK, RUNTIME_PACKAGES
from .base import Item


def _dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.is_dir() else path.stat().st_size


def _arch_figures(arch: str | None, meta: dict | None = None) -> tuple[int | None, int | None]:
    """(params, MACs) of a registered arch, else the ones an export recorded (a pruned or
    custom arch), else None."""
    from ..archs import ARCHS

    a = ARCHS.get(arch or "")
    if a:
        return a.params, a.macs
    got = [(meta or {}).get(k) for k in ("params", "macs")]
    return tuple(v if isinstance(v, int) and not isinstance(v, bool) and v > 0 else None
                 for v in got)


def _float_mac_share(path: Path) -> float | None:
    """How much of a TFLite file's arithmetic is float, from its ops: an int8 file made for a
    CPU without VNNI computes its convolutions in float (`export/tflite_int8`). None for
    other formats, or a file that does not parse (its load fails later, with the reason)."""
    from ..errors import ModelLoadError
    from ..runtime.flatbuf import mac_split, read_tflite

    if path.suffix.lower() != ".tflite":
        return None
    try:
        fl, it = mac_split(read_tflite(path.read_bytes(), str(path)))
    except (ModelLoadError, OSError):
        return None
    return fl / (fl + it) if fl + it else None


def artifact_item(path: Path) -> Item:
    path = Path(path)
    if path.suffix.lower() not in ARTIFACT_BACKEND:
        raise ConfigError(f"{path}: not an .onnx or .tflite file")
    if not path.is_file():
        raise ConfigError(f"{path}: no such file")
    meta = read_sidecar(path)
    # Default names are <arch>-<framework>-<quant>.<ext>; the sidecar, when present, is the truth.
    parts = path.stem.split("-")
    guess = dict(zip(("arch", "framework", "quant"), parts)) if len(parts) == 3 else {}
    arch = meta.get("arch") or guess.get("arch")
    params, macs = _arch_figures(arch, meta)
    fmt = path.suffix.lower()[1:]
    q = meta.get("quantize") if isinstance(meta.get("quantize"), dict) else {}
    val = meta.get("validation") if isinstance(meta.get("validation"), dict) else {}
    keep = {"quantize_reason": q.get("reason"), "quantize_settings": q.get("settings"),
            "source_run": (meta.get("source") or {}).get("run") if isinstance(meta.get("source"), dict) else None,
            # what the exporter measured against the native model, for the reader's cross-check
            "validation": {k: v for k, v in val.items() if isinstance(v, (int, float, str, bool))} or None}
    return Item(id=path.name, kind="artifact", path=path, backend=ARTIFACT_BACKEND[path.suffix.lower()],
                framework=meta.get("framework") or guess.get("framework"), arch=arch, format=fmt,
                quant=q.get("tag") or guess.get("quant"),
                file_bytes=path.stat().st_size, params=params, macs=macs,
                float_mac_share=_float_mac_share(path), base_arch=meta.get("base_arch"),
                meta={k: v for k, v in keep.items() if v is not None})


def native_item(run_dir: Path) -> Item:
    from ..train import load_run
    from ..train.prune import base_arch

    run = load_run(run_dir)
    backend = NATIVE_FOR_FRAMEWORK.get(run.framework)
    if backend is None:
        raise RunError(f"{run_dir}: no benchmark backend for framework '{run.framework}'")
    spec = run.arch_spec  # checked, and its counts computed here, not read from the file
    return Item(id=f"{Path(run_dir).name}:native", kind="native", path=Path(run_dir), backend=backend,
                framework=run.framework, arch=run.arch, format="native", quant="fp32",
                file_bytes=_dir_bytes(run.native_path), params=spec.params, macs=spec.macs,
                base_arch=base_arch(run.metrics),
                meta={"test_accuracy_at_training": run.metrics.get("test_accuracy")})


def _is_run(d: Path) -> bool:
    return (d / "metrics.json").is_file()


def _in_peers_dir(f: Path) -> bool:
    return any(d.name == "peers" and _is_run(d.parent) for d in f.parents)


def discover(paths: list[Path] | None = None) -> list[Item]:
    """Files, run directories and folders (searched recursively) -> items, in a stable order.

    With no paths: every run under the workspace plus the artifacts in its export/ folder.
    """
    from ..workspace import workspace

    if not paths:
        root = workspace() / "runs"
        if not root.is_dir():
            raise RunError(f"nothing to benchmark: {root} does not exist "
                           "(train and export first: 'make demo', or give PATHS)")
        paths = [root]
    items: dict[str, Item] = {}

    def add(item: Item) -> None:
        key = str(item.path.resolve()) + item.kind
        items.setdefault(key, item)

    for p in map(Path, paths):
        if p.is_file():
            add(artifact_item(p))
        elif p.is_dir():
            if _is_run(p):
                add(native_item(p))
            for run in sorted(q.parent for q in p.rglob("metrics.json")):
                if run != p and not run.name.startswith("."):
                    add(native_item(run))
            for f in sorted(p.rglob("*")):
                # Hidden paths are temp files of an export or a run still being written;
                # RUN/peers/ holds other tools' files (`--peers` benches them as peers).
                if f.suffix.lower() in ARTIFACT_BACKEND and f.is_file() and not any(
                        part.startswith(".") for part in f.relative_to(p).parts) and \
                        not _in_peers_dir(f):
                    add(artifact_item(f))
        else:
            raise ConfigError(f"{p}: no such file or directory")
    if not items:
        raise RunError(f"nothing to benchmark under {', '.join(map(str, paths))} "
                       "(no .onnx/.tflite files and no run directories)")
    out = list(items.values())
    # Make ids unique when two runs export files of the same name.
    seen: dict[str, int] = {}
    for it in out:
        seen[it.id] = seen.get(it.id, 0) + 1
    for it in out:
        if seen[it.id] > 1:
            it.id = f"{it.path.parent.parent.name}/{it.id}" if it.kind == "artifact" else str(it.path)
    return out


def runtime_names() -> list[str]:
    """Every runtime an exported file can be benched on (`--runtime` choices)."""
    return list(dict.fromkeys(n for names in ARTIFACT_RUNTIMES.values() for n in names))


def _installed(runtime: str) -> bool:
    pkg = RUNTIME_PACKAGES.get(runtime)
    return pkg is None or importlib.util.find_spec(pkg) is not None


def with_runtimes(items: list[Item], runtimes=None, device: str = "cpu") -> list[Item]:
    """`items` with each of mnistopt's exported files on the runtimes it is benched on.

    runtimes None: the format's own runtime, plus on the cpu target every other runtime of
    the format that is installed (ARTIFACT_RUNTIMES). A list: only those (a file of a format
    none of them runs is left out). A file's row on its own runtime keeps the file's id; on
    another runtime its id is FILE@RUNTIME.
    """
    known = runtime_names()
    wanted = None if runtimes is None else list(dict.fromkeys(runtimes))
    for name in wanted or ():
        if name not in known:
            raise ConfigError(f"unknown runtime '{name}'; choose from: {', '.join(known)}")
        if device != "cpu" and name not in ARTIFACT_BACKEND.values():
            raise ConfigError(f"--runtime {name} runs on --device cpu, not on '{device}'")
    out = []
    for it in items:
        if it.kind != "artifact" or it.peer is not None:
            out.append(it)
            continue
        names = ARTIFACT_RUNTIMES.get(it.path.suffix.lower(), (it.backend,))
        for i, name in enumerate(names):
            if wanted is None and i and (device != "cpu" or not _installed(name)):
                continue
            if wanted is not None and name not in wanted:
                continue
            out.append(it if i == 0 else replace(it, id=f"{it.id}@{name}", backend=name))
    if items and not out:
        raise RunError(f"nothing to benchmark on {', '.join(wanted or ())}: no file of a format "
                       "those runtimes run")
    return out


def write_test_npz(path: Path) -> None:
    """MNIST's 10,000 test images and labels as the npz the child and the worker read."""
    import numpy as np

    from ..data import load_mnist

    m = load_mnist()
    np.savez(path, x_test=m.x_test, y_test=m.y_test)


def peer_item(built) -> Item:
    """The item of one built peer (`mnistopt.peers.Built`) of a torch run: its record carries
    `peer` (name, tool, how, source_run, build_s, cached, ...)."""
    from ..train import load_run

    peer, run = built.peer, load_run(built.run)
    params, macs = _arch_figures(run.arch)
    path = built.path
    size = _dir_bytes(run.native_path if peer.format == "native" else path)
    # The weights beside the graph: an IR's NAME.bin, an ONNX file's external data.
    extra = [path.with_suffix(".bin")] if peer.format == "ir" else [
        path.with_name(n) for n in built.info.get("files", [])[1:]]
    size += sum(f.stat().st_size for f in extra if f.is_file())
    return Item(id=f"{run.path.name}/peer:{peer.name}",
                kind="native" if peer.format in ("native", "pte") else "artifact",
                path=path, backend=peer.backend, framework=run.framework, arch=run.arch,
                format=peer.format, quant=peer.quant, file_bytes=size, params=params, macs=macs,
                peer=dict(built.info))


def peer_items(items: list[Item], names, batch_sizes, device: str,
               progress: bool = True) -> tuple[list[Item], list[dict]]:
    """The peers of every torch run among `items`: (items to measure, records of the peers
    that cannot run here: not installed, not on this device, or failed to build)."""
    from ..peers import build_peers, choose
    from ..peers.registry import tool_versions
    from .backends import BACKENDS
    from .base import UNSUPPORTED, make_record

    # A pruned run is mnistopt's output, not a model a user brings: its base run has the peers.
    runs = [it for it in items if it.kind == "native" and it.framework == "torch"
            and not it.base_arch]
    if not runs:
        raise RunError("--peers: no torch run among the models to benchmark (peers are built "
                       "from a torch run directory)")
    chosen = choose(names)
    here = [p.name for p in chosen if device in BACKENDS[p.backend].devices]
    todo, done = [], []

    def skip(run_item, peer, info, res):
        it = Item(id=f"{run_item.path.name}/peer:{peer.name}", kind="artifact",
                  path=run_item.path, backend=peer.backend, framework="torch",
                  arch=run_item.arch, format=peer.format, quant=peer.quant,
                  params=run_item.params, macs=run_item.macs, peer=info)
        done.append(make_record(it, res, device, "native", BACKENDS[peer.backend].label))

    for run_item in runs:
        for p in chosen:
            if p.name not in here:
                skip(run_item, p, {"name": p.name, "tool": tool_versions(p), "how": p.how,
                                     "source_run": str(run_item.path)},
                     {"error": f"{BACKENDS[p.backend].label} does not run on --device {device}",
                      "error_type": UNSUPPORTED})
        for b in build_peers(run_item.path, here, batch_sizes=batch_sizes,
                             progress=progress) if here else ():
            if b.path is not None:
                todo.append(peer_item(b))
            else:
                skip(run_item, b.peer, dict(b.info),
                     {"error": b.unsupported, "error_type": UNSUPPORTED} if b.unsupported else
                     {"error": b.error, "error_type": "PeerBuildError"})
    return todo, done
