"""The Pareto front of a benchmark (accuracy up, latency down) and its PNG.

One implementation for `mnistopt bench --plot`, `make demo` and `mnistopt report --figure
pareto`. The plot stays readable with dozens of models: each point carries a number placed
where it overlaps no other number or marker, and a table beside the axes names the numbers;
the front is a solid staircase, and the legend sits outside the data.
"""

from __future__ import annotations

import math
from pathlib import Path

COLORS = {"onnxruntime": "tab:blue", "litert": "tab:orange", "torch": "tab:red",
          "keras": "tab:green", "tf": "tab:purple"}
MARKERS = {"fp32": "o", "fp16": "s", "dynamic": "D", "int8": "^"}


def front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of the (latency, accuracy) points that no other point beats: none is at least as
    fast and at least as accurate, and strictly better in one of the two."""
    return [i for i, (lat, acc) in enumerate(points)
            if not any(l2 <= lat and a2 >= acc and (l2 < lat or a2 > acc) for l2, a2 in points)]


def pareto_front(records: list[dict], batch: int = 1) -> list[str]:
    """Ids of the records on the accuracy / p50-at-`batch` front (failed ones left out)."""
    from .report import ok_records, p50

    rs = [r for r in ok_records(records) if p50(r, batch)]
    return [rs[i]["id"] for i in front([(p50(r, batch), r["accuracy"]) for r in rs])]


def _fmt_latency(us: float, _pos=None) -> str:
    return f"{us / 1000:g} ms" if us >= 1000 else f"{us:g} µs"


def _short(name: str, n: int = 34) -> str:
    return name if len(name) <= n else name[:n // 2 - 1] + "…" + name[-(n - n // 2):]


# Directions tried for a number, nearest first: right, up, left, down, then the diagonals.
_ANGLES = [0, 90, 180, 270, 45, 135, 225, 315]
_RADII_PX = [9, 14, 20, 28, 38, 50, 65]


def place_labels(points_px: list[tuple[float, float]], sizes_px: list[tuple[float, float]],
                 area: tuple[float, float, float, float], marker_r: float,
                 obstacles: list[tuple[float, float, float, float]] = ()) -> list[tuple[float, float]]:
    """Offsets (dx, dy) in pixels for one label per point, greedy: the nearest spot around the
    point whose box overlaps no label placed so far, no marker, no obstacle box (x0, y0, x1, y1)
    and stays inside `area`. Where none is free the farthest spot tried is used (a leader line
    shows which point it names)."""
    placed: list[tuple[float, float, float, float]] = list(obstacles)
    out = []
    x0, y0, x1, y1 = area
    for (x, y), (w, h) in zip(points_px, sizes_px):
        choice = None
        for r in _RADII_PX:
            for a in _ANGLES:
                dx, dy = r * math.cos(math.radians(a)), r * math.sin(math.radians(a))
                # Shift horizontal neighbours by half the box so the text starts beside the marker.
                cx, cy = x + dx + math.copysign(w / 2, dx) * (abs(dx) > 1), y + dy
                box = (cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2)
                if box[0] < x0 or box[2] > x1 or box[1] < y0 or box[3] > y1:
                    continue
                if any(box[0] < b[2] and b[0] < box[2] and box[1] < b[3] and b[1] < box[3]
                       for b in placed):
                    continue
                if any(_disc_hits(px, py, marker_r, box) for px, py in points_px):
                    continue
                choice = (cx - x, cy - y, box)
                break
            if choice:
                break
        if choice is None:
            cx, cy = x + _RADII_PX[-1], y + _RADII_PX[-1]
            choice = (cx - x, cy - y, (cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2))
        placed.append(choice[2])
        out.append(choice[:2])
    return out


def _disc_hits(px: float, py: float, r: float, box) -> bool:
    nx, ny = min(max(px, box[0]), box[2]), min(max(py, box[1]), box[3])
    return (nx - px) ** 2 + (ny - py) ** 2 < r * r


def plot(report: dict, path: Path, batch: int = 1, title: str | None = None) -> Path:
    """Accuracy against p50 latency at `batch` (log x) of every model that ran: colour by
    runtime, marker by quantization, front outlined and joined, numbers named in a table."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    from ..plotting import pyplot, save
    from .report import _fmt_bytes, _fmt_us, ok_records, p50

    plt = pyplot()
    rs = sorted((r for r in ok_records(report["results"]) if p50(r, batch)),
                key=lambda r: (p50(r, batch), -r["accuracy"], r["id"]))
    lat = [p50(r, batch) for r in rs]
    acc = [100 * r["accuracy"] for r in rs]
    on_front = set(front(list(zip(lat, acc))))
    n = len(rs)
    row_in = 0.118  # one table row at 6.5 pt, in inches
    fig = plt.figure(figsize=(10, max(4.4, 1.3 + (n + 2) * row_in)))
    ax = fig.add_axes((0.07, 0.2, 0.52, 0.72))
    tab = fig.add_axes((0.62, 0.04, 0.37, 0.88))
    tab.set_axis_off()
    ax.set_title(title or f"Accuracy vs latency at batch {batch}")
    if not rs:
        ax.text(0.5, 0.5, "no model ran successfully", ha="center", va="center",
                transform=ax.transAxes)
        return save(fig, path)

    for i, r in enumerate(rs):
        ax.scatter(lat[i], acc[i], s=46 if i in on_front else 32, zorder=3,
                   color=COLORS.get(r.get("backend"), "tab:gray"),
                   marker=MARKERS.get(r.get("quant") or "", "o"),
                   edgecolors="black" if i in on_front else "none", linewidths=0.9)
    f = sorted(on_front, key=lambda i: lat[i])
    ax.step([lat[i] for i in f], [acc[i] for i in f], where="post", color="black", lw=1.4,
            alpha=0.75, zorder=2)
    ax.set_xscale("log")
    if max(lat) / min(lat) < 20:  # under ~1.5 decades: label 1-2-5 steps, not only powers of 10
        ax.xaxis.set_major_locator(LogLocator(subs=(1, 2, 5)))
    ax.xaxis.set_major_formatter(FuncFormatter(_fmt_latency))
    ax.xaxis.set_minor_formatter(NullFormatter())
    lo, hi = min(acc), max(acc)
    pad = max(0.05, (hi - lo) * 0.12)
    ax.set_ylim(lo - pad, hi + pad)
    ax.set_xlim(min(lat) / 1.5, max(lat) * 1.5)
    ax.set_xlabel(f"latency p50 at batch {batch} (log scale; lower is better)")
    ax.set_ylabel("test accuracy (%)")
    ax.grid(alpha=0.3, which="both")

    # Numbers beside the markers, placed in pixel space once the axes' scale is fixed.
    fig.canvas.draw()
    pts = [tuple(ax.transData.transform((lat[i], acc[i]))) for i in range(n)]
    labels = [str(i + 1) for i in range(n)]
    fontsize = 7
    char_px, line_px = 0.62 * fontsize * fig.dpi / 72, 1.2 * fontsize * fig.dpi / 72
    bb = ax.get_window_extent()
    # The front's staircase is an obstacle too: a number on the line reads as part of it.
    stairs = [pts[i] for i in f]
    steps = [((x0, y0), (x1, y0)) for (x0, y0), (x1, _) in zip(stairs, stairs[1:])]
    steps += [((x1, y0), (x1, y1)) for (_, y0), (x1, y1) in zip(stairs, stairs[1:])]
    lines = [(min(a[0], b[0]) - 1.5, min(a[1], b[1]) - 1.5, max(a[0], b[0]) + 1.5,
              max(a[1], b[1]) + 1.5) for a, b in steps]
    offsets = place_labels(pts, [(char_px * len(t) + 2, line_px) for t in labels],
                           (bb.x0 + 2, bb.y0 + 2, bb.x1 - 2, bb.y1 - 2), marker_r=5.5,
                           obstacles=lines)
    to_pt = 72 / fig.dpi
    for i, (dx, dy) in enumerate(offsets):
        far = math.hypot(dx, dy) > 16
        ax.annotate(labels[i], (lat[i], acc[i]), xytext=(dx * to_pt, dy * to_pt),
                    textcoords="offset points", ha="center", va="center", fontsize=fontsize,
                    fontweight="bold" if i in on_front else "normal", zorder=4,
                    color=COLORS.get(rs[i].get("backend"), "dimgray"),
                    arrowprops={"arrowstyle": "-", "lw": 0.5, "color": "gray",
                                "shrinkA": 0, "shrinkB": 3} if far else None)

    handles = [ax.scatter([], [], color=c, label=name) for name, c in COLORS.items()
               if any(r.get("backend") == name for r in rs)]
    handles += [ax.scatter([], [], color="gray", marker=m, label=q) for q, m in MARKERS.items()
                if any(r.get("quant") == q for r in rs)]
    handles += ax.plot([], [], color="black", lw=1.4, label="Pareto front (outlined, bold #)")
    ax.legend(handles=handles, fontsize=6.5, loc="upper center", bbox_to_anchor=(0.5, -0.13),
              ncol=min(5, len(handles)), frameon=False)

    # The table: one row per number, top-aligned; the height above fits every row.
    row = row_in / (0.88 * fig.get_figheight())
    names = [_short(r["id"]) for r in rs]
    width = max(len(s) for s in names + ["model"])
    mono = {"family": "monospace", "fontsize": 6.5, "transform": tab.transAxes, "va": "top"}
    tab.text(0, 1, f"{'#':>3}  {'model':<{width}}  {'acc %':>6}  {'p50':>8}  {'size':>8}",
             fontweight="bold", **mono)
    for i, r in enumerate(rs):
        y = 1 - (i + 1.2) * row
        tab.text(0, y, f"{i + 1:>3}", color=COLORS.get(r.get("backend"), "dimgray"),
                 fontweight="bold" if i in on_front else "normal", **mono)
        star = "*" if i in on_front else " "
        tab.text(0, y, f"   {star} {names[i]:<{width}}  {acc[i]:6.2f}  {_fmt_us(lat[i]):>8}"
                       f"  {_fmt_bytes(r.get('file_bytes')):>8}", **mono)
    tab.text(0, 1 - (n + 1.6) * row, "* on the Pareto front", color="dimgray", **mono)
    return save(fig, path)
