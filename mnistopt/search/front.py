"""The search's result: the Pareto front (validation accuracy vs cost) as a table, a PNG with
the budget drawn, one arch JSON per front model, and a JSON of every trial."""

from __future__ import annotations

from pathlib import Path

from .budget import show
from .config import SearchConfig, metric_label
from .trial import trial_summary

NOTE = ("Trials are scored on validation images (the last {val:,} of the 60,000 training "
        "images), never on the test set; the test set is used once, by --finalize, for the "
        "chosen model's report.")


def feasible(t) -> bool:
    return all(v <= 0 for v in t.constraints.values())


def front(study) -> list:
    """Complete trials within every budget that no other such trial beats on both objectives,
    most accurate first."""
    ok = [t for t in study.get_trials(deepcopy=False) if t.state.name == "COMPLETE" and feasible(t)]
    best = [t for t in ok if not any(_dominates(o, t) for o in ok)]
    return sorted(best, key=lambda t: (-t.values[0], t.values[1], t.number))


def _dominates(a, b) -> bool:
    return (a.values[0] >= b.values[0] and a.values[1] <= b.values[1]
            and (a.values[0] > b.values[0] or a.values[1] < b.values[1]))


def table(rows: list, cfg: SearchConfig) -> str:
    """Markdown: one row per front model."""
    others = [m for m in cfg.target.metrics if m not in (cfg.cost, "params", "macs")]
    head = (["trial", "int8 val acc", "fp32 val acc", metric_label(cfg.cost)]
            + [metric_label(m) for m in others] + ["params", "MACs", "architecture"])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for t in rows:
        s, f = trial_summary(t), t.user_attrs.get("figures", {})
        cells = [str(t.number), f"{s['int8_val_accuracy']:.2%}", f"{s['fp32_val_accuracy']:.2%}",
                 show(cfg.cost, f.get(cfg.cost)), *[show(m, f.get(m)) for m in others],
                 f"{s['params']:,}", f"{s['macs']:,}", s["summary"] or ""]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(study, cfg: SearchConfig, path: Path) -> Path:
    """Accuracy vs cost: every complete trial, the front as a step line, the budget as a line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..fsutil import atomic_path

    scale = 1024 if cfg.cost in ("arena", "flash", "size") else 1
    done = [t for t in study.get_trials(deepcopy=False) if t.state.name == "COMPLETE"]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for ok, style in ((True, dict(c="tab:blue", marker="o", label="within budget")),
                      (False, dict(c="0.6", marker="x", label="over budget"))):
        pts = [(t.values[1] / scale, 100 * t.values[0]) for t in done if feasible(t) == ok]
        if pts:
            ax.scatter(*zip(*pts), s=22, **style)
    best = sorted(front(study), key=lambda t: t.values[1])
    if best:
        xs, ys = [t.values[1] / scale for t in best], [100 * t.values[0] for t in best]
        ax.step(xs, ys, where="post", c="tab:red", lw=1.5, label="Pareto front")
        for t, x, y in zip(best, xs, ys):
            ax.annotate(f"#{t.number}", (x, y), textcoords="offset points", xytext=(4, -10), fontsize=8)
    if cfg.cost in cfg.budgets:
        ax.axvline(cfg.budgets[cfg.cost] / scale, c="k", ls="--", lw=1,
                   label=f"budget {show(cfg.cost, cfg.budgets[cfg.cost])}")
    ax.set_xlabel(f"{metric_label(cfg.cost)} on {cfg.target}")
    ax.set_ylabel("int8 validation accuracy (%)")
    ax.set_title(f"mnistopt search {cfg.study}: {len(done)} complete trials", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=8)
    fig.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=110)
    plt.close(fig)
    return path


def write_report(study, cfg: SearchConfig) -> dict:
    """Table (front.md), plot (front.png), arch JSON per front model, search.json; the summary."""
    from .. import archspec
    from ..fsutil import write_json, write_text
    from .study import counts

    rows = front(study)
    trials = study.get_trials(deepcopy=False)
    static = sum(1 for t in trials if t.user_attrs.get("static"))
    states = {s: sum(1 for t in trials if t.state.name == s) for s in ("COMPLETE", "PRUNED", "FAIL", "RUNNING")}
    states["PRUNED"] -= static
    states["REJECTED"] = static  # before training: impossible shape, over --max-params
    archs = []
    for t in rows:
        a = archspec.from_dict(t.user_attrs["arch_spec"], f"trial {t.number}")
        archs.append(str(archspec.write(a, cfg.out / "front" / f"{a.name}.json")))
    md = (f"# mnistopt search `{cfg.study}`\n\ntarget {cfg.target}, budgets {cfg.describe_budgets()}, "
          f"cost {cfg.cost}; {counts(study)[0]} trials finished ({states['COMPLETE']} complete, "
          f"{states['PRUNED']} pruned while training, {states['FAIL']} failed), {static} more "
          "rejected before training (impossible shape, over a budget).\n\n"
          f"{NOTE.format(val=cfg.val_images)}\n\n"
          + (table(rows, cfg) if rows else "No trial within budget yet.") + "\n")
    write_text(cfg.out / "front.md", md)
    png = plot(study, cfg, cfg.out / "front.png") if trials else None
    summary = {"study": cfg.study, "storage": cfg.storage.split("@")[-1], "target": str(cfg.target),
               "budgets": cfg.budgets, "max_params": cfg.max_params, "cost": cfg.cost,
               "states": states, "front": [t.number for t in rows], "front_archs": archs,
               "note": NOTE.format(val=cfg.val_images),
               "trials": [trial_summary(t) for t in trials]}
    write_json(cfg.out / "search.json", summary, default=str)
    summary.update(markdown=md, png=str(png) if png else None)
    return summary
