"""`--finalize`: the chosen front model retrained on all 60,000 training images, exported int8,
validated and measured on the target; its test accuracy is the one use of the test set."""

from __future__ import annotations

import time
from pathlib import Path

from ..errors import ConfigError
from .budget import show
from .config import SearchConfig
from .front import front


def choose(study, pick: int | None):
    """The trial to finalize: `pick`, which must be on the front, or the front's most accurate."""
    rows = front(study)
    if not rows:
        raise ConfigError(f"study '{study.study_name}' has no complete trial within budget to finalize")
    if pick is None:
        return rows[0]
    for t in rows:
        if t.number == pick:
            return t
    raise ConfigError(f"--pick {pick} is not on the front; choose one of: {', '.join(str(t.number) for t in rows)}")


def finalize(study, cfg: SearchConfig, pick: int | None = None, epochs: int = 15,
             name: str | None = None) -> dict:
    """Retrain, export int8 + fp32, validate both on the test set, measure; the final report."""
    from .. import archspec
    from ..export import export
    from ..fsutil import write_json
    from ..train import TrainConfig, train
    from .measure import measure

    t = choose(study, pick)
    arch = archspec.from_dict(t.user_attrs["arch_spec"], f"trial {t.number}")
    if name:
        arch = archspec.from_dict({**archspec.to_dict(arch), "name": name}, "--name")
    out = cfg.out / "final" / arch.name
    out.mkdir(parents=True, exist_ok=True)
    spec = archspec.write(arch, out / "arch.json")
    lr = t.params.get("lr", t.user_attrs.get("lr", 5e-3))
    tc = dict(framework=cfg.framework, arch=str(spec), epochs=epochs, batch_size=cfg.batch_size,
              lr=lr, seed=cfg.seed, augment=cfg.augment, label_smoothing=cfg.label_smoothing,
              val_split=0)  # the full training set: selection is over
    from .study import load_data

    mnist = load_data(cfg)
    t0 = time.time()
    run = train(TrainConfig(**tc), out / "run", data=mnist, progress=cfg.progress)
    arts = export(run, cfg.format, ["none", "int8"], out=out, data=mnist, progress=cfg.progress,
                  full_int8=cfg.target.kind == "mcu")
    fp32, int8 = (a.report for a in arts)
    val = (mnist.x_test, mnist.y_test)  # measured on the test set: this is the report
    figures = measure(arts[1].path, cfg.target, val, out)
    figures.update(params=float(arch.params), macs=float(arch.macs))
    within = {k: figures.get(k) is not None and figures[k] <= v for k, v in cfg.budgets.items()}
    if cfg.max_params:
        within["params"] = arch.params <= cfg.max_params
    report = {
        "trial": t.number, "arch": arch.name, "arch_json": str(spec), "summary": arch.summary,
        "epochs": epochs, "train_images": int(len(mnist.x_train)), "lr": lr,
        "framework": cfg.framework, "format": cfg.format,
        "params": arch.params, "macs": arch.macs,
        "test_accuracy_fp32": fp32["reference_accuracy"], "test_accuracy_int8": int8["candidate_accuracy"],
        "int8_minus_fp32_pp": 100 * (int8["candidate_accuracy"] - fp32["reference_accuracy"]),
        "int8_agreement": int8["top1_agreement"],
        "val_accuracy_in_search": t.values[0], "figures": figures, "within_budget": within,
        "artifacts": [str(a.path) for a in arts], "run": str(run.path),
        "seconds": time.time() - t0,
        "note": ("selected on validation images during the search; these test-set figures are "
                 "the test set's only use"),
    }
    write_json(out / "final.json", report, default=str)
    return report


def describe(report: dict, cfg: SearchConfig) -> str:
    f = report["figures"]
    figs = ", ".join(f"{k} {show(k, f.get(k))}" for k in cfg.target.metrics if f.get(k) is not None)
    ok = ", ".join(f"{k} {'ok' if v else 'OVER'}" for k, v in report["within_budget"].items()) or "no budget"
    return (f"final {report['arch']} (trial {report['trial']}, {report['epochs']} epochs on "
            f"{report['train_images']:,} images): "
            f"test accuracy int8 {report['test_accuracy_int8']:.2%}, fp32 {report['test_accuracy_fp32']:.2%} "
            f"({report['int8_minus_fp32_pp']:+.2f} pp); {figs}; {ok} -> {Path(report['arch_json']).parent}")
