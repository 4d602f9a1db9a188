"""The ONE list of stages. `run` chains all of them per trace (`process_trace`); each stage command runs one of
them over a JSONL file (`run_stage_file`). A stage takes a row (a dict) and returns it with its fields added:

    split      cot                                   -> sentences, separators, num_sentences
    score      sentences (separators)                -> boundary_scores
    segment    sentences, boundary_scores            -> blocks (inclusive), num_blocks, block_tokens, ...
    summarize  sentences, blocks (separators)        -> block_summaries, memento_scores, judge_history, ...
    assemble   sentences, separators, blocks, block_summaries (cot) -> response (checked by parsing it back)
"""

from __future__ import annotations

import asyncio
import statistics
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mementokit.errors import ConfigError, InputError, StageFailure
from mementokit.format import DEFAULT_MARKERS
from mementokit.jsonl import read_jsonl, write_jsonl_atomic
from mementokit.pipeline.assemble import assemble_response, block_texts
from mementokit.pipeline.client import LLMClient
from mementokit.pipeline.config import PipelineConfig
from mementokit.pipeline.score import score_boundaries
from mementokit.pipeline.segment import optimal_segmentation
from mementokit.pipeline.select import normalize_row
from mementokit.pipeline.split import estimate_tokens, split_trace, think_region
from mementokit.pipeline.summarize import Summarizer
from mementokit.pipeline.usage import Usage

__all__ = ["STAGES", "Stage", "StageContext", "layout", "process_trace", "run_stage_file", "stage_named"]


@dataclass
class StageContext:
    cfg: PipelineConfig
    client: LLMClient | None = None  # the LLM stages need one
    count_tokens: Callable[[str], int] = estimate_tokens
    ledgers: Sequence[Usage] = field(default_factory=tuple)  # per-trace usage, on top of the client's own


@dataclass(frozen=True)
class Stage:
    name: str
    needs: tuple[tuple[str, type], ...]  # fields (and their types) a row must have
    run: Callable[[dict[str, Any], StageContext], Awaitable[dict[str, Any]]]
    uses_llm: bool = False

    def check(self, row: dict[str, Any], path: str | None = None, line: int | None = None) -> None:
        """InputError naming the file, line and field when the row lacks what this stage needs."""
        for name, kind in self.needs:
            if name not in row:
                raise InputError(f"missing field (the {self.name} stage needs it)", path=path, line=line, field=name)
            if not isinstance(row[name], kind):
                raise InputError(
                    f"expected {kind.__name__}, got {type(row[name]).__name__}", path=path, line=line, field=name
                )


def layout(row: dict[str, Any]) -> tuple[str, list[tuple[int, int]]]:
    """(cot, sentence spans) of a row, from `sentences` + `separators` (which rebuild the cot byte for byte).

    Without separators, sentences are joined by single spaces. A `cot` that the two do not rebuild is an error.
    """
    sentences = row["sentences"]
    seps = row.get("separators") or [""] + [" "] * max(0, len(sentences) - 1) + [""]
    if len(seps) != len(sentences) + 1:
        raise InputError(f"{len(seps)} separators for {len(sentences)} sentences (need one more)", field="separators")
    spans, parts, pos = [], [], 0
    for sentence, sep in zip(sentences, seps):
        pos += len(sep)
        spans.append((pos, pos + len(sentence)))
        pos += len(sentence)
        parts += [sep, sentence]
    parts.append(seps[-1])
    cot = "".join(parts)
    if "cot" in row and isinstance(row["cot"], str) and row["cot"] != cot:
        raise InputError("sentences and separators do not rebuild the cot", field="separators")
    return cot, spans


# ------------------------------------------------------------------------------------------------- stages


def _refuse_unusable(cot: str) -> None:
    """A trace that can never give a valid Memento response fails BEFORE anything is paid for it."""
    start, end = think_region(cot)
    inner = cot[start:end]
    if not inner.strip():
        raise StageFailure("split", "the trace has no text inside <think>", permanent=True)
    found = [m for m in DEFAULT_MARKERS.all if m in inner]
    if found:
        raise StageFailure(
            "split", f"the trace contains marker strings {found}: its blocks could not be parsed back", permanent=True
        )


