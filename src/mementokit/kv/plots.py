"""Plots of simulated KV memory: one trace's curve (the paper's figure 5 sawtooth) and dataset distributions.

matplotlib is imported inside the functions with the Agg backend, so importing mementokit.kv needs no display.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from mementokit.errors import ConfigError
from mementokit.kv.model_memory import GIB
from mementokit.kv.simulator import TraceKV

def save_figure(fig, path: str | Path, *, dpi: int) -> Path:
    """Write a pyplot figure as PNG (making the folder) and free it."""
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path


VANILLA_COLOUR = "#7f7f7f"
MEMENTO_COLOUR = "#1f77b4"


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def plot_kv_curve(result: TraceKV, path: str | Path, *, title: str | None = None) -> Path:
    """Vanilla and memento KV occupancy after every position, overlaid (GB when a model is known, else tokens)."""
    curves = result.curves
    if curves is None:
        raise ConfigError("plot_kv_curve needs the trace's curves: simulate it with keep_curves=True")
    plt = _pyplot()
    in_bytes = curves.vanilla_bytes is not None
    vanilla = curves.vanilla_bytes / GIB if in_bytes else curves.vanilla_tokens
    memento = curves.memento_bytes / GIB if in_bytes else curves.memento_tokens
    x = (np.arange(len(vanilla)) + 1) / 1000.0  # ktokens
    fig, ax = plt.subplots(figsize=(8, 4.2))
    ax.plot(x, vanilla, color=VANILLA_COLOUR, lw=1.4, label=f"vanilla (peak {vanilla.max():.3g})" if len(x) else "vanilla")
    ax.plot(x, memento, color=MEMENTO_COLOUR, lw=1.4, label=f"memento (peak {memento.max():.3g})" if len(x) else "memento")
    ax.fill_between(x, memento, color=MEMENTO_COLOUR, alpha=0.12)
    ax.set_xlabel("tokens generated (thousands)")
    ax.set_ylabel("KV cache (GB)" if in_bytes else "KV cache (tokens)")
    ratio = result.peak_ratio
    auc = result.auc_ratio
    subtitle = f"peak {ratio:.2f}x, AUC {auc:.2f}x of vanilla" if ratio is not None and auc is not None else ""
    ax.set_title(title or f"trace {result.trace_id or result.index}" + (f" ({result.domain})" if result.domain else "")
                 + (f": {subtitle}" if subtitle else ""))
    ax.set_xlim(left=0)
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left")
    fig.tight_layout()
    return save_figure(fig, path, dpi=130)


def plot_kv_distributions(results: Sequence[TraceKV], path: str | Path, *, title: str | None = None) -> Path:
    """Histograms of the memento/vanilla peak and AUC ratios by domain, and memento vs vanilla peak per trace."""
    results = [r for r in results if r.tokens > 0 and r.peak_ratio is not None]
    if not results:
        raise ConfigError("no trace with tokens to plot")
    plt = _pyplot()
    domains = sorted({r.domain or "unknown" for r in results})
    fig, axes = plt.subplots(1, 3, figsize=(14, 4.2))
    bins = np.linspace(0.0, 1.05, 43)
    for ax, label, getter in ((axes[0], "peak", lambda r: r.peak_ratio), (axes[1], "AUC", lambda r: r.auc_ratio)):
        for domain in domains:
            values = [getter(r) for r in results if (r.domain or "unknown") == domain]
            ax.hist(values, bins=bins, alpha=0.55, label=f"{domain} (median {np.median(values):.2f})")
        ax.set_xlabel(f"memento / vanilla {label} KV")
        ax.set_ylabel("traces")
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
    unit = "GB" if in_bytes else "tokens"
    ax.set_xlabel(f"vanilla peak KV ({unit})")
    ax.set_ylabel(f"memento peak KV ({unit})")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.suptitle(title or f"KV cache over {len(results)} traces")
    fig.tight_layout()
    return save_figure(fig, path, dpi=120)
