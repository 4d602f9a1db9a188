"""Evictions -> masks: the one place that turns the state machine's evictions into what attention and memory see
(block-semantics.md, "The dense mask"). Every consumer uses it: the training collator, the generator's explicit
masks, the dense reference, the KV simulator's occupancy curves.

Query q may attend key k  iff  k <= q  and no completed block b has k in K_b and q >= T_b.

Forms, from cheapest to dearest:
- compact: the evictions themselves, i.e. (key_start, key_stop, trigger) rectangles cut out of the causal
  triangle; O(#blocks) memory whatever the length (a 32K-token trace needs no 1 GB matrix);
- counts: keys each query sees (`visible_key_counts`, by trigger) and the physical cache after each position
  (`occupancy_after_each_position`, by the reporting position `at`; `window_occupancy_after_each_position` for
  a sliding layer): one cumulative sum, no matrix;
- dense boolean: numpy [L, L] (or a band of query rows, for chunked prefill; `padded_allowed` for a batch), or
  torch [B, q, K] over LOGICAL key positions (`allowed_tensor`: a physical cache after eviction, padding);
- additive: torch float, 0 where allowed and MASKED (-inf) elsewhere (`additive_from_allowed`, the only builder);
  `model_attention_mask` adds a model's sliding window and its per-layer-type dict.

No query row is ever fully masked (the diagonal is always allowed: an evicted key lies before its trigger, a
window always holds the query itself, padding queries see themselves), so -inf is safe with softmax.
torch is imported only inside the torch front-end functions.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from mementokit.blocks.config import BlockMaskingConfig
from mementokit.blocks.state import Eviction, evictions_for_sequence
from mementokit.blocks.tokens import MarkerIds

MASKED = float("-inf")  # the one masked value of every additive mask


def compact_spans(evictions: Iterable[Eviction]) -> list[tuple[int, ...]]:
    """The stored form of evictions: (key_start, key_stop, trigger), plus the reporting position `at` when it
    comes after the trigger (restart mode: the block is hidden from its summary start, but only once the summary
    END exists; a sequence cut before it must not hide anything, see `spans_within`)."""
    return [(e.key_start, e.key_stop, e.trigger) if e.at == e.trigger else (e.key_start, e.key_stop, e.trigger, e.at)
            for e in evictions]


def spans_within(spans: Iterable[Sequence[int]], length: int) -> list[tuple[int, ...]]:
    """The spans of a sequence cut to its first `length` tokens: an eviction reported at or after the cut never
    happened (its summary end, or the block start that flushes it, was cut off)."""
    return [tuple(s) for s in spans if (s[3] if len(s) > 3 else s[2]) < length]


def compact_mask(token_ids, config: BlockMaskingConfig, markers: MarkerIds, *,
                 start_inside_assistant: bool = False) -> list[tuple[int, ...]]:
    """Keys range(key_start, key_stop) are hidden from queries >= trigger; see `compact_spans` for the form."""
    return compact_spans(evictions_for_sequence(token_ids, config, markers,
                                                start_inside_assistant=start_inside_assistant))


def allowed_from_evictions(evictions: Iterable[Eviction] | Iterable[tuple[int, int, int]], length: int, *,
                           query_start: int = 0, query_stop: int | None = None) -> np.ndarray:
    """Boolean "may attend" rows for queries query_start..query_stop-1 over keys 0..length-1.

    Returns shape [query_stop - query_start, length]; the default is the whole square [length, length].
    """
    query_stop = length if query_stop is None else query_stop
    # allowed[i, k] = k <= query_start + i : np.tri with an offset gives the causal band directly.
    allowed = np.tri(query_stop - query_start, length, k=query_start, dtype=bool)  # [Q, L]
    for key_start, key_stop, trigger in _rectangles(evictions):
        first_row = max(trigger - query_start, 0)
        if first_row < query_stop - query_start and key_start < length:
            allowed[first_row:, key_start:min(key_stop, length)] = False
    return allowed


def dense_allowed(token_ids, config: BlockMaskingConfig, markers: MarkerIds, *,
                  start_inside_assistant: bool = False) -> np.ndarray:
    """The contract's [L, L] boolean matrix: entry [q, k] is True iff query q may attend key k."""
    ids = np.asarray(token_ids, dtype=np.int64).reshape(-1)
    evictions = evictions_for_sequence(ids, config, markers, start_inside_assistant=start_inside_assistant)
    return allowed_from_evictions(evictions, len(ids))


