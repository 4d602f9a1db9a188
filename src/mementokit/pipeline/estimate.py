"""`--dry-run`: calls and prompt tokens a run would spend, before calling anything."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from mementokit.pipeline.config import PipelineConfig
from mementokit.pipeline.prompts import COMPRESS_SYSTEM, JUDGE_SYSTEM
from mementokit.pipeline.report import RunState
from mementokit.pipeline.score import score_call_plan, score_messages
from mementokit.pipeline.split import estimate_tokens, split_trace
from mementokit.pipeline.summarize import batches

__all__ = ["EXPECTED_BLOCK_TOKENS", "FIRST_ROUND_FAIL", "estimate_run", "estimate_trace"]

# What --dry-run assumes about what it cannot know before calling the LLM (the paper's figures):
EXPECTED_BLOCK_TOKENS = 1150  # ~1,150 tokens per block on average in OpenMementos
FIRST_ROUND_FAIL = 0.72  # 28 % of mementos pass the judge after one round


def estimate_trace(
    row: dict[str, Any], cfg: PipelineConfig, count_tokens: Callable[[str], int] = estimate_tokens
) -> dict[str, Any]:
    """Calls and prompt tokens for one trace: exact for scoring, modelled for summarisation."""
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
    refine_tokens = later * (
        total + k * (memento + 120) + compress_calls * (estimate_tokens(COMPRESS_SYSTEM) + problem)
    )
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


def estimate_run(
    rows: Iterable[dict[str, Any]], cfg: PipelineConfig, count_tokens: Callable[[str], int] = estimate_tokens
) -> dict[str, Any]:
    from mementokit.pipeline.runner import planned_rows

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
        "cost_estimate": round(
            (tokens * cfg.price_prompt_per_mtok + completion * cfg.price_completion_per_mtok) / 1e6, 4
        ),
        "assumptions": {
            "tokens": "ceil(chars/4) for prompts",
            "blocks": f"trace tokens / {EXPECTED_BLOCK_TOKENS}",
            "first_round_fail": FIRST_ROUND_FAIL,
            "rounds": cfg.summarize.rounds,
        },
        "per_trace": per_trace[:20],
    }
