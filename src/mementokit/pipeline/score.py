"""Stage 3: the LLM scores every boundary between sentences 0-3, window by window.

A window marks a run of consecutive boundaries and shows `context_sentences` unmarked sentences on each
side, so the boundaries at its edges are judged with text on both sides. An optional second pass uses a
window size coprime to the first (and a shifted start) so that no boundary sits at the edge of both; the
passes are averaged per boundary. Answers are matched to boundaries by number. A window whose answer
lacks some boundaries is asked again (with the reason); if it still fails, the stage fails for that trace
and says which boundaries: nothing is ever filled in with zeros.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from mementokit.errors import ConfigError, LLMAbort, LLMError, StageFailure
from mementokit.pipeline.client import LLMClient
from mementokit.pipeline.parsing import parse_boundary_scores
from mementokit.pipeline.prompts import SCORE_SYSTEM, SCORE_USER, retry_note
from mementokit.pipeline.usage import Usage

__all__ = [
    "ScoreConfig",
    "ScoreResult",
    "StageFailure",
    "score_boundaries",
    "score_call_plan",
    "score_messages",
    "windows",
]


@dataclass(frozen=True)
class ScoreConfig:
    window: int = 32  # boundaries per call in the first pass
    second_window: int | None = None  # e.g. 23: a second pass with a coprime size (the paper used 16 and 11)
    context_sentences: int = 2  # unmarked sentences shown on each side of a window
    max_sentence_chars: int = 800  # longer sentences are shown as head ... tail (the ends decide a boundary)
    max_attempts: int = 3  # asks per window, the first included

    def __post_init__(self) -> None:
        for name in ("window", "max_sentence_chars", "max_attempts"):
            if getattr(self, name) < 1:
                raise ConfigError(f"ScoreConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.second_window is not None and self.second_window < 1:
            raise ConfigError(f"ScoreConfig.second_window must be >= 1 or None, got {self.second_window}")
        if self.context_sentences < 0:
            raise ConfigError(f"ScoreConfig.context_sentences must be >= 0, got {self.context_sentences}")


@dataclass
class ScoreResult:
    scores: list[float]  # one per boundary, averaged over passes
    passes: list[list[float]] = field(default_factory=list)
    clamped: int = 0  # values the model gave outside 0..3


def windows(num_boundaries: int, size: int, first: int | None = None) -> list[list[int]]:
    """Consecutive runs of boundary numbers of (about) `size`; `first` sets the first run's length."""
    if num_boundaries <= 0:
        return []
    out, start = [], 0
    if first is not None and 0 < first < num_boundaries:
        out.append(list(range(0, first)))
        start = first
    rest = num_boundaries - start
    count = max(1, math.ceil(rest / size))
    for i in range(count):  # balanced, so that no run is a lonely last boundary
        a = start + (rest * i) // count
        b = start + (rest * (i + 1)) // count
        if b > a:
            out.append(list(range(a, b)))
    return out


def _shown(sentence: str, limit: int) -> str:
    if len(sentence) <= limit:
        return sentence
    head = limit // 3
    return sentence[:head] + " [...] " + sentence[-(limit - head) :]


def render_window(
    sentences: Sequence[str], separators: Sequence[str] | None, boundaries: Sequence[int], config: ScoreConfig
) -> str:
    """The text of a window with [[B<n>]] markers at its boundaries (boundary n: after sentence n)."""
    n = len(sentences)
    lo = max(0, boundaries[0] - config.context_sentences)
    hi = min(n - 1, boundaries[-1] + 1 + config.context_sentences)
    marked = set(boundaries)
    parts = []
    for i in range(lo, hi + 1):
        parts.append(_shown(sentences[i], config.max_sentence_chars))
        if i < hi:
            gap = separators[i + 1] if separators is not None else " "
            gap = gap if gap.strip() == "" and gap else " "
            parts.append(f" [[B{i}]]{gap}" if i in marked else gap)
    return "".join(parts)


def score_messages(
    sentences: Sequence[str], separators: Sequence[str] | None, boundaries: Sequence[int], config: ScoreConfig
) -> list[dict[str, str]]:
    text = render_window(sentences, separators, boundaries, config)
    user = SCORE_USER.format(text=text, first=boundaries[0], last=boundaries[-1], count=len(boundaries))
    return [{"role": "system", "content": SCORE_SYSTEM}, {"role": "user", "content": user}]


async def _score_window(
    client: LLMClient,
    build: Callable[[list[int]], list[dict[str, str]]],
    boundaries: list[int],
    config: ScoreConfig,
    ledgers: Sequence[Usage],
) -> tuple[dict[int, float], int]:
    """Scores for one window; a re-ask shows only the boundaries still missing and says what was wrong."""
    got: dict[int, float] = {}
    clamped = 0
    reason = ""
    for attempt in range(config.max_attempts):
        wanted = [b for b in boundaries if b not in got]
        asked = build(wanted)
        if attempt:
            asked[-1] = {
                "role": "user",
                "content": asked[-1]["content"] + retry_note(reason, attempt, config.max_attempts),
            }
            for ledger in [client.usage, *ledgers]:
                ledger.stage("score").reasks += 1
        try:
            answer = await client.complete(
                asked,
                stage="score",
                ledgers=ledgers,
                usable=lambda text, w=wanted: bool(parse_boundary_scores(text, w).scores),
            )
        except LLMAbort:
            raise
        except LLMError as exc:
            raise StageFailure("score", f"boundaries {boundaries[0]}-{boundaries[-1]}: {exc}") from exc
        parsed = parse_boundary_scores(answer, wanted)
        got.update(parsed.scores)
        clamped += parsed.clamped
        if len(got) == len(boundaries):
            return got, clamped
        reason = parsed.problem or "some boundaries have no score"
    missing = [b for b in boundaries if b not in got]
    raise StageFailure(
        "score",
        f"no usable scores for boundaries {missing[:10]} after {config.max_attempts} attempts: {reason}",
        permanent=True,
    )


async def score_boundaries(
    client: LLMClient,
    sentences: Sequence[str],
    separators: Sequence[str] | None = None,
    config: ScoreConfig = ScoreConfig(),
    ledgers: Sequence[Usage] = (),
) -> ScoreResult:
    """Scores 0-3 for the len(sentences) - 1 boundaries (raises StageFailure, never pads)."""
    num = len(sentences) - 1
    if num <= 0:
        return ScoreResult([], [])
    plans = [windows(num, config.window)]
    if config.second_window:
        plans.append(windows(num, config.second_window, first=max(1, config.second_window // 2)))
    passes: list[list[float]] = []
    clamped = 0
    for plan in plans:

        def build(boundaries: list[int]) -> list[dict[str, str]]:
            return score_messages(sentences, separators, boundaries, config)

        jobs = [_score_window(client, build, w, config, ledgers) for w in plan]
        results = await asyncio.gather(*jobs, return_exceptions=True)
        failure = next((r for r in results if isinstance(r, BaseException)), None)
        if failure is not None:
            raise failure
        merged: dict[int, float] = {}
        for got, c in results:  # type: ignore[misc]
            merged.update(got)
            clamped += c
        passes.append([merged[b] for b in range(num)])
    combined = [sum(p[b] for p in passes) / len(passes) for b in range(num)]
    return ScoreResult(combined, passes, clamped)


def score_call_plan(num_sentences: int, config: ScoreConfig) -> list[list[int]]:
    """The windows score_boundaries will ask about (for --dry-run)."""
    num = num_sentences - 1
    plan = windows(num, config.window)
    if config.second_window:
        plan += windows(num, config.second_window, first=max(1, config.second_window // 2))
    return plan
