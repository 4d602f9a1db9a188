"""Stage 5: one memento per block. Compressor, judge, refine with the judge's feedback; keep the BEST.

Round 1 compresses every block (several blocks per call, up to `batch_tokens` of block text, so the
trace is sent once rather than once per block plus a long instruction each time), then the judge scores
each memento 0-10 (several per call too). A memento that scores below `pass_score` is rewritten with the
judge's feedback and judged again, for at most `rounds` judge rounds in all. Each block keeps its
best-scoring memento (the paper's reference keeps the last one, which can be worse). Answers are matched to
blocks by the number in their header, never by position; missing numbers are asked for again, and a block
that still has none fails the stage for the trace.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from mementokit.errors import ConfigError, LLMAbort, LLMError, StageFailure
from mementokit.format import DEFAULT_MARKERS
from mementokit.pipeline.client import LLMClient
from mementokit.pipeline.parsing import parse_numbered_sections, parse_verdicts
from mementokit.pipeline.prompts import (
    BLOCK_TEMPLATE,
    COMPRESS_SYSTEM,
    COMPRESS_USER,
    JUDGE_PAIR_TEMPLATE,
    JUDGE_SYSTEM,
    JUDGE_USER,
    REFINE_BLOCK_TEMPLATE,
    REFINE_USER,
    retry_note,
)
from mementokit.pipeline.split import estimate_tokens
from mementokit.pipeline.usage import Usage

MARKER_STRINGS = DEFAULT_MARKERS.all


@dataclass(frozen=True)
class SummarizeConfig:
    rounds: int = 2  # judge rounds per block at most (the paper: 2)
    pass_score: float = 8.0
    batch_tokens: int = 6000  # block tokens per compressor / refine call
    judge_batch_tokens: int = 6000  # block tokens per judge call
    target_ratio: float = 0.15  # memento target, fraction of block tokens (rules say 10-20 %)
    max_attempts: int = 3  # asks per call, the first included

    def __post_init__(self) -> None:
        for name in ("rounds", "batch_tokens", "judge_batch_tokens", "max_attempts"):
            if getattr(self, name) < 1:
                raise ConfigError(f"SummarizeConfig.{name} must be >= 1, got {getattr(self, name)}")
        if not 0 <= self.pass_score <= 10:
            raise ConfigError(f"SummarizeConfig.pass_score must be in 0..10, got {self.pass_score}")
        if not 0 < self.target_ratio <= 1:
            raise ConfigError(f"SummarizeConfig.target_ratio must be in (0, 1], got {self.target_ratio}")


@dataclass
class Attempt:
    memento: str
    score: float
    feedback: str


@dataclass
class BlockSummary:
    memento: str  # the best-scoring one
    score: float
    passed: bool
    history: list[Attempt] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"score": self.score, "passed": self.passed, "scores": [a.score for a in self.history]}


def clean_memento(text: str) -> str:
    """A memento may not contain the format's markers (it would break the response); strip them."""
    for marker in MARKER_STRINGS:
        text = text.replace(marker, "")
    return text.strip()


def batches(numbers: Sequence[int], sizes: dict[int, int], budget: int) -> list[list[int]]:
    """Consecutive groups of block numbers whose token sizes add up to at most `budget` (>= 1 block each)."""
    out: list[list[int]] = []
    used = 0
    for n in numbers:
        if out and used + sizes[n] <= budget:
            out[-1].append(n)
            used += sizes[n]
        else:
            out.append([n])
            used = sizes[n]
    return out


async def _ask_numbered(
    client: LLMClient,
    stage: str,
    build: Callable[[list[int]], list[dict[str, str]]],
    expected: list[int],
    read: Callable[[str, list[int]], dict[int, Any]],
    attempts: int,
    ledgers: Sequence[Usage],
) -> dict[int, Any]:
    """Ask until every expected number has an answer (or attempts run out: a permanent StageFailure).

    A re-ask is built for the missing numbers only and says what was wrong with the previous answer.
    """
    got: dict[int, Any] = {}
    reason = ""
    for attempt in range(attempts):
        wanted = [n for n in expected if n not in got]
        asked = build(wanted)
        if attempt:
            asked[-1] = {"role": "user", "content": asked[-1]["content"] + retry_note(reason, attempt, attempts)}
            for ledger in [client.usage, *ledgers]:
                ledger.stage(stage).reasks += 1
        try:
            answer = await client.complete(
                asked, stage=stage, ledgers=ledgers, usable=lambda text, w=wanted: bool(read(text, w))
            )
        except LLMAbort:
            raise
        except LLMError as exc:
            raise StageFailure(stage, str(exc)) from exc
        got.update(read(answer, wanted))
        missing = [n for n in expected if n not in got]
        if not missing:
            return got
        reason = f"nothing usable for {'blocks' if len(missing) > 1 else 'block'} {', '.join(map(str, missing))}"
    missing = [n for n in expected if n not in got]
    raise StageFailure(stage, f"no usable answer for blocks {missing} after {attempts} attempts", permanent=True)


