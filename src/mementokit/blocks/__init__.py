"""Block semantics on tokens: one state machine (block-semantics.md) and what derives from it.

    config = BlockMaskingConfig.load('{"enable": true, "keep_last_n_blocks": 0, "mask_delimiters": false}')
    add_block_markers(tokenizer)                      # markers must be single tokens
    markers = resolve_marker_ids(tokenizer, config)
    machine = BlockStateMachine(config, markers)      # generator: machine.step(token_id) -> [Eviction]
    allowed = dense_allowed(token_ids, config, markers)   # training: [L, L] bool
"""

from mementokit.blocks.config import BlockMaskingConfig
from mementokit.blocks.masks import (
    additive_from_evictions,
    additive_mask,
    allowed_from_evictions,
    compact_mask,
    compact_spans,
    dense_allowed,
    spans_within,
    visible_key_counts,
)
from mementokit.blocks.state import BlockStateMachine, Eviction, evictions_for_sequence
from mementokit.blocks.tokens import MarkerIds, add_block_markers, resolve_marker_ids, single_token_id

__all__ = [
    "BlockMaskingConfig",
    "BlockStateMachine",
    "Eviction",
    "MarkerIds",
    "add_block_markers",
    "additive_from_evictions",
    "additive_mask",
    "allowed_from_evictions",
    "compact_mask",
    "compact_spans",
    "dense_allowed",
    "evictions_for_sequence",
    "resolve_marker_ids",
    "single_token_id",
    "spans_within",
    "visible_key_counts",
]
