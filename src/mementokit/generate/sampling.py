"""Sampling settings and the per-row sampler (greedy, temperature, top-k, top-p, min-p, seeded)."""

from __future__ import annotations

import operator
from dataclasses import dataclass, field

import torch

from mementokit.errors import ConfigError


@dataclass(frozen=True)
class SamplingParams:
    """How tokens are chosen and when a row stops.

    temperature 0 means greedy. `seed` makes sampling reproducible; row i of a batch uses seed + i, so a batch
    samples exactly what the same prompts would sample one at a time.
    `max_cache_tokens` caps the PHYSICAL cache of a row (what memory holds), separately from `max_new_tokens`
    (the logical length), so a memento model can reason longer within a fixed cache.
    """

    max_new_tokens: int = 256
    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0
    min_p: float = 0.0
    seed: int | None = None
    stop: str | tuple[str, ...] | list[str] = ()
    stop_token_ids: tuple[int, ...] = ()
    ignore_eos: bool = False
    max_cache_tokens: int | None = None
    extra_eos_ids: tuple[int, ...] = field(default=(), repr=False)

    def __post_init__(self) -> None:
        # Types first: a wrong type accepted here would fail mid-generation (top_k=1.5 in torch.topk).
        _check_int("max_new_tokens", self.max_new_tokens)
        _check_int("top_k", self.top_k)
        for name in ("temperature", "top_p", "min_p"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ConfigError(f"{name} must be a number, got {value!r}")
        if self.seed is not None:
            _check_int("seed", self.seed)
        if self.max_cache_tokens is not None:
            _check_int("max_cache_tokens", self.max_cache_tokens)
        if self.max_new_tokens < 0:
            raise ConfigError(f"max_new_tokens must be >= 0, got {self.max_new_tokens}")
        if self.temperature < 0:
            raise ConfigError(f"temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ConfigError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.top_k < 0:
            raise ConfigError(f"top_k must be >= 0, got {self.top_k}")
        if not 0 <= self.min_p < 1:
            raise ConfigError(f"min_p must be in [0, 1), got {self.min_p}")
        if self.max_cache_tokens is not None and self.max_cache_tokens < 1:
            raise ConfigError(f"max_cache_tokens must be >= 1, got {self.max_cache_tokens}")
        # One string is one stop string (as in vLLM), not one per character.
        stop = (self.stop,) if isinstance(self.stop, str) else self.stop
        if stop is None:
            stop = ()
        if not isinstance(stop, (list, tuple)) or not all(isinstance(s, str) and s for s in stop):
            raise ConfigError(f"stop must be a string or a list of non-empty strings, got {self.stop!r}")
        object.__setattr__(self, "stop", tuple(stop))
        for name in ("stop_token_ids", "extra_eos_ids"):
            ids = getattr(self, name)
            if isinstance(ids, int) and not isinstance(ids, bool):
                ids = (ids,)
            if not isinstance(ids, (list, tuple, set, frozenset)):
                raise ConfigError(f"{name} must be a list of token ids, got {ids!r}")
            for i in ids:
                _check_int(name, i)
            object.__setattr__(self, name, tuple(int(i) for i in ids))

    @property
    def greedy(self) -> bool:
        return self.temperature == 0


def _check_int(name: str, value) -> None:
    """An integer (numpy and torch integer scalars too), never a bool or a float that would be truncated."""
    try:
        if isinstance(value, bool):
            raise TypeError
        operator.index(value)
    except TypeError:
        raise ConfigError(f"{name} must be an integer, got {value!r}") from None


def filter_logits(logits: torch.Tensor, params: SamplingParams) -> torch.Tensor:
    """logits [V] (fp32) -> logits with the tokens top-k / top-p / min-p reject set to -inf, after temperature."""
    logits = logits / params.temperature
    if params.top_k > 0 and params.top_k < logits.shape[-1]:
        kth = torch.topk(logits, params.top_k).values[-1]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if params.min_p > 0:
        probs = torch.softmax(logits, dim=-1)
        logits = logits.masked_fill(probs < params.min_p * probs.max(), float("-inf"))
    if params.top_p < 1:
        sorted_logits, order = torch.sort(logits, descending=True)
        cumulative = torch.softmax(sorted_logits, dim=-1).cumsum(-1)
        # Drop a token when the tokens before it already reach top_p; the most likely token always stays.
        drop_sorted = (cumulative - torch.softmax(sorted_logits, dim=-1)) >= params.top_p
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    return logits


class RowSampler:
    """Chooses the next token of one row from its logits [V]."""

    def __init__(self, params: SamplingParams, row_index: int = 0) -> None:
        self.params = params
        self.generator = None
        if not params.greedy:
            self.generator = torch.Generator()
            seed = params.seed if params.seed is not None else torch.seed()
            self.generator.manual_seed(int(seed) + row_index)

    def __call__(self, logits: torch.Tensor) -> int:
        logits = logits.float().cpu()
        if self.params.greedy:
            return int(torch.argmax(logits))
        probs = torch.softmax(filter_logits(logits, self.params), dim=-1)
        return int(torch.multinomial(probs, 1, generator=self.generator))
