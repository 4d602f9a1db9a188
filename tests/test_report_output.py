"""Figures and the HTML report, drawn from real AnalysisReports (analyze_traces over synthetic + real traces)."""

from __future__ import annotations

import base64
import re
from pathlib import Path

import numpy as np
import pytest
from matplotlib import image as mpimg

from mementokit.analysis.analyze import analyze_traces
from mementokit.analysis.plots import (
    FIGURE_FILES,
    block_vs_summary_points,
    plot_all,
    plot_block_vs_summary_words,
    plot_figure3,
    plot_ratio_cdf,
)
from mementokit.analysis.report import REPORT_FILE, provenance, write_html_report
from mementokit.analysis.synth import SAMPLE_REAL_SOURCE, real_sample_row, synthetic_rows
from mementokit.errors import InputError
from mementokit.format import build_response
from mementokit.records import TraceRecord

DATA = Path(__file__).parent / "data"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
N_SYNTHETIC = 120


def record(response: str, domain: str, origin: str, index: int, source: str | None = None) -> TraceRecord:
    return TraceRecord(None, response, domain, source, origin=origin, index=index)


def as_inputs(rows) -> list[TraceRecord]:
    return [record(r["response"], r["domain"], f"test:{i}", i, r["source"]) for i, r in enumerate(rows)]


@pytest.fixture(scope="module")
def report():
    rows = [real_sample_row(DATA / "memento_trace_aime2025_p5.json"), *synthetic_rows(N_SYNTHETIC, seed=7)]
    return analyze_traces(as_inputs(rows), workers=1)


@pytest.fixture(scope="module")
def written(report, tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    figures = plot_all(report, out)
    html_path = write_html_report(report, out, figures)
    return out, figures, html_path


def assert_valid_png(path: Path) -> np.ndarray:
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE
    pixels = mpimg.imread(path)  # matplotlib reads it back
    assert pixels.ndim == 3 and pixels.shape[2] in (3, 4)
    assert pixels.shape[0] >= 300 and pixels.shape[1] >= 300
    assert np.ptp(pixels[..., :3]) > 0, "not a blank image"
    return pixels


# -- figures ----------------------------------------------------------------------------------------------


def test_plot_all_writes_three_named_pngs_into_the_folder(written):
    out, figures, _ = written
    assert set(figures) == set(FIGURE_FILES)
    for name, path in figures.items():
        assert path == out / FIGURE_FILES[name]
        assert_valid_png(path)


@pytest.mark.parametrize("plot", [plot_figure3, plot_ratio_cdf, plot_block_vs_summary_words])
def test_each_plot_writes_a_valid_png_where_asked(report, tmp_path, plot):
    path = tmp_path / "nested" / "figure.png"
    assert plot(report, path) == path
    assert_valid_png(path)


def test_figure3_is_a_wide_2x2_figure(written):
    _, figures, _ = written
    height, width = mpimg.imread(figures["figure3"]).shape[:2]
    assert width > height


def test_scatter_subsamples_to_the_limit_keeping_every_domain(report):
    points = block_vs_summary_points(report, max_points=200)
    assert sum(x.size for x, _ in points.values()) <= 200
    assert set(points) == {"math", "code", "science"} and all(x.size > 0 for x, _ in points.values())
    for x, y in points.values():
        assert (x > 0).all() and (y > 0).all()


def test_scatter_keeps_every_pair_under_the_limit(report):
    points = block_vs_summary_points(report)
    assert sum(x.size for x, _ in points.values()) == len(report.pairs)


def test_scatter_subsample_is_the_same_for_the_same_seed(report):
    first, second = block_vs_summary_points(report, max_points=300), block_vs_summary_points(report, max_points=300)
    assert all(
        np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1]) for a, b in zip(first.values(), second.values())
    )


def test_plots_survive_a_domain_without_any_block_memento_pair(tmp_path):
    rows = list(synthetic_rows(6, seed=1))
    inputs = as_inputs(rows) + [record("<think>no blocks here</think>42", "empty", "x", 99, "handmade")]
    report = analyze_traces(inputs, workers=1)
    figures = plot_all(report, tmp_path)
    for path in figures.values():
        assert_valid_png(path)
    html = write_html_report(report, tmp_path, figures).read_text(encoding="utf-8")
    assert "<td>empty</td>" in html


def test_plots_survive_a_report_with_no_pairs_at_all(tmp_path):
    report = analyze_traces([record("<think>just thinking</think>", "math", "x", 0)], workers=1)
    for path in plot_all(report, tmp_path).values():
        assert_valid_png(path)


