"""`mnistopt export`."""

from __future__ import annotations

import json
from enum import Enum
from pathlib import Path
from typing import Annotated, List, Optional

import typer


class Format(str, Enum):
    onnx = "onnx"
    tflite = "tflite"
    all = "all"


class Quantize(str, Enum):
    none = "none"
    dynamic = "dynamic"
    int8 = "int8"
    fp16 = "fp16"
    all = "all"


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
    run: Annotated[Path, typer.Argument(help="Run directory (from 'mnistopt train')")],
    format: Annotated[Format, typer.Option("--format", "-f", case_sensitive=False)] = Format.onnx,
    quantize: Annotated[Optional[List[Quantize]], typer.Option(
        "--quantize", "-q", case_sensitive=False,
        help="none (fp32) | dynamic | int8 | fp16 | all; repeat for several")] = None,
    calib_samples: Annotated[int, typer.Option(help="Training images to calibrate int8 on")] = 512,
    opset: Annotated[int, typer.Option(help="ONNX opset (>= 17)")] = 18,
    out: Annotated[Optional[Path], typer.Option(
        help="Output file (one artifact) or directory [default: RUN/export/ARCH-FRAMEWORK-QUANT.EXT]")] = None,
    validate: Annotated[bool, typer.Option(
        "--validate/--no-validate", help="Check against the native model on the 10,000 test images")] = True,
    atol: Annotated[Optional[float], typer.Option(
        help="Max |logit diff| allowed, overriding each path's own tolerance")] = None,
    quiet: Annotated[bool, typer.Option(help="No progress bars")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the reports as JSON")] = False,
    c_array: Annotated[Optional[Path], typer.Option(
        "--c-array", help="Also write each int8 .tflite as a C source/header pair (firmware) into this folder")] = None,
) -> None:
    """Export a run to ONNX / TFLite (fp32, dynamic, int8, fp16), each file validated before it is written."""
    from . import export

    modes = [q.value for q in quantize] if quantize else ["none"]
    # --- mnistopt.mcu: C arrays (owned by the mcu part) ---
    if c_array is not None and (format.value not in ("tflite", "all")
                                or not {"int8", "all"} & set(modes)):
        from ..errors import ConfigError

        raise ConfigError("--c-array writes int8 TFLite models: add --format tflite --quantize int8")
    # --- end mcu ---
    arts = export(run, format.value, modes, calib_samples=calib_samples, opset=opset, out=out,
                  validate=validate, atol=atol, progress=not quiet and not as_json)
    rows = [summary(a) for a in arts]
    # --- mnistopt.mcu: C arrays (owned by the mcu part) ---
    if c_array is not None:
        from ..mcu.carray import write_c_array

        for r in rows:
            if r["format"] == "tflite" and r["quantize"] == "int8":
                r["c_array"] = [str(p) for p in write_c_array(r["path"], c_array)]
    # --- end mcu ---
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    for r in rows:
        line = f"{r['path']}  {r['size_bytes'] / 1024:,.0f} KiB"
        if r["size_ratio_to_fp32"] is not None and r["quantize"] != "none":
            line += f" ({r['size_ratio_to_fp32']:.2f}x fp32)"
        if r["validated"]:
            line += (f"  accuracy {r['native_accuracy']:.2%} -> {r['exported_accuracy']:.2%}"
                     f"  agreement {r['top1_agreement']:.2%}  max |diff| {r['max_abs_diff']:.2g}")
        else:
            line += "  (not validated)"
        typer.echo(line)
        if r.get("c_array"):  # mnistopt.mcu
            typer.echo(f"  C array: {'  '.join(r['c_array'])}")
