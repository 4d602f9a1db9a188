"""`memento pipeline`: turn raw chains of thought into Memento training data with any OpenAI-compatible LLM.

A thin layer over mementokit.pipeline: `run` chains every stage with the resumable runner (or datatrove's
executors), each stage command runs one entry of `pipeline.stages.STAGES` over a JSONL file, `report` prints the
report of an output folder, `export` writes it as an OpenMementos-layout dataset. Every option is declared once in
OPTIONS below; each command names the ones it takes.
"""

from __future__ import annotations

import inspect
import json
import os
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from mementokit.cli.console import stderr, stdout
from mementokit.errors import ConfigError, InputError

pipeline_app = typer.Typer(
    name="pipeline",
    help="CoT-to-Memento data pipeline (select, split, score, segment, summarize, assemble, export) with any "
    "OpenAI-compatible LLM.\n\nExamples:\n\n"
    "memento pipeline run tests/data/raw_cot_openthoughts3.jsonl --out out/ --model my-model --dry-run\n\n"
    "memento pipeline run traces.jsonl --out out/ --model my-model --base-url http://localhost:8000/v1",
    no_args_is_help=True,
    rich_markup_mode="rich",
)

# ------------------------------------------------------------------------------------------ options, once


def _opt(name: str, kind: Any, default: Any, *flags: str, **kw: Any) -> inspect.Parameter:
    annotation = Annotated[kind, typer.Option(*(flags or (f"--{name.replace('_', '-')}",)), **kw)]
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=annotation)


def _arg(name: str, kind: Any, help: str) -> inspect.Parameter:
    annotation = Annotated[kind, typer.Argument(help=help)]
    return inspect.Parameter(name, inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=annotation)


