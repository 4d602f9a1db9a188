"""The KV section of the analysis report: the simulator's memento / vanilla peak and area-under-curve ratios by
domain, and the sawtooth of one typical trace.

    section = kv_report_section(lambda: iter_traces("sample.jsonl"), tokenizer, "memento-report")
    write_report(report, "memento-report", kv_section=section)    # mementokit.analysis.report

`traces` is a function returning a fresh iterator of the traces: they are read twice, once to simulate them all
without curves (memory stays flat), once to keep the curve of the typical trace only.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np

from mementokit.figures import new_figure, save_figure
from mementokit.kv.plots import MEMENTO_COLOUR, VANILLA_COLOUR, plot_kv_curve
from mementokit.kv.simulator import KVSimulator, TraceKV

KV_FIGURES = {"kv_by_domain": "kv_ratios_by_domain.png", "kv_typical_trace": "kv_typical_trace.png"}


def _spread(values: list[float]) -> dict[str, float | None]:
    finite = np.asarray([v for v in values if v is not None and np.isfinite(v)], dtype=np.float64)
    if finite.size == 0:
        return {"median": None, "p10": None, "p90": None}
    p10, median, p90 = np.percentile(finite, [10, 50, 90])
    return {"median": float(median), "p10": float(p10), "p90": float(p90)}


def ratios_by_domain(results: list[TraceKV]) -> dict[str, dict[str, Any]]:
    """Per domain (and "all"): traces, and median / p10 / p90 of the peak and AUC ratios (memento / vanilla)."""
    groups: dict[str, list[TraceKV]] = {}
    for r in results:
        if r.tokens > 0:
            groups.setdefault(r.domain or "unknown", []).append(r)
    groups = dict(sorted(groups.items(), key=lambda item: -len(item[1])))
    groups["all"] = [r for group in groups.values() for r in group]
    return {name: {"traces": len(group), "peak_ratio": _spread([r.peak_ratio for r in group]),
                   "auc_ratio": _spread([r.auc_ratio for r in group])} for name, group in groups.items()}


def typical_trace(results: list[TraceKV]) -> TraceKV | None:
    """The trace whose peak ratio is closest to the median of all traces (ties: the first)."""
    usable = [r for r in results if r.tokens > 0 and r.peak_ratio is not None]
    if not usable:
        return None
    median = float(np.median([r.peak_ratio for r in usable]))
    return min(usable, key=lambda r: abs(r.peak_ratio - median))


def plot_ratios_by_domain(by_domain: dict[str, dict[str, Any]], path: str | os.PathLike) -> Path:
    """Bars: median peak and AUC ratio per domain, error bars from the 10th to the 90th percentile."""
    names = list(by_domain)
    fig = new_figure(8, 4.5, dpi=110)
    ax = fig.subplots()
    x = np.arange(len(names))
    for offset, key, label, colour in ((-0.2, "peak_ratio", "peak", MEMENTO_COLOUR),
                                       (0.2, "auc_ratio", "area under the curve", VANILLA_COLOUR)):
        stats = [by_domain[n][key] for n in names]
        medians = np.array([s["median"] if s["median"] is not None else np.nan for s in stats])
        low = medians - np.array([s["p10"] if s["p10"] is not None else np.nan for s in stats])
        high = np.array([s["p90"] if s["p90"] is not None else np.nan for s in stats]) - medians
        ax.bar(x + offset, medians, width=0.38, color=colour, alpha=0.85, label=f"{label} (median, p10-p90)")
        ax.errorbar(x + offset, medians, yerr=[low, high], fmt="none", ecolor="black", capsize=4, linewidth=1)
    ax.set_xticks(x, [f"{n}\n({by_domain[n]['traces']:,} traces)" for n in names])
    ax.set_ylabel("memento / vanilla KV cache")
    ax.set_ylim(0, 1.05)
    ax.axhline(1.0, color="grey", linestyle=":", linewidth=0.8)
    ax.set_title("KV cache with block masking, relative to vanilla (simulator)")
    ax.legend(fontsize=8, frameon=False, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=2)
    ax.grid(axis="y", alpha=0.3)
    return save_figure(fig, path)


def kv_report_section(traces: Callable[[], Iterable[Any]], tokenizer, out_dir: str | os.PathLike, *,
                      config=None, memory=None, tokenizer_name: str | None = None) -> dict[str, Any]:
    """Simulate every trace (`traces()`), draw the two KV figures into `out_dir`; return the section's data:
    {"tokenizer", "block_masking", "by_domain", "typical", "figures": {name: path}}."""
    simulator = KVSimulator(tokenizer, config=config, memory=memory)
    results = list(simulator.simulate_traces(traces()))
    by_domain = ratios_by_domain(results)
    out = Path(out_dir)
    figures = {"kv_by_domain": plot_ratios_by_domain(by_domain, out / KV_FIGURES["kv_by_domain"])}
    typical = typical_trace(results)
    if typical is not None:
        chosen = (t for i, t in enumerate(traces()) if i == typical.index)
        with_curve = next(iter(simulator.simulate_traces(chosen, keep_curves_for={typical.index},
                                                         start_index=typical.index)))
        figures["kv_typical_trace"] = plot_kv_curve(with_curve, out / KV_FIGURES["kv_typical_trace"])
    return {
        "tokenizer": tokenizer_name,
        "block_masking": simulator.config.to_dict(),
        "by_domain": by_domain,
        "typical": None if typical is None else typical.to_dict(),
        "figures": figures,
    }