def _alive_after(drops: Iterable[tuple[int, int]], length: int) -> np.ndarray:
    """(1..L) minus the cumulative sum of (time, size) drops: keys still there after each position, [L] int64."""
    dropped = np.zeros(length + 1, dtype=np.int64)
    for time, size in drops:
        if time < length:
            dropped[time] += size
    return np.arange(1, length + 1, dtype=np.int64) - np.cumsum(dropped[:length])


def visible_key_counts(evictions: Iterable[Eviction] | Iterable[Sequence[int]], length: int) -> np.ndarray:
    """Row sums of the dense mask (keys query t may see), without building it: [L] int64."""
    return _alive_after(((trigger, stop - start) for start, stop, trigger in _rectangles(evictions)), length)


def occupancy_after_each_position(evictions: Iterable[Eviction], length: int) -> np.ndarray:
    """Physical cache length after each position: [L] int64 (invariant 2 of block-semantics.md).

    Uses Eviction.at, the position where the cache really drops the keys (equal to the trigger except in restart
    mode, where the block stays in the cache until the summary ends).
    """
    return _alive_after(((e.at, e.key_stop - e.key_start) for e in evictions), length)


def window_occupancy_after_each_position(evictions: Iterable[Eviction], length: int, window: int) -> np.ndarray:
    """Surviving tokens among the last `window` positions after each position: [L] int64 (a sliding layer's cache)."""
    evictions = [e for e in evictions if e.at < length]
    base = np.minimum(np.arange(1, length + 1, dtype=np.int64), window)
    if not evictions:
        return base
    keys = np.concatenate([np.arange(e.key_start, e.key_stop, dtype=np.int64) for e in evictions])  # [E]
    at = np.concatenate([np.full(e.key_stop - e.key_start, e.at, dtype=np.int64) for e in evictions])  # [E]
    # Key k counts against the window from its eviction until it would have left the window anyway (t = k + window).
    still_in_window = keys + window > at
    leaves = np.bincount(at[still_in_window], minlength=length + 1)[: length + 1]
    returns = np.bincount(np.minimum(keys[still_in_window] + window, length), minlength=length + 1)[: length + 1]
    return base - np.cumsum(leaves - returns)[:length]


def padded_allowed(spans_per_example: Sequence[Sequence[Sequence[int]] | None], lengths: Sequence[int],
                   padded_length: int) -> np.ndarray:
    """[B, L, L] bool "query may attend key" for a right-padded batch (None spans: plain causal).

    Each example's [n, n] matrix sits in the top-left corner; padding keys are never visible to a real query and
    a padding query sees only itself (no row is all masked; its loss is ignored anyway).
    """
    batch = np.zeros((len(lengths), padded_length, padded_length), dtype=bool)
    pad_diagonal = np.arange(padded_length)
    for row, (spans, n) in enumerate(zip(spans_per_example, lengths)):
        batch[row, :n, :n] = allowed_from_evictions(list(spans or ()), n)
        batch[row, pad_diagonal[n:], pad_diagonal[n:]] = True
    return batch


# ---- torch front end ------------------------------------------------------------------------------------------
def allowed_tensor(query_positions, key_positions, key_valid=None, hidden=None):
    """torch [B, q, K] bool "query may attend key" over LOGICAL positions (the same rule as allowed_from_evictions).

    query_positions [B, q] long, key_positions [B, K] long (the logical position of each physical slot),
    key_valid [B, K] bool (False for padding; None: all real), hidden: per row, the evictions (or
    (key_start, key_stop, trigger) rectangles) that apply to it (None: causal only).
    """
    allowed = key_positions[:, None, :] <= query_positions[:, :, None]
    if key_valid is not None:
        allowed &= key_valid[:, None, :]
    for row, rectangles in enumerate(hidden or ()):
        for start, stop, trigger in _rectangles(rectangles):
            in_span = (key_positions[row] >= start) & (key_positions[row] < stop)  # [K]
            late = query_positions[row] >= trigger  # [q]
            allowed[row] &= ~(late[:, None] & in_span[None, :])
    return allowed