OPTIONAL_INT, OPTIONAL_STR, OPTIONAL_PATH = Optional[int], Optional[str], Optional[Path]  # noqa: UP045 - typer
OPTIONAL_LIST = Optional[list[str]]  # noqa: UP045 - typer reads these at runtime
OPTIONS = {
    p.name: p
    for p in [
        _opt("out", Path, ..., "--out", help="Output file (stage commands) or folder (run)."),
        _opt("model", OPTIONAL_STR, None, help="Model name the endpoint serves (default: MEMENTO_PIPELINE_MODEL)."),
        _opt("base_url", OPTIONAL_STR, None, help="OpenAI-compatible endpoint (default: OPENAI_BASE_URL)."),
        _opt("api_key", OPTIONAL_STR, None, help="API key (default: OPENAI_API_KEY)."),
        _opt("concurrency", int, 16, min=1, help="LLM calls in flight at once (per task)."),
        _opt("no_cache", bool, False, help="Do not use the response cache (default: on, OUT/cache for run)."),
        _opt(
            "cache_dir",
            OPTIONAL_PATH,
            None,
            help="Response cache folder (default: OUT/cache for run, none for stages).",
        ),
        _opt("timeout", float, 300.0, min=1.0, help="Seconds per LLM call."),
        _opt("max_retries", int, 6, min=0, help="Retries per call (429, 5xx, timeouts, malformed replies)."),
        _opt("abort_after", int, 8, min=0, help="Stop when the first N attempts all fail alike (401, 404, refused)."),
        _opt("temperature", float, 0.0, min=0.0, help="Sampling temperature of the LLM calls (0: greedy)."),
        _opt("tokenizer", str, "estimate", help="tokenizer.json / folder, or 'estimate' (chars/4). Never downloads."),
        _opt("traces_in_flight", int, 4, min=1, help="Traces in flight at once (per task)."),
        _opt("limit", OPTIONAL_INT, None, min=0, help="Traces of this shard to consider."),
        _opt("shard", str, "0/1", help="i/N: this task's share of the input, or 'env' (MEMENTO_SHARD, Slurm array)."),
        _opt("min_sentence_tokens", int, 5, min=0, help="Fragments shorter than this merge."),
        _opt("min_block_tokens", int, 200, min=0, help="Segmentation: every block at least this many tokens."),
        _opt("max_block_tokens", OPTIONAL_INT, None, min=1, help="Segmentation: no block over this many tokens."),
        _opt("variance_penalty", float, 0.5, min=0.0, help="Weight of the block-size std/mean in the objective."),
        _opt("window", int, 32, min=1, help="Boundaries per scoring call."),
        _opt("second_window", OPTIONAL_INT, None, min=1, help="Second scoring pass with this (coprime) window."),
        _opt("rounds", int, 2, min=1, help="Judge rounds per block at most."),
        _opt("pass_score", float, 8.0, min=0.0, max=10.0, help="Judge score (0-10) a memento needs to pass."),
        _opt("drop_cjk", bool, False, help="Skip traces with CJK characters."),
        _opt("min_chars", int, 0, min=0, help="Skip traces with fewer characters of reasoning."),
        _opt("max_chars", OPTIONAL_INT, None, min=1, help="Skip traces with more characters of reasoning."),
        _opt("allow_incomplete", bool, False, help="Keep traces without a complete <think>...</think>."),
        _opt("stratify_by", OPTIONAL_STR, None, help="Comma-separated fields, e.g. domain,source."),
        _opt("per_stratum", OPTIONAL_INT, None, min=1, help="Rows sampled per stratum (seeded)."),
        _opt("seed", int, 0, help="Seed of the per-stratum sampling."),
        _opt("field", OPTIONAL_LIST, None, "--field", help="NAME=COLUMN, e.g. response=full_cot (repeatable)."),
        _opt("price_prompt", float, 0.0, min=0.0, help="USD per million prompt tokens (cost display)."),
        _opt("price_completion", float, 0.0, min=0.0, help="USD per million completion tokens."),
        _opt("dataset_config", str, "default", "--config", help="Dataset config (hub ids / hub-layout folders)."),
        _opt("dataset_split", str, "train", "--split", help="Dataset split."),
        _opt("skip_bad", bool, False, help="Skip (and count) input rows that cannot be read, instead of stopping."),
        _opt("retry_failed", bool, False, help="Also retry traces recorded as failing for good."),
        _opt("dry_run", bool, False, help="Estimate calls and tokens; call nothing."),
        _opt("log_every", float, 30.0, min=0.0, help="Seconds between progress lines when stderr is not a terminal."),
        _opt("executor", OPTIONAL_STR, None, help="Run on datatrove: local | slurm | ray (extra 'scale')."),
        _opt("tasks", int, 1, min=1, help="With --executor: shards (datatrove tasks)."),
        _opt("workers", int, 1, min=1, help="With --executor: tasks running at once."),
        _opt("partition", OPTIONAL_STR, None, help="With --executor slurm: the partition."),
        _opt("time", str, "24:00:00", help="With --executor slurm: time limit per task."),
        _opt("columns", str, "all", "--config", help="Columns to keep: all | default | full."),
        _opt("to", Path, ..., "--to", help="Dataset folder to write (data/, full/, README.md)."),
        _opt("rows_per_file", int, 50_000, min=1, help="Rows per parquet file."),
        _opt("json_out", bool, False, "--json", help="Print one JSON object on stdout."),
    ]
}
LLM = "model base_url api_key concurrency no_cache cache_dir timeout max_retries abort_after temperature"
SEGMENT = "min_block_tokens max_block_tokens variance_penalty"
SELECT = "drop_cjk min_chars max_chars"


def _command(name: str, input_help: str, names: str):
    """Register a command taking INPUT (or OUT_DIR) and the OPTIONS named (space-separated), as keyword arguments."""
    first = "out_dir" if name in ("report", "export") else "input"
    kind = Path if first == "out_dir" else str

    def register(fn):
        params = [_arg(first, kind, input_help)] + [OPTIONS[n] for n in names.split()]
        fn.__signature__ = inspect.Signature(params)
        return pipeline_app.command(name)(fn)

    return register


