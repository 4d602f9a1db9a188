"""`memento analyze`, `render`, `compress` and `synth`: the OpenMementos analysis commands."""

from __future__ import annotations

import json
import math
import sys
from importlib import resources
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich import box
from rich.table import Table

from mementokit.errors import InputError

from mementokit.cli.console import progress_bar, stderr, stdout

DATASET_NAME = "microsoft/OpenMementos"


def sample_path() -> Path:
    """The sample shipped inside the package: one real trace (microsoft/memento, MIT) + synthetic ones."""
    return Path(str(resources.files("mementokit") / "data" / "sample.jsonl"))


def parse_field_map(pairs: list[str] | None):
    """`--field response=cot` style overrides into a FieldMap (None: the defaults)."""
    from mementokit.io import FieldMap

    return FieldMap().with_overrides(pairs) if pairs else None


# Options shared by every command that reads traces.
InputArg = Annotated[Optional[str], typer.Argument(help="JSONL / JSON / Parquet file, save_to_disk or hub-layout folder, or a hub dataset name.", show_default=False)]
ConfigOpt = Annotated[str, typer.Option("--config", help="Dataset config: default or full.")]
SplitOpt = Annotated[str, typer.Option("--split", help="Dataset split.")]
FieldOpt = Annotated[Optional[list[str]], typer.Option("--field", help="Map a field: OURS=THEIRS, e.g. response=cot (repeatable).")]
SkipBadOpt = Annotated[bool, typer.Option("--skip-bad", help="Skip bad rows (counted and reported) instead of stopping.")]


def open_records(source: str, *, config: str = "default", split: str = "train", limit: int | None = None,
                 shuffle_seed: int | None = None, shuffle_buffer: int = 1_000, stratify: bool = False,
                 fields: list[str] | None = None, skip_bad: bool = False, stats=None):
    from mementokit.io import iter_traces

    return iter_traces(
        source,
        config=config,
        split=split,
        limit=limit,
        shuffle_seed=shuffle_seed,
        shuffle_buffer=shuffle_buffer,
        stratify_by="domain" if stratify else None,
        field_map=parse_field_map(fields),
        skip_bad=skip_bad,
        stats=stats,
    )


def pick_record(source: str, index: int, **options):
    for record in open_records(source, **options):
        if record.index == index:
            return record
    raise InputError(f"no trace at index {index}", path=source)


def _fmt(value, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, float) and abs(value) < 10:
        return f"{value:.{digits}f}"
    return f"{value:,.0f}"


def summary_table(summary: dict) -> Table:
    """Medians per domain, narrow enough for an 80-column terminal (the HTML report has everything)."""
    has_tokens = bool(summary.get("tokenizer"))
    table = Table(title="Medians by domain; ratio = memento / block", title_justify="left", box=box.SIMPLE_HEAD, padding=(0, 1))
    columns = ["domain", "traces", "invalid", "blocks", "block\nchars", "memento\nchars", "char\nratio", "word\nratio"]
    if has_tokens:
        columns += ["block\ntokens", "memento\ntokens", "token\nratio", "trace\ncompr."]
    for col in columns:
        table.add_column(col, justify="left" if col == "domain" else "right", no_wrap=True)
    groups = list(summary["by_domain"].items()) + [("overall", summary["overall"])]
    for i, (name, group) in enumerate(groups):
        pt, pb = group["per_trace"], group["per_block"]
        row = [
            name,
            f"{group['traces']:,}",
            f"{group['invalid']:,}",
            "-" if pt["blocks"]["median"] is None else f"{pt['blocks']['median']:.1f}",
            _fmt(pb["block_chars"]["median"]),
            _fmt(pb["summary_chars"]["median"]),
            _fmt(pb["char_ratio"]["median"]),
            _fmt(pb["word_ratio"]["median"]),
        ]
        if has_tokens:
            row += [_fmt(pb["block_tokens"]["median"]), _fmt(pb["summary_tokens"]["median"]), _fmt(pb["token_ratio"]["median"]),
                    _fmt(pt["token_compression"]["median"], 2) + "x"]
        table.add_row(*row, end_section=(i == len(groups) - 2), style="bold" if name == "overall" else None)
    return table


