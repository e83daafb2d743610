"""matplotlib for every PNG the project draws: the Agg backend, one style, atomic writes."""

from __future__ import annotations

from pathlib import Path

from .errors import require

DPI = 100  # with the small figure sizes the figures use, every PNG stays well under 150 KB


def pyplot():
    """matplotlib.pyplot on the Agg backend (no display needed), or a MissingExtraError."""
    require("matplotlib", "bench", "figures")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update({"font.size": 8, "axes.titlesize": 9, "figure.titlesize": 10})
    return plt


def save(fig, path: Path) -> Path:
    """Write `fig` as PNG atomically: a crash never leaves a truncated image the docs would show."""
    from .fsutil import atomic_path

    import matplotlib.pyplot as plt

    try:
        with atomic_path(path, suffix=".png") as tmp:
            fig.savefig(tmp, dpi=DPI, bbox_inches="tight", pil_kwargs={"optimize": True})
    finally:
        fig.clf()
        plt.close(fig)
    return Path(path)
