"""One forward pass over the physical cache, with the original positions and the right attention mask.

transformers 5 builds its masks in PHYSICAL index space: the query offset is `cache.get_seq_length()` (the
tensor length) and keys are numbered 0..L-1. For a full-attention model that is exactly right after eviction,
because the surviving slots are in logical order and everything in the cache is visible to the new tokens; only
rotary needs the logical positions, which we pass as `position_ids`. So the default ("implicit") path passes
position ids plus, for a padded batch, a 2-D padding mask of the physical cache.

An explicit 4-D additive mask [B, 1, q, L + q] built from LOGICAL positions is used when physical numbering is
not enough:
  - sliding-window layers (the window counts logical positions, not surviving slots);
  - a chunk in which some keys must disappear part-way (a prompt holding completed blocks, prefilled with the
    dense mask before its blocks are evicted).
Models whose config lists `layer_types` take a dict {layer type: mask}; the others take one 4-D tensor, which
transformers passes through unchanged.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass

import torch

from mementokit.blocks.masks import allowed_tensor, model_attention_mask, model_mask_layout
from mementokit.generate.cache import PhysicalKVCache


@dataclass(frozen=True)
class MaskPlan:
    explicit: bool  # always pass explicit 4-D masks built from logical positions
    layer_types: tuple[str, ...] | None  # mask types the model reads from a dict, or None for a single tensor
    sliding_window: int | None  # window of the sliding layers (logical tokens), None when there are none
    cache_argument: str = "past_key_values"  # the forward argument that takes the cache (see cache_argument)


def cache_argument(model) -> str:
    """The keyword the model's forward takes the KV cache under.

    transformers renamed `past_key_values` to `cache` (5.x warns on the old name on every forward and will drop
    it in 5.40); older releases only know `past_key_values`. An explicit parameter named `cache` is the only
    safe signal: passed through **kwargs to an older model it would be silently ignored.
    """
    try:
        parameters = inspect.signature(model.forward).parameters
    except (TypeError, ValueError):  # pragma: no cover - builtins without a signature
        return "past_key_values"
    return "cache" if "cache" in parameters else "past_key_values"


def plan_masks(model, *, force_explicit: bool = False) -> MaskPlan:
    layer_types, window = model_mask_layout(model)
    return MaskPlan(explicit=force_explicit or window is not None, layer_types=layer_types, sliding_window=window,
                    cache_argument=cache_argument(model))


def explicit_masks(plan: MaskPlan, allowed: torch.Tensor, query_positions, key_positions, dtype):
    """The attention_mask argument for `plan`: one 4-D tensor, or a dict per layer type (blocks.masks builds it)."""
    return model_attention_mask(allowed, query_positions, key_positions, layer_types=plan.layer_types,
                                sliding_window=plan.sliding_window, dtype=dtype)


def forward(
    model,
    kv: PhysicalKVCache,
    plan: MaskPlan,
    input_ids: torch.Tensor,  # [B, q]
    query_positions: list[list[int]],  # B lists of q logical positions
    *,
    hides: list[list] | None = None,
    logits_to_keep: int = 1,
) -> torch.Tensor:
    """Run the model on `input_ids` appended to `kv`; returns logits [B, logits_to_keep or q, V] in fp32.

    hides: per row, evictions (or (key_start, key_stop, trigger) rectangles) whose keys are hidden from the
    queries at or after their trigger within this call (a chunk in which keys disappear part-way)."""
    device = input_ids.device
    position_ids = torch.tensor(query_positions, dtype=torch.long, device=device)  # [B, q]
    any_hides = bool(hides) and any(hides)
    if plan.explicit or any_hides:
        if kv.batch_size:
            past_positions, past_valid = kv.key_positions(device)  # [B, L]
        else:  # empty cache: no past keys
            past_positions = position_ids[:, :0]
            past_valid = torch.ones_like(past_positions, dtype=torch.bool)
        key_positions = torch.cat([past_positions, position_ids], dim=1)  # [B, L + q]
        key_valid = torch.cat([past_valid, torch.ones_like(position_ids, dtype=torch.bool)], dim=1)
        allowed = allowed_tensor(position_ids, key_positions, key_valid, hides if any_hides else None)
        dtype = model.get_input_embeddings().weight.dtype
        attention_mask = explicit_masks(plan, allowed, position_ids, key_positions, dtype)
    else:
        attention_mask = kv.padding_mask(input_ids.shape[1], device)  # [B, L + q] or None
    output = model(
        input_ids=input_ids,
        position_ids=position_ids,
        attention_mask=attention_mask,
        use_cache=True,
        **{plan.cache_argument: kv.cache},
        logits_to_keep=logits_to_keep,
    )
    kv.note_appended(query_positions)
    return output.logits.float()