async def split_stage(row: dict[str, Any], ctx: StageContext) -> dict[str, Any]:
    cot = row["cot"]
    _refuse_unusable(cot)
    split = await asyncio.to_thread(
        split_trace, cot, count_tokens=ctx.count_tokens, min_tokens=ctx.cfg.min_sentence_tokens
    )
    if not split.sentences:
        raise StageFailure("split", "the trace has no text inside <think>", permanent=True)
    return {**row, "sentences": split.sentences, "separators": split.separators, "num_sentences": len(split.sentences)}


async def score_stage(row: dict[str, Any], ctx: StageContext) -> dict[str, Any]:
    if ctx.client is None:
        raise ConfigError("the score stage needs an LLM client")
    scored = await score_boundaries(ctx.client, row["sentences"], row.get("separators"), ctx.cfg.score, ctx.ledgers)
    return {**row, "boundary_scores": scored.scores}


async def segment_stage(row: dict[str, Any], ctx: StageContext) -> dict[str, Any]:
    sentences, scores = row["sentences"], row["boundary_scores"]
    if len(scores) != max(0, len(sentences) - 1):
        raise InputError(
            f"{len(scores)} scores for {len(sentences)} sentences (need {max(0, len(sentences) - 1)})",
            field="boundary_scores",
        )
    counts = [ctx.count_tokens(s) for s in sentences]
    cfg = ctx.cfg
    try:
        seg = await asyncio.to_thread(
            optimal_segmentation,
            scores,
            counts,
            min_block_tokens=cfg.min_block_tokens,
            max_block_tokens=cfg.max_block_tokens,
            variance_penalty=cfg.variance_penalty,
        )
    except InputError:
        raise
    except Exception as exc:  # an infeasible max size, for instance
        raise StageFailure("segment", str(exc), permanent=True) from exc
    blocks = [[a, b] for a, b in seg.blocks]
    return {
        **row,
        "blocks": blocks,
        "num_blocks": len(blocks),
        "segmentation_objective": seg.objective,
        "block_tokens": [sum(counts[a : b + 1]) for a, b in blocks],
    }


async def summarize_stage(row: dict[str, Any], ctx: StageContext) -> dict[str, Any]:
    if ctx.client is None:
        raise ConfigError("the summarize stage needs an LLM client")
    cot, spans = layout(row)
    texts = block_texts(cot, spans, row["blocks"])
    summarizer = Summarizer(ctx.client, ctx.cfg.summarize, ctx.count_tokens)
    summaries = await summarizer.summarize(row.get("problem", ""), texts, ctx.ledgers)
    mementos = [s.memento for s in summaries]
    return {
        **row,
        "block_summaries": mementos,
        "block_tokens": [ctx.count_tokens(t) for t in texts],
        "memento_tokens": [ctx.count_tokens(m) for m in mementos],
        "memento_scores": [s.score for s in summaries],
        "judge_history": [[a.score for a in s.history] for s in summaries],
        "avg_final_score": statistics.fmean(s.score for s in summaries) if summaries else None,
    }


async def assemble_stage(row: dict[str, Any], ctx: StageContext) -> dict[str, Any]:
    cot, spans = layout(row)
    response = assemble_response(cot, spans, row["blocks"], row["block_summaries"])
    return {**row, "response": response}


STAGES: tuple[Stage, ...] = (
    Stage("split", (("cot", str),), split_stage),
    Stage("score", (("sentences", list),), score_stage, uses_llm=True),
    Stage("segment", (("sentences", list), ("boundary_scores", list)), segment_stage),
    Stage("summarize", (("sentences", list), ("blocks", list)), summarize_stage, uses_llm=True),
    Stage(
        "assemble",
        (("sentences", list), ("separators", list), ("blocks", list), ("block_summaries", list)),
        assemble_stage,
    ),
)