def test_token_ratios_are_drawn_and_tabulated_when_a_tokenizer_was_used(tmp_path):
    from helpers_tokenizer import build_tiny_tokenizer

    build_tiny_tokenizer(tmp_path)
    report = analyze_traces(
        as_inputs(list(synthetic_rows(9, seed=2))), tokenizer=str(tmp_path / "tiny-tokenizer"), workers=1
    )
    assert "token_ratio" in report.pairs.columns
    figures = plot_all(report, tmp_path / "out")
    assert_valid_png(figures["ratio_cdf"])
    html = write_html_report(report, tmp_path / "out", figures).read_text(encoding="utf-8")
    assert "<th>token ratio</th>" in html and "<th>trace compression (tokens)</th>" in html


# -- HTML -----------------------------------------------------------------------------------------------------


def test_the_report_is_one_html_file_named_report_html(written):
    out, _, html_path = written
    assert html_path == out / REPORT_FILE
    html = html_path.read_text(encoding="utf-8")
    assert html.startswith("<!DOCTYPE html>") and html.rstrip().endswith("</html>")


def test_the_report_inlines_every_figure_as_a_base64_png(written):
    _, figures, html_path = written
    html = html_path.read_text(encoding="utf-8")
    inlined = re.findall(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)"', html)
    assert len(inlined) == len(figures)
    assert sorted(base64.b64decode(b) for b in inlined) == sorted(p.read_bytes() for p in figures.values())


def test_the_report_references_nothing_outside_itself(written):
    html = written[2].read_text(encoding="utf-8")
    assert not re.search(r"""(?:src|href)\s*=\s*["']?\s*https?://""", html, re.I)
    assert "http://" not in html and "https://" not in html
    assert "<link" not in html and "<script" not in html and "@import" not in html
    srcs = re.findall(r'src="([^"]{0,30})', html)
    assert srcs and all(s.startswith("data:") for s in srcs)


def test_the_report_table_has_a_row_per_domain_and_overall_with_the_summary_numbers(report, written):
    html = written[2].read_text(encoding="utf-8")
    summary = report.summary()
    assert '<table class="summary">' in html
    for header in (
        "traces",
        "valid",
        "invalid (by problem)",
        "blocks per trace",
        "block chars",
        "memento chars",
        "block words",
        "memento words",
        "char ratio",
        "word ratio",
    ):
        assert f"<th>{header}</th>" in html
    for name, group in [*summary["by_domain"].items(), ("overall", summary["overall"])]:
        ratio = group["per_block"]["char_ratio"]
        row = re.search(
            rf"<tr[^>]*><td>{name}</td><td>{group['traces']:,}</td><td>{group['valid']:,}</td>.*?</tr>", html
        )
        assert row, name
        # the ratios sit in the compression table (three narrow tables fit an 800-pixel window): the domain's row
        # there starts with the char ratio, median with p10 - p90 under it
        assert re.search(
            rf"<tr[^>]*><td>{name}</td><td>{ratio['median']:.3f}<small>{ratio['p10']:.3f} – "
            rf"{ratio['p90']:.3f}</small></td>",
            html,
        ), name
    assert summary["overall"]["traces"] == N_SYNTHETIC + 1


def test_the_report_says_how_many_traces_are_synthetic_and_where_the_real_ones_come_from(report, written):
    html = written[2].read_text(encoding="utf-8")
    assert provenance(report) == {
        "traces": N_SYNTHETIC + 1,
        "synthetic": N_SYNTHETIC,
        "real": 1,
        "real_sources": {SAMPLE_REAL_SOURCE: 1},
    }
    assert f"<b>{N_SYNTHETIC} synthetic</b>" in html and "<b>1 real</b>" in html
    assert SAMPLE_REAL_SOURCE in html


def test_the_report_lists_invalid_traces_by_problem(tmp_path):
    broken = build_response(["a block"], ["its memento"], "")[: -len("</think>")]  # no </think>
    report = analyze_traces([record(broken, "math", "x", 0), *as_inputs(list(synthetic_rows(2, seed=0)))], workers=1)
    html = write_html_report(report, tmp_path, {}).read_text(encoding="utf-8")
    assert "missing_think_end: 1" in html


def test_text_from_the_data_is_escaped(tmp_path):
    evil = '<img src="https://example.com/x.png">'
    rows = list(synthetic_rows(2, seed=0))
    report = analyze_traces([record(r["response"], evil, "x", i, evil) for i, r in enumerate(rows)], workers=1)
    html = write_html_report(report, tmp_path, {}).read_text(encoding="utf-8")
    assert evil not in html
    assert "&lt;img src=&quot;https://example.com/x.png&quot;&gt;" in html


def test_a_missing_figure_file_is_an_input_error_naming_it(report, tmp_path):
    with pytest.raises(InputError, match="nowhere.png"):
        write_html_report(report, tmp_path, {"figure3": tmp_path / "nowhere.png"})
