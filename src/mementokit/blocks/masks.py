"""Attention masks derived from the state machine's evictions (block-semantics.md, "The dense mask").

Query q may attend key k  iff  k <= q  and no completed block b has k in K_b and q >= T_b.

Three forms, from cheapest to dearest:
- compact: the evictions themselves, i.e. (key_start, key_stop, trigger) rectangles cut out of the causal
  triangle; O(#blocks) memory whatever the length (a 32K-token trace needs no 1 GB matrix);
- dense boolean: numpy [L, L] (or a band of query rows, for chunked prefill);
- additive: torch [1, 1, L, L] float, 0 where allowed and -inf where not, as transformers models accept.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from mementokit.blocks.config import BlockMaskingConfig
from mementokit.blocks.state import Eviction, evictions_for_sequence
from mementokit.blocks.tokens import MarkerIds


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


def visible_key_counts(evictions: Iterable[Eviction] | Iterable[tuple[int, int, int]], length: int) -> np.ndarray:
    """Row sums of the dense mask (keys query t may see), without building it: [L] int64."""
    hidden_from = np.zeros(length + 1, dtype=np.int64)
    for key_start, key_stop, trigger in _rectangles(evictions):
        if trigger < length:
            hidden_from[trigger] += key_stop - key_start
    return np.arange(1, length + 1, dtype=np.int64) - np.cumsum(hidden_from[:length])


def additive_from_evictions(evictions, length: int, *, query_start: int = 0, query_stop: int | None = None,
                            dtype=None, device=None, masked_value: float | None = None):
    """Additive float mask [1, 1, Q, L] (0 allowed, -inf hidden) for a transformers forward pass."""
    import torch

    dtype = torch.float32 if dtype is None else dtype
    allowed = torch.from_numpy(allowed_from_evictions(evictions, length, query_start=query_start,
                                                      query_stop=query_stop))
    fill = float("-inf") if masked_value is None else masked_value
    mask = torch.zeros(allowed.shape, dtype=dtype, device=device)
    mask.masked_fill_(~allowed.to(device), fill)
    return mask[None, None]  # [1, 1, Q, L]


def additive_mask(token_ids, config: BlockMaskingConfig, markers: MarkerIds, *, start_inside_assistant: bool = False,
                  dtype=None, device=None, masked_value: float | None = None):
    """The contract's mask as a 4-D additive float tensor [1, 1, L, L] (torch imported only here).

    The diagonal is always allowed (an evicted key lies before its trigger), so no row is fully masked and -inf
    is safe with softmax.
    """
    ids = np.asarray(token_ids, dtype=np.int64).reshape(-1)
    evictions = evictions_for_sequence(ids, config, markers, start_inside_assistant=start_inside_assistant)
    return additive_from_evictions(evictions, len(ids), dtype=dtype, device=device, masked_value=masked_value)


def _rectangles(evictions) -> Sequence[tuple[int, int, int]]:
    return [(e.key_start, e.key_stop, e.trigger) if isinstance(e, Eviction) else tuple(e[:3]) for e in evictions]
