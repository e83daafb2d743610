"""Where an exported model's sidecar metadata lives, how every part reads it, and the one schema
it is checked against (stdlib only).

`mnistopt export` writes ``NAME.onnx`` + ``NAME.onnx.json`` (the full file name, because
``NAME.onnx`` and ``NAME.tflite`` of one run sit side by side). ``NAME.json`` is still read when
its ``format`` matches, for files renamed or written by hand.

A sidecar (and the copy embedded in a model) is untrusted input: it may have been edited,
truncated or written by someone else. `check_metadata` validates the whole object — types,
ranges, the known words — and a sidecar with any problem is ignored with a warning that says
what is wrong, so a bad one can cost the labels, never give a wrong answer. Keys the schema
does not know are kept (newer exporters may add some); nothing reads them.
"""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

SCHEMA_PREFIX = "mnistopt.artifact/"
FORMATS = ("onnx", "tflite")
OUTPUT_KINDS = ("logits", "probabilities")
LAYOUTS = ("NCHW", "NHWC", "NHW", "flat")
INT_RANGES = {"int8": (-128, 127), "uint8": (0, 255), "int16": (-32768, 32767),
              "uint16": (0, 65535), "int32": (-2**31, 2**31 - 1)}
DTYPES = (*INT_RANGES, "float32", "float16", "float64")
N_LABELS = 10
# The validation report makes a sidecar a few KB; anything near this is not one of ours.
MAX_SIDECAR_BYTES = 1 << 20


def sidecar_path(model: Path) -> Path:
    return Path(model).with_name(Path(model).name + ".json")


def read_sidecar(model: Path, fmt: str | None = None) -> dict:
    """The sidecar's metadata, or {} when there is none that describes this very file, or the
    one there is fails the schema (a warning says why)."""
    model = Path(model)
    fmt = fmt or model.suffix.lower().lstrip(".")
    for side in (sidecar_path(model), model.with_suffix(".json")):
        if not side.is_file():
            continue
        try:
            if side.stat().st_size > MAX_SIDECAR_BYTES:
                raise ValueError(f"{side.stat().st_size:,} bytes, too large for a sidecar")
            data = json.loads(side.read_text(encoding="utf-8"))
        except (OSError, ValueError, RecursionError) as exc:
            warnings.warn(f"{side}: unreadable sidecar ignored ({exc})", stacklevel=2)
            continue
        if not isinstance(data, dict) or data.get("format", fmt) != fmt:
            continue
        problems = check_metadata(data)
        if problems:
            warnings.warn(f"{side}: sidecar ignored: {problems[0]}"
                          + (f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""),
                          stacklevel=2)
            continue
        size = (data.get("file") or {}).get("bytes")
        if size is not None and model.is_file() and size != model.stat().st_size:
            # A sidecar left over from another export of the same name: its numbers would lie.
            warnings.warn(f"{side} describes a {size}-byte file, not this one; ignored", stacklevel=2)
            continue
        return {**data, "sidecar": str(side)}
    return {}


# --------------------------------------------------------------------------------------------
# The schema: key -> checker; a checker returns None when the value is fine, else what is wrong.


def _text(limit=256):
    def check(v):
        if not isinstance(v, str) or len(v) > limit or not v.isprintable():
            return f"expected printable text of at most {limit} characters, got {_show(v)}"
    return check


def _one_of(*words):
    def check(v):
        if v not in words:
            return f"expected one of {', '.join(words)}, got {_show(v)}"
    return check


def _number(lo=-math.inf, hi=math.inf, *, positive=False, integer=False, null=False):
    what = "a whole number" if integer else "a finite number"
    if positive:
        what += " > 0"
    elif math.isfinite(lo) and math.isfinite(hi):
        what += f" in [{lo:g}, {hi:g}]"
    elif math.isfinite(lo):
        what += f" >= {lo:g}"

    def check(v):
        if v is None and null:
            return None
        good = not isinstance(v, bool) and isinstance(v, int if integer else (int, float))
        if good and isinstance(v, float) and not math.isfinite(v):
            good = False
        if not good or not lo <= v <= hi or (positive and v <= 0):
            return f"expected {what}, got {_show(v)}"
    return check


def _labels(v):
    if not (isinstance(v, list) and len(v) == N_LABELS
            and all(isinstance(s, str) and 0 < len(s) <= 32 and s.isprintable() for s in v)):
        return f"expected {N_LABELS} printable strings of 1-32 characters, got {_show(v)}"


