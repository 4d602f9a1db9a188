"""KV-cache simulator: replay tokenized traces and measure cache occupancy after every position.

The paper's KV figures come from exactly this kind of offline replay (it matched live vLLM with R^2 > 0.999).
Vanilla keeps every token; memento drops what the block state machine evicts. Occupancy is vectorised:

    occupancy[t] = (t + 1) - (keys evicted by evictions reported at positions <= t)      # [L] int64

so a replay costs one pass of numpy over the ids (to find marker positions) plus O(#blocks) Python. The curves
come from mementokit.blocks.masks (the one owner of "evictions -> mask / occupancy"); kv re-exports them.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mementokit.blocks.config import BlockMaskingConfig
from mementokit.blocks.masks import occupancy_after_each_position, window_occupancy_after_each_position
from mementokit.blocks.state import BlockStateMachine
from mementokit.blocks.tokens import MarkerIds, add_block_markers, resolve_marker_ids
from mementokit.format.chat import render_chat
from mementokit.kv.model_memory import GIB, KVMemoryModel
from mementokit.records import TraceRecord


# ---- curves ---------------------------------------------------------------------------------------------------
def bytes_after_each_position(memory: KVMemoryModel, occupancy: np.ndarray,
                              window_occupancy: dict[int, np.ndarray]) -> np.ndarray:
    """Cache bytes after each position: full layers hold `occupancy`, sliding layers their window's share. [L] int64."""
    total = occupancy * np.int64(memory.full_bytes_per_token)
    for window, layer_bytes in memory.sliding:
        total = total + window_occupancy[window] * np.int64(layer_bytes)
    return total


# ---- results --------------------------------------------------------------------------------------------------
@dataclass
class KVStats:
    """One curve summarised. AUC: sum over positions of the occupancy, x-axis in ktokens (position / 1000)."""

    peak_tokens: int
    mean_tokens: float
    auc_token_ktokens: float
    final_tokens: int
    peak_bytes: int | None = None
    mean_bytes: float | None = None
    auc_gb_ktokens: float | None = None  # GB = 2**30 bytes

    @classmethod
    def from_curves(cls, tokens: np.ndarray, byte_curve: np.ndarray | None) -> KVStats:
        if len(tokens) == 0:
            return cls(0, 0.0, 0.0, 0, 0 if byte_curve is not None else None,
                       0.0 if byte_curve is not None else None, 0.0 if byte_curve is not None else None)
        stats = cls(int(tokens.max()), float(tokens.mean()), float(tokens.sum()) / 1000.0, int(tokens[-1]))
        if byte_curve is not None:
            stats.peak_bytes = int(byte_curve.max())
            stats.mean_bytes = float(byte_curve.mean())
            stats.auc_gb_ktokens = float(byte_curve.sum()) / GIB / 1000.0
        return stats

    @property
    def peak_gb(self) -> float | None:
        return None if self.peak_bytes is None else self.peak_bytes / GIB

    def to_dict(self) -> dict[str, Any]:
        return {
            "peak_tokens": self.peak_tokens,
            "mean_tokens": self.mean_tokens,
            "auc_token_ktokens": self.auc_token_ktokens,
            "final_tokens": self.final_tokens,
            "peak_bytes": self.peak_bytes,
            "peak_gb": self.peak_gb,
            "mean_bytes": self.mean_bytes,
            "auc_gb_ktokens": self.auc_gb_ktokens,
        }


@dataclass
class KVCurves:
    """Per-position curves of one trace, kept only when asked (plots)."""

    vanilla_tokens: np.ndarray  # [L] int64
    memento_tokens: np.ndarray  # [L] int64
    vanilla_bytes: np.ndarray | None = None  # [L] int64
    memento_bytes: np.ndarray | None = None  # [L] int64


