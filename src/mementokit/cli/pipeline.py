"""`memento pipeline`: turn raw chains of thought into Memento training data with any OpenAI-compatible LLM.

A thin layer over mementokit.pipeline: `run` chains every stage with a resumable runner; `select`,
`split`, `score`, `segment`, `summarize` and `assemble` run one stage over a JSONL file; `report` prints
the report of an output folder.
"""

from __future__ import annotations

import asyncio
import json
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from mementokit.errors import ConfigError, InputError

from mementokit.cli.console import stderr, stdout

pipeline_app = typer.Typer(
    name="pipeline",
    help="CoT-to-Memento data pipeline (select, split, score, segment, summarize, assemble) with any OpenAI-compatible LLM.",
    no_args_is_help=True,
    rich_markup_mode="rich",
)

# ------------------------------------------------------------------------------------------ options

Model = Annotated[Optional[str], typer.Option("--model", help="Model name the endpoint serves.")]
BaseUrl = Annotated[Optional[str], typer.Option("--base-url", help="OpenAI-compatible endpoint (default: OPENAI_BASE_URL).")]
ApiKey = Annotated[Optional[str], typer.Option("--api-key", help="API key (default: OPENAI_API_KEY).")]
Concurrency = Annotated[int, typer.Option("--concurrency", min=1, help="LLM calls in flight at once, over the whole run.")]
CacheDir = Annotated[Optional[Path], typer.Option("--cache-dir", help="Response cache folder (default: OUT/cache; 'none' to disable).")]
Tokenizer = Annotated[str, typer.Option("--tokenizer", help="Local tokenizer.json or tokenizer folder, or 'estimate' (ceil(chars/4)). Never downloads.")]
JsonOut = Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout.")]


def _llm_config(model, base_url, api_key, concurrency, cache_dir, timeout, max_retries, temperature):
    from mementokit.pipeline.client import LLMConfig

    if not model:
        model = os.environ.get("MEMENTO_PIPELINE_MODEL")
    if not model:
        raise ConfigError("no model: pass --model (the name the endpoint serves)")
    return LLMConfig(
        model=model, base_url=base_url, api_key=api_key, max_concurrency=concurrency,
        cache_dir=str(cache_dir) if cache_dir else None, timeout_s=timeout, max_retries=max_retries, temperature=temperature,
    )


def _parse_shard(text: str) -> tuple[int, int]:
    try:
        i, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise ConfigError(f"--shard must look like i/N (e.g. 0/4), got {text!r}") from None
    if n < 1 or not 0 <= i < n:
        raise ConfigError(f"--shard {text}: need 0 <= i < N")
    return i, n


def _read_jsonl(path: str) -> Iterator[tuple[int, dict[str, Any]]]:
    if path != "-" and not Path(path).exists():
        raise InputError("no such file", path=path)
    fh = open(path, encoding="utf-8") if path != "-" else __import__("sys").stdin
    with fh:
        for line_no, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise InputError(f"not JSON: {exc.msg}", path=path, line=line_no) from None
            if not isinstance(row, dict):
                raise InputError("a line must hold a JSON object", path=path, line=line_no)
            yield line_no, row


def _write_jsonl_atomically(path: Path, rows: Iterable[dict[str, Any]]) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    count = 0
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            for row in rows:
                fh.write(json.dumps(row, ensure_ascii=False) + "\n")
                count += 1
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return count


def _field(row: dict[str, Any], name: str, kind: type, path: str, line: int) -> Any:
    if name not in row:
        raise InputError("missing field", path=path, line=line, field=name)
    if not isinstance(row[name], kind):
        raise InputError(f"expected {kind.__name__}", path=path, line=line, field=name)
    return row[name]


def _done(json_out: bool, summary: dict[str, Any], text: str) -> None:
    if json_out:
        print(json.dumps(summary, ensure_ascii=False))
    else:
        stdout.print(text, highlight=False)