def _shape(v):
    if not (isinstance(v, list) and len(v) <= 8
            and all(isinstance(d, int) and not isinstance(d, bool) and -1 <= d <= 2**31 for d in v)):
        return f"expected a list of dimensions (-1 = free), got {_show(v)}"


def _range(v):
    if not (isinstance(v, list) and len(v) == 2 and not _number()(v[0]) and not _number()(v[1])
            and v[0] < v[1]):
        return f"expected [low, high] with low < high, got {_show(v)}"


def _lines(v):
    if not (isinstance(v, list) and len(v) <= 16
            and all(isinstance(s, str) and len(s) <= 1024 and s.isprintable() for s in v)):
        return f"expected a list of at most 16 printable lines, got {_show(v)}"


def _hex64(v):
    if v is None:  # a run trained before digests were recorded
        return None
    if not (isinstance(v, str) and len(v) == 64 and all(c in "0123456789abcdef" for c in v)):
        return f"expected a sha256 hex digest, got {_show(v)}"


def _object(fields: dict, null: bool = False):
    """A dict whose keys in `fields` pass their checkers (other keys are not looked at); None
    too where `null` (an export made with --no-validate records validation: null)."""
    def check(v, where=""):
        if v is None and null:
            return []
        if not isinstance(v, dict):
            return [f"{where}: expected an object, got {_show(v)}"]
        problems = []
        for key, value in v.items():
            if not isinstance(key, str):
                problems.append(f"{where}: a key that is not text")
            elif key in fields:
                sub = fields[key]
                got = sub(value, f"{where}.{key}") if getattr(sub, "is_object", False) else sub(value)
                if isinstance(got, list):
                    problems += got
                elif got:
                    problems.append(f"{where}.{key}: {got}")
        return problems
    check.is_object = True
    return check


def _tensor(kind_field: bool):
    fields = {"name": _text(), "shape": _shape, "layout": _one_of(*LAYOUTS), "dtype": _one_of(*DTYPES),
              "range": _range, "scale": _number(positive=True, null=True),
              "zero_point": _number(-2**31, 2**31 - 1, integer=True, null=True)}
    if kind_field:
        fields["kind"] = _one_of(*OUTPUT_KINDS)
    return _object(fields)


_TOP = _object({
    "schema": _text(64),
    "format": _one_of(*FORMATS),
    "framework": _text(64),
    "arch": _text(64),
    "base_arch": _text(64),  # a pruned run's: the arch it was cut from
    "params": _number(1, 2**40, integer=True),
    "macs": _number(1, 2**53, integer=True),
    "labels": _labels,
    "input": _tensor(kind_field=False),
    "output": _tensor(kind_field=True),
    "quantize": _object({"mode": _text(32), "tag": _text(32), "reason": _text(1024),
                         "settings": _object({})}),
    "source": _object({"run": _text(4096), "native": _text(4096), "sha256": _hex64,
                       "test_accuracy": _number(0, 1, null=True)}),
    "tools": _object({}),
    "graph": _lines,  # exact rewrites the export made on the way, one line each
    "file": _object({"name": _text(4096), "bytes": _number(0, 2**53, integer=True),
                     "sha256": _hex64}),
    "validation": _object({}, null=True),
    "export_seconds": _number(0),
    "created": _text(64),
})


def check_metadata(meta) -> list[str]:
    """What is wrong with `meta` (a parsed sidecar or embedded copy) against the schema; [] if
    nothing. Never raises, whatever `meta` is."""
    problems = _TOP(meta, "metadata")
    if problems:
        return problems
    if not str(meta.get("schema", SCHEMA_PREFIX)).startswith(SCHEMA_PREFIX):
        problems.append(f"metadata.schema: not a {SCHEMA_PREFIX}N document")
    for side in ("input", "output"):  # zero-point inside the declared integer type
        t = meta.get(side) or {}
        lo, hi = INT_RANGES.get(t.get("dtype"), (-2**31, 2**31 - 1))
        if t.get("zero_point") is not None and not lo <= t["zero_point"] <= hi:
            problems.append(f"metadata.{side}.zero_point: {t['zero_point']} is outside "
                            f"{t.get('dtype')} [{lo}, {hi}]")
    return problems


def _show(v) -> str:
    """A short, printable rendering of a value from an untrusted file."""
    try:
        text = json.dumps(v, ensure_ascii=True)
    except (TypeError, ValueError, RecursionError):
        text = type(v).__name__
    return text if len(text) <= 40 else text[:37] + "..."
