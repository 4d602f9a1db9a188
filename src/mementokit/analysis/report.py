"""One self-contained HTML report of an AnalysisReport: the per-domain tables, the figures, where the rows came
from, and (with a tokenizer) what the KV cache does.

    write_report(report, "memento-report", source="sample.jsonl")   # summary.json, traces.parquet, figures, report.html

    figures = plot_all(report, out_dir)            # or piece by piece
    write_html_report(report, out_dir, figures)   # -> out_dir / "report.html"

Self-contained means one file that opens anywhere, offline: the CSS is inline and every figure is a base64
`data:` URI, so nothing is fetched. Everything taken from the data (domain names, sources, problem names)
is HTML-escaped.
"""

from __future__ import annotations

import base64
import html
import math
import os
from pathlib import Path
from typing import Any

from mementokit.analysis.analyze import AnalysisReport
from mementokit.analysis.synth import SYNTHETIC_SOURCE
from mementokit.errors import InputError
from mementokit.jsonl import write_json_atomic, write_text_atomic

REPORT_FILE = "report.html"

FIGURE_CAPTIONS = {
    "figure3": "The paper's figure 3 by domain: blocks per trace, block size, memento size and the per-block "
    "compression ratio (dashed lines: medians).",
    "ratio_by_position": "Compression ratio (memento / block chars) by the block's position in its trace, per "
    "domain: mean with a 95% confidence interval of the mean (1.96 standard errors); positions with fewer than 3 "
    "blocks in a domain are left out.",
    "ratio_cdf": "Cumulative distribution of the per-block compression ratio (memento / block), by domain; "
    "characters solid, tokens dashed when a tokenizer was given.",
    "kv_by_domain": "The simulator's memento / vanilla KV cache per domain: median peak and area under the curve, "
    "with the 10th to 90th percentile of the traces as error bars.",
    "kv_typical_trace": "KV cache after every token of the typical trace: vanilla grows with every token; with block "
    "masking each finished block leaves the cache when its memento ends (the sawtooth).",
    "block_vs_summary_words": "Words in each memento against words in its block (log-log, at most 20,000 pairs "
    "shown; X marks each domain's median).",
}
IMAGE_TYPES = {".png": "image/png", ".svg": "image/svg+xml", ".jpg": "image/jpeg", ".jpeg": "image/jpeg",
               ".gif": "image/gif"}

CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 2rem auto; max-width: 1200px;
       padding: 0 1rem; color: #222; line-height: 1.45; }
