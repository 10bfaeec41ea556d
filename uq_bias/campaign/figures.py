"""Matplotlib for the campaign's plots: the Agg backend (no screen), atomic PNG writes."""

from __future__ import annotations

from pathlib import Path

from uq_bias.campaign.state import atomic_path


def pyplot():
    """matplotlib.pyplot on the Agg backend (unless a backend was chosen already)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def integer_ticks():
    from matplotlib.ticker import MaxNLocator

    return MaxNLocator(integer=True)


def save(fig, path: Path) -> None:
    """Write ``fig`` to ``path`` as PNG atomically, then close it."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    pyplot().close(fig)
