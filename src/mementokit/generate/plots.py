"""Plot of the measured cache: tokens held after every step, block masking vs what a vanilla cache would hold."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from mementokit.figures import new_figure, save_figure
from mementokit.generate.stats import CacheStats


def plot_cache_curves(curves: Sequence[tuple[str, CacheStats]], path: str | Path, *, title: str | None = None) -> Path:
    """One line per sequence (label, stats) plus the vanilla diagonal; x = logical tokens, y = cached tokens."""
    fig = new_figure(8, 4.2, dpi=120, layout="tight")
    ax = fig.subplots()
    longest = 0
    for label, stats in curves:
        ax.plot(
            stats.positions, stats.cache_tokens, linewidth=1.2, label=f"{label} (peak {stats.peak_tokens:,} tokens)"
        )
        longest = max(longest, stats.logical_tokens)
    ax.plot([0, longest], [0, longest], color="#7f7f7f", linestyle="--", linewidth=1, label="vanilla cache")
    ax.set_xlabel("tokens processed (logical)")
    ax.set_ylabel("tokens in the KV cache (measured)")
    ax.set_title(title or "KV cache with block masking")
    ax.legend(loc="upper left", fontsize=8)
    ax.grid(alpha=0.3)
    return save_figure(fig, path)
