"""PNG figures of an AnalysisReport: the paper's figure 3 by domain, the ratio by block position, ratio CDFs,
block vs memento words.

    figures = plot_all(report, "memento-report")   # {"figure3": Path, "ratio_by_position": Path, ...}

Figures are drawn on matplotlib's Agg canvas directly (mementokit.figures: no pyplot, no display), so this works
headless and in worker threads. Every panel bins or subsamples first, so 40K traces (~360K block-memento pairs)
draw in a few seconds. Histogram bins adapt to the number of values; values beyond a panel's range are counted
and the count is written on the panel, never silently piled into the end bins. Legends sit below the axes.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from mementokit.analysis.analyze import AnalysisReport
from mementokit.figures import new_figure, save_figure

# Fixed colours for the OpenMementos domains, so every figure and every report agrees; others cycle.
DOMAIN_COLORS = {"math": "#1f77b4", "code": "#ff7f0e", "science": "#2ca02c"}
OTHER_COLORS = ("#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf")
DPI = 110
MAX_SCATTER_POINTS = 20_000
CDF_POINTS = 501  # quantiles drawn per curve (an exact ECDF at those levels, whatever the number of blocks)

MAX_POSITIONS = 20  # block positions drawn in the by-position figure (later ones are rare)
MIN_PAIRS_PER_POINT = 3  # a position needs this many pairs in a domain for a point with an error bar

FIGURE_FILES = {
    "figure3": "figure3_by_domain.png",
    "ratio_by_position": "ratio_by_block_position.png",
    "ratio_cdf": "ratio_cdf.png",
    "block_vs_summary_words": "block_vs_summary_words.png",
}


def domain_colors(domains: list[str]) -> dict[str, str]:
    others = iter(OTHER_COLORS * (len(domains) // len(OTHER_COLORS) + 1))
    return {d: DOMAIN_COLORS.get(d) or next(others) for d in domains}


def _finite(values) -> np.ndarray:
    arr = np.asarray(values, dtype=np.float64)
    return arr[np.isfinite(arr)]


def _new_figure(width: float, height: float) -> Figure:
    return new_figure(width, height, dpi=DPI)


def _save(fig: Figure, path: str | os.PathLike) -> Path:
    return save_figure(fig, path)


def bin_count(n: int, *, low: int = 6, high: int = 60) -> int:
    """Histogram bins for n values (Rice rule, 2 n^(1/3)): ~7 for 41 traces, ~60 for 30K blocks."""
    return int(np.clip(round(2 * max(n, 1) ** (1 / 3)), low, high))


def _legend_below(ax, entries: int) -> None:
    """The legend under the axes, never over the data."""
    ax.legend(fontsize=8, frameon=False, loc="upper center", bbox_to_anchor=(0.5, -0.16),
              ncol=min(entries, 2))


def _no_data(ax, what: str) -> None:
    ax.text(0.5, 0.5, f"no {what}", ha="center", va="center", transform=ax.transAxes, color="grey")


def _histogram_panel(ax, series: dict[str, np.ndarray], colors: dict[str, str], *, edges: np.ndarray, log_x: bool,
                     title: str, xlabel: str, ylabel: str, what: str, spec: str) -> None:
    """Step histograms (share of items per bin) per domain, with a dashed line at each median (`spec`: its format,
    one per panel). Values outside the edges are not drawn; how many is said under the axis."""
    drawn, outside = 0, 0
    for domain, values in series.items():
        if values.size == 0:
            continue
        counts, _ = np.histogram(values, bins=edges)  # values beyond the edges fall out, and are counted below
        outside += int(values.size - counts.sum())
        median = float(np.median(values))
        ax.stairs(counts / values.size, edges, color=colors[domain], linewidth=1.6,
                  label=f"{domain}: median {median:{spec}} (n={values.size:,})")
        ax.axvline(median, color=colors[domain], linestyle="--", linewidth=1.0)
        drawn += 1
    if log_x:
        ax.set_xscale("log")
    ax.set_title(title)
    ax.set_xlabel(xlabel + (f"  ({outside:,} {what} beyond the axis, not drawn)" if outside else ""))
    ax.set_ylabel(ylabel)
    if drawn:
        _legend_below(ax, drawn)
    else:
        _no_data(ax, what)


def _typical_count(arrays: list[np.ndarray]) -> int:
    """The number of values of the largest series: what the bin count adapts to."""
    return max((a.size for a in arrays), default=0)


def _log_edges(arrays: list[np.ndarray]) -> np.ndarray:
    values = np.concatenate([a[a > 0] for a in arrays]) if arrays else np.zeros(0)
    bins = bin_count(_typical_count(arrays))
    if values.size == 0:
        return np.geomspace(1, 10, bins + 1)
    low, high = np.percentile(values, [0.5, 99.5])
    low, high = max(low, 1.0), max(high, low * 10)
    return np.geomspace(low, high, bins + 1)


def _integer_edges(values: np.ndarray, bins: int) -> np.ndarray:
    """Bins over whole numbers (blocks per trace): each bin spans a whole number of values."""
    top = int(np.percentile(values, 99.5)) + 1 if values.size else 10
    width = max(1, int(np.ceil((top + 1) / bins)))
    return np.arange(-0.5, top + width + 0.5, width)


def plot_figure3(report: AnalysisReport, path: str | os.PathLike) -> Path:
    """The paper's figure 3 by domain, 2x2: blocks per trace, block size, memento size, compression ratio."""
    domains = report.domains
    colors = domain_colors(domains)
    traces, pairs = report.traces, report.pairs
    by_trace = {d: _finite(traces.loc[traces["domain"] == d, "blocks"]) for d in domains}
    by_pair = {d: pairs[pairs["domain"] == d] for d in domains}
    block_chars = {d: _finite(p["block_chars"]) for d, p in by_pair.items()}
    summary_chars = {d: _finite(p["summary_chars"]) for d, p in by_pair.items()}
    ratios = {d: _finite(p["char_ratio"]) for d, p in by_pair.items()}

    fig = _new_figure(12, 9.5)
    axes = fig.subplots(2, 2)
    all_blocks = np.concatenate(list(by_trace.values())) if by_trace else np.zeros(0)
    _histogram_panel(axes[0, 0], by_trace, colors,
                     edges=_integer_edges(all_blocks, bin_count(_typical_count(list(by_trace.values())))),
                     log_x=False, title="Blocks per trace", xlabel="blocks", ylabel="share of traces", what="traces",
                     spec=".1f")
    _histogram_panel(axes[0, 1], block_chars, colors, edges=_log_edges(list(block_chars.values())), log_x=True,
                     title="Block size", xlabel="characters per block", ylabel="share of blocks", what="blocks",
                     spec=",.0f")
    _histogram_panel(axes[1, 0], summary_chars, colors, edges=_log_edges(list(summary_chars.values())), log_x=True,
                     title="Memento size", xlabel="characters per memento", ylabel="share of mementos", what="mementos",
                     spec=",.0f")
    all_ratios = np.concatenate(list(ratios.values())) if ratios else np.zeros(0)
    high = min(1.0, float(np.percentile(all_ratios, 99.5)) * 1.1) if all_ratios.size else 1.0
    edges = np.linspace(0, max(high, 0.05), bin_count(_typical_count(list(ratios.values()))) + 1)
    _histogram_panel(axes[1, 1], ratios, colors, edges=edges, log_x=False,
                     title="Compression ratio per block (memento / block chars)",
                     xlabel="ratio (smaller = more compression)",
                     ylabel="share of blocks", what="blocks", spec=".3f")
    fig.suptitle(f"Memento traces by domain: {len(traces):,} traces, {len(pairs):,} block-memento pairs")
    return _save(fig, path)


