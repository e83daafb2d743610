"""`mnistopt export`.

`--quantize` takes an optional value: bare, it means static int8 (`mnistopt export --quantize`);
with a mode it selects none | dynamic | int8 | fp16 | all, and repeats for several. Click's own
optional-value options are not available through typer, so `ExportCommand` supplies the value
before parsing. Values are checked once, by `export()`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, List, Optional

import typer
from typer.core import TyperCommand

from .registry import FORMATS, MODES

QUANTIZE_OPTS = ("--quantize", "-q")
BARE_QUANTIZE = "int8"
CHOICES = (*MODES, "all")


def bare_quantize(args: list[str]) -> list[str]:
    """`args` with BARE_QUANTIZE after each `--quantize` / `-q` that has no mode of its own:
    at the end, before another option, or before a path (`export -q runs/x`: RUN, not a mode)."""
    out: list[str] = []
    for i, arg in enumerate(args):
        if arg == "--":
            return out + args[i:]
        out.append(arg)
        if arg in QUANTIZE_OPTS:
            nxt = args[i + 1] if i + 1 < len(args) else None
            if nxt is None or nxt.startswith("-") or (nxt not in CHOICES and ("/" in nxt or Path(nxt).exists())):
                out.append(BARE_QUANTIZE)
    return out


class ExportCommand(TyperCommand):
    """The export command, with `--quantize`'s value optional."""

    def parse_args(self, ctx, args):
        return super().parse_args(ctx, bare_quantize(list(args)))


def summary(a) -> dict:
    """The report line of one artifact (what --json prints per file)."""
    m, v = a.metadata, a.report
    return {
        "path": str(a.path), "sidecar": str(a.sidecar), "format": m["format"],
        "framework": m["framework"], "arch": m["arch"], "quantize": m["quantize"]["mode"],
        "size_bytes": m["file"]["bytes"], "size_ratio_to_fp32": v.get("size_ratio_to_fp32"),
        "native_accuracy": v.get("reference_accuracy"), "exported_accuracy": v.get("candidate_accuracy"),
        "accuracy_drop": v.get("accuracy_drop"), "top1_agreement": v.get("top1_agreement"),
        "max_abs_diff": v.get("max_abs_diff"), "max_abs_logit": v.get("max_abs_logit"),
        "validated": bool(v), "export_seconds": m.get("export_seconds"),
        "quantize_settings": m["quantize"]["settings"], "quantize_reason": m["quantize"]["reason"],
    }


def export_command(
    run: Annotated[Optional[Path], typer.Argument(
        help="Run directory (from 'mnistopt train') [default: the newest run in the workspace]",
        show_default=False)] = None,
    format: Annotated[str, typer.Option("--format", "-f", help=f"{' | '.join(FORMATS)} | all")] = "onnx",
    quantize: Annotated[Optional[List[str]], typer.Option(
        *QUANTIZE_OPTS, metavar="[MODE]",
        help=f"{' | '.join(CHOICES)}; bare --quantize: {BARE_QUANTIZE} (static, calibrated); "
             "repeat for several [default: none, i.e. fp32]")] = None,
    calib_samples: Annotated[int, typer.Option(help="Training images to calibrate int8 on")] = 512,
    opset: Annotated[int, typer.Option(help="ONNX opset (>= 17)")] = 18,
    batch: Annotated[int, typer.Option(
        help="Images per call for files with a fixed batch (PyTorch -> TFLite): e.g. 256 for "
             "throughput; the name gets -bN")] = 1,
    out: Annotated[Optional[Path], typer.Option(
        help="Output file (one artifact) or directory [default: RUN/export/ARCH-FRAMEWORK-QUANT.EXT]")] = None,
    validate: Annotated[bool, typer.Option(
        "--validate/--no-validate", help="Check against the native model on the 10,000 test images")] = True,
    atol: Annotated[Optional[float], typer.Option(
        help="Max |logit diff| allowed, overriding each path's own tolerance")] = None,
    quiet: Annotated[bool, typer.Option(help="No progress bars")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the reports as JSON")] = False,
    full_int8: Annotated[bool, typer.Option(
        "--full-int8", help="int8: every op in integer arithmetic (microcontrollers, NPUs) [default: "
                            "ops that this CPU runs faster in float, e.g. convolutions on x86 "
                            "without VNNI, stay float]")] = False,
    c_array: Annotated[Optional[Path], typer.Option(
        "--c-array", help="Also write each int8 .tflite as a C source/header pair (firmware) into "
                          "this folder; implies --full-int8")] = None,
    trust_savedmodel: Annotated[bool, typer.Option(
        "--trust-savedmodel", help="Load a tf run that has no weights.npz from its SavedModel, "
                                   "which runs the graph stored in it: only for runs you trust")] = False,
) -> None:
    """Export a run to ONNX / TFLite (fp32, dynamic, int8, fp16), each file validated before it is written."""
    from ..fsutil import check_output
    from . import export

    modes = [q.lower() for q in quantize] if quantize else ["none"]
    fmt = format.lower()
    if c_array is not None:
        _check_c_array(fmt, modes)
        check_output(c_array, "--c-array", directory=True)
    if trust_savedmodel:
        from ..train.weights import trust_savedmodel as trust

        trust()
    if run is None:
        from ..train import latest_run

        run = latest_run()
        typer.echo(f"exporting {run.path} (the newest run in the workspace)", err=True)
    arts = export(run, fmt, modes, calib_samples=calib_samples, opset=opset, out=out,
                  validate=validate, atol=atol, progress=not quiet and not as_json, batch=batch,
                  full_int8=full_int8 or c_array is not None)  # firmware runs integer ops only
    rows = [summary(a) for a in arts]
    if c_array is not None:
        _write_c_arrays(rows, c_array)
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    for r in rows:
        typer.echo(_line(r))
        if r.get("c_array"):
            typer.echo(f"  C array: {'  '.join(r['c_array'])}")


def _line(r: dict) -> str:
    line = f"{r['path']}  {r['size_bytes'] / 1024:,.0f} KiB"
    if r["size_ratio_to_fp32"] is not None and r["quantize"] != "none":
        line += f" ({r['size_ratio_to_fp32']:.2f}x fp32)"
    if r["validated"]:
        line += (f"  accuracy {r['native_accuracy']:.2%} -> {r['exported_accuracy']:.2%}"
                 f"  agreement {r['top1_agreement']:.2%}  max |diff| {r['max_abs_diff']:.2g}")
    else:
        line += "  (not validated)"
    return line


# --c-array: a post-step on the exported int8 TFLite files (firmware embeds the model as bytes).

def _check_c_array(fmt: str, modes: list[str]) -> None:
    """Before any work: --c-array needs an int8 TFLite file among the outputs."""
    if fmt not in ("tflite", "all") or not {"int8", "all"} & set(modes):
        from ..errors import ConfigError

        raise ConfigError("--c-array writes int8 TFLite models: add --format tflite --quantize int8")


def _write_c_arrays(rows: list[dict], folder: Path) -> None:
    from ..mcu.carray import write_c_array

    for r in rows:
        if r["format"] == "tflite" and r["quantize"] == "int8":
            r["c_array"] = [str(p) for p in write_c_array(r["path"], folder)]