# ------------------------------------------------------------------------------------------ building configs


def _llm_config(kw: dict[str, Any], default_cache: Path | None):
    from mementokit.pipeline.client import LLMConfig

    model = kw["model"] or os.environ.get("MEMENTO_PIPELINE_MODEL")
    if not model:
        raise ConfigError("no model: pass --model (the name the endpoint serves)")
    cache = None if kw["no_cache"] else (kw["cache_dir"] or default_cache)
    return LLMConfig(
        model=model,
        base_url=kw["base_url"],
        api_key=kw["api_key"],
        max_concurrency=kw["concurrency"],
        cache_dir=str(cache) if cache else None,
        timeout_s=kw["timeout"],
        max_retries=kw["max_retries"],
        temperature=kw["temperature"],
        abort_after=kw["abort_after"],
    )


def _config(kw: dict[str, Any], default_cache: Path | None = None, dry_run: bool = False):
    """A PipelineConfig from whichever options the command took (the others keep their defaults)."""
    from mementokit.pipeline.client import LLMConfig
    from mementokit.pipeline.config import PipelineConfig, parse_shard
    from mementokit.pipeline.score import ScoreConfig
    from mementokit.pipeline.select import SelectConfig
    from mementokit.pipeline.summarize import SummarizeConfig

    get = lambda name: kw.get(name, OPTIONS[name].default)
    llm = (
        LLMConfig(model=kw.get("model") or "dry-run")
        if dry_run or "model" not in kw
        else _llm_config(kw, default_cache)
    )
    return PipelineConfig(
        llm=llm,
        score=ScoreConfig(window=get("window"), second_window=get("second_window")),
        summarize=SummarizeConfig(rounds=get("rounds"), pass_score=get("pass_score")),
        select=SelectConfig(drop_cjk=get("drop_cjk"), min_chars=get("min_chars"), max_chars=get("max_chars")),
        min_sentence_tokens=get("min_sentence_tokens"),
        min_block_tokens=get("min_block_tokens"),
        max_block_tokens=get("max_block_tokens"),
        variance_penalty=get("variance_penalty"),
        workers=get("traces_in_flight"),
        limit=get("limit"),
        shard=parse_shard(get("shard")),
        price_prompt_per_mtok=get("price_prompt"),
        price_completion_per_mtok=get("price_completion"),
        retry_failed=get("retry_failed"),
        skip_bad=get("skip_bad"),
    )


def _done(json_out: bool, summary: dict[str, Any], text: str) -> None:
    if json_out:
        print(json.dumps(summary, ensure_ascii=False))
    else:
        stdout.print(text, highlight=False)


# ------------------------------------------------------------------------------------------ run