def within_window(allowed, query_positions, key_positions, window: int | None):
    """`allowed` restricted to keys less than `window` logical positions behind the query (None: unchanged)."""
    if window is None:
        return allowed
    distance = query_positions[:, :, None] - key_positions[:, None, :]  # [B, q, K]
    return allowed & (distance < window)


def additive_from_allowed(allowed, dtype=None, masked_value: float | None = None, device=None):
    """bool [Q, K] or [B, Q, K] (numpy or torch) -> additive float [1 or B, 1, Q, K]: 0 allowed, MASKED elsewhere."""
    import torch

    dtype = torch.float32 if dtype is None else dtype
    allowed = torch.as_tensor(allowed, device=device)
    if allowed.dim() == 2:
        allowed = allowed[None]
    mask = torch.zeros(allowed.shape, dtype=dtype, device=allowed.device)
    mask.masked_fill_(~allowed, MASKED if masked_value is None else masked_value)
    return mask[:, None]


def model_mask_layout(model) -> tuple[tuple[str, ...] | None, int | None]:
    """(layer types the model reads masks for, or None; its sliding window in logical tokens, or None)."""
    config = model.config.get_text_config(decoder=True)
    layer_types = getattr(config, "layer_types", None)
    window = getattr(config, "sliding_window", None)
    if layer_types is not None:
        layer_types = tuple(dict.fromkeys(layer_types))
        if "sliding_attention" not in layer_types:
            window = None
    return layer_types, window


def model_attention_mask(allowed, query_positions, key_positions, *, layer_types: tuple[str, ...] | None,
                         sliding_window: int | None, dtype, full=None):
    """The attention_mask argument a transformers model takes for `allowed` [B, q, K]: one additive 4-D tensor
    (windowed when the model has one window), or a dict per layer type (transformers' own convention; the
    sliding layers get the window). A 4-D mask is passed through unchanged by transformers, so the window is
    ours to apply. `full`: the additive mask the full-attention layers take, when the caller has it already."""
    windowed = additive_from_allowed(within_window(allowed, query_positions, key_positions, sliding_window), dtype)
    if layer_types is None:
        return windowed
    if full is None:
        full = windowed if sliding_window is None else additive_from_allowed(allowed, dtype)
    return {kind: windowed if kind == "sliding_attention" else full for kind in layer_types}


def additive_from_evictions(evictions, length: int, *, query_start: int = 0, query_stop: int | None = None,
                            dtype=None, device=None, masked_value: float | None = None):
    """Additive float mask [1, 1, Q, L] (0 allowed, MASKED hidden) for a transformers forward pass."""
    allowed = allowed_from_evictions(evictions, length, query_start=query_start, query_stop=query_stop)
    return additive_from_allowed(allowed, dtype, masked_value, device)


def additive_mask(token_ids, config: BlockMaskingConfig, markers: MarkerIds, *, start_inside_assistant: bool = False,
                  dtype=None, device=None, masked_value: float | None = None):
    """The contract's mask as a 4-D additive float tensor [1, 1, L, L] (torch imported only here)."""
    ids = np.asarray(token_ids, dtype=np.int64).reshape(-1)
    evictions = evictions_for_sequence(ids, config, markers, start_inside_assistant=start_inside_assistant)
    return additive_from_evictions(evictions, len(ids), dtype=dtype, device=device, masked_value=masked_value)


def _rectangles(evictions) -> Sequence[tuple[int, int, int]]:
    return [(e.key_start, e.key_stop, e.trigger) if isinstance(e, Eviction) else tuple(e[:3]) for e in evictions]