@dataclass
class TraceKV:
    """The replay of one trace: vanilla vs memento."""

    tokens: int
    vanilla: KVStats
    memento: KVStats
    prompt_tokens: int = 0
    blocks_completed: int = 0
    blocks_evicted: int = 0
    evicted_tokens: int = 0
    index: int = 0
    trace_id: str | None = None
    domain: str | None = None
    origin: str | None = None
    curves: KVCurves | None = field(default=None, repr=False)

    @property
    def peak_token_ratio(self) -> float | None:
        return _ratio(self.memento.peak_tokens, self.vanilla.peak_tokens)

    @property
    def auc_token_ratio(self) -> float | None:
        return _ratio(self.memento.auc_token_ktokens, self.vanilla.auc_token_ktokens)

    @property
    def peak_ratio(self) -> float | None:
        """memento / vanilla peak, in bytes when a model is known (sliding windows make it differ from tokens)."""
        if self.vanilla.peak_bytes is not None:
            return _ratio(self.memento.peak_bytes, self.vanilla.peak_bytes)
        return self.peak_token_ratio

    @property
    def auc_ratio(self) -> float | None:
        if self.vanilla.auc_gb_ktokens is not None:
            return _ratio(self.memento.auc_gb_ktokens, self.vanilla.auc_gb_ktokens)
        return self.auc_token_ratio

    def to_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "id": self.trace_id,
            "domain": self.domain,
            "origin": self.origin,
            "tokens": self.tokens,
            "prompt_tokens": self.prompt_tokens,
            "blocks_completed": self.blocks_completed,
            "blocks_evicted": self.blocks_evicted,
            "evicted_tokens": self.evicted_tokens,
            "vanilla": self.vanilla.to_dict(),
            "memento": self.memento.to_dict(),
            "peak_ratio": self.peak_ratio,
            "auc_ratio": self.auc_ratio,
            "peak_token_ratio": self.peak_token_ratio,
            "auc_token_ratio": self.auc_token_ratio,
        }


def _ratio(a, b) -> float | None:
    if a is None or not b:
        return None
    return float(a) / float(b)


# ---- replay ---------------------------------------------------------------------------------------------------
def simulate_token_ids(token_ids, config: BlockMaskingConfig, markers: MarkerIds,
                       memory: KVMemoryModel | None = None, *, start_inside_assistant: bool = False,
                       keep_curves: bool = False, prompt_tokens: int = 0) -> TraceKV:
    """Replay one token sequence under `config` and under vanilla attention."""
    ids = np.asarray(token_ids, dtype=np.int64).reshape(-1)  # [L]
    length = len(ids)
    machine = BlockStateMachine(config, markers, start_inside_assistant=start_inside_assistant)
    evictions = machine.feed(ids)
    vanilla_tokens = np.arange(1, length + 1, dtype=np.int64)
    memento_tokens = occupancy_after_each_position(evictions, length)
    vanilla_bytes = memento_bytes = None
    if memory is not None:
        windows = {w for w, _ in memory.sliding}
        vanilla_bytes = bytes_after_each_position(
            memory, vanilla_tokens, {w: np.minimum(vanilla_tokens, w) for w in windows})
        memento_bytes = bytes_after_each_position(
            memory, memento_tokens, {w: window_occupancy_after_each_position(evictions, length, w) for w in windows})
    return TraceKV(
        tokens=length,
        vanilla=KVStats.from_curves(vanilla_tokens, vanilla_bytes),
        memento=KVStats.from_curves(memento_tokens, memento_bytes),
        prompt_tokens=prompt_tokens,
        blocks_completed=machine.completed_blocks,  # counted only when masking is enabled
        blocks_evicted=len({e.block_index for e in evictions if e.at < length}),
        evicted_tokens=int(sum(e.size for e in evictions)),
        curves=KVCurves(vanilla_tokens, memento_tokens, vanilla_bytes, memento_bytes) if keep_curves else None,
    )


def _trace_id(trace: TraceRecord) -> str | None:
    for name in ("id", "task_id"):
        value = trace.get(name)
        if value is not None:
            return str(value)
    return None


