"""The resumable, streaming runner that chains the stages for every trace of an input.

    out/results.jsonl   one line per finished trace (appended whole, in one write)
    out/failures.jsonl  one line per failed attempt at a trace (stage and reason); retried on rerun
    out/report.json     the final report of the last run, over everything in out/

Resumability is a property of the runner, not of the stages: a trace counts as finished when its line is
in results.jsonl. Lines are appended with a single write() on an O_APPEND descriptor, so a kill leaves at
most one torn last line, which the next run cuts off before reading (that trace is then redone: nothing is
lost, nothing is written twice). A rerun skips finished traces, retries failed ones, and rewrites
failures.jsonl (atomically) without the traces that have since succeeded.

The input is streamed: at most `workers` traces are in flight, whatever the input size. `shard=(i, N)`
keeps the traces whose task_id hashes to i mod N, so N machines can share one data set.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mementokit.pipeline.assemble import assemble_response, block_texts
from mementokit.pipeline.client import LLMClient, LLMConfig
from mementokit.pipeline.score import ScoreConfig, StageFailure, score_boundaries, score_messages, score_call_plan
from mementokit.pipeline.segment import optimal_segmentation
from mementokit.pipeline.select import SelectConfig, normalize_row, rejection_reason
from mementokit.pipeline.split import estimate_tokens, split_trace
from mementokit.pipeline.summarize import Summarizer, SummarizeConfig, batches
from mementokit.pipeline.usage import Usage

RESULTS = "results.jsonl"
FAILURES = "failures.jsonl"
REPORT = "report.json"


@dataclass(frozen=True)
class PipelineConfig:
    llm: LLMConfig
    score: ScoreConfig = ScoreConfig()
    summarize: SummarizeConfig = SummarizeConfig()
    select: SelectConfig = SelectConfig()
    min_sentence_tokens: int = 5
    min_block_tokens: int = 200
    max_block_tokens: int | None = None
    variance_penalty: float = 0.5
    workers: int = 4  # traces in flight
    limit: int | None = None  # traces of this shard to consider (after filtering)
    shard: tuple[int, int] = (0, 1)
    price_prompt_per_mtok: float = 0.0  # for the cost estimate on the progress bar and report
    price_completion_per_mtok: float = 0.0


# --------------------------------------------------------------------------------------- one trace


async def process_trace(row: dict[str, Any], client: LLMClient, cfg: PipelineConfig, count_tokens: Callable[[str], int] = estimate_tokens) -> dict[str, Any]:
    """All stages for one normalised row; returns the result row, raises StageFailure."""
    usage = Usage()
    cot = row["cot"]
    split = await asyncio.to_thread(split_trace, cot, count_tokens=count_tokens, min_tokens=cfg.min_sentence_tokens)
    if not split.sentences:
        raise StageFailure("split", "the trace has no text inside <think>")
    scored = await score_boundaries(client, split.sentences, split.separators, cfg.score, [usage])
    token_counts = [count_tokens(s) for s in split.sentences]
    try:
        seg = await asyncio.to_thread(
            optimal_segmentation, scored.scores, token_counts,
            min_block_tokens=cfg.min_block_tokens, max_block_tokens=cfg.max_block_tokens, variance_penalty=cfg.variance_penalty,
        )
    except Exception as exc:  # an infeasible max size, for instance
        raise StageFailure("segment", str(exc)) from exc
    texts = block_texts(cot, split.spans, seg.blocks)
    summaries = await Summarizer(client, cfg.summarize, count_tokens).summarize(row.get("problem", ""), texts, [usage])
    mementos = [s.memento for s in summaries]
    response = assemble_response(cot, split.spans, seg.blocks, mementos)
    block_tokens = [count_tokens(t) for t in texts]
    memento_tokens = [count_tokens(m) for m in mementos]
    result = {k: v for k, v in row.items() if k not in ("cot", "conversations", "messages")}
    result.update(
        response=response,
        sentences=split.sentences,
        separators=split.separators,
        num_sentences=len(split.sentences),
        boundary_scores=scored.scores,
        blocks=[[a, b] for a, b in seg.blocks],
        num_blocks=len(seg.blocks),
        segmentation_objective=seg.objective,
        block_summaries=mementos,
        block_tokens=block_tokens,
        memento_tokens=memento_tokens,
        memento_scores=[s.score for s in summaries],
        judge_history=[[a.score for a in s.history] for s in summaries],
        avg_final_score=statistics.fmean(s.score for s in summaries),
        usage=usage.to_dict(),
    )
    return result


# --------------------------------------------------------------------------------------- files


def _repair_tail(path: Path) -> None:
    """Cut a torn last line (a kill in the middle of an append) so that the file ends with a newline."""
    if not path.exists():
        return
    with open(path, "rb+") as fh:
        fh.seek(0, os.SEEK_END)
        size = fh.tell()
        if size == 0:
            return
        fh.seek(size - 1)
        if fh.read(1) == b"\n":
            return
        step = min(size, 1 << 16)
        pos = size
        while pos > 0:
            start = max(0, pos - step)
            fh.seek(start)
            chunk = fh.read(pos - start)
            nl = chunk.rfind(b"\n")
            if nl >= 0:
                fh.truncate(start + nl + 1)
                return
            pos = start
        fh.truncate(0)


def read_jsonl(path: Path) -> Iterator[dict[str, Any]]:
    if not path.exists():
        return
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            if line.endswith("\n"):
                try:
                    yield json.loads(line)
                except json.JSONDecodeError:
                    continue


class AppendLog:
    """A JSONL file that grows one whole line per write()."""

    def __init__(self, path: Path, fsync: bool = False):
        self.path = path
        self.fsync = fsync
        self.fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def append(self, record: dict[str, Any]) -> None:
        data = (json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8")
        written = os.write(self.fd, data)
        while written < len(data):  # regular files do not short-write in practice; be safe anyway
            written += os.write(self.fd, data[written:])
        if self.fsync:
            os.fsync(self.fd)

    def close(self) -> None:
        os.close(self.fd)


def _rewrite_atomically(path: Path, records: Iterable[dict[str, Any]]) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        for r in records:
            fh.write(json.dumps(r, ensure_ascii=False) + "\n")
    os.replace(tmp, path)


def _compact_failures(results_path: Path, failures_path: Path, key: str = "task_id") -> set[str]:
    """Drop failure records of items that have since succeeded; returns the finished ids."""
    finished = {r[key] for r in read_jsonl(results_path) if key in r}
    if failures_path.exists():
        _rewrite_atomically(failures_path, [f for f in read_jsonl(failures_path) if f.get(key) not in finished])
    return finished


def shard_of(task_id: str, num_shards: int) -> int:
    return int(hashlib.sha1(task_id.encode("utf-8")).hexdigest()[:12], 16) % num_shards


# --------------------------------------------------------------------------------------- the run


@dataclass
class RunState:
    started: float = field(default_factory=time.monotonic)
    done: int = 0
    failed: int = 0
    skipped_finished: int = 0
    rejected: dict[str, int] = field(default_factory=dict)
    duplicates: int = 0
    usage: Usage = field(default_factory=Usage)

    def rate_per_min(self) -> float:
        elapsed = max(1e-9, time.monotonic() - self.started)
        return 60.0 * self.done / elapsed


def cost_of(usage: dict[str, Any] | Usage, cfg: PipelineConfig) -> float:
    u = usage.to_dict() if isinstance(usage, Usage) else usage
    return (u.get("prompt_tokens", 0) * cfg.price_prompt_per_mtok + u.get("completion_tokens", 0) * cfg.price_completion_per_mtok) / 1e6


def planned_rows(rows: Iterable[dict[str, Any]], cfg: PipelineConfig, state: RunState) -> Iterator[dict[str, Any]]:
    """Normalise, filter, shard and limit the input stream (lazily)."""
    index, count = cfg.shard
    taken = 0
    for raw in rows:
        row = raw if "task_id" in raw and "cot" in raw and "problem" in raw else normalize_row(raw)
        reason = rejection_reason(row, cfg.select)
        if reason:
            state.rejected[reason] = state.rejected.get(reason, 0) + 1
            continue
        if count > 1 and shard_of(row["task_id"], count) != index:
            continue
        if cfg.limit is not None and taken >= cfg.limit:
            return
        taken += 1
        yield row


async def run_resumable(
    items: Iterable[dict[str, Any]],
    out_dir: str | os.PathLike[str],
    process: Callable[[dict[str, Any]], Awaitable[dict[str, Any]]],
    *,
    workers: int,
    key: str = "task_id",
    state: RunState | None = None,
    on_progress: Callable[[RunState], None] | None = None,
) -> RunState:
    """The resumable core (module docstring): `process(item)` for every item whose `key` is not yet finished.

    A result (which must carry the item's `key`) is appended to results.jsonl; an exception to failures.jsonl
    with its stage (an exception's `stage` attribute, else "internal") and is retried by the next run.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    results_path, failures_path = out / RESULTS, out / FAILURES
    for path in (results_path, failures_path):
        _repair_tail(path)
    finished = _compact_failures(results_path, failures_path, key)
    results_log, failures_log = AppendLog(results_path), AppendLog(failures_path)
    state = state or RunState()
    seen: set[str] = set()
    in_flight: set[asyncio.Task] = set()

    async def one(item: dict[str, Any]) -> None:
        try:
            result = await process(item)
        except Exception as exc:  # a bug or an unexpected answer must not stop the other items
            state.failed += 1
            stage = getattr(exc, "stage", None)
            error = str(exc) if stage else f"{type(exc).__name__}: {exc}"
            failures_log.append({key: item[key], "stage": stage or "internal", "error": error, "time": time.time()})
        else:
            results_log.append(result)
            state.done += 1
            if isinstance(result.get("usage"), dict):
                state.usage.add(Usage.from_dict(result["usage"]))
        if on_progress:
            on_progress(state)

    try:
        for item in items:
            item_id = item[key]
            if item_id in finished:
                state.skipped_finished += 1
                continue
            if item_id in seen:
                state.duplicates += 1
                continue
            seen.add(item_id)
            while len(in_flight) >= max(1, workers):
                _, in_flight = await asyncio.wait(in_flight, return_when=asyncio.FIRST_COMPLETED)
            in_flight.add(asyncio.create_task(one(item)))
            if on_progress:
                on_progress(state)
        if in_flight:
            await asyncio.wait(in_flight)
    finally:
        for task in in_flight:
            task.cancel()
        results_log.close()
        failures_log.close()
    _compact_failures(results_path, failures_path, key)
    return state


async def run_pipeline_async(
    rows: Iterable[dict[str, Any]],
    out_dir: str | os.PathLike[str],
    cfg: PipelineConfig,
    *,
    count_tokens: Callable[[str], int] = estimate_tokens,
    on_progress: Callable[[RunState, LLMClient], None] | None = None,
    client: LLMClient | None = None,
) -> dict[str, Any]:
    out = Path(out_dir)
    own_client = client is None
    client = client or LLMClient(cfg.llm)
    state = RunState()
    try:
        await run_resumable(
            planned_rows(rows, cfg, state), out, lambda row: process_trace(row, client, cfg, count_tokens),
            workers=cfg.workers, state=state,
            on_progress=(lambda s: on_progress(s, client)) if on_progress else None,
        )
    finally:
        if own_client:
            await client.aclose()
    report = build_report(out, cfg)
    report["this_run"] = {
        "done": state.done,
        "failed": state.failed,
        "skipped_finished": state.skipped_finished,
        "duplicates_in_input": state.duplicates,
        "rejected": state.rejected,
        "seconds": round(time.monotonic() - state.started, 3),
        "traces_per_min": round(state.rate_per_min(), 2),
        "llm": client.usage.to_dict(),
        "cost": round(cost_of(client.usage, cfg), 6),
    }
    _rewrite_atomically(out / REPORT, [report])
    return report


def run_pipeline(rows: Iterable[dict[str, Any]], out_dir: str | os.PathLike[str], cfg: PipelineConfig, **kwargs: Any) -> dict[str, Any]:
    """Synchronous wrapper of run_pipeline_async (see the module docstring)."""
    return asyncio.run(run_pipeline_async(rows, out_dir, cfg, **kwargs))


# --------------------------------------------------------------------------------------- report


def _median(values: list[float]) -> float | None:
    return round(statistics.median(values), 4) if values else None


def build_report(out_dir: str | os.PathLike[str], cfg: PipelineConfig | None = None) -> dict[str, Any]:
    """Judge pass rates, compression, blocks per trace, cost, and failures by stage, over all of out_dir."""
    out = Path(out_dir)
    pass_score = cfg.summarize.pass_score if cfg else 8.0
    traces = blocks = first_pass = final_pass = 0
    blocks_per_trace: list[int] = []
    ratios: list[float] = []
    usage = Usage()
    finished: set[str] = set()
    for r in read_jsonl(out / RESULTS):
        finished.add(r["task_id"])
        traces += 1
        blocks_per_trace.append(r["num_blocks"])
        for history, bt, mt in zip(r["judge_history"], r["block_tokens"], r["memento_tokens"]):
            blocks += 1
            first_pass += history[0] >= pass_score
            final_pass += max(history) >= pass_score
            ratios.append(mt / max(1, bt))
        usage.add(Usage.from_dict(r.get("usage", {})))
    latest_stage: dict[str, str] = {}  # the last recorded failure of each trace that is still unfinished
    for f in read_jsonl(out / FAILURES):
        if f.get("task_id") not in finished:
            latest_stage[f["task_id"]] = f.get("stage", "?")
    failed_ids = set(latest_stage)
    failures_by_stage: dict[str, int] = {}
    for stage in latest_stage.values():
        failures_by_stage[stage] = failures_by_stage.get(stage, 0) + 1
    total = usage.to_dict()
    report = {
        "traces": traces,
        "failed_traces": len(failed_ids),
        "failures_by_stage": failures_by_stage,
        "blocks": blocks,
        "median_blocks_per_trace": _median(blocks_per_trace),
        "judge_pass_rate_first_round": round(first_pass / blocks, 4) if blocks else None,
        "judge_pass_rate_final": round(final_pass / blocks, 4) if blocks else None,
        "median_compression_tokens": _median(ratios),
        "llm_calls_per_trace": round(total["calls"] / traces, 2) if traces else None,
        "prompt_tokens_per_trace": round(total["prompt_tokens"] / traces, 1) if traces else None,
        "usage": total,
    }
    if cfg is not None:
        report["cost"] = round(cost_of(total, cfg), 6)
    return report


# --------------------------------------------------------------------------------------- dry run

# What --dry-run assumes about what it cannot know before calling the LLM (the paper's figures):
EXPECTED_BLOCK_TOKENS = 1150  # ~1,150 tokens per block on average in OpenMementos
FIRST_ROUND_FAIL = 0.72  # 28 % of mementos pass the judge after one round


def estimate_trace(row: dict[str, Any], cfg: PipelineConfig, count_tokens: Callable[[str], int] = estimate_tokens) -> dict[str, Any]:
    """Calls and prompt tokens for one trace: exact for scoring, modelled for summarisation."""
    from mementokit.pipeline.prompts import COMPRESS_SYSTEM, JUDGE_SYSTEM

    split = split_trace(row["cot"], count_tokens=count_tokens, min_tokens=cfg.min_sentence_tokens)
    n = len(split.sentences)
    score_calls = score_tokens = 0
    for window in score_call_plan(n, cfg.score) if n > 1 else []:
        msgs = score_messages(split.sentences, split.separators, window, cfg.score)
        score_calls += 1
        score_tokens += sum(estimate_tokens(m["content"]) for m in msgs)
    total = sum(count_tokens(s) for s in split.sentences)
    k = max(1, round(total / EXPECTED_BLOCK_TOKENS))
    sizes = {i: total // k for i in range(1, k + 1)}
    memento = int(cfg.summarize.target_ratio * total / k)
    problem = estimate_tokens(row.get("problem", "")) if row.get("problem") else 0
    compress_calls = len(batches(list(sizes), sizes, cfg.summarize.batch_tokens))
    judge_calls = len(batches(list(sizes), sizes, cfg.summarize.judge_batch_tokens))
    compress_tokens = total + compress_calls * (estimate_tokens(COMPRESS_SYSTEM) + problem + 30)
    judge_tokens = total + k * (memento + 20) + judge_calls * estimate_tokens(JUDGE_SYSTEM)
    later = FIRST_ROUND_FAIL * max(0, cfg.summarize.rounds - 1)
    refine_tokens = later * (total + k * (memento + 120) + compress_calls * (estimate_tokens(COMPRESS_SYSTEM) + problem))
    calls = score_calls + compress_calls + judge_calls + round(later * (compress_calls + judge_calls))
    prompt_tokens = score_tokens + compress_tokens + judge_tokens + refine_tokens + later * judge_tokens
    return {
        "task_id": row["task_id"],
        "sentences": n,
        "trace_tokens": total,
        "expected_blocks": k,
        "calls": int(calls),
        "prompt_tokens": int(prompt_tokens),
        "score_calls": score_calls,
        "score_prompt_tokens": score_tokens,
    }


def estimate_run(rows: Iterable[dict[str, Any]], cfg: PipelineConfig, count_tokens: Callable[[str], int] = estimate_tokens) -> dict[str, Any]:
    state = RunState()
    per_trace = [estimate_trace(r, cfg, count_tokens) for r in planned_rows(rows, cfg, state)]
    calls = sum(t["calls"] for t in per_trace)
    tokens = sum(t["prompt_tokens"] for t in per_trace)
    completion = sum(int(0.2 * t["trace_tokens"] * (1 + FIRST_ROUND_FAIL)) + 12 * t["sentences"] for t in per_trace)
    return {
        "traces": len(per_trace),
        "rejected": state.rejected,
        "calls": calls,
        "prompt_tokens": tokens,
        "completion_tokens_estimate": completion,
        "cost_estimate": round((tokens * cfg.price_prompt_per_mtok + completion * cfg.price_completion_per_mtok) / 1e6, 4),
        "assumptions": {
            "tokens": "ceil(chars/4) for prompts",
            "blocks": f"trace tokens / {EXPECTED_BLOCK_TOKENS}",
            "first_round_fail": FIRST_ROUND_FAIL,
            "rounds": cfg.summarize.rounds,
        },
        "per_trace": per_trace[:20],
    }
