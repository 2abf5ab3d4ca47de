"""The experiments' figures: one way to open a headless figure and one way to save it (tight
layout, 110 dpi, the figure closed so a long run does not hold every plot in memory)."""

from __future__ import annotations

from pathlib import Path


def figure(ncols: int = 1, width: float = 6.5):
    """(pyplot, figure, axes) of a row of `ncols` plots, on the Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, ncols, figsize=(width * ncols, 4))
    return plt, fig, axes


def save(fig, path: Path) -> Path:
    """Write `fig` to `path` and close it; titles too long for their plot are wrapped."""
    import textwrap

    import matplotlib.pyplot as plt

    for ax in fig.axes:
        title = ax.get_title()
        width = int(fig.get_figwidth() / len(fig.axes) * 12)  # characters that fit at fontsize 9
        if len(title) > width:
            ax.set_title("\n".join(textwrap.wrap(title, width)), fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
