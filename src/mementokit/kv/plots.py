"""Plots of simulated KV memory: one trace's curve (the paper's figure 5 sawtooth) and dataset distributions.

matplotlib is imported inside the functions (mementokit.figures draws on the Agg canvas), so importing
mementokit.kv needs no display. Bytes are shown in GiB (2**30), the unit the simulator computes.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from mementokit.errors import ConfigError
from mementokit.figures import new_figure, save_figure
from mementokit.kv.model_memory import GIB
from mementokit.kv.simulator import TraceKV

VANILLA_COLOUR = "#7f7f7f"
MEMENTO_COLOUR = "#1f77b4"


def _integer_ticks(axis) -> None:
    """Counts of traces or tokens: no fractional ticks (0.5 traces) on a small data set."""
    from matplotlib.ticker import MaxNLocator

    axis.set_major_locator(MaxNLocator(integer=True))


def _peak_label(name: str, values: np.ndarray, unit: str) -> str:
    if not len(values):
        return name
    peak = values.max()
    return f"{name} (peak {peak:.3g} {unit})" if unit == "GiB" else f"{name} (peak {int(peak):,} {unit})"


def plot_kv_curve(result: TraceKV, path: str | Path, *, title: str | None = None) -> Path:
    """Vanilla and memento KV occupancy after every position, overlaid (GiB when a model is known, else tokens)."""
    curves = result.curves
    if curves is None:
        raise ConfigError("plot_kv_curve needs the trace's curves: simulate it with keep_curves=True")
    in_bytes = curves.vanilla_bytes is not None
    unit = "GiB" if in_bytes else "tokens"
    vanilla = curves.vanilla_bytes / GIB if in_bytes else curves.vanilla_tokens
    memento = curves.memento_bytes / GIB if in_bytes else curves.memento_tokens
    x = (np.arange(len(vanilla)) + 1) / 1000.0  # ktokens
    fig = new_figure(8, 4.2, dpi=130, layout="tight")
    ax = fig.subplots()
    ax.plot(x, vanilla, color=VANILLA_COLOUR, lw=1.4, label=_peak_label("vanilla", vanilla, unit))
    ax.plot(x, memento, color=MEMENTO_COLOUR, lw=1.4, label=_peak_label("memento", memento, unit))
    ax.fill_between(x, memento, color=MEMENTO_COLOUR, alpha=0.12)
    ax.set_xlabel("tokens generated (thousands)")
    ax.set_ylabel(f"KV cache ({unit})")
    if not in_bytes:
        _integer_ticks(ax.yaxis)
    ratio = result.peak_ratio
    auc = result.auc_ratio
    subtitle = f"peak {ratio:.2f}x, AUC {auc:.2f}x of vanilla" if ratio is not None and auc is not None else ""
    ax.set_title(title or f"trace {result.trace_id or result.index}" + (f" ({result.domain})" if result.domain else "")
                 + (f": {subtitle}" if subtitle else ""))
    ax.set_xlim(left=0)
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left")
    return save_figure(fig, path)


def plot_kv_distributions(results: Sequence[TraceKV], path: str | Path, *, title: str | None = None) -> Path:
    """Histograms of the memento/vanilla peak and AUC ratios by domain, and memento vs vanilla peak per trace."""
    results = [r for r in results if r.tokens > 0 and r.peak_ratio is not None]
    if not results:
        raise ConfigError("no trace with tokens to plot")
    domains = sorted({r.domain or "unknown" for r in results})
    fig = new_figure(14, 4.2, dpi=120, layout="tight")
    axes = fig.subplots(1, 3)
    # About two traces per bin on average, between 5 and 40 bins over [0, 1.05] (ratios never exceed 1 + markers).
    bins = np.linspace(0.0, 1.05, int(np.clip(len(results) / 2, 5, 40)) + 1)
    for ax, label, getter in ((axes[0], "peak", lambda r: r.peak_ratio), (axes[1], "AUC", lambda r: r.auc_ratio)):
        for domain in domains:
            values = [getter(r) for r in results if (r.domain or "unknown") == domain]
            ax.hist(values, bins=bins, alpha=0.55, label=f"{domain} (median {np.median(values):.2f})")
        ax.set_xlabel(f"memento / vanilla {label} KV")
        ax.set_ylabel("traces")
        _integer_ticks(ax.yaxis)
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    in_bytes = results[0].vanilla.peak_bytes is not None
    scale = (lambda s: s.peak_bytes / GIB) if in_bytes else (lambda s: s.peak_tokens)
    ax = axes[2]
    for domain in domains:
        group = [r for r in results if (r.domain or "unknown") == domain]
        ax.scatter([scale(r.vanilla) for r in group], [scale(r.memento) for r in group], s=8, alpha=0.6, label=domain)
    top = max(scale(r.vanilla) for r in results)
    ax.plot([0, top], [0, top], color=VANILLA_COLOUR, lw=0.8, ls="--")
    unit = "GiB" if in_bytes else "tokens"
    ax.set_xlabel(f"vanilla peak KV ({unit})")
    ax.set_ylabel(f"memento peak KV ({unit})")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.suptitle(title or f"KV cache over {len(results)} traces")
    return save_figure(fig, path)
