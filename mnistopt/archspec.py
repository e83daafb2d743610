"""Architectures as JSON: read (untrusted, validated), written, and recorded in run directories.

A file holds the same layer vocabulary as `mnistopt.archs`, one object per layer:

    {"schema": "mnistopt.arch/1", "name": "mine", "summary": "what it is for",
     "layers": [{"type": "normalize"},
                {"type": "conv", "out": 8, "k": 3, "pad": 1, "bias": false},
                {"type": "batchnorm"}, {"type": "relu"}, {"type": "maxpool", "k": 2},
                {"type": "dwconv", "k": 3, "pad": 1}, {"type": "conv", "out": 16, "k": 1},
                {"type": "relu"}, {"type": "gap"}, {"type": "dense", "out": 10}]}

Fields left out take the defaults of the layer's dataclass. Everything is checked before a
framework sees it: the size of the file, its JSON, every field's type and range, that each
layer fits the map it gets (a 5x5 conv on a 3x3 map, pooling to nothing) and that the whole
stays within sane limits; any problem is one `ConfigError` line naming the file and the layer.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import MISSING, asdict, fields
from pathlib import Path

from . import archs as A
from .errors import ConfigError

SCHEMA = "mnistopt.arch/1"
MAX_FILE_BYTES = 64 * 1024
MAX_LAYERS = 64
MAX_WIDTH = 1024  # channels of a conv, units of a dense layer
MAX_KERNEL = 15
MAX_STRIDE = 4
MAX_PARAMS = 20_000_000  # seed has 1.6 M
MAX_MACS = 2_000_000_000  # seed has 21 M
NAME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,39}$")  # it becomes part of file names

TYPES: dict[str, type] = {
    "normalize": A.Normalize, "conv": A.Conv, "dwconv": A.DepthwiseConv,
    "batchnorm": A.BatchNorm, "relu": A.ReLU, "maxpool": A.MaxPool, "avgpool": A.AvgPool,
    "gap": A.GlobalAvgPool, "flatten": A.Flatten, "dense": A.Dense, "dropout": A.Dropout,
}
TYPE_OF = {cls: key for key, cls in TYPES.items()}


def _int(lo: int, hi: int):
    return ("an integer", lambda v: isinstance(v, int) and not isinstance(v, bool) and lo <= v <= hi,
            f"{lo}..{hi}")


def _float(lo: float, hi: float, lo_open: bool = False, hi_open: bool = False):
    def ok(v):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            return False
        return (lo < v if lo_open else lo <= v) and (v < hi if hi_open else v <= hi)
    return ("a number", ok, f"{'(' if lo_open else '['}{lo}, {hi}{')' if hi_open else ']'}")


_BOOL = ("true or false", lambda v: isinstance(v, bool), "")
# Every field of every layer: (what it must be, check, range shown in the message).
FIELDS = {
    "out": _int(1, MAX_WIDTH), "k": _int(1, MAX_KERNEL), "pad": _int(0, MAX_KERNEL // 2),
    "stride": _int(1, MAX_STRIDE), "multiplier": _int(1, 8), "bias": _BOOL,
    "mean": _float(0, 1), "std": _float(0, 10, lo_open=True),
    "eps": _float(0, 0.1, lo_open=True), "momentum": _float(0, 1, hi_open=True),
    "rate": _float(0, 1, hi_open=True),
}


def _fail(source: str, where: str, problem: str) -> ConfigError:
    return ConfigError(f"{source}: {where}{': ' if where else ''}{problem}")


def layer_from_dict(d, i: int, source: str):
    where = f"layers[{i}]"
    if not isinstance(d, dict):
        raise _fail(source, where, f"a layer is an object like {{\"type\": \"conv\", ...}}, got {_show(d)}")
    kind = d.get("type")
    if kind not in TYPES:
        raise _fail(source, where, f"unknown layer type {_show(kind)}; known: {', '.join(TYPES)}")
    cls = TYPES[kind]
    names = [f.name for f in fields(cls)]
    where = f"layers[{i}] ({kind})"
    unknown = sorted(set(d) - set(names) - {"type"})
    if unknown:
        raise _fail(source, where, f"unknown field {_show(unknown[0])}; "
                    f"{kind} takes: {', '.join(names) or 'no fields'}")
    for name in (f.name for f in fields(cls) if f.default is MISSING):
        if name not in d:
            raise _fail(source, where, f"missing field '{name}'")
    for name in names:
        if name in d:
            what, ok, rng = FIELDS[name]
            if not ok(d[name]):
                raise _fail(source, where, f"'{name}' must be {what}{' in ' + rng if rng else ''}, "
                            f"got {_show(d[name])}")
    return cls(**{k: v for k, v in d.items() if k != "type"})


def _show(v) -> str:
    text = json.dumps(v) if isinstance(v, (str, int, float, bool, type(None))) else type(v).__name__
    return text if len(text) <= 40 else text[:37] + "..."


def from_dict(d, source: str, default_name: str | None = None, error=ConfigError) -> A.Arch:
    """The Arch a JSON object describes, fully checked; `error` is raised for any problem."""
    try:
        if not isinstance(d, dict):
            raise _fail(source, "", f"an architecture is a JSON object, got {_show(d)}")
        unknown = sorted(set(d) - {"schema", "name", "summary", "layers"})
        if unknown:
            raise _fail(source, "", f"unknown field {_show(unknown[0])}; "
                        "an architecture has: schema, name, summary, layers")
        if d.get("schema", SCHEMA) != SCHEMA:
            raise _fail(source, "", f"schema {_show(d.get('schema'))} is not {SCHEMA}")
        name = d.get("name", default_name)
        if not isinstance(name, str) or not NAME_RE.match(name):
            raise _fail(source, "name", f"must be a letter then up to 39 letters, digits or _, "
                        f"got {_show(name)}")
        summary = d.get("summary", "")
        if not isinstance(summary, str) or len(summary) > 200:
            raise _fail(source, "summary", "must be a string of at most 200 characters")
        layers = d.get("layers")
        if not isinstance(layers, list) or not layers:
            raise _fail(source, "layers", "must be a non-empty list of layer objects")
        if len(layers) > MAX_LAYERS:
            raise _fail(source, "layers", f"{len(layers)} layers, more than the limit of {MAX_LAYERS}")
        arch = A.Arch(name, tuple(layer_from_dict(x, i, source) for i, x in enumerate(layers)),
                      summary or f"user-defined ({source})")
        check(arch, source)
        known = A.ARCHS.get(name)
        if known is not None and known.layers != arch.layers:
            raise _fail(source, "name", f"'{name}' is a registered architecture with other "
                        "layers; give yours another name")
        return arch
    except ConfigError as exc:
        if error is ConfigError:
            raise
        raise error(str(exc)) from None


def check(arch: A.Arch, source: str) -> None:
    """ConfigError unless every layer fits its input and the whole is within the limits."""
    c, h, w, flat = 1, 28, 28, False
    shapes = arch.shapes()
    for i, layer in enumerate(arch.layers):
        where = f"layers[{i}] ({TYPE_OF[type(layer)]})"
        if isinstance(layer, A.Normalize) and i:
            raise _fail(source, where, "normalize can only be the first layer")
        if isinstance(layer, (*A.SPATIAL, A.BatchNorm, A.GlobalAvgPool, A.Flatten)) and flat:
            raise _fail(source, where, "needs a feature map, but the input is already flat "
                        "(after gap, flatten or dense)")
        if isinstance(layer, A.Dense) and not flat:
            raise _fail(source, where, f"needs a flat input; put flatten or gap before it "
                        f"(input is {c}x{h}x{w})")
        if isinstance(layer, (A.Conv, A.DepthwiseConv)):
            if layer.k > h + 2 * layer.pad or layer.k > w + 2 * layer.pad:
                raise _fail(source, where, f"a {layer.k}x{layer.k} kernel is bigger than its "
                            f"{h}x{w} input (padded by {layer.pad})")
            if layer.pad >= layer.k:
                raise _fail(source, where, f"pad {layer.pad} must be smaller than k {layer.k}")
        if isinstance(layer, (A.MaxPool, A.AvgPool)) and (h // layer.k < 1 or w // layer.k < 1):
            raise _fail(source, where, f"pooling a {h}x{w} map by {layer.k} leaves nothing")
        c, h, w = shapes[i]
        flat = flat or isinstance(layer, (A.GlobalAvgPool, A.Flatten, A.Dense))
        if c > 1 << 16 or c * h * w > 1 << 20:
            raise _fail(source, where, f"its output ({c}x{h}x{w}) is absurdly large")
    if not flat or c != 10:
        raise _fail(source, "layers", f"must end in 10 class scores (a dense layer with out 10 "
                    f"on a flat input); the last layer gives {c}x{h}x{w}")
    if arch.params > MAX_PARAMS:
        raise _fail(source, "layers", f"{arch.params:,} parameters, over the limit of {MAX_PARAMS:,}")
    if arch.macs > MAX_MACS:
        raise _fail(source, "layers", f"{arch.macs:,} multiply-adds, over the limit of {MAX_MACS:,}")


def to_dict(arch: A.Arch) -> dict:
    """The JSON form of `arch`, every field written out (so defaults can change safely)."""
    return {"schema": SCHEMA, "name": arch.name, "summary": arch.summary,
            "layers": [{"type": TYPE_OF[type(layer)], **asdict(layer)} for layer in arch.layers]}


def dumps(arch: A.Arch) -> str:
    """JSON with one line per layer, so a file reads like the network."""
    d = to_dict(arch)
    head = ",\n".join(f"  {json.dumps(k)}: {json.dumps(d[k])}" for k in ("schema", "name", "summary"))
    layers = ",\n".join(f"    {json.dumps(layer)}" for layer in d["layers"])
    return f"{{\n{head},\n  \"layers\": [\n{layers}\n  ]\n}}\n"


def write(arch: A.Arch, path: str | Path) -> Path:
    from .fsutil import write_text

    return write_text(path, dumps(arch))


def load_file(path: str | Path) -> A.Arch:
    """The Arch in a JSON file, read with a size bound and checked (`ConfigError` otherwise)."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_FILE_BYTES + 1)
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such architecture file") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read ({exc.strerror or exc})") from None
    if len(raw) > MAX_FILE_BYTES:
        raise ConfigError(f"{path}: over {MAX_FILE_BYTES // 1024} KB; not an architecture file")
    try:
        d = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not UTF-8 text; not an architecture file") from None
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno} "
                          f"column {exc.colno})") from None
    except RecursionError:
        raise ConfigError(f"{path}: JSON nested too deeply; not an architecture file") from None
    stem = re.sub(r"[^A-Za-z0-9_]", "_", path.stem)
    return from_dict(d, str(path), default_name=stem if NAME_RE.match(stem) else "custom")


def from_run_metrics(metrics: dict, source: str) -> A.Arch:
    """The arch a run directory was trained with: its recorded spec, checked again (a run
    directory is untrusted too), or for runs older than that, the registered arch it names."""
    from .errors import RunError

    spec = metrics.get("arch_spec")
    if spec is None:
        name = metrics.get("arch")
        if not isinstance(name, str) or name not in A.ARCHS:
            raise RunError(f"{source}: names architecture {_show(name)} without its spec, and no "
                           "such architecture is registered")
        return A.ARCHS[name]
    arch = from_dict(spec, f"{source} arch_spec", error=RunError)
    if arch.name != metrics.get("arch"):
        raise RunError(f"{source}: arch {_show(metrics.get('arch'))} but its spec is named "
                       f"'{arch.name}'")
    return arch
