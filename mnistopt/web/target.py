"""`mnistopt bench --device browser`: the benchmark's web-page target (a `Target` plug-in).

Each ONNX artifact runs in headless Chromium with onnxruntime-web (WASM SIMD; threads where
the page is cross-origin isolated) on the test images, one fresh page per model (`bench.py`).
Latency is timed inside the page around `session.run` and is this machine's browser, hence
``latency_source`` "native". Every record gets ``browser`` (what ran it) and ``parity``: the
page's logits against onnxruntime's on this host for the same file (top-1 agreement, max
|diff|). TFLite files and native models are not run (onnxruntime-web reads ONNX only).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..targets.base import Item, Settings, Target, make_record, unsupported


@dataclass(frozen=True)
class BrowserOptions:
    chromium: Path | None = None  # the browser [$MNISTOPT_CHROMIUM, else chromium on PATH]
    cache: Path | None = None     # onnxruntime-web's files [$MNISTOPT_WEB_CACHE, ~/.cache/mnistopt/web]
    limit: int | None = None      # the first N test images only


class BrowserTarget(Target):
    name = "browser"
    summary = ("headless Chromium: onnxruntime-web (WASM SIMD) in a page, latency timed in the "
               "page, parity against onnxruntime")
    options_type = BrowserOptions

    def check(self) -> None:
        from ..errors import ConfigError

        if self.options.limit is not None and self.options.limit < 1:
            raise ConfigError("--target-option limit must be >= 1")

    def run(self, items: list[Item], settings: Settings) -> list[dict]:
        from ..targets.stats import summarize
        from .bench import measure
        from .browser import chromium_path

        if self.options.chromium is None:
            chromium_path()  # DeviceError saying where it looked, before any work
        records: list[dict | None] = [None] * len(items)
        runnable = []
        for i, it in enumerate(items):
            if it.kind == "artifact" and it.format == "onnx":
                runnable.append((i, it))
            else:
                records[i] = unsupported(it, "the browser runs ONNX files only "
                                         "(onnxruntime-web)", self.name)
        if runnable:
            got = measure([it.path for _, it in runnable], batch_sizes=settings.batch_sizes,
                          warmup=settings.warmup, iters=settings.iters,
                          budget_s=settings.budget_s, threads=settings.threads,
                          progress=settings.progress, limit=self.options.limit,
                          quants=[it.quant for _, it in runnable], cache=self.options.cache,
                          chromium=self.options.chromium)
            for (i, it), res in zip(runnable, got):
                samples = res.pop("samples_us", {})
                res["latency"] = {str(b): summarize([s * 1e3 for s in v], b)
                                  for b, v in sorted(samples.items())}
                rec = make_record(it, res, self.name, "native", "onnxruntime-web")
                for key in ("browser", "parity"):
                    if key in res:
                        rec[key] = res[key]
                records[i] = rec
        return records

    def failures(self, records: list[dict]) -> list[str]:
        """Models that did not run, and those whose page logits disagree with onnxruntime's."""
        out = super().failures(records)
        for r in records:
            par = r.get("parity") or {}
            if not r.get("error") and par.get("passed") is False:
                out.append(f"{r['id']}: browser parity outside its bounds: "
                           f"{'; '.join(par.get('failures') or [])}")
        return out