def _read_mementos(answer: str, expected: list[int]) -> dict[int, str]:
    sections = parse_numbered_sections(answer, "memento")
    if not sections:
        sections = parse_numbered_sections(answer, "(?:summary|block)")
    if not sections and len(expected) == 1:  # a lone memento without its header
        text = answer.strip()
        sections = {expected[0]: text} if text else {}
    return {n: clean_memento(sections[n]) for n in expected if n in sections and clean_memento(sections[n])}


class Summarizer:
    def __init__(
        self,
        client: LLMClient,
        config: SummarizeConfig = SummarizeConfig(),
        count_tokens: Callable[[str], int] = estimate_tokens,
    ):
        self.client = client
        self.config = config
        self.count_tokens = count_tokens

    def _target(self, tokens: int) -> int:
        return max(8, round(tokens * self.config.target_ratio))

    def compress_messages(
        self, problem: str, blocks: dict[int, str], sizes: dict[int, int], numbers: list[int]
    ) -> list[dict[str, str]]:
        body = "\n\n".join(
            BLOCK_TEMPLATE.format(number=n, tokens=sizes[n], target=self._target(sizes[n]), text=blocks[n])
            for n in numbers
        )
        return [
            {"role": "system", "content": COMPRESS_SYSTEM},
            {"role": "user", "content": COMPRESS_USER.format(problem=problem, blocks=body)},
        ]

    def refine_messages(
        self, problem: str, blocks: dict[int, str], sizes: dict[int, int], numbers: list[int], last: dict[int, Attempt]
    ) -> list[dict[str, str]]:
        body = "\n\n".join(
            REFINE_BLOCK_TEMPLATE.format(
                number=n,
                tokens=sizes[n],
                target=self._target(sizes[n]),
                text=blocks[n],
                memento=last[n].memento,
                score=f"{last[n].score:g}",
                feedback=last[n].feedback or "(none)",
            )
            for n in numbers
        )
        return [
            {"role": "system", "content": COMPRESS_SYSTEM},
            {"role": "user", "content": REFINE_USER.format(problem=problem, blocks=body)},
        ]

    def judge_messages(
        self, blocks: dict[int, str], candidates: dict[int, str], numbers: list[int]
    ) -> list[dict[str, str]]:
        pairs = "\n\n".join(
            JUDGE_PAIR_TEMPLATE.format(number=n, text=blocks[n], memento=candidates[n]) for n in numbers
        )
        return [
            {"role": "system", "content": JUDGE_SYSTEM},
            {"role": "user", "content": JUDGE_USER.format(pairs=pairs)},
        ]

    async def _gather(self, jobs: list) -> dict[int, Any]:
        results = await asyncio.gather(*jobs, return_exceptions=True)
        failure = next((r for r in results if isinstance(r, BaseException)), None)
        if failure is not None:
            raise failure
        merged: dict[int, Any] = {}
        for r in results:
            merged.update(r)
        return merged

    async def summarize(
        self, problem: str, block_texts: Sequence[str], ledgers: Sequence[Usage] = ()
    ) -> list[BlockSummary]:
        cfg = self.config
        blocks = {i + 1: text for i, text in enumerate(block_texts)}  # numbered from 1, as the prompts say
        sizes = {n: self.count_tokens(t) for n, t in blocks.items()}
        numbers = list(blocks)
        candidates: dict[int, str] = await self._gather(
            [
                _ask_numbered(
                    self.client,
                    "compress",
                    lambda ns: self.compress_messages(problem, blocks, sizes, ns),
                    group,
                    _read_mementos,
                    cfg.max_attempts,
                    ledgers,
                )
                for group in batches(numbers, sizes, cfg.batch_tokens)
            ]
        )
        history: dict[int, list[Attempt]] = {n: [] for n in numbers}
        pending = numbers
        for round_index in range(max(1, cfg.rounds)):
            verdicts = await self._gather(
                [
                    _ask_numbered(
                        self.client,
                        "judge",
                        lambda ns: self.judge_messages(blocks, candidates, ns),
                        group,
                        parse_verdicts,
                        cfg.max_attempts,
                        ledgers,
                    )
                    for group in batches(pending, sizes, cfg.judge_batch_tokens)
                ]
            )
            for n in pending:
                history[n].append(Attempt(candidates[n], verdicts[n].score, verdicts[n].feedback))
            pending = [n for n in pending if verdicts[n].score < cfg.pass_score]
            if not pending or round_index + 1 >= cfg.rounds:
                break
            last = {n: history[n][-1] for n in pending}
            candidates.update(
                await self._gather(
                    [
                        _ask_numbered(
                            self.client,
                            "refine",
                            lambda ns, last=last: self.refine_messages(problem, blocks, sizes, ns, last),
                            group,
                            _read_mementos,
                            cfg.max_attempts,
                            ledgers,
                        )
                        for group in batches(pending, sizes, cfg.batch_tokens)
                    ]
                )
            )
        out = []
        for n in numbers:
            # best score wins; among equal scores the shorter memento (the goal is compression)
            best = max(history[n], key=lambda a: (a.score, -len(a.memento)))
            out.append(BlockSummary(best.memento, best.score, best.score >= cfg.pass_score, history[n]))
        return out