def register(app: typer.Typer) -> None:
    @app.command()
    def analyze(
        input: InputArg = None,
        dataset: Annotated[Optional[str], typer.Option("--dataset", help=f"Stream a hub dataset, e.g. {DATASET_NAME}.")] = None,
        config: ConfigOpt = "default",
        split: SplitOpt = "train",
        limit: Annotated[Optional[int], typer.Option("--limit", help="Analyse at most N traces.")] = None,
        shuffle_seed: Annotated[Optional[int], typer.Option("--shuffle-seed", help="Fair sample: shuffle shards and rows with this seed.")] = None,
        shuffle_buffer: Annotated[int, typer.Option("--shuffle-buffer", help="Rows held for shuffling.")] = 1_000,
        stratify: Annotated[bool, typer.Option("--stratify", help="Fair sample: interleave domains.")] = False,
        fields: FieldOpt = None,
        tokenizer: Annotated[Optional[str], typer.Option("--tokenizer", help="Hugging Face tokenizer (name, folder or tokenizer.json) for token counts.")] = None,
        out: Annotated[Optional[Path], typer.Option("--out", help="Report folder [default: ./memento-report].")] = None,
        as_json: Annotated[bool, typer.Option("--json", help="Print one JSON summary on stdout; write files only with --out.")] = False,
        plots: Annotated[bool, typer.Option("--plots/--no-plots", help="Draw the figures and the HTML report.")] = True,
        table_format: Annotated[str, typer.Option("--table-format", help="Per-trace table: parquet or csv.")] = "parquet",
        keep_last: Annotated[int, typer.Option("--keep-last", help="Blocks kept for the compressed-size column.")] = 1,
        workers: Annotated[Optional[int], typer.Option("--workers", help="Processes [default: every core].")] = None,
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
        from mementokit.analysis.analyze import write_trace_table
        from mementokit.analysis.partitioned import analyze_source
        from mementokit.io import ReadStats

        if input and dataset:
            raise InputError("give INPUT or --dataset, not both")
        source = dataset or input or str(sample_path())
        if table_format not in ("parquet", "csv"):
            raise InputError(f"--table-format must be parquet or csv, got '{table_format}'")
        read_stats = ReadStats()
        with progress_bar(limit, "analysing") as advance:
            report = analyze_source(source, config=config, split=split, limit=limit, shuffle_seed=shuffle_seed,
                                    shuffle_buffer=shuffle_buffer, stratify=stratify, field_map=parse_field_map(fields),
                                    skip_bad=skip_bad, stats=read_stats, tokenizer=tokenizer, keep_last=keep_last,
                                    strict=strict, workers=workers, progress=advance)
        if verbose:
            stderr.print(f"input: {report.reader}", highlight=False)
        if len(report) == 0:
            raise InputError("no traces to analyse", path=source)
        summary = report.summary()
        summary["source"] = source

        out_dir = out if (out is not None or not as_json) else None
        if out_dir is None and not as_json:
            out_dir = Path("memento-report")
        written: list[Path] = []
        if out_dir is not None:
            out_dir.mkdir(parents=True, exist_ok=True)
            summary_path = out_dir / "summary.json"
            summary_path.write_text(json.dumps(summary, indent=2) + "\n")
            table_path = out_dir / f"traces.{table_format}"
            write_trace_table(report, table_path)
            written += [summary_path, table_path]
            if plots:
                from mementokit.analysis.plots import plot_all
                from mementokit.analysis.report import write_html_report

                figures = plot_all(report, out_dir)
                written += list(figures.values())
                written.append(write_html_report(report, out_dir, figures))
        if as_json:
            sys.stdout.write(json.dumps(summary) + "\n")
            return
        stdout.print(summary_table(summary))
        if report.skipped:
            stderr.print(f"[yellow]{read_stats.summary()}[/]", highlight=False)
            for example in read_stats.examples:
                stderr.print(f"  {example}", highlight=False)
        invalid = summary["overall"]["invalid_by_problem"]
        if invalid:
            stdout.print("Traces with format problems: " + ", ".join(f"{k} {v}" for k, v in invalid.items()))
        stdout.print(f"Report written to [bold]{out_dir}/[/] ({', '.join(p.name for p in written)})")

    @app.command()
    def render(
        input: InputArg = None,
        index: Annotated[int, typer.Option("--index", help="Which trace (0-based).")] = 0,
        config: ConfigOpt = "default",
        split: SplitOpt = "train",
        fields: FieldOpt = None,
        width: Annotated[int, typer.Option("--chars", help="Characters shown of each block (0: all).")] = 600,
        tokenizer: Annotated[Optional[str], typer.Option("--tokenizer", help="Also show token counts.")] = None,
    ) -> None:
        """Show one trace in the terminal: each block beside its memento, with sizes and the ratio.

        Example:

            memento render --index 0

            memento render traces.jsonl --index 3 --chars 0
        """
        from mementokit.analysis.render import render_trace

        record = pick_record(input or str(sample_path()), index, config=config, split=split, fields=fields)
        render_trace(stdout, record, max_chars=width, tokenizer=tokenizer)

    @app.command()
    def compress(
        input: InputArg = None,
        keep_last: Annotated[int, typer.Option("--keep-last", help="Blocks kept (the newest K); every memento stays.")] = 1,
        index: Annotated[int, typer.Option("--index", help="Which trace (0-based).")] = 0,
        keep_delimiters: Annotated[bool, typer.Option("--keep-delimiters", help="Keep the <|block_start|><|block_end|> pair of dropped blocks.")] = False,
        config: ConfigOpt = "default",
        split: SplitOpt = "train",
        fields: FieldOpt = None,
        tokenizer: Annotated[Optional[str], typer.Option("--tokenizer", help="Also report token counts.")] = None,
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
        sys.stdout.write(compressed)
        if not compressed.endswith("\n"):
            sys.stdout.write("\n")
        before, after = len(record.response), len(compressed)
        line = f"{record.origin}: {len(trace.blocks)} blocks, keep last {keep_last}: {before:,} -> {after:,} chars ({after / before:.1%})"
        if tokenizer:
            from mementokit.analysis.tokens import load_tokenizer

            tok = load_tokenizer(tokenizer, trace.markers)
            tb, ta = (len(e.ids) for e in tok.encode_batch([record.response, compressed], add_special_tokens=False))
            line += f"; {tb:,} -> {ta:,} tokens ({ta / tb:.1%})"
        stderr.print(line, highlight=False)

    @app.command()
    def synth(
        n: Annotated[int, typer.Option("--n", help="How many traces.")] = 1000,
        seed: Annotated[int, typer.Option("--seed", help="Random seed (same seed, same traces).")] = 0,
        out: Annotated[Path, typer.Option("--out", help="Output JSONL file.")] = Path("synthetic.jsonl"),
    ) -> None:
        """Write synthetic OpenMementos-like traces (domains, block counts and sizes as the paper reports).

        Example:

            memento synth --n 10000 --seed 1 --out synthetic.jsonl
        """
        from mementokit.analysis.synth import write_synthetic_jsonl

        with progress_bar(n, "generating") as advance:
            written = write_synthetic_jsonl(out, n, seed=seed, progress=advance)
        stderr.print(f"wrote {written:,} synthetic traces to {out}")