class _RunProgress:
    """A progress bar on stderr with traces/min, calls, tokens and cost."""

    def __init__(self, total: int | None, cfg):
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.cfg = cfg
        self.progress = Progress(
            TextColumn("pipeline"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TextColumn("{task.fields[stats]}"),
            console=stderr, transient=False, disable=not stderr.is_terminal,
        )
        self.task = self.progress.add_task("run", total=total, stats="")

    def __enter__(self):
        self.progress.__enter__()
        return self

    def __exit__(self, *exc):
        self.progress.__exit__(*exc)

    def update(self, state, client) -> None:
        from mementokit.pipeline.runner import cost_of

        u = client.usage.to_dict()
        stats = (
            f"{state.rate_per_min():.1f} traces/min | failed {state.failed} | calls {u['calls']} "
            f"(in flight {client.in_flight}) | prompt {u['prompt_tokens']:,} tok | ${cost_of(u, self.cfg):.4f}"
        )
        self.progress.update(self.task, completed=state.done + state.failed, stats=stats)


# ------------------------------------------------------------------------------------------ commands


@pipeline_app.command("run")
def run_command(
    input: Annotated[str, typer.Argument(help="Raw traces: JSONL / Parquet file, folder, or hub id.")],
    out: Annotated[Path, typer.Option("--out", help="Output folder (results.jsonl, failures.jsonl, report.json, cache/).")],
    model: Model = None,
    base_url: BaseUrl = None,
    api_key: ApiKey = None,
    workers: Annotated[int, typer.Option("--workers", min=1, help="Traces in flight at once.")] = 4,
    concurrency: Concurrency = 16,
    limit: Annotated[Optional[int], typer.Option("--limit", min=0, help="Traces of this shard to consider.")] = None,
    shard: Annotated[str, typer.Option("--shard", help="i/N: this machine's share of the input (by task_id hash).")] = "0/1",
    tokenizer: Tokenizer = "estimate",
    min_block_tokens: Annotated[int, typer.Option("--min-block-tokens", min=0)] = 200,
    max_block_tokens: Annotated[Optional[int], typer.Option("--max-block-tokens", min=1)] = None,
    variance_penalty: Annotated[float, typer.Option("--variance-penalty", min=0.0)] = 0.5,
    window: Annotated[int, typer.Option("--window", min=1, help="Boundaries per scoring call.")] = 32,
    second_window: Annotated[Optional[int], typer.Option("--second-window", min=1, help="Second scoring pass with this (coprime) window size.")] = None,
    rounds: Annotated[int, typer.Option("--rounds", min=1, help="Judge rounds per block at most.")] = 2,
    pass_score: Annotated[float, typer.Option("--pass-score", min=0.0, max=10.0)] = 8.0,
    cache_dir: CacheDir = None,
    timeout: Annotated[float, typer.Option("--timeout", min=1.0, help="Seconds per LLM call.")] = 300.0,
    max_retries: Annotated[int, typer.Option("--max-retries", min=0)] = 6,
    temperature: Annotated[float, typer.Option("--temperature", min=0.0)] = 0.0,
    drop_cjk: Annotated[bool, typer.Option("--drop-cjk", help="Skip traces with CJK characters.")] = False,
    min_chars: Annotated[int, typer.Option("--min-chars", min=0)] = 0,
    max_chars: Annotated[Optional[int], typer.Option("--max-chars", min=1)] = None,
    price_prompt: Annotated[float, typer.Option("--price-prompt", help="USD per million prompt tokens (cost display).")] = 0.0,
    price_completion: Annotated[float, typer.Option("--price-completion", help="USD per million completion tokens.")] = 0.0,
    dataset_config: Annotated[str, typer.Option("--config", help="Dataset config (hub ids / hub-layout folders).")] = "default",
    dataset_split: Annotated[str, typer.Option("--split", help="Dataset split.")] = "train",
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Estimate calls and tokens; call nothing.")] = False,
    json_out: JsonOut = False,
) -> None:
    """Run every stage over INPUT, resumably: a rerun skips finished traces and retries failed ones.

    Example: memento pipeline run traces.jsonl --out out/ --model Qwen/Qwen3-32B --base-url http://localhost:8000/v1 --workers 8 --concurrency 32 --shard 0/4
    """
    from mementokit.pipeline.client import LLMConfig
    from mementokit.pipeline.runner import PipelineConfig, estimate_run, run_pipeline_async
    from mementokit.pipeline.score import ScoreConfig
    from mementokit.pipeline.select import SelectConfig, read_traces
    from mementokit.pipeline.summarize import SummarizeConfig
    from mementokit.pipeline.tokens import load_token_counter

    count_tokens, _ = load_token_counter(tokenizer)
    if str(cache_dir).lower() == "none":
        cache = None
    else:
        cache = cache_dir or (out / "cache")
    llm = _llm_config(model, base_url, api_key, concurrency, cache, timeout, max_retries, temperature) if not dry_run else LLMConfig(model=model or "dry-run")
    cfg = PipelineConfig(
        llm=llm,
        score=ScoreConfig(window=window, second_window=second_window),
        summarize=SummarizeConfig(rounds=rounds, pass_score=pass_score),
        select=SelectConfig(drop_cjk=drop_cjk, min_chars=min_chars, max_chars=max_chars),
        min_block_tokens=min_block_tokens, max_block_tokens=max_block_tokens, variance_penalty=variance_penalty,
        workers=workers, limit=limit, shard=_parse_shard(shard),
        price_prompt_per_mtok=price_prompt, price_completion_per_mtok=price_completion,
    )
    rows = read_traces(input, config=dataset_config, split=dataset_split)
    if dry_run:
        estimate = estimate_run(rows, cfg, count_tokens)
        _done(json_out, estimate,
              f"dry run: {estimate['traces']} traces, ~{estimate['calls']:,} LLM calls, ~{estimate['prompt_tokens']:,} prompt tokens, "
              f"~{estimate['completion_tokens_estimate']:,} completion tokens, ~${estimate['cost_estimate']}")
        return
    with _RunProgress(limit, cfg) as progress:
        report = asyncio.run(run_pipeline_async(rows, out, cfg, count_tokens=count_tokens, on_progress=progress.update))
    run = report["this_run"]
    _done(json_out, report,
          f"done {run['done']}, failed {run['failed']}, skipped (finished before) {run['skipped_finished']} in {run['seconds']} s "
          f"({run['traces_per_min']} traces/min)\n"
          f"all of {out}: {report['traces']} traces, {report['failed_traces']} failed {report['failures_by_stage']}, "
          f"median blocks {report['median_blocks_per_trace']}, judge pass first/final {report['judge_pass_rate_first_round']}/"
          f"{report['judge_pass_rate_final']}, median memento/block tokens {report['median_compression_tokens']}, "
          f"calls/trace {report['llm_calls_per_trace']}, prompt tokens/trace {report['prompt_tokens_per_trace']}")


@pipeline_app.command("select")
def select_command(
    input: Annotated[str, typer.Argument(help="Raw traces: JSONL / Parquet file, folder, or hub id.")],
    out: Annotated[Path, typer.Option("--out", help="Output JSONL.")],
    drop_cjk: Annotated[bool, typer.Option("--drop-cjk")] = False,
    min_chars: Annotated[int, typer.Option("--min-chars", min=0)] = 0,
    max_chars: Annotated[Optional[int], typer.Option("--max-chars", min=1)] = None,
    allow_incomplete: Annotated[bool, typer.Option("--allow-incomplete", help="Keep traces without a complete <think>...</think>.")] = False,
    stratify_by: Annotated[Optional[str], typer.Option("--stratify-by", help="Comma-separated fields, e.g. domain,source.")] = None,
    per_stratum: Annotated[Optional[int], typer.Option("--per-stratum", min=1, help="Rows sampled per stratum (seeded).")] = None,
    seed: Annotated[int, typer.Option("--seed")] = 0,
    json_out: JsonOut = False,
) -> None:
    """Stage 1: map fields (problem/prompt, cot/full_cot, OpenThoughts conversations), filter, sample.

    Example: memento pipeline select raw.jsonl --out selected.jsonl --drop-cjk --stratify-by domain --per-stratum 100
    """
    from mementokit.pipeline.select import SelectConfig, read_traces, select_rows

    cfg = SelectConfig(
        require_complete_think=not allow_incomplete, drop_cjk=drop_cjk, min_chars=min_chars, max_chars=max_chars,
        stratify_by=tuple(f.strip() for f in stratify_by.split(",")) if stratify_by else (), per_stratum=per_stratum, seed=seed,
    )
    if per_stratum and not cfg.stratify_by:
        raise ConfigError("--per-stratum needs --stratify-by")
    rejected: dict[str, int] = {}
    n = _write_jsonl_atomically(out, select_rows(read_traces(input), cfg, rejected))
    _done(json_out, {"rows": n, "rejected": rejected, "out": str(out)}, f"{n} rows -> {out} (rejected: {rejected or 'none'})")


@pipeline_app.command("split")
def split_command(
    input: Annotated[str, typer.Argument(help="JSONL rows with a `cot` (or full_cot / conversations).")],
    out: Annotated[Path, typer.Option("--out", help="Output JSONL.")],
    tokenizer: Tokenizer = "estimate",
    min_sentence_tokens: Annotated[int, typer.Option("--min-sentence-tokens", min=0, help="Fragments shorter than this merge.")] = 5,
    json_out: JsonOut = False,
) -> None:
    """Stage 2: rows gain `sentences` and `separators` (one longer), which rebuild `cot` byte for byte.

    Example: memento pipeline split traces.jsonl --out split.jsonl
    """
    from mementokit.pipeline.select import normalize_row
    from mementokit.pipeline.split import split_trace
    from mementokit.pipeline.tokens import load_token_counter

    count_tokens, _ = load_token_counter(tokenizer)
    stats = {"rows": 0, "sentences": 0}

    def rows():
        for line, raw in _read_jsonl(input):
            row = normalize_row(raw, where=input, line=line)
            result = split_trace(row["cot"], count_tokens=count_tokens, min_tokens=min_sentence_tokens)
            stats["rows"] += 1
            stats["sentences"] += len(result.sentences)
            yield {**raw, "sentences": result.sentences, "separators": result.separators}

    _write_jsonl_atomically(out, rows())
    _done(json_out, {**stats, "out": str(out)}, f"{stats['rows']} rows, {stats['sentences']} sentences -> {out}")


@pipeline_app.command("segment")
def segment_command(
    input: Annotated[str, typer.Argument(help="JSONL rows with `sentences` and `boundary_scores` (one per gap).")],
    out: Annotated[Path, typer.Option("--out", help="Output JSONL.")],
    tokenizer: Tokenizer = "estimate",
    min_block_tokens: Annotated[int, typer.Option("--min-block-tokens", min=0)] = 200,
    max_block_tokens: Annotated[Optional[int], typer.Option("--max-block-tokens", min=1)] = None,
    variance_penalty: Annotated[float, typer.Option("--variance-penalty", min=0.0)] = 0.5,
    json_out: JsonOut = False,
) -> None:
    """Stage 4: rows gain `blocks` (inclusive start-end sentence index pairs) at the exact optimum of the paper's objective.

    Block size = sum of its sentences' token counts (each encoded alone, no special tokens); std is the
    population one; K = 1 scores 0.
    Example: memento pipeline segment scored.jsonl --out segmented.jsonl --tokenizer ./qwen3-tokenizer --min-block-tokens 200
    """
    from mementokit.pipeline.segment import optimal_segmentation
    from mementokit.pipeline.tokens import load_token_counter

    count_tokens, _ = load_token_counter(tokenizer)
    stats = {"rows": 0, "blocks": 0}

    def rows():
        for line, row in _read_jsonl(input):
            sentences = _field(row, "sentences", list, input, line)
            scores = _field(row, "boundary_scores", list, input, line)
            if len(scores) != max(0, len(sentences) - 1):
                raise InputError(f"{len(scores)} scores for {len(sentences)} sentences (need {len(sentences) - 1})", path=input, line=line, field="boundary_scores")
            try:
                seg = optimal_segmentation(scores, [count_tokens(s) for s in sentences], min_block_tokens=min_block_tokens,
                              max_block_tokens=max_block_tokens, variance_penalty=variance_penalty)
            except InputError as exc:
                raise InputError(exc.reason, path=input, line=line, field=exc.field) from None
            stats["rows"] += 1
            stats["blocks"] += len(seg.blocks)
            yield {**row, "blocks": [[a, b] for a, b in seg.blocks]}

    _write_jsonl_atomically(out, rows())
    _done(json_out, {**stats, "out": str(out)}, f"{stats['rows']} rows, {stats['blocks']} blocks -> {out}")


def _stage_client(model, base_url, api_key, concurrency, cache_dir):
    from mementokit.pipeline.client import LLMClient

    return LLMClient(_llm_config(model, base_url, api_key, concurrency, cache_dir, 300.0, 6, 0.0))


@pipeline_app.command("score")
def score_command(
    input: Annotated[str, typer.Argument(help="JSONL rows with `sentences` (and `separators`).")],
    out: Annotated[Path, typer.Option("--out", help="Output JSONL.")],
    model: Model = None,
    base_url: BaseUrl = None,
    api_key: ApiKey = None,
    concurrency: Concurrency = 16,
    cache_dir: CacheDir = None,
    window: Annotated[int, typer.Option("--window", min=1)] = 32,
    second_window: Annotated[Optional[int], typer.Option("--second-window", min=1)] = None,
    json_out: JsonOut = False,
) -> None:
    """Stage 3: rows gain `boundary_scores` (0-3, one per gap). A row whose windows fail stops the command.

    Example: memento pipeline score split.jsonl --out scored.jsonl --model gpt-4o-mini --second-window 23
    """
    from mementokit.pipeline.score import ScoreConfig, score_boundaries

    client = _stage_client(model, base_url, api_key, concurrency, cache_dir)
    cfg = ScoreConfig(window=window, second_window=second_window)

    async def main() -> list[dict[str, Any]]:
        rows = [(line, row) for line, row in _read_jsonl(input)]
        for line, row in rows:
            _field(row, "sentences", list, input, line)
        results = await asyncio.gather(*[score_boundaries(client, r["sentences"], r.get("separators"), cfg) for _, r in rows])
        await client.aclose()
        return [{**r, "boundary_scores": s.scores} for (_, r), s in zip(rows, results)]

    n = _write_jsonl_atomically(out, asyncio.run(main()))
    _done(json_out, {"rows": n, "usage": client.usage.to_dict(), "out": str(out)}, f"{n} rows scored -> {out} ({client.usage.total.calls} calls)")


@pipeline_app.command("summarize")
def summarize_command(
    input: Annotated[str, typer.Argument(help="JSONL rows with `sentences`, `separators`, `blocks` (and `problem`).")],
    out: Annotated[Path, typer.Option("--out", help="Output JSONL.")],
    model: Model = None,
    base_url: BaseUrl = None,
    api_key: ApiKey = None,
    concurrency: Concurrency = 16,
    cache_dir: CacheDir = None,
    rounds: Annotated[int, typer.Option("--rounds", min=1)] = 2,
    pass_score: Annotated[float, typer.Option("--pass-score", min=0.0, max=10.0)] = 8.0,
    json_out: JsonOut = False,
) -> None:
    """Stage 5: rows gain `block_summaries` (the best-scoring memento per block) and `memento_scores`.

    Example: memento pipeline summarize segmented.jsonl --out summarized.jsonl --model gpt-4o-mini --rounds 2
    """
    from mementokit.pipeline.summarize import Summarizer, SummarizeConfig

    client = _stage_client(model, base_url, api_key, concurrency, cache_dir)
    summarizer = Summarizer(client, SummarizeConfig(rounds=rounds, pass_score=pass_score))

    def texts(row, line):
        sentences = _field(row, "sentences", list, input, line)
        seps = row.get("separators") or [""] + [" "] * (len(sentences) - 1) + [""]
        out = []
        for a, b in _field(row, "blocks", list, input, line):
            parts = []
            for i in range(a, b + 1):
                parts.append(sentences[i])
                if i < b:
                    parts.append(seps[i + 1])
            out.append("".join(parts))
        return out

    async def main() -> list[dict[str, Any]]:
        rows = [(line, row) for line, row in _read_jsonl(input)]
        results = await asyncio.gather(*[summarizer.summarize(r.get("problem", ""), texts(r, line)) for line, r in rows])
        await client.aclose()
        return [{**r, "block_summaries": [s.memento for s in res], "memento_scores": [s.score for s in res]} for (_, r), res in zip(rows, results)]

    n = _write_jsonl_atomically(out, asyncio.run(main()))
    _done(json_out, {"rows": n, "usage": client.usage.to_dict(), "out": str(out)}, f"{n} rows summarized -> {out} ({client.usage.total.calls} calls)")


@pipeline_app.command("assemble")
def assemble_command(
    input: Annotated[str, typer.Argument(help="JSONL rows with `cot`, `sentences`, `separators`, `blocks`, `block_summaries`.")],
    out: Annotated[Path, typer.Option("--out", help="Output JSONL.")],
    config: Annotated[str, typer.Option("--config", help="Columns to keep: default | full | all.")] = "all",
    json_out: JsonOut = False,
) -> None:
    """Stage 6: rows gain the Memento `response`, checked by parsing it back with the format core.

    Example: memento pipeline assemble summarized.jsonl --out openmementos.jsonl --config full
    """
    from mementokit.pipeline.assemble import assemble_response, openmementos_row
    from mementokit.pipeline.score import StageFailure

    def rows():
        for line, row in _read_jsonl(input):
            cot = _field(row, "cot", str, input, line)
            sentences = _field(row, "sentences", list, input, line)
            seps = _field(row, "separators", list, input, line)
            spans, pos = [], 0
            for i, s in enumerate(sentences):
                pos += len(seps[i])
                spans.append((pos, pos + len(s)))
                pos += len(s)
            if pos + len(seps[-1]) != len(cot):
                raise InputError("sentences and separators do not rebuild the cot", path=input, line=line, field="separators")
            try:
                response = assemble_response(cot, spans, row["blocks"], row["block_summaries"])
            except StageFailure as exc:
                raise InputError(str(exc), path=input, line=line, field="block_summaries") from None
            full = {**row, "response": response}
            yield full if config == "all" else openmementos_row(full, config)

    if config not in ("all", "default", "full"):
        raise ConfigError("--config must be all, default or full")
    n = _write_jsonl_atomically(out, rows())
    _done(json_out, {"rows": n, "out": str(out)}, f"{n} responses -> {out}")


@pipeline_app.command("report")
def report_command(
    out: Annotated[Path, typer.Argument(help="An output folder of `memento pipeline run`.")],
    json_out: JsonOut = False,
) -> None:
    """The report over everything in an output folder: pass rates, compression, blocks, failures, usage.

    Example: memento pipeline report out/ --json
    """
    from mementokit.pipeline.runner import build_report

    if not out.is_dir():
        raise InputError("no such folder", path=str(out))
    report = build_report(out)
    _done(json_out, report, json.dumps(report, indent=2))


def register(app: typer.Typer) -> None:
    app.add_typer(pipeline_app, name="pipeline")
