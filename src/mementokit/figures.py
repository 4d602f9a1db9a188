"""Figures drawn on matplotlib's Agg canvas directly: no pyplot, no display, no global backend switch.

    fig = new_figure(8, 4.2, dpi=130)
    ax = fig.subplots()
    ...
    save_figure(fig, "kv.png")

One place for every PNG mementokit draws (analysis report, KV curves, generation curves), so they work headless
and in worker threads alike.
"""

from __future__ import annotations

import os
from pathlib import Path


def new_figure(width: float, height: float, *, dpi: int = 110, layout: str | None = "constrained"):
    """A matplotlib Figure of width x height inches attached to an Agg canvas."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=dpi, layout=layout)
    FigureCanvasAgg(fig)
    return fig


def save_figure(fig, path: str | os.PathLike, *, dpi: int | None = None) -> Path:
    """Write the figure as PNG (making the folder) and return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", dpi=dpi or fig.dpi)
    return path
