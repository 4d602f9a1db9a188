"""The pipeline's configuration: one frozen dataclass per stage, validated when built, and the shard of a task."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from mementokit.errors import ConfigError
from mementokit.pipeline.client import LLMConfig
from mementokit.pipeline.score import ScoreConfig
from mementokit.pipeline.select import SelectConfig
from mementokit.pipeline.summarize import SummarizeConfig

__all__ = ["PipelineConfig", "parse_shard", "shard_from_env"]


@dataclass(frozen=True)
class PipelineConfig:
    llm: LLMConfig
    score: ScoreConfig = field(default_factory=ScoreConfig)
    summarize: SummarizeConfig = field(default_factory=SummarizeConfig)
    select: SelectConfig = field(default_factory=SelectConfig)
    min_sentence_tokens: int = 5
    min_block_tokens: int = 200
    max_block_tokens: int | None = None
    variance_penalty: float = 0.5
    workers: int = 4  # traces in flight (per task)
    limit: int | None = None  # traces of this shard to consider (after filtering)
    shard: tuple[int, int] = (0, 1)
    price_prompt_per_mtok: float = 0.0  # for the cost on the progress line and in the report
    price_completion_per_mtok: float = 0.0
    retry_failed: bool = False  # also retry traces recorded as failing for good
    skip_bad: bool = False  # skip (and count) input rows that cannot be read, instead of stopping

    def __post_init__(self) -> None:
        problems = []
        if self.workers < 1:
            problems.append(f"workers must be >= 1, got {self.workers}")
        for name in ("min_sentence_tokens", "min_block_tokens"):
            if getattr(self, name) < 0:
                problems.append(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.max_block_tokens is not None and self.max_block_tokens < max(1, self.min_block_tokens):
            problems.append(
                f"max_block_tokens ({self.max_block_tokens}) must be >= min_block_tokens ({self.min_block_tokens})"
            )
        if self.variance_penalty < 0:
            problems.append(f"variance_penalty must be >= 0, got {self.variance_penalty}")
        if self.limit is not None and self.limit < 0:
            problems.append(f"limit must be >= 0, got {self.limit}")
        for name in ("price_prompt_per_mtok", "price_completion_per_mtok"):
            if getattr(self, name) < 0:
                problems.append(f"{name} must be >= 0, got {getattr(self, name)}")
        index, count = self.shard
        if count < 1 or not 0 <= index < count:
            problems.append(f"shard must be (i, N) with 0 <= i < N, got {self.shard}")
        if problems:
            raise ConfigError("PipelineConfig: " + "; ".join(problems))


def parse_shard(text: str) -> tuple[int, int]:
    """`i/N` -> (i, N); `env` -> the shard from the environment (see shard_from_env)."""
    if text.strip().lower() == "env":
        return shard_from_env()
    try:
        i, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise ConfigError(f"--shard must look like i/N (e.g. 0/4) or 'env', got {text!r}") from None
    if n < 1 or not 0 <= i < n:
        raise ConfigError(f"--shard {text}: need 0 <= i < N")
    return i, n


def shard_from_env(environ: dict[str, str] | None = None) -> tuple[int, int]:
    """This task's shard from MEMENTO_SHARD=i/N, or a Slurm job array (SLURM_ARRAY_TASK_ID / _COUNT, _MIN)."""
    env = os.environ if environ is None else environ
    if env.get("MEMENTO_SHARD"):
        return parse_shard(env["MEMENTO_SHARD"])
    if "SLURM_ARRAY_TASK_ID" in env and "SLURM_ARRAY_TASK_COUNT" in env:
        try:
            index = int(env["SLURM_ARRAY_TASK_ID"]) - int(env.get("SLURM_ARRAY_TASK_MIN", "0"))
            count = int(env["SLURM_ARRAY_TASK_COUNT"])
        except ValueError:
            raise ConfigError("SLURM_ARRAY_TASK_ID / SLURM_ARRAY_TASK_COUNT are not integers") from None
        if count < 1 or not 0 <= index < count:
            raise ConfigError(f"Slurm array task {index} is outside 0..{count - 1}")
        return index, count
    raise ConfigError("--shard env: set MEMENTO_SHARD=i/N or run inside a Slurm job array")
