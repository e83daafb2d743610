"""`SearchConfig`: everything a search is, checked once; the part that defines a study is stored
with it, so resuming with other settings is refused instead of mixing two searches."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..errors import ConfigError
from .budget import METRICS, Target, device_budgets, parse_budgets, parse_target, show


@dataclass
class SearchConfig:
    target: Target
    budgets: dict = field(default_factory=dict)  # metric -> limit (µs, bytes, count)
    max_params: int | None = None
    cost: str = ""  # the cost objective: a metric of the target [its first budget, else default]
    trials: int = 40  # finished trials (complete + pruned) the study should reach
    timeout: float | None = None  # seconds for this invocation; running trials finish
    framework: str = "tf"  # trains fastest here on small depthwise nets; exports to both formats
    format: str = "tflite"
    epochs: int = 5
    batch_size: int = 128
    augment: bool = True
    label_smoothing: float = 0.1  # helped every small net here (README: edge 99.51 %)
    train_images: int | None = 20000  # per trial, from the images left after validation
    val_images: int = 5000  # the last N training images: what trials are scored on
    seed: int = 0
    data: Path | None = None  # MNIST from this path (as `train --data`) instead of the cache
    workers: int = 1
    storage: str | None = None  # Optuna storage URL [sqlite file in the workspace]
    study: str | None = None
    out: Path | None = None  # trials, front, final model [workspace/search/STUDY]
    heartbeat: int = 60  # seconds between a running trial's heartbeats (stale after 2x)
    seeds: bool = True  # enqueue space.SEEDS before the sampler's own trials
    seed_archs: list = field(default_factory=list)  # arch .json files to try first
    progress: bool = True

    @classmethod
    def from_args(cls, target: str, budgets: list[str], **kw) -> "SearchConfig":
        t = parse_target(target)
        return cls(target=t, budgets={**device_budgets(t), **parse_budgets(budgets, t)}, **kw)

    def __post_init__(self):
        from ..export.registry import FORMATS
        from ..train import FRAMEWORKS

        if self.framework not in FRAMEWORKS:
            raise ConfigError(f"--framework must be one of {', '.join(FRAMEWORKS)}, got '{self.framework}'")
        if self.format not in FORMATS:
            raise ConfigError(f"--format must be one of {', '.join(FORMATS)}, got '{self.format}'")
        if self.target.kind == "mcu" and self.format != "tflite":
            raise ConfigError("--target mcu runs TFLite Micro: use --format tflite")
        if "params" in self.budgets:
            self.max_params = int(min(self.budgets.pop("params"), self.max_params or float("inf")))
        self.cost = self.cost or next(iter(self.budgets), self.target.metrics[0])
        if self.cost not in self.target.metrics:
            raise ConfigError(f"--cost {self.cost}: target {self.target} measures {', '.join(self.target.metrics)}")
        checks = [(self.trials >= 1, "--trials must be at least 1"),
                  (self.epochs >= 1, "--epochs must be at least 1"),
                  (self.workers >= 1, "--workers must be at least 1"),
                  (self.val_images >= 100, "--val-images must be at least 100"),
                  (self.train_images is None or self.train_images >= 64, "--train-images must be at least 64"),
                  (self.max_params is None or self.max_params > 0, "--max-params must be positive"),
                  (self.timeout is None or self.timeout > 0, "--timeout must be positive"),
                  (self.heartbeat >= 1, "heartbeat must be at least 1 s")]
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)
        self.study = self.study or default_study_name(self)
        if self.out is None:
            from ..workspace import workspace

            self.out = workspace() / "search" / self.study
        self.out = Path(self.out)
        self.storage = self.storage or f"sqlite:///{(self.out / 'study.db').resolve()}"

    def defining(self) -> dict:
        """The settings two processes of one study must share (stored with the study)."""
        keys = ("budgets", "max_params", "cost", "framework", "format", "epochs", "batch_size",
                "augment", "label_smoothing", "train_images", "val_images", "seed", "data")
        d = {k: v for k, v in asdict(self).items() if k in keys}
        d["data"] = str(Path(self.data).resolve()) if self.data else None
        return {"target": str(self.target), **d}

    def describe_budgets(self) -> str:
        parts = [f"{k} <= {show(k, v)}" for k, v in self.budgets.items()]
        if self.max_params:
            parts.append(f"params <= {self.max_params:,}")
        return ", ".join(parts) or "none"


def default_study_name(cfg: SearchConfig) -> str:
    tag = "-".join(f"{k}{int(v)}" for k, v in sorted(cfg.budgets.items()))
    return "-".join(filter(None, [str(cfg.target).replace(":", "-").replace("/", ""), tag,
                                  f"p{cfg.max_params}" if cfg.max_params else ""]))


def metric_label(metric: str) -> str:
    return {"latency": "latency (µs)", "arena": "arena (KB)", "flash": "flash (KB)",
            "size": "file (KB)"}.get(metric, metric) if metric in METRICS else metric