def plot_ratio_cdf(report: AnalysisReport, path: str | os.PathLike) -> Path:
    """CDF of the per-block compression ratio per domain: characters (solid), tokens (dashed) when counted."""
    domains = report.domains
    colors = domain_colors(domains)
    pairs = report.pairs
    measures = [("char_ratio", "chars", "-")]
    if "token_ratio" in pairs.columns:
        measures.append(("token_ratio", "tokens", "--"))
    levels = np.linspace(0, 1, CDF_POINTS)
    fig = _new_figure(9, 6)
    ax = fig.subplots()
    highest = 0.0
    for column, unit, style in measures:
        groups = [(d, pairs.loc[pairs["domain"] == d, column], colors[d], 1.6) for d in domains]
        groups.append(("all", pairs[column], "black", 1.0))
        for domain, values, color, width in groups:
            values = _finite(values)
            if values.size == 0:
                continue
            x = np.quantile(values, levels)
            median = float(np.median(values))
            ax.plot(x, levels, linestyle=style, color=color, linewidth=width,
                    label=f"{domain} ({unit}): median {median:.3f}")
            ax.plot([median], [0.5], marker="o", color=color, markersize=4)
            highest = max(highest, float(np.quantile(values, 0.995)))
    if highest == 0.0:
        _no_data(ax, "block-memento pairs")
    ax.axhline(0.5, color="grey", linestyle=":", linewidth=0.8)
    ax.set_xlim(0, min(max(highest * 1.05, 0.05), 1.5))
    ax.set_ylim(0, 1)
    ax.set_xlabel("compression ratio per block (memento / block; smaller = more compression)")
    ax.set_ylabel("fraction of blocks at or below")
    ax.set_title("Cumulative distribution of the per-block compression ratio")
    if highest:
        _legend_below(ax, len(domains) + 1)
    return _save(fig, path)


