"""What a run did and what it cost: the live state of a run, its progress line, and report.json.

Accounting is honest: `usage` in the report sums every run's own ledger (usage/run-*.json), which counts every
request that went out (retries, re-asks and the attempts of traces that failed included), so it equals what the
provider received and billed; `this_run` is the same for the last run alone.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mementokit.pipeline.ledger import OutputFolder
from mementokit.pipeline.usage import Usage

__all__ = ["RunState", "build_report", "cost_of", "progress_line"]


@dataclass
class RunState:
    started: float = field(default_factory=time.monotonic)
    done: int = 0
    failed: int = 0
    skipped_finished: int = 0
    skipped_failed: int = 0  # recorded as failing for good before; not retried without retry_failed
    rejected: dict[str, int] = field(default_factory=dict)
    bad_rows: int = 0  # input rows skipped with skip_bad
    duplicates: int = 0
    usage: Usage = field(default_factory=Usage)

    def rate_per_min(self) -> float:
        elapsed = max(1e-9, time.monotonic() - self.started)
        return 60.0 * self.done / elapsed


def cost_of(usage: dict[str, Any] | Usage, prompt_per_mtok: float, completion_per_mtok: float) -> float:
    u = usage.to_dict() if isinstance(usage, Usage) else usage
    return (u.get("prompt_tokens", 0) * prompt_per_mtok + u.get("completion_tokens", 0) * completion_per_mtok) / 1e6


def progress_line(state: RunState, usage: Usage, in_flight: int, cost: float) -> str:
    u = usage.to_dict()
    return (
        f"{state.done} done, {state.failed} failed | {state.rate_per_min():.1f} traces/min | requests {u['requests']} "
        f"(in flight {in_flight}, retries {u['retries']}, re-asks {u['reasks']}) | prompt {u['prompt_tokens']:,} tok "
        f"| ${cost:.4f}"
    )


def _median(values: list[float]) -> float | None:
    return round(statistics.median(values), 4) if values else None


def _quality(folder: OutputFolder, pass_score: float) -> dict[str, Any]:
    traces = blocks = first_pass = final_pass = 0
    blocks_per_trace: list[int] = []
    ratios: list[float] = []
    finished_usage = Usage()
    for r in folder.results():
        traces += 1
        blocks_per_trace.append(r["num_blocks"])
        for history, bt, mt in zip(r["judge_history"], r["block_tokens"], r["memento_tokens"]):
            blocks += 1
            first_pass += history[0] >= pass_score
            final_pass += max(history) >= pass_score
            ratios.append(mt / max(1, bt))
        finished_usage.add(Usage.from_dict(r.get("usage", {})))
    return {
        "traces": traces,
        "blocks": blocks,
        "median_blocks_per_trace": _median(blocks_per_trace),
        "judge_pass_rate_first_round": round(first_pass / blocks, 4) if blocks else None,
        "judge_pass_rate_final": round(final_pass / blocks, 4) if blocks else None,
        "median_compression_tokens": _median(ratios),
        "usage_of_finished_traces": finished_usage.to_dict(),
    }


def _failures(folder: OutputFolder, finished: set[str]) -> dict[str, Any]:
    latest: dict[str, dict[str, Any]] = {}  # the last recorded failure of each trace that is still unfinished
    for f in folder.failures():
        if f.get("task_id") not in finished:
            latest[str(f["task_id"])] = f
    by_stage: dict[str, int] = {}
    for record in latest.values():
        stage = record.get("stage", "?")
        by_stage[stage] = by_stage.get(stage, 0) + 1
    return {
        "failed_traces": len(latest),
        "permanent_failures": sum(1 for r in latest.values() if r.get("permanent")),
        "failures_by_stage": by_stage,
    }


def build_report(out_dir: str | Path, pass_score: float = 8.0) -> dict[str, Any]:
    """Judge pass rates, compression, blocks per trace, failures by stage, and the cost of every run, over out_dir."""
    folder = OutputFolder(out_dir)
    report = _quality(folder, pass_score)
    report.update(_failures(folder, folder.finished_ids()))
    usage = Usage()
    cost = 0.0
    runs = folder.runs()
    for run in runs:
        usage.add(Usage.from_dict(run.get("llm", {})))
        cost += float(run.get("cost", 0.0))
    total = usage.to_dict()
    traces = report["traces"]
    report.update(
        runs=len(runs),
        llm_requests_per_trace=round(total["requests"] / traces, 2) if traces else None,
        llm_calls_per_trace=round(total["calls"] / traces, 2) if traces else None,
        prompt_tokens_per_trace=round(total["prompt_tokens"] / traces, 1) if traces else None,
        usage=total,
        cost=round(cost, 6),
    )
    return report
