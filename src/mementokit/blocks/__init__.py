"""Block semantics on tokens: one state machine (block-semantics.md) and what derives from it.

    config = BlockMaskingConfig.load('{"enable": true, "keep_last_n_blocks": 0, "mask_delimiters": false}')
    add_block_markers(tokenizer)                      # markers must be single tokens
    markers = resolve_marker_ids(tokenizer, config)
    machine = BlockStateMachine(config, markers)      # generator: machine.step(token_id) -> [Eviction]
    allowed = dense_allowed(token_ids, config, markers)   # training: [L, L] bool
"""

from mementokit.blocks.config import BlockMaskingConfig
from mementokit.blocks.masks import (
    MASKED,
    additive_from_allowed,
    additive_from_evictions,
    additive_mask,
    allowed_from_evictions,
    allowed_tensor,
    compact_mask,
    compact_spans,
    dense_allowed,
    model_attention_mask,
    model_mask_layout,
    occupancy_after_each_position,
    padded_allowed,
    spans_within,
    visible_key_counts,
    window_occupancy_after_each_position,
    within_window,
)
from mementokit.blocks.state import BlockStateMachine, Eviction, evictions_for_sequence
from mementokit.blocks.tokens import MarkerIds, add_block_markers, resolve_marker_ids, single_token_id

__all__ = [
    "add_block_markers",
    "additive_from_allowed",
    "additive_from_evictions",
    "additive_mask",
    "allowed_from_evictions",
    "allowed_tensor",
    "BlockMaskingConfig",
    "BlockStateMachine",
    "compact_mask",
    "compact_spans",
    "dense_allowed",
    "Eviction",
    "evictions_for_sequence",
    "MarkerIds",
    "MASKED",
    "model_attention_mask",
    "model_mask_layout",
    "occupancy_after_each_position",
    "padded_allowed",
    "resolve_marker_ids",
    "single_token_id",
    "spans_within",
    "visible_key_counts",
    "window_occupancy_after_each_position",
    "within_window",
]
