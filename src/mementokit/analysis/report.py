"""One self-contained HTML report of an AnalysisReport: the per-domain table, the figures, where the rows came from.

    figures = plot_all(report, out_dir)
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

REPORT_FILE = "report.html"

FIGURE_CAPTIONS = {
    "figure3": "The paper's figure 3 by domain: blocks per trace, block size, memento size and the per-block "
    "compression ratio (dashed lines: medians).",
    "ratio_cdf": "Cumulative distribution of the per-block compression ratio (memento / block), by domain; "
    "characters solid, tokens dashed when a tokenizer was given.",
    "block_vs_summary_words": "Words in each memento against words in its block (log-log, at most 20,000 pairs "
    "shown; X marks each domain's median).",
}
IMAGE_TYPES = {".png": "image/png", ".svg": "image/svg+xml", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".gif": "image/gif"}

CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 2rem auto; max-width: 1200px;
       padding: 0 1rem; color: #222; line-height: 1.45; }
h1 { font-size: 1.6rem; margin-bottom: 0.2rem; }
h2 { font-size: 1.2rem; margin-top: 2rem; border-bottom: 1px solid #ddd; padding-bottom: 0.2rem; }
p.meta { color: #666; margin-top: 0; }
table { border-collapse: collapse; font-size: 0.88rem; width: 100%; }
th, td { padding: 0.35rem 0.55rem; border-bottom: 1px solid #e4e4e4; text-align: right; vertical-align: top; }
th { background: #f5f5f5; font-weight: 600; }
th:first-child, td:first-child { text-align: left; }
tr.overall td { font-weight: 600; border-top: 2px solid #bbb; }
td small { color: #777; display: block; font-size: 0.78rem; }
figure { margin: 1.5rem 0; }
figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { color: #555; font-size: 0.9rem; }
.note { background: #fafaf2; border-left: 4px solid #d8c84a; padding: 0.6rem 0.9rem; }
"""


def _esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _number(value: float | None, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if abs(value) >= 10:
        return f"{value:,.0f}"
    return f"{value:.{digits}f}"


def _cell(stats: dict[str, Any], digits: int = 3, spread: bool = True) -> str:
    """A median, with p10-p90 below it."""
    median = _number(stats.get("median"), digits)
    if not spread or stats.get("p10") is None:
        return f"<td>{median}</td>"
    return f"<td>{median}<small>{_number(stats['p10'], digits)} – {_number(stats['p90'], digits)}</small></td>"


def _invalid_cell(group: dict[str, Any]) -> str:
    problems = group.get("invalid_by_problem") or {}
    listed = "".join(f"<small>{_esc(name)}: {count:,}</small>" for name, count in problems.items())
    return f"<td>{group['invalid']:,}{listed}</td>"


def _compression_cell(ratio_stats: dict[str, Any]) -> str:
    # Per-trace compression = block / memento = 1 / ratio; the median of 1/x is 1 / the median of x.
    median = ratio_stats.get("median")
    return f"<td>{1.0 / median:.2f}x</td>" if median else "<td>-</td>"


def summary_table_html(summary: dict[str, Any]) -> str:
    """The per-domain table (plus the overall row) of `AnalysisReport.summary()` as an HTML <table>."""
    tokens = bool(summary.get("tokenizer"))
    headers = ["domain", "traces", "valid", "invalid (by problem)", "blocks per trace", "block chars", "memento chars",
               "block words", "memento words", "char ratio", "word ratio", "trace compression (chars)"]
    if tokens:
        headers += ["block tokens", "memento tokens", "token ratio", "trace compression (tokens)"]
    rows = []
    groups = list(summary["by_domain"].items()) + [("overall", summary["overall"])]
    for name, group in groups:
        pt, pb = group["per_trace"], group["per_block"]
        cells = [
            f"<td>{_esc(name)}</td>",
            f"<td>{group['traces']:,}</td>",
            f"<td>{group['valid']:,}</td>",
            _invalid_cell(group),
            _cell(pt["blocks"], 1),
            _cell(pb["block_chars"]),
            _cell(pb["summary_chars"]),
            _cell(pb["block_words"]),
            _cell(pb["summary_words"]),
            _cell(pb["char_ratio"]),
            _cell(pb["word_ratio"]),
            _compression_cell(pt["char_ratio"]),
        ]
        if tokens:
            compression = pt["token_compression"]["median"]
            cells += [_cell(pb["block_tokens"]), _cell(pb["summary_tokens"]), _cell(pb["token_ratio"]),
                      f"<td>{compression:.2f}x</td>" if compression else "<td>-</td>"]
        css = ' class="overall"' if name == "overall" and len(groups) > 1 else ""
        rows.append(f"<tr{css}>{''.join(cells)}</tr>")
    head = "".join(f"<th>{_esc(h)}</th>" for h in headers)
    return f'<table class="summary">\n<thead><tr>{head}</tr></thead>\n<tbody>\n' + "\n".join(rows) + "\n</tbody>\n</table>"


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
        more = f"<li>… and {len(p['real_sources']) - len(shown):,} more sources</li>" if len(p["real_sources"]) > len(shown) else ""
        parts.append(f"<p>Real traces by source:</p><ul>{items}{more}</ul>")
    return "\n".join(parts)


def _image_data_uri(path: Path) -> str:
    if not path.is_file():
        raise InputError("figure file not found", path=str(path))
    mime = IMAGE_TYPES.get(path.suffix.lower())
    if mime is None:
        raise InputError(f"cannot inline a '{path.suffix}' figure (expected one of {', '.join(IMAGE_TYPES)})", path=str(path))
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


def render_html_report(report: AnalysisReport, figures: dict[str, Path], *, title: str = "Memento compression report") -> str:
    """The report as one HTML string (what `write_html_report` writes)."""
    summary = report.summary()
    tokenizer = summary.get("tokenizer")
    token_note = f"tokens counted with <code>{_esc(tokenizer)}</code>" if tokenizer else "no tokenizer (add <code>--tokenizer</code> for token counts)"
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
<p class="meta">mementokit {_esc(_version())} · {len(report.traces):,} traces · {len(report.pairs):,} block-memento pairs · {token_note}{skipped}</p>
<h2>Where the traces come from</h2>
{_provenance_html(report)}
<h2>By domain</h2>
<p>Medians, with the 10th – 90th percentile below. Ratios are memento / block per block-memento pair (smaller is
more compression); blocks per trace and trace compression (block / memento size of the whole trace) are per trace.
The paper reports median ratios of 0.16 (math), 0.18 (code) and 0.23 (science) and about 6x trace compression.</p>
{summary_table_html(summary)}
<h2>Figures</h2>
{_figures_html(figures)}
</body>
</html>
"""


def write_html_report(report: AnalysisReport, out_dir: str | os.PathLike, figures: dict[str, Path]) -> Path:
    """Write `out_dir/report.html` (one file: inline CSS, figures as base64 data URIs) and return its path."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / REPORT_FILE
    path.write_text(render_html_report(report, figures), encoding="utf-8")
    return path