h1 { font-size: 1.6rem; margin-bottom: 0.2rem; }
h2 { font-size: 1.2rem; margin-top: 2rem; border-bottom: 1px solid #ddd; padding-bottom: 0.2rem; }
p.meta { color: #666; margin-top: 0; }
table { border-collapse: collapse; font-size: 0.88rem; }
div.table { overflow-x: auto; max-width: 100%; margin: 0.8rem 0; }
th, td { padding: 0.35rem 0.55rem; border-bottom: 1px solid #e4e4e4; text-align: right; vertical-align: top; }
th { background: #f5f5f5; font-weight: 600; }
th:first-child, td:first-child { text-align: left; }
tr.overall td { font-weight: 600; border-top: 2px solid #bbb; }
td small { color: #777; display: block; font-size: 0.78rem; white-space: nowrap; }
figure { margin: 1.5rem 0; }
figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { color: #555; font-size: 0.9rem; }
.note { background: #fafaf2; border-left: 4px solid #d8c84a; padding: 0.6rem 0.9rem; }
"""


def _esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _number(value: float | None, spec: str) -> str:
    """One format per column, so a column never mixes 9.0 and 11."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return format(value, spec)


# Format of each kind of figure in the tables.
COUNT, SIZE, RATIO = ".1f", ",.0f", ".3f"


def _cell(stats: dict[str, Any], spec: str, spread: bool = True) -> str:
    """A median, with p10-p90 below it."""
    median = _number(stats.get("median"), spec)
    if not spread or stats.get("p10") is None:
        return f"<td>{median}</td>"
    return f"<td>{median}<small>{_number(stats['p10'], spec)} – {_number(stats['p90'], spec)}</small></td>"


def _invalid_cell(group: dict[str, Any]) -> str:
    problems = group.get("invalid_by_problem") or {}
    listed = "".join(f"<small>{_esc(name)}: {count:,}</small>" for name, count in problems.items())
    return f"<td>{group['invalid']:,}{listed}</td>"


def _compression_cell(ratio_stats: dict[str, Any]) -> str:
    # Per-trace compression = block / memento = 1 / ratio; the median of 1/x is 1 / the median of x.
    median = ratio_stats.get("median")
    return f"<td>{1.0 / median:.2f}x</td>" if median else "<td>-</td>"


def _html_table(headers: list[str], rows: list[tuple[str, list[str]]]) -> str:
    head = "".join(f"<th>{_esc(h)}</th>" for h in headers)
    lines = []
    for name, cells in rows:
        css = ' class="overall"' if name == "overall" and len(rows) > 1 else ""
        lines.append(f"<tr{css}><td>{_esc(name)}</td>{''.join(cells)}</tr>")
    body = "\n".join(lines)
    return (f'<div class="table"><table class="summary">\n<thead><tr>{head}</tr></thead>\n<tbody>\n{body}\n'
            "</tbody>\n</table></div>")


def summary_table_html(summary: dict[str, Any]) -> str:
    """The per-domain figures (plus the overall row) of `AnalysisReport.summary()` as three narrow HTML tables
    (traces, sizes, compression), so each fits an 800-pixel window."""
    tokens = bool(summary.get("tokenizer"))
    groups = list(summary["by_domain"].items()) + [("overall", summary["overall"])]
    traces, sizes, compression = [], [], []
    for name, group in groups:
        pt, pb = group["per_trace"], group["per_block"]
        traces.append((name, [f"<td>{group['traces']:,}</td>", f"<td>{group['valid']:,}</td>", _invalid_cell(group),
                              _cell(pt["blocks"], COUNT)]))
        size_cells = [_cell(pb["block_chars"], SIZE), _cell(pb["summary_chars"], SIZE),
                      _cell(pb["block_words"], SIZE), _cell(pb["summary_words"], SIZE)]
        ratio_cells = [_cell(pb["char_ratio"], RATIO), _cell(pb["word_ratio"], RATIO),
                       _compression_cell(pt["char_ratio"])]
        if tokens:
            size_cells += [_cell(pb["block_tokens"], SIZE), _cell(pb["summary_tokens"], SIZE)]
            compression_median = pt["token_compression"]["median"]
            ratio_cells += [_cell(pb["token_ratio"], RATIO),
                            f"<td>{compression_median:.2f}x</td>" if compression_median else "<td>-</td>"]
        sizes.append((name, size_cells))
        compression.append((name, ratio_cells))
    size_headers = ["domain", "block chars", "memento chars", "block words", "memento words"]
    ratio_headers = ["domain", "char ratio", "word ratio", "trace compression (chars)"]
    if tokens:
        size_headers += ["block tokens", "memento tokens"]
        ratio_headers += ["token ratio", "trace compression (tokens)"]
    return "\n".join([
        _html_table(["domain", "traces", "valid", "invalid (by problem)", "blocks per trace"], traces),
        _html_table(size_headers, sizes),
        _html_table(ratio_headers, compression),
    ])


def provenance(report: AnalysisReport) -> dict[str, Any]:
    """How many traces are synthetic (source == "synthetic") and where the others come from."""
    sources = report.traces["source"]
    synthetic = int((sources == SYNTHETIC_SOURCE).sum())
    real_sources = sources[sources != SYNTHETIC_SOURCE].fillna("(no source)")
    return {
        "traces": int(len(sources)),
        "synthetic": synthetic,
        "real": int(len(sources)) - synthetic,
        "real_sources": {str(k): int(v) for k, v in real_sources.value_counts().items()},
    }


def _provenance_html(report: AnalysisReport) -> str:
    p = provenance(report)
    parts = [f"<p>This report covers <b>{p['traces']:,}</b> traces: <b>{p['synthetic']:,} synthetic</b> and "
             f"<b>{p['real']:,} real</b>.</p>"]
    if p["synthetic"]:
        parts.append(
            '<p class="note">Synthetic traces (source "synthetic") are random text generated by '
            "<code>mementokit.analysis.synth</code>, shaped to follow the published OpenMementos figures "
            "(domains 54/19/27 %, median blocks 9/9/7, median compression ratio 0.16/0.18/0.23). Their numbers "
            "reproduce the generator's settings; they are not a measurement of model output. Run "
            "<code>memento analyze --dataset microsoft/OpenMementos</code> for the real data.</p>"
        )
    if p["real_sources"]:
        shown = list(p["real_sources"].items())[:12]
        items = "".join(f"<li>{_esc(name)}: {count:,}</li>" for name, count in shown)
        hidden = len(p["real_sources"]) - len(shown)
        more = f"<li>… and {hidden:,} more sources</li>" if hidden > 0 else ""
        parts.append(f"<p>Real traces by source:</p><ul>{items}{more}</ul>")
    return "\n".join(parts)


def _image_data_uri(path: Path) -> str:
    if not path.is_file():
        raise InputError("figure file not found", path=str(path))
    mime = IMAGE_TYPES.get(path.suffix.lower())
    if mime is None:
        raise InputError(f"cannot inline a '{path.suffix}' figure (expected one of {', '.join(IMAGE_TYPES)})",
                         path=str(path))
    return f"data:{mime};base64,{base64.b64encode(path.read_bytes()).decode('ascii')}"


def _figures_html(figures: dict[str, Path]) -> str:
    blocks = []
    for name, path in figures.items():
        caption = FIGURE_CAPTIONS.get(name, name.replace("_", " "))
        blocks.append(
            f'<figure id="{_esc(name)}"><img src="{_image_data_uri(Path(path))}" alt="{_esc(caption)}">'
            f"<figcaption>{_esc(caption)}</figcaption></figure>"
        )
    return "\n".join(blocks)


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("mementokit")
    except Exception:  # noqa: BLE001 - running from a source tree that is not installed
        return "unknown"


def _ratio_cell(stats: dict[str, Any]) -> str:
    return _cell(stats, RATIO)


def kv_section_html(section: dict[str, Any] | None) -> str:
    """The KV section (from mementokit.kv.report.kv_report_section), or "" without one."""
    if not section:
        return ""
    rows = [(name, [f"<td>{group['traces']:,}</td>", _ratio_cell(group["peak_ratio"]), _ratio_cell(group["auc_ratio"])])
            for name, group in section["by_domain"].items()]
    rows = [row for row in rows if row[0] != "all"] + [("overall", r[1]) for r in rows if r[0] == "all"]
    typical = section.get("typical")
    typical_text = ""
    if typical:
        where = f" ({_esc(typical['domain'])})" if typical.get("domain") else ""
        typical_text = (f"<p>The typical trace below is trace {typical['index']}{where}, the one whose peak ratio "
                        f"({typical['peak_ratio']:.3f}) is closest to the median: {typical['tokens']:,} tokens, "
                        f"{typical['blocks_completed']:,} blocks.</p>")
    masking = _esc(", ".join(f"{k}={v}" for k, v in section["block_masking"].items()
                             if k in ("keep_last_n_blocks", "mask_delimiters")))
    return f"""<h2>KV cache (simulator)</h2>
<p>Each response replayed token by token through the block state machine ({masking}; tokens counted with
<code>{_esc(section.get('tokenizer'))}</code>): the cache holds every token in a vanilla model, and only the
tokens not yet evicted with block masking. Ratios are memento / vanilla per trace (median, p10 – p90 below);
the paper reports peak 0.32-0.47x and area under the curve 0.29-0.40x for Qwen3-8B.</p>
{_html_table(["domain", "traces", "peak ratio", "AUC ratio"], rows)}
{typical_text}
{_figures_html(section["figures"])}"""


def render_html_report(report: AnalysisReport, figures: dict[str, Path], *, title: str = "Memento compression report",
                       kv_section: dict[str, Any] | None = None) -> str:
    """The report as one HTML string (what `write_html_report` writes)."""
    summary = report.summary()
    tokenizer = summary.get("tokenizer")
    token_note = (f"tokens counted with <code>{_esc(tokenizer)}</code>" if tokenizer
                  else "no tokenizer (add <code>--tokenizer</code> for token counts)")
    skipped = f"; {summary['skipped']:,} bad rows skipped" if summary.get("skipped") else ""
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{_esc(title)}</title>
<style>{CSS}</style>
</head>
<body>
<h1>{_esc(title)}</h1>
<p class="meta">mementokit {_esc(_version())} · {len(report.traces):,} traces · {len(report.pairs):,} block-memento \
pairs · {token_note}{skipped}</p>
<h2>Where the traces come from</h2>
{_provenance_html(report)}
<h2>By domain</h2>
<p>Medians, with the 10th – 90th percentile below. Ratios are memento / block per block-memento pair (smaller is
more compression); blocks per trace and trace compression (block / memento size of the whole trace) are per trace.
The paper reports median ratios of 0.16 (math), 0.18 (code) and 0.23 (science) and about 6x trace compression.</p>
{summary_table_html(summary)}
<h2>Figures</h2>
{_figures_html(figures)}
{kv_section_html(kv_section)}
</body>
</html>
"""


def write_html_report(report: AnalysisReport, out_dir: str | os.PathLike, figures: dict[str, Path], *,
                      kv_section: dict[str, Any] | None = None) -> Path:
    """Write `out_dir/report.html` (one file: inline CSS, figures as base64 data URIs) and return its path."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / REPORT_FILE
    write_text_atomic(path, render_html_report(report, figures, kv_section=kv_section))
    return path


def write_report(report: AnalysisReport, out_dir: str | os.PathLike, *, source: str | None = None,
                 table_format: str = "parquet", plots: bool = True,
                 kv_section: dict[str, Any] | None = None) -> list[Path]:
    """The report folder of `memento analyze`: summary.json, traces.<parquet|csv>, and with `plots` the figures and
    report.html (with the KV section when given). Returns the files written, in that order."""
    from mementokit.analysis.analyze import write_trace_table

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    summary = report.summary() | ({"source": source} if source is not None else {})
    summary_path = out / "summary.json"
    write_json_atomic(summary_path, summary)
    table_path = out / f"traces.{table_format}"
    write_trace_table(report, table_path)
    written = [summary_path, table_path]
    if plots:
        from mementokit.analysis.plots import plot_all

        figures = plot_all(report, out)
        written += list(figures.values())
        if kv_section:
            written += list(kv_section["figures"].values())
        written.append(write_html_report(report, out, figures, kv_section=kv_section))
    return written