def block_vs_summary_points(report: AnalysisReport, max_points: int = MAX_SCATTER_POINTS,
                            seed: int = 0) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per domain, (block words, memento words) of pairs where both are > 0, subsampled to at most
    `max_points` in total (each domain keeps its share; the same seed picks the same points)."""
    pairs = report.pairs
    usable = pairs[(pairs["block_words"] > 0) & (pairs["summary_words"] > 0)]
    keep = min(1.0, max_points / len(usable)) if len(usable) else 1.0
    rng = np.random.default_rng(seed)
    points = {}
    for domain in report.domains:
        group = usable[usable["domain"] == domain]
        x = group["block_words"].to_numpy(dtype=np.float64)
        y = group["summary_words"].to_numpy(dtype=np.float64)
        if keep < 1.0:
            # floor: the total never exceeds max_points
            take = rng.choice(x.size, size=int(x.size * keep), replace=False)
            x, y = x[take], y[take]
        points[domain] = (x, y)
    return points


def plot_block_vs_summary_words(report: AnalysisReport, path: str | os.PathLike,
                                max_points: int = MAX_SCATTER_POINTS) -> Path:
    """Log-log scatter of memento words against block words per pair, by domain, with constant-ratio guides."""
    points = block_vs_summary_points(report, max_points)
    colors = domain_colors(report.domains)
    fig = _new_figure(8, 7)
    ax = fig.subplots()
    total = sum(x.size for x, _ in points.values())
    size = 4 if total > 5_000 else 10
    for domain, (x, y) in points.items():
        if x.size == 0:
            continue
        ax.scatter(x, y, s=size, alpha=0.35, color=colors[domain], linewidths=0, label=f"{domain} ({x.size:,} shown)")
        ax.plot([np.median(x)], [np.median(y)], marker="X", markersize=11, color=colors[domain],
                markeredgecolor="black")
    if total:
        xs = np.concatenate([x for x, _ in points.values()])
        lo, hi = max(xs.min() * 0.8, 1.0), xs.max() * 1.25
        for ratio in (0.05, 0.1, 0.2, 0.4):
            ax.plot([lo, hi], [lo * ratio, hi * ratio], color="grey", linestyle=":", linewidth=0.8)
            ax.text(hi, hi * ratio, f"{ratio:g}x", fontsize=8, color="grey", va="center")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.legend(fontsize=8, frameon=False, loc="upper center", bbox_to_anchor=(0.5, -0.1), ncol=3, markerscale=2)
    else:
        _no_data(ax, "block-memento pairs with words")
    ax.set_xlabel("words in block")
    ax.set_ylabel("words in memento")
    ax.set_title("Block vs memento size (X: domain median; dotted: constant ratio)")
    return _save(fig, path)


def ratio_by_position(report: AnalysisReport, column: str = "char_ratio",
                      max_positions: int = MAX_POSITIONS) -> dict[str, list[tuple[int, int, float, float]]]:
    """Per domain, (block position from 1, pairs, mean ratio, 95% half-width of the mean) for every position
    with at least MIN_PAIRS_PER_POINT pairs, up to `max_positions`."""
    pairs = report.pairs
    if pairs.empty:
        return {}
    position = pairs.groupby("trace_index", sort=False).cumcount() + 1  # pairs are in trace order
    frame = pairs.assign(position=position)[["domain", "position", column]]
    frame = frame[np.isfinite(frame[column]) & (frame["position"] <= max_positions)]
    out: dict[str, list[tuple[int, int, float, float]]] = {}
    for domain in report.domains:
        groups = frame[frame["domain"] == domain].groupby("position")[column]
        points = []
        for pos, values in groups:
            n = int(values.size)
            if n >= MIN_PAIRS_PER_POINT:
                sem = float(values.std(ddof=1)) / np.sqrt(n)
                points.append((int(pos), n, float(values.mean()), 1.96 * sem))
        out[domain] = points
    return out


def plot_ratio_by_position(report: AnalysisReport, path: str | os.PathLike) -> Path:
    """The compression ratio by block position (block 1, 2, ...) per domain: mean with a 95% error bar."""
    points = ratio_by_position(report)
    colors = domain_colors(report.domains)
    fig = _new_figure(9, 5.5)
    ax = fig.subplots()
    shift = 0.12  # domains side by side at each position, so the error bars do not hide each other
    drawn = 0
    for k, (domain, rows) in enumerate(points.items()):
        if not rows:
            continue
        x = np.array([r[0] for r in rows]) + (k - (len(points) - 1) / 2) * shift
        ax.errorbar(x, [r[2] for r in rows], yerr=[r[3] for r in rows], color=colors[domain], marker="o",
                    markersize=4, linewidth=1.2, capsize=3, label=f"{domain} ({sum(r[1] for r in rows):,} blocks)")
        drawn += 1
    if drawn:
        _legend_below(ax, drawn)
        from matplotlib.ticker import MaxNLocator

        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylim(bottom=0)
    else:
        _no_data(ax, "block positions with enough blocks")
    ax.set_xlabel("block position in the trace (1 = first block)")
    ax.set_ylabel("compression ratio (memento / block chars)")
    ax.set_title("Compression ratio by block position (mean, 95% interval)")
    ax.grid(alpha=0.3)
    return _save(fig, path)


def plot_all(report: AnalysisReport, out_dir: str | os.PathLike) -> dict[str, Path]:
    """Every figure into `out_dir` (created if needed): FIGURE_FILES' keys -> path."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    return {
        "figure3": plot_figure3(report, out / FIGURE_FILES["figure3"]),
        "ratio_by_position": plot_ratio_by_position(report, out / FIGURE_FILES["ratio_by_position"]),
        "ratio_cdf": plot_ratio_cdf(report, out / FIGURE_FILES["ratio_cdf"]),
        "block_vs_summary_words": plot_block_vs_summary_words(report, out / FIGURE_FILES["block_vs_summary_words"]),
    }