def stage_named(name: str) -> Stage:
    for stage in STAGES:
        if stage.name == name:
            return stage
    raise ConfigError(f"no stage '{name}'; stages: {', '.join(s.name for s in STAGES)}")


# ------------------------------------------------------------------------------------------------- drivers

DROPPED_FROM_RESULTS = ("cot", "conversations", "messages")


async def process_trace(
    row: dict[str, Any], client: LLMClient, cfg: PipelineConfig, count_tokens: Callable[[str], int] = estimate_tokens
) -> dict[str, Any]:
    """Every stage, in order, for one normalised row; returns the result row (raises StageFailure)."""
    usage = Usage()
    ctx = StageContext(cfg, client, count_tokens, (usage,))
    current = row
    for stage in STAGES:
        try:
            current = await stage.run(current, ctx)
        except InputError as exc:  # a trace whose own fields do not fit (never a file problem here)
            raise StageFailure(stage.name, exc.reason, permanent=True) from exc
    result = {k: v for k, v in current.items() if k not in DROPPED_FROM_RESULTS}
    result["usage"] = usage.to_dict()
    return result


async def _rows_through(
    stage: Stage, rows: list[tuple[int, dict[str, Any]]], ctx: StageContext, path: str
) -> list[dict[str, Any]]:
    limit = asyncio.Semaphore(max(1, ctx.cfg.workers))

    async def one(line: int, row: dict[str, Any]) -> dict[str, Any]:
        async with limit:
            try:
                return await stage.run(row, ctx)
            except InputError as exc:
                raise InputError(exc.reason, path=path, line=line, field=exc.field) from None
            except StageFailure as exc:
                raise StageFailure(exc.stage, f"{path}:{line}: {exc}", permanent=exc.permanent) from None

    tasks = [asyncio.create_task(one(line, row)) for line, row in rows]
    try:
        return list(await asyncio.gather(*tasks))
    finally:
        for task in tasks:
            task.cancel()


def run_stage_file(
    name: str,
    input_path: str,
    out_path: str | Path,
    ctx: StageContext,
    *,
    skip_bad: bool = False,
    transform: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Run one stage over every row of a JSONL file and write the rows it returns (atomically, in order).

    Rows are checked first (InputError naming file, line and field); a row the stage cannot process stops the
    command with the file and line (nothing is written). `transform` maps each output row (e.g. to the
    OpenMementos columns). Returns counts (rows, skipped bad lines, and the stage's
    own: sentences / blocks) and the LLM usage.
    """
    stage = stage_named(name)
    bad: list[InputError] = []
    rows: list[tuple[int, dict[str, Any]]] = []
    raws: list[dict[str, Any]] = []
    for line, raw in read_jsonl(input_path, skip_bad=skip_bad, on_bad=bad.append):
        row = normalize_row(raw, where=input_path, line=line) if stage.name == "split" else raw
        try:
            stage.check(row, input_path, line)
        except InputError as exc:
            if not skip_bad:
                raise
            bad.append(exc)
            continue
        rows.append((line, row))
        raws.append(raw)

    async def main() -> list[dict[str, Any]]:
        try:
            return await _rows_through(stage, rows, ctx, input_path)
        finally:
            if ctx.client is not None:
                await ctx.client.aclose()

    results = asyncio.run(main())
    if stage.name == "split":  # the input kept its own fields; the normalised copies of problem / cot are not added
        results = [{**raw, **{k: r[k] for k in ("sentences", "separators")}} for raw, r in zip(raws, results)]
    count = write_jsonl_atomic(out_path, [transform(r) for r in results] if transform else results)
    summary: dict[str, Any] = {"rows": count, "bad_rows": len(bad), "out": str(out_path)}
    if stage.name == "split":
        summary["sentences"] = sum(len(r["sentences"]) for r in results)
    if stage.name == "segment":
        summary["blocks"] = sum(len(r["blocks"]) for r in results)
    if ctx.client is not None:
        summary["usage"] = ctx.client.usage.to_dict()
    return summary