class _Progress:
    """A progress bar on a terminal; otherwise a log line every --log-every seconds (and one at the end)."""

    def __init__(self, cfg, total: int | None, every_s: float):
        from mementokit.pipeline.runner import LogLines

        self.lines = None if stderr.is_terminal else LogLines(cfg, every_s)
        self.cfg, self.total, self.bar = cfg, total, None

    def __enter__(self):
        if self.lines is None:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self.bar = Progress(
                TextColumn("pipeline"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                TextColumn("{task.fields[stats]}"),
                console=stderr,
            )
            self.bar.__enter__()
            self.task = self.bar.add_task("run", total=self.total, stats="")
        return self

    def __exit__(self, *exc):
        if self.bar is not None:
            self.bar.__exit__(*exc)
        elif self.lines is not None:
            self.lines.final()

    def __call__(self, state, client) -> None:
        from mementokit.pipeline.report import cost_of, progress_line

        if self.lines is not None:
            return self.lines(state, client)
        cost = cost_of(client.usage, self.cfg.price_prompt_per_mtok, self.cfg.price_completion_per_mtok)
        stats = progress_line(state, client.usage, client.in_flight, cost)
        self.bar.update(self.task, completed=state.done + state.failed, stats=stats)


def _closing(report: dict[str, Any], out: Path) -> str:
    run, u = report["this_run"], report["this_run"]["llm"]
    return (
        f"done {run['done']}, failed {run['failed']}, skipped (finished before) {run['skipped_finished']}, "
        f"skipped (failing for good; --retry-failed) {run.get('skipped_failed', 0)} in {run['seconds']} s "
        f"({run['traces_per_min']} traces/min), bad input rows skipped {run.get('bad_rows', 0)}\n"
        f"this run: {u['requests']} requests ({u['retries']} retries, {u['reasks']} re-asks, {u['cached']} cached), "
        f"{u['prompt_tokens']:,} prompt + {u['completion_tokens']:,} completion tokens, ${run['cost']:.4f}\n"
        f"all of {out}: {report['traces']} traces, {report['failed_traces']} failed {report['failures_by_stage']}, "
        f"median blocks {report['median_blocks_per_trace']}, judge pass first/final "
        f"{report['judge_pass_rate_first_round']}/{report['judge_pass_rate_final']}, prompt tokens/trace "
        f"{report['prompt_tokens_per_trace']}, {report['usage']['requests']} requests, ${report['cost']:.4f} in all"
    )


def _execute(input: str, kw: dict[str, Any], cfg, count_tokens) -> dict[str, Any]:
    """The run itself: in this process, or as datatrove tasks."""
    from mementokit.pipeline.runner import run_pipeline
    from mementokit.pipeline.select import read_traces

    read = {"config": kw["dataset_config"], "split": kw["dataset_split"], "fields": kw["field"] or ()}
    if kw["executor"]:
        from mementokit.pipeline.scale import ExecutorOptions, StepSpec, run_with_executor

        options = ExecutorOptions(
            executor=kw["executor"],
            tasks=kw["tasks"],
            workers=kw["workers"],
            partition=kw["partition"],
            time=kw["time"],
        )
        spec = StepSpec(input, str(kw["out"]), cfg, kw["tokenizer"], read, kw["log_every"])
        return run_with_executor(spec, options)
    from mementokit.io.stats import ReadStats

    stats = ReadStats()
    rows = read_traces(input, skip_bad=cfg.skip_bad, stats=stats, **read)
    with _Progress(cfg, kw["limit"], kw["log_every"]) as progress:
        return run_pipeline(rows, kw["out"], cfg, count_tokens=count_tokens, on_progress=progress, input_stats=stats)


@_command(
    "run",
    "Raw traces: JSONL / Parquet file, folder, or hub id.",
    f"out {LLM} traces_in_flight limit shard tokenizer min_sentence_tokens {SEGMENT} window second_window rounds "
    f"pass_score {SELECT} field price_prompt price_completion dataset_config dataset_split skip_bad retry_failed "
    "log_every executor tasks workers partition time dry_run json_out",
)
def run_command(input: str, **kw: Any) -> None:
    """Run every stage over INPUT, resumably: a rerun skips finished traces and retries failed ones.

    Exits 1 when no trace of this run succeeded. Examples:

      memento pipeline run traces.jsonl --out out/ --model m \\
        --base-url http://localhost:8000/v1 --concurrency 32

      memento pipeline run traces.jsonl --out out/ --model m \\
        --executor local --tasks 8 --workers 2
    """
    from mementokit.pipeline.estimate import estimate_run
    from mementokit.pipeline.select import read_traces
    from mementokit.pipeline.tokens import load_token_counter

    count_tokens, _ = load_token_counter(kw["tokenizer"])
    cfg = _config(kw, default_cache=kw["out"] / "cache", dry_run=kw["dry_run"])
    if kw["dry_run"]:
        rows = read_traces(input, config=kw["dataset_config"], split=kw["dataset_split"], fields=kw["field"] or ())
        e = estimate_run(rows, cfg, count_tokens)
        return _done(
            kw["json_out"],
            e,
            f"dry run: {e['traces']} traces, ~{e['calls']:,} LLM calls, "
            f"~{e['prompt_tokens']:,} prompt tokens, ~{e['completion_tokens_estimate']:,} completion "
            f"tokens, ~${e['cost_estimate']}",
        )
    report = _execute(input, kw, cfg, count_tokens)
    _done(kw["json_out"], report, _closing(report, kw["out"]))
    run = report["this_run"]
    if run["done"] == 0 and run["failed"] > 0:
        stderr.print(
            f"[bold red]error:[/] no trace succeeded in this run ({run['failed']} failed; reasons in "
            f"{kw['out']}/failures*.jsonl, by stage: {report['failures_by_stage']})",
            highlight=False,
        )
        raise typer.Exit(1)


# ------------------------------------------------------------------------------------------ one stage each


def _stage(name: str, input: str, kw: dict[str, Any], transform=None) -> dict[str, Any]:
    from mementokit.pipeline.client import LLMClient
    from mementokit.pipeline.stages import StageContext, run_stage_file, stage_named
    from mementokit.pipeline.tokens import load_token_counter

    stage = stage_named(name)
    cfg = _config(kw)
    count_tokens, _ = load_token_counter(kw.get("tokenizer", "estimate"))
    client = LLMClient(cfg.llm) if stage.uses_llm else None
    ctx = StageContext(cfg, client, count_tokens)
    return run_stage_file(name, input, kw["out"], ctx, skip_bad=kw.get("skip_bad", False), transform=transform)


def _usage_text(summary: dict[str, Any]) -> str:
    u = summary.get("usage")
    return f" ({u['requests']} requests, {u['prompt_tokens']:,} prompt tokens)" if u else ""


@_command(
    "select",
    "Raw traces: JSONL / Parquet file, folder, or hub id.",
    f"out {SELECT} allow_incomplete stratify_by per_stratum seed field skip_bad json_out",
)
def select_command(input: str, **kw: Any) -> None:
    """Stage 1: map fields (problem/prompt, cot/full_cot, OpenThoughts conversations), filter, sample.

    Example:

      memento pipeline select raw.jsonl --out selected.jsonl --drop-cjk \\
        --stratify-by domain --per-stratum 100
    """
    from mementokit.pipeline.select import SelectConfig, select_file

    strata = tuple(f.strip() for f in kw["stratify_by"].split(",")) if kw["stratify_by"] else ()
    cfg = SelectConfig(
        require_complete_think=not kw["allow_incomplete"],
        drop_cjk=kw["drop_cjk"],
        min_chars=kw["min_chars"],
        max_chars=kw["max_chars"],
        stratify_by=strata,
        per_stratum=kw["per_stratum"],
        seed=kw["seed"],
    )
    s = select_file(input, kw["out"], cfg, fields=kw["field"] or (), skip_bad=kw["skip_bad"])
    _done(kw["json_out"], s, f"{s['rows']} rows -> {s['out']} (rejected: {s['rejected'] or 'none'})")


@_command(
    "split",
    "JSONL rows with a `cot` (or full_cot / conversations).",
    "out tokenizer min_sentence_tokens skip_bad json_out",
)
def split_command(input: str, **kw: Any) -> None:
    """Stage 2: rows gain `sentences` and `separators` (one longer), which rebuild `cot` byte for byte.

    Example: memento pipeline split traces.jsonl --out split.jsonl
    """
    s = _stage("split", input, kw)
    _done(kw["json_out"], s, f"{s['rows']} rows, {s['sentences']} sentences -> {s['out']}")


@_command(
    "score",
    "JSONL rows with `sentences` (and `separators`).",
    f"out {LLM} traces_in_flight window second_window skip_bad json_out",
)
def score_command(input: str, **kw: Any) -> None:
    """Stage 3: rows gain `boundary_scores` (0-3, one per gap). A row whose windows fail stops the command.

    Example:

      memento pipeline score split.jsonl --out scored.jsonl --model gpt-4o-mini \\
        --second-window 23
    """
    s = _stage("score", input, kw)
    _done(kw["json_out"], s, f"{s['rows']} rows scored -> {s['out']}{_usage_text(s)}")


@_command(
    "segment",
    "JSONL rows with `sentences` and `boundary_scores` (one per gap).",
    f"out tokenizer {SEGMENT} skip_bad json_out",
)
def segment_command(input: str, **kw: Any) -> None:
    """Stage 4: rows gain `blocks` (inclusive [start, end] sentence indices) at the exact optimum.

    Block size = sum of its sentences' token counts (each encoded alone, no special tokens); std is the
    population one; K = 1 scores 0. Example:

      memento pipeline segment scored.jsonl --out segmented.jsonl \\
        --tokenizer ./qwen3-tokenizer --min-block-tokens 200
    """
    s = _stage("segment", input, kw)
    _done(kw["json_out"], s, f"{s['rows']} rows, {s['blocks']} blocks -> {s['out']}")


@_command(
    "summarize",
    "JSONL rows with `sentences`, `separators`, `blocks` (and `problem`).",
    f"out {LLM} traces_in_flight tokenizer rounds pass_score skip_bad json_out",
)
def summarize_command(input: str, **kw: Any) -> None:
    """Stage 5: rows gain `block_summaries` (the best-scoring memento per block) and `memento_scores`.

    Example:

      memento pipeline summarize segmented.jsonl --out summarized.jsonl \\
        --model gpt-4o-mini --rounds 2
    """
    s = _stage("summarize", input, kw)
    _done(kw["json_out"], s, f"{s['rows']} rows summarized -> {s['out']}{_usage_text(s)}")


@_command(
    "assemble",
    "JSONL rows with `sentences`, `separators`, `blocks`, `block_summaries` (`run` output too).",
    "out columns skip_bad json_out",
)
def assemble_command(input: str, **kw: Any) -> None:
    """Stage 6: rows gain the Memento `response`, checked by parsing it back with the format core.

    Example: memento pipeline assemble out/results.jsonl --out openmementos.jsonl --config full
    """
    from mementokit.pipeline.assemble import openmementos_row

    columns = kw["columns"]
    if columns not in ("all", "default", "full"):
        raise ConfigError("--config must be all, default or full")
    transform = None if columns == "all" else (lambda row: openmementos_row(row, columns))
    s = _stage("assemble", input, kw, transform)
    _done(kw["json_out"], s, f"{s['rows']} responses -> {s['out']}")


# ------------------------------------------------------------------------------------------ folders


@_command("report", "An output folder of `memento pipeline run`.", "json_out")
def report_command(out_dir: Path, **kw: Any) -> None:
    """The report over everything in an output folder: pass rates, compression, blocks, failures, usage, cost.

    Example: memento pipeline report out/ --json
    """
    from mementokit.pipeline.report import build_report

    if not out_dir.is_dir():
        raise InputError("no such folder", path=str(out_dir))
    report = build_report(out_dir)
    _done(kw["json_out"], report, json.dumps(report, indent=2))


@_command("export", "An output folder of `memento pipeline run`.", "to rows_per_file json_out")
def export_command(out_dir: Path, **kw: Any) -> None:
    """Write the results as an OpenMementos-layout dataset (data/, full/, README.md).

    `datasets.load_dataset(DIR)` and `memento analyze DIR` read it. Example:

      memento pipeline export out/ --to my-mementos/
    """
    from mementokit.pipeline.export import export_dataset

    s = export_dataset(out_dir, kw["to"], rows_per_file=kw["rows_per_file"])
    note = (
        f"; {s['difficulty_not_an_integer']} difficulties not integers, written as null"
        if s["difficulty_not_an_integer"]
        else ""
    )
    _done(kw["json_out"], s, f"{s['rows']} traces -> {s['out']} (configs default and full, {s['card']}){note}")


def register(app: typer.Typer) -> None:
    app.add_typer(pipeline_app, name="pipeline")
