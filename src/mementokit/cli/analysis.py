"""`memento analyze`, `render`, `compress` and `synth`: the OpenMementos analysis commands."""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Annotated

import typer

from mementokit.cli.console import progress_bar, stderr, stdout, table, write_json
from mementokit.cli.options import ConfigOpt, FieldOpt, InputArg, LimitOpt, SkipBadOpt, SplitOpt, field_map, open_traces
from mementokit.data import sample_path
from mementokit.errors import InputError

DATASET_NAME = "microsoft/OpenMementos"


def pick_record(source: str, index: int, **options):
    for record in open_traces(source, **options):
        if record.index == index:
            return record
    raise InputError(f"no trace at index {index}", path=source)


def _fmt(value, spec: str) -> str:
    """One format per column (so a column never mixes 9.0 and 11): spec is a format spec such as ",.0f"."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return format(value, spec)


def _groups(summary: dict) -> list[tuple[str, dict]]:
    return list(summary["by_domain"].items()) + [("overall", summary["overall"])]


def summary_table(summary: dict):
    """Medians per domain in eight columns: whole at 80 columns (the HTML report has everything)."""
    out = table("Medians by domain; ratio = memento / block",
                ["domain", "traces", "invalid", "blocks", "block\nchars", "memento\nchars", "char\nratio",
                 "word\nratio"])
    groups = _groups(summary)
    for i, (name, group) in enumerate(groups):
        pt, pb = group["per_trace"], group["per_block"]
        out.add_row(name, f"{group['traces']:,}", f"{group['invalid']:,}", _fmt(pt["blocks"]["median"], ".1f"),
                    _fmt(pb["block_chars"]["median"], ",.0f"), _fmt(pb["summary_chars"]["median"], ",.0f"),
                    _fmt(pb["char_ratio"]["median"], ".3f"), _fmt(pb["word_ratio"]["median"], ".3f"),
                    end_section=(i == len(groups) - 2), style="bold" if name == "overall" else None)
    return out


def token_table(summary: dict):
    """With a tokenizer: token medians per domain, a second table so each stays within 80 columns."""
    out = table(f"Token medians by domain ({summary['tokenizer']})",
                ["domain", "block\ntokens", "memento\ntokens", "token\nratio", "trace\ncompression"])
    groups = _groups(summary)
    for i, (name, group) in enumerate(groups):
        pt, pb = group["per_trace"], group["per_block"]
        compression = pt["token_compression"]["median"]
        out.add_row(name, _fmt(pb["block_tokens"]["median"], ",.0f"), _fmt(pb["summary_tokens"]["median"], ",.0f"),
                    _fmt(pb["token_ratio"]["median"], ".3f"), "-" if compression is None else f"{compression:.2f}x",
                    end_section=(i == len(groups) - 2), style="bold" if name == "overall" else None)
    return out


DatasetOpt = Annotated[str | None, typer.Option(
    "--dataset", metavar="NAME", show_default=False,
    help=f"Stream a hub dataset, e.g. {DATASET_NAME}.")]
ShuffleSeedOpt = Annotated[int | None, typer.Option(
    "--shuffle-seed", metavar="N", show_default=False,
    help="Fair sample: shuffle shards and rows with this seed.")]
ShuffleBufferOpt = Annotated[int, typer.Option(
    "--shuffle-buffer", metavar="N", min=1,
    help="Rows held for shuffling.")]
TokenizerOpt = Annotated[str | None, typer.Option(
    "--tokenizer", "-t", metavar="PATH", show_default=False,
    help="Hugging Face tokenizer (folder, tokenizer.json or hub name): token counts and a KV section in the "
         "report.")]
OutOpt = Annotated[Path | None, typer.Option(
    "--out", "-o", metavar="DIR", show_default=False,
    help="Report folder [default: ./memento-report, none with --json].")]
AsJsonOpt = Annotated[bool, typer.Option(
    "--json",
    help="Print one JSON summary on stdout; write files only with --out.")]
KeepLastOpt = Annotated[int, typer.Option(
    "--keep-last", metavar="K", min=0,
    help="Blocks kept for the compressed-size column.")]
WorkersOpt = Annotated[int | None, typer.Option(
    "--workers", metavar="N", min=1, show_default=False,
    help="Processes [default: every core].")]


def analyze(
    input: InputArg = None,
    dataset: DatasetOpt = None,
    config: ConfigOpt = "default",
    split: SplitOpt = "train",
    limit: LimitOpt = None,
    shuffle_seed: ShuffleSeedOpt = None,
    shuffle_buffer: ShuffleBufferOpt = 1_000,
    stratify: Annotated[bool, typer.Option("--stratify", help="Fair sample: interleave domains.")] = False,
    fields: FieldOpt = None,
    tokenizer: TokenizerOpt = None,
    out: OutOpt = None,
    as_json: AsJsonOpt = False,
    plots: Annotated[bool, typer.Option("--plots/--no-plots", help="Draw the figures and the HTML report.")] = True,
    table_format: Annotated[str, typer.Option("--table-format", help="Per-trace table: parquet or csv.")] = "parquet",
    keep_last: KeepLastOpt = 1,
    workers: WorkersOpt = None,
    strict: Annotated[bool, typer.Option("--strict", help="Stop at the first trace with a format problem.")] = False,
    skip_bad: SkipBadOpt = False,
    verbose: Annotated[bool, typer.Option("--verbose", help="Say how the input was read and measured.")] = False,
) -> None:
    """Measure compression (chars, words, tokens) per domain, with plots and an HTML report.

    With no INPUT it runs on the sample shipped with mementokit and writes ./memento-report/.

    Examples:

        memento analyze

        memento analyze --dataset microsoft/OpenMementos --limit 2000 --shuffle-seed 0 --tokenizer Qwen/Qwen3-8B

        memento analyze traces.jsonl --field response=cot --json
    """
    from mementokit.analysis.partitioned import analyze_source
    from mementokit.analysis.report import write_report
    from mementokit.io import ReadStats

    source = _source(input, dataset, table_format)
    read = dict(config=config, split=split, limit=limit, shuffle_seed=shuffle_seed, shuffle_buffer=shuffle_buffer,
                skip_bad=skip_bad)
    read_stats = ReadStats()
    with progress_bar(limit, "analysing") as advance:
        report = analyze_source(source, stratify=stratify, field_map=field_map(fields), stats=read_stats,
                                tokenizer=tokenizer, keep_last=keep_last, strict=strict, workers=workers,
                                progress=advance, **read)
    if verbose:
        stderr.print(f"input: {report.reader}", highlight=False)
    if len(report) == 0:
        raise InputError("no traces to analyse", path=source)
    out_dir = out if (out is not None or as_json) else Path("memento-report")
    written = []
    if out_dir is not None:
        traces = lambda: open_traces(source, fields=fields, stratify_by="domain" if stratify else None, **read)
        written = write_report(report, out_dir, source=source, table_format=table_format, plots=plots,
                               kv_section=_kv_section(traces, tokenizer, out_dir) if tokenizer and plots else None)
    summary = report.summary() | {"source": source}
    if as_json:
        write_json(summary)
        return
    _print_analysis(summary, read_stats, out_dir, written)


def _source(input: str | None, dataset: str | None, table_format: str) -> str:
    if input and dataset:
        raise InputError("give INPUT or --dataset, not both")
    if table_format not in ("parquet", "csv"):
        raise InputError(f"--table-format must be parquet or csv, got '{table_format}'")
    return dataset or input or str(sample_path())


def _kv_section(traces, tokenizer: str, out_dir: Path) -> dict:
    from mementokit.hf import load_hf_tokenizer
    from mementokit.kv.report import kv_report_section

    with stderr.status("simulating the KV cache for the report"):
        return kv_report_section(traces, load_hf_tokenizer(tokenizer), out_dir, tokenizer_name=tokenizer)


def _print_analysis(summary: dict, read_stats, out_dir: Path, written: list[Path]) -> None:
    stdout.print(summary_table(summary))
    if summary.get("tokenizer"):
        stdout.print(token_table(summary))
    if summary["skipped"]:
        stderr.print(f"[yellow]{read_stats.summary()}[/]", highlight=False)
        for example in read_stats.examples:
            stderr.print(f"  {example}", highlight=False)
    invalid = summary["overall"]["invalid_by_problem"]
    if invalid:
        stdout.print("Traces with format problems: " + ", ".join(f"{k} {v}" for k, v in invalid.items()),
                     highlight=False)
    stdout.print(f"Report written to [bold]{out_dir}/[/] ({', '.join(p.name for p in written)})", highlight=False)


WidthOpt = Annotated[int, typer.Option(
    "--chars", metavar="N", min=0,
    help="Characters shown of each block (0: all).")]
_TokenizerOpt = Annotated[str | None, typer.Option(
    "--tokenizer", "-t", metavar="PATH", show_default=False,
    help="Also show token counts.")]


def render(
    input: InputArg = None,
    index: Annotated[int, typer.Option("--index", metavar="N", help="Which trace (0-based).", min=0)] = 0,
    config: ConfigOpt = "default",
    split: SplitOpt = "train",
    fields: FieldOpt = None,
    width: WidthOpt = 600,
    tokenizer: _TokenizerOpt = None,
) -> None:
    """Show one trace in the terminal: each block beside its memento, with sizes and the ratio.

    Examples:

        memento render --index 0

        memento render traces.jsonl --index 3 --chars 0
    """
    from mementokit.analysis.render import render_trace

    record = pick_record(input or str(sample_path()), index, config=config, split=split, fields=fields)
    render_trace(stdout, record, max_chars=width, tokenizer=tokenizer)


_KeepLastOpt = Annotated[int, typer.Option(
    "--keep-last", metavar="K", min=0,
    help="Blocks kept (the newest K); every memento stays.")]
KeepDelimitersOpt = Annotated[bool, typer.Option(
    "--keep-delimiters",
    help="Keep the <|block_start|><|block_end|> pair of dropped blocks.")]
_TokenizerOpt2 = Annotated[str | None, typer.Option(
    "--tokenizer", "-t", metavar="PATH", show_default=False,
    help="Also report token counts.")]


def compress(
    input: InputArg = None,
    keep_last: _KeepLastOpt = 1,
    index: Annotated[int, typer.Option("--index", metavar="N", help="Which trace (0-based).", min=0)] = 0,
    keep_delimiters: KeepDelimitersOpt = False,
    config: ConfigOpt = "default",
    split: SplitOpt = "train",
    fields: FieldOpt = None,
    tokenizer: _TokenizerOpt2 = None,
) -> None:
    """Print a trace as the model sees it at the end: dropped blocks removed, mementos and answer kept.

    The compressed response goes to stdout, the before/after sizes to stderr.

    Example:

        memento compress --keep-last 1 > compressed.txt
    """
    from mementokit.format import compress_trace, parse_response

    record = pick_record(input or str(sample_path()), index, config=config, split=split, fields=fields)
    trace = parse_response(record.response)
    compressed = compress_trace(trace, keep_last, keep_delimiters=keep_delimiters)
    sys.stdout.write(compressed if compressed.endswith("\n") else compressed + "\n")
    before, after = len(record.response), len(compressed)
    line = (f"{record.origin}: {len(trace.blocks)} blocks, keep last {keep_last}: {before:,} -> {after:,} chars "
            f"({after / before:.1%})")
    if tokenizer:
        from mementokit.analysis.tokens import load_counting_tokenizer

        tok = load_counting_tokenizer(tokenizer, trace.markers)
        tb, ta = (len(e.ids) for e in tok.encode_batch([record.response, compressed], add_special_tokens=False))
        line += f"; {tb:,} -> {ta:,} tokens ({ta / tb:.1%})"
    stderr.print(line, highlight=False)


_OutOpt = Annotated[Path, typer.Option(
    "--out", "-o", metavar="FILE",
    help="Output JSONL file.")]


def synth(
    n: Annotated[int, typer.Option("--n", metavar="N", help="How many traces.", min=0)] = 1000,
    seed: Annotated[int, typer.Option("--seed", metavar="N", help="Random seed (same seed, same traces).")] = 0,
    out: _OutOpt = Path("synthetic.jsonl"),
) -> None:
    """Write synthetic OpenMementos-like traces (domains, block counts and sizes as the paper reports).

    Example:

        memento synth --n 10000 --seed 1 --out synthetic.jsonl
    """
    from mementokit.analysis.synth import write_synthetic_jsonl

    with progress_bar(n, "generating") as advance:
        written = write_synthetic_jsonl(out, n, seed=seed, progress=advance)
    stderr.print(f"wrote {written:,} synthetic traces to {out}", highlight=False)


def register(app: typer.Typer) -> None:
    app.command("analyze")(analyze)
    app.command("render")(render)
    app.command("compress")(compress)
    app.command("synth")(synth)
