"""The agreement matrix for people: a terminal table and a heatmap PNG."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def disagreement_matrix(result: dict) -> np.ndarray:
    """(N, N) top-1 disagreements, symmetric; NaN on the diagonal and for models that failed."""
    index = {m["id"]: k for k, m in enumerate(result["models"])}
    d = np.full((len(index), len(index)), np.nan)
    for p in result["pairs"]:
        i, j = index[p["a"]], index[p["b"]]
        d[i, j] = d[j, i] = p["disagreements"]
    return d


def _source(m: dict) -> str:
    return (m.get("source_sha256") or "")[:8] or "-"


def print_table(result: dict, console=None) -> None:
    from rich.console import Console
    from rich.table import Table

    if console is None:
        console = Console()
        if not console.is_terminal:  # a log file or pipe: don't squeeze the matrix into 80 columns
            console = Console(width=220)
    models, n = result["models"], result["n_images"]
    d = disagreement_matrix(result)
    expected = {frozenset((p["a"], p["b"])): p for p in result["pairs"] if p["expected_equal"]}
    t = Table(title=f"mnistopt parity: top-1 disagreements on {n:,} test images",
              caption="green / red: fp32 of one model (same source), must be equal: within "
                      "parity.FP32 / not. Every pair's numbers: --json.")
    for h in ("#", "model", "quant", "source", "acc %"):
        t.add_column(h, justify="right" if h in ("#", "acc %") else "left", no_wrap=h == "model")
    for k in range(len(models)):
        t.add_column(str(k + 1), justify="right")
    for i, m in enumerate(models):
        acc = "error" if "error" in m else ("-" if m["accuracy"] is None else f"{100 * m['accuracy']:.2f}")
        cells = []
        for j, o in enumerate(models):
            if i == j:
                cells.append("[dim]·[/dim]")
            elif np.isnan(d[i, j]):
                cells.append("[dim]-[/dim]")
            else:
                p = expected.get(frozenset((m["id"], o["id"])))
                style = None if p is None else ("green" if p["passed"] else "bold red")
                cells.append(f"[{style}]{int(d[i, j])}[/{style}]" if style else str(int(d[i, j])))
        t.add_row(str(i + 1), m["id"], m.get("quant") or "?", _source(m), acc, *cells)
    console.print(t)
    if expected:
        e = Table(title="fp32 of one model: must be numerically equal")
        for h in ("model", "reference", "max |logit diff|", "bound", "agreement", "result"):
            e.add_column(h, justify="right" if h in ("max |logit diff|", "bound", "agreement") else "left")
        for p in expected.values():
            cand = p["b"] if p["reference"] == p["a"] else p["a"]
            ok = "[green]equal[/green]" if p["passed"] else "[bold red]NOT EQUAL[/bold red]"
            e.add_row(cand, p["reference"], f"{p['max_abs_diff']:.3g}", f"{p['bound']:.3g}",
                      f"{100 * p['top1_agreement']:.2f} %", ok)
        console.print(e)
    for line in result["failures"]:
        console.print(f"[red]FAIL[/red]  {line}", highlight=False)


def heatmap(result: dict, path: Path) -> Path:
    """Disagreements as colour (log scale) and number; pairs that must be equal outlined."""
    from matplotlib.patches import Rectangle

    from ..plotting import pyplot, save

    plt = pyplot()
    models, n_img = result["models"], result["n_images"]
    n = len(models)
    d = disagreement_matrix(result)
    side = max(4.0, 2.2 + 0.32 * n)
    fig, ax = plt.subplots(figsize=(side + 2.2, side))
    im = ax.imshow(np.log10(1 + d), cmap="magma_r", vmin=0, vmax=np.log10(1 + n_img))
    if n <= 30:
        hi = np.nanmax(d) if np.isfinite(d).any() else 0
        for i in range(n):
            for j in range(n):
                if np.isfinite(d[i, j]):
                    light = np.log10(1 + d[i, j]) > 0.55 * np.log10(1 + n_img)
                    ax.text(j, i, f"{int(d[i, j])}", ha="center", va="center",
                            fontsize=6 if hi < 1000 else 5, color="white" if light else "black")
    index = {m["id"]: k for k, m in enumerate(models)}
    for p in result["pairs"]:
        if p["expected_equal"]:
            i, j = index[p["a"]], index[p["b"]]
            for r, c in ((i, j), (j, i)):
                ax.add_patch(Rectangle((c - 0.5, r - 0.5), 1, 1, fill=False, lw=1.6,
                                       edgecolor="tab:green" if p["passed"] else "red"))
    names = [f"{m['id']}{' (error)' if 'error' in m else ''}  {k + 1}" for k, m in enumerate(models)]
    ax.set_yticks(range(n), names, fontsize=6.5)
    ax.set_xticks(range(n), [str(k + 1) for k in range(n)], fontsize=6.5)
    ax.set_xlabel("model #")
    cb = fig.colorbar(im, ax=ax, shrink=0.8)
    ticks = [t for t in (0, 1, 10, 100, 1000, 10000) if t <= n_img]
    cb.set_ticks(np.log10(1 + np.array(ticks)), labels=[str(t) for t in ticks])
    cb.set_label(f"top-1 disagreements of {n_img:,} test images")
    bad = sum(1 for p in result["pairs"] if p["expected_equal"] and not p["passed"])
    ax.set_title("Which models answer alike" + (f"  ({bad} fp32 pair(s) NOT equal, red)" if bad
                 else "  (outlined: fp32 of one model, equal)"))
    return save(fig, path)
