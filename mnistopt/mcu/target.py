"""`mnistopt bench --device mcu`: the benchmark's microcontroller target.

Each int8 .tflite runs in TFLite Micro on the 10,000 test images (accuracy is TFLite Micro's
own). There is no device to time, so records carry no latency (reference kernels on an x86
host say nothing about a Cortex-M); instead each has an ``mcu`` entry: arena, flash,
operators, LiteRT agreement and the fit per device class (`mnistopt.mcu.micro.McuReport`).
"""

from __future__ import annotations

from ..errors import McuError, MnistoptError


def run(items, options) -> list[dict]:
    """Records for `bench` (see mnistopt.bench.targets); McuError when nothing can run here."""
    from ..bench.core import make_record
    from .micro import evaluate, inspect

    records, refused = [], []
    for item in items:
        res: dict = {}
        try:
            if item.format != "tflite":
                raise McuError(f"{item.path} is not a TFLite model: TFLite Micro runs int8 "
                               ".tflite files only")
            inspect(item.path)  # cheap: refuses float models before anything runs
        except McuError as exc:
            refused.append(str(exc))
            res = {"error": str(exc), "error_type": type(exc).__name__}
        if not res:
            try:
                rep = evaluate(item.path, progress=options.progress)
                res = {"accuracy": rep.accuracy, "n_images": rep.n_images,
                       "eval_seconds": rep.host_ms_per_image * rep.n_images / 1000}
            except MnistoptError as exc:
                rep, res = None, {"error": str(exc), "error_type": type(exc).__name__}
        rec = make_record(item, res, options, latency_source="emulated")
        rec["backend_label"] = "TFLite Micro"
        if not rec.get("error"):
            rec["mcu"] = {k: v for k, v in rep.as_dict().items() if k != "path"}
        records.append(rec)
    if items and len(refused) == len(items):
        raise McuError(refused[0] if len(refused) == 1 else
                       f"none of the {len(items)} models can run on --device mcu: {refused[0]} "
                       "(and the others likewise)")
    return records