class KVSimulator:
    """Tokenize traces and replay them. By default only the response is replayed (the paper's method), and a
    response alone counts as inside the assistant section; with_prompt adds the prompt through the tokenizer's chat
    template (ChatML when it has none), and then the assistant gate applies as in generation."""

    def __init__(self, tokenizer, *, config: BlockMaskingConfig | None = None, memory: KVMemoryModel | None = None,
                 with_prompt: bool = False, add_markers: bool = True):
        self.tokenizer = tokenizer
        self.config = config or BlockMaskingConfig(enable=True, keep_last_n_blocks=0, mask_delimiters=False)
        self.memory = memory
        self.with_prompt = with_prompt
        self.markers_added = add_block_markers(tokenizer, self.config) if add_markers else 0
        self.markers = resolve_marker_ids(tokenizer, self.config)

    @property
    def assistant_gating(self) -> bool:
        return self.with_prompt and self.config.require_assistant_section and self.markers.can_gate

    def prompt_text(self, problem: str) -> str:
        return render_chat(self.tokenizer, [{"role": "user", "content": problem}])

    def _encode_many(self, texts: list[str]) -> list[list[int]]:
        if not texts:
            return []
        return self.tokenizer(texts, add_special_tokens=False)["input_ids"]

    def simulate_traces(self, traces: Iterable[Any], *, keep_curves_for: set[int] | None = None,
                        batch_size: int = 32, start_index: int = 0) -> Iterator[TraceKV]:
        """Replay traces (dicts or objects with response, and problem/domain/origin when known), in order."""
        keep_curves_for = keep_curves_for or set()
        index = start_index
        batch: list[Any] = []
        for trace in traces:
            batch.append(trace)
            if len(batch) >= batch_size:
                yield from self._simulate_batch(batch, index, keep_curves_for)
                index += len(batch)
                batch = []
        if batch:
            yield from self._simulate_batch(batch, index, keep_curves_for)

    def simulate_trace(self, trace: Any, *, index: int = 0, keep_curves: bool = False) -> TraceKV:
        return next(iter(self._simulate_batch([trace], index, {index} if keep_curves else set())))

    def _simulate_batch(self, batch: list[Any], first_index: int, keep_curves_for: set[int]) -> Iterator[TraceKV]:
        batch = [TraceRecord.of(t) for t in batch]
        responses = [t.response or "" for t in batch]
        response_ids = self._encode_many(responses)  # tokenised in one call: the Rust side batches
        prompt_ids = (self._encode_many([self.prompt_text(t.problem or "") for t in batch])
                      if self.with_prompt else [[] for _ in batch])
        for offset, trace in enumerate(batch):
            index = first_index + offset
            ids = np.asarray(list(prompt_ids[offset]) + list(response_ids[offset]), dtype=np.int64)
            result = simulate_token_ids(
                ids, self.config, self.markers, self.memory,
                start_inside_assistant=not self.with_prompt,
                keep_curves=index in keep_curves_for,
                prompt_tokens=len(prompt_ids[offset]),
            )
            result.index = index
            result.trace_id = _trace_id(trace)
            result.domain = trace.domain
            result.origin = trace.origin or None
            yield result


# ---- dataset aggregates ---------------------------------------------------------------------------------------
def _summary(values: list[float]) -> dict[str, float | None]:
    values = [v for v in values if v is not None and not math.isnan(v)]
    if not values:
        return {"median": None, "p90": None, "mean": None}
    array = np.asarray(values, dtype=np.float64)
    return {"median": float(np.median(array)), "p90": float(np.percentile(array, 90)), "mean": float(array.mean())}


def _group_summary(results: list[TraceKV]) -> dict[str, Any]:
    return {
        "traces": len(results),
        "tokens": _summary([r.tokens for r in results]),
        "peak_ratio": _summary([r.peak_ratio for r in results]),
        "auc_ratio": _summary([r.auc_ratio for r in results]),
        "peak_token_ratio": _summary([r.peak_token_ratio for r in results]),
        "auc_token_ratio": _summary([r.auc_token_ratio for r in results]),
        "vanilla_peak_tokens": _summary([r.vanilla.peak_tokens for r in results]),
        "memento_peak_tokens": _summary([r.memento.peak_tokens for r in results]),
    }


def aggregate(results: Iterable[TraceKV]) -> dict[str, Any]:
    """Median / p90 / mean of the memento-over-vanilla peak and AUC ratios, over all traces and by domain."""
    results = [r for r in results if r.tokens > 0]
    by_domain: dict[str, list[TraceKV]] = {}
    for r in results:
        by_domain.setdefault(r.domain or "unknown", []).append(r)
    return {
        "all": _group_summary(results),
        "by_domain": {domain: _group_summary(group) for domain, group in sorted(by_domain.items())},
    }
