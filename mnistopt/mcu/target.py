"""`--device mcu`: the benchmark's microcontroller target.

Each int8 .tflite runs in TFLite Micro on the 10,000 test images (accuracy is TFLite Micro's
own). There is no device to time, so records carry no latency (reference kernels on an x86
host say nothing about a Cortex-M); instead each has an ``mcu`` entry: arena, flash,
operators, LiteRT agreement and the fit per device class (`mnistopt.mcu.micro.McuReport`).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from ..errors import ConfigError, McuError, MnistoptError
from ..targets.base import UNSUPPORTED, Item, Settings, Target, make_record


@dataclass(frozen=True)
class McuOptions:
    device_classes: list[str] = field(default_factory=list)  # fit only these [default: all]
    limit: int | None = None  # first N test images only
    ram_allowance_kb: float | None = None  # RAM beyond the arena [default: devices.RAM_ALLOWANCE]
    flash_allowance_kb: float | None = None  # flash beyond the model [default: FLASH_ALLOWANCE]
    compare: bool = True  # also run LiteRT on the same file (agreement, output difference)


def device_keys(names: list[str]) -> list[str]:
    """Device class keys from keys or part numbers (case-insensitive): 'stm32l432kc' -> 'm4-64k'."""
    from .devices import DEVICES

    by_name = {k.lower(): k for k in DEVICES} | {d.part.lower(): k for k, d in DEVICES.items()}
    unknown = [n for n in names if n.lower() not in by_name]
    if unknown:
        raise ConfigError(f"unknown device class {', '.join(unknown)}; choose from: "
                          + ", ".join(f"{k} ({d.part})" for k, d in DEVICES.items()))
    return [by_name[n.lower()] for n in names]


class McuTarget(Target):
    name = "mcu"
    summary = "TFLite Micro on this host: accuracy, arena, flash, fit per microcontroller class"
    options_type = McuOptions
    spec_usage = "CLASS[,CLASS...]: fit against these device classes (`mnistopt mcu devices`)"

    @classmethod
    def parse_arg(cls, arg: str, options: McuOptions) -> McuOptions:
        return replace(options, device_classes=[c for c in arg.split(",") if c])

    def check(self) -> None:
        o = self.options
        device_keys(o.device_classes)
        if o.limit is not None and o.limit < 1:
            raise ConfigError(f"limit must be >= 1, not {o.limit}")
        for name in ("ram_allowance_kb", "flash_allowance_kb"):
            if getattr(o, name) is not None and not getattr(o, name) >= 0:
                raise ConfigError(f"{name} must be >= 0, not {getattr(o, name)}")

    def _evaluate_kwargs(self) -> dict:
        o = self.options
        kw: dict = {"limit": o.limit, "compare": o.compare,
                    "devices": device_keys(o.device_classes) or None}
        if o.ram_allowance_kb is not None:
            kw["ram_allowance"] = int(o.ram_allowance_kb * 1024)
        if o.flash_allowance_kb is not None:
            kw["flash_allowance"] = int(o.flash_allowance_kb * 1024)
        return kw

    def run(self, items: list[Item], settings: Settings) -> list[dict]:
        """Records with `mcu`; McuError when none of the models can run in TFLite Micro."""
        from .micro import evaluate, inspect

        records, refused = [], []
        for item in items:
            res: dict = {}
            rep = None
            try:
                if item.format != "tflite":
                    raise McuError(f"{item.path} is not a TFLite model: TFLite Micro runs int8 "
                                   ".tflite files only")
                inspect(item.path)  # cheap: refuses float models before anything runs
            except McuError as exc:
                refused.append(str(exc))
                res = {"error": str(exc), "error_type": UNSUPPORTED}
            except MnistoptError as exc:  # a corrupt file: this model failed, not the run
                res = {"error": str(exc), "error_type": type(exc).__name__}
            if not res:
                try:
                    rep = evaluate(item.path, progress=settings.progress, **self._evaluate_kwargs())
                    res = {"accuracy": rep.accuracy, "n_images": rep.n_images,
                           "eval_seconds": rep.host_ms_per_image * rep.n_images / 1000}
                except MnistoptError as exc:
                    rep, res = None, {"error": str(exc), "error_type": type(exc).__name__}
            rec = make_record(item, res, self.name, "emulated", "TFLite Micro")
            if rep is not None:
                rec["mcu"] = {k: v for k, v in rep.as_dict().items() if k != "path"}
            records.append(rec)
        if items and len(refused) == len(items):
            raise McuError(refused[0] if len(refused) == 1 else
                           f"none of the {len(items)} models can run on --device mcu: {refused[0]} "
                           "(and the others likewise)")
        return records
