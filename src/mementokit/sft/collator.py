"""Batches for causal-LM training: dynamic right padding, and the stage-2 mask expanded from its compact form.

    collate = MementoCollator(pad_token_id=tokenizer.pad_token_id, stage=2)
    batch = collate([dataset[0], dataset[1]])
    # input_ids [B, L] long, labels [B, L] long (-100 on padding), position_ids [B, L] long,
    # attention_mask [B, 1, L, L] float: 0 where query may attend key, blocks.MASKED (-inf) elsewhere
    model(**{k: batch[k] for k in ("input_ids", "attention_mask", "position_ids")})

Stage 2: every example's (key_start, key_stop, trigger) triples become its [n, n] "may attend" matrix through
mementokit.blocks.padded_allowed (blocks.masks owns every mask), placed in the top-left corner
of the padded [L, L] square. Padding keys are never visible to a real query; a padding query sees only itself,
so no row is all masked (softmax stays finite) and its loss is ignored anyway (label -100).
Stage 1: a 2-D padding mask [B, L], which transformers turns into causal + padding itself (and SDPA can then
use its fused causal kernels).

transformers passes a 4-D float mask through unchanged to both the eager (`scores + mask`) and the SDPA
(`attn_mask=`) attention paths (masking_utils: "If the mask is already 4D, simply return as-is"). Right padding
keeps each example's positions 0..n-1, which the default position ids already are; they are given explicitly
anyway, since the rotary position of a token must never depend on its neighbours in the batch.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from mementokit.blocks import (
    additive_from_allowed,
    model_attention_mask,
    model_mask_layout,
    padded_allowed,
    spans_within,
)
from mementokit.errors import ConfigError, InputError
from mementokit.sft.tokenize import IGNORE_INDEX, STAGES


def _field(feature: Any, name: str, default: Any = None) -> Any:
    if isinstance(feature, Mapping):
        return feature.get(name, default)
    return getattr(feature, name, default)


def _required(feature: Any, name: str, row: int) -> list:
    value = _field(feature, name)
    if value is None:
        present = sorted(feature) if isinstance(feature, Mapping) else type(feature).__name__
        raise InputError(f"example {row} of the batch has no '{name}' (it has {present}); tokenize with "
                         "mementokit.sft.SFTTokenizer, which gives input_ids, labels and mask_spans", field=name)
    return list(value)


@dataclass
class MementoCollator:
    """Pad a list of examples (dataset rows or SFTExamples) into model inputs; see the module docstring.

    stage: 2 expands `mask_spans` into a 4-D additive mask (an example without spans is plain causal);
    1 gives the 2-D padding mask. pad_to_multiple_of rounds L up (tensor-core friendly shapes on GPUs).
    mask_dtype should be the model's compute dtype (bf16 models take a bf16 mask).
    """

    pad_token_id: int
    stage: int = 2
    mask_dtype: torch.dtype = torch.float32
    pad_to_multiple_of: int | None = None
    label_pad_token_id: int = IGNORE_INDEX
    max_length: int | None = None  # cut longer examples (their spans stay valid: rows and keys are cut alike)

    def __post_init__(self) -> None:
        if self.stage not in STAGES:
            raise ConfigError(f"stage must be 1 or 2, got {self.stage!r}")
        if self.pad_token_id is None:
            raise ConfigError("the collator needs a pad token id (tokenizer.pad_token_id, or the EOS id)")

    def __call__(self, features: Sequence[Any]) -> dict[str, torch.Tensor]:
        if not features:
            raise ConfigError("cannot collate an empty batch")
        ids = [_required(f, "input_ids", row) for row, f in enumerate(features)]
        labels = [_required(f, "labels", row) for row, f in enumerate(features)]
        spans = [_field(f, "mask_spans") for f in features] if self.stage == 2 else []
        if self.max_length is not None:
            ids = [x[: self.max_length] for x in ids]
            labels = [x[: self.max_length] for x in labels]
            # The mask of the CUT sequence: restart-mode spans hide keys from the summary start, but only if the
            # summary end (their reporting position) survived the cut.
            spans = [None if s is None else spans_within(s, len(x)) for s, x in zip(spans, ids)]
        lengths = [len(x) for x in ids]
        width = max(lengths)
        if self.pad_to_multiple_of:
            width = -(-width // self.pad_to_multiple_of) * self.pad_to_multiple_of
        input_ids = torch.full((len(ids), width), self.pad_token_id, dtype=torch.long)  # [B, L]
        label_ids = torch.full((len(ids), width), self.label_pad_token_id, dtype=torch.long)  # [B, L]
        for row, (x, y) in enumerate(zip(ids, labels)):
            if len(y) != len(x):
                raise ConfigError(f"example {row} of the batch has {len(x)} input ids but {len(y)} labels")
            input_ids[row, : len(x)] = torch.as_tensor(x, dtype=torch.long)
            label_ids[row, : len(y)] = torch.as_tensor(y, dtype=torch.long)
        batch = {
            "input_ids": input_ids,
            "labels": label_ids,
            "position_ids": torch.arange(width, dtype=torch.long).expand(len(ids), width).clone(),  # [B, L]
        }
        if self.stage == 1:
            lengths_t = torch.as_tensor(lengths)
            batch["attention_mask"] = (torch.arange(width)[None, :] < lengths_t[:, None]).long()  # [B, L]
        else:
            allowed = padded_allowed(spans, lengths, width)  # [B, L, L] bool
            batch["attention_mask"] = additive_from_allowed(allowed, self.mask_dtype)  # [B, 1, L, L]
        return batch


def attention_mask_for_model(model, attention_mask: torch.Tensor) -> torch.Tensor | dict[str, torch.Tensor]:
    """The collator's mask as this model takes it: sliding-window layers need the window applied by us.

    A 4-D mask is passed through unchanged by transformers to every layer, so a sliding-window layer would
    silently attend beyond its window. Models whose config lists `layer_types` take a dict {layer type: mask}
    (transformers' own convention); a model with one window for all layers gets the windowed tensor.
    A 2-D padding mask (stage 1) is returned as is: transformers builds causal and window masks from it.
    Both views come from mementokit.blocks.model_attention_mask, as the generator's do.
    """
    if attention_mask.dim() != 4:
        return attention_mask
    layer_types, window = model_mask_layout(model)
    if window is None:
        return attention_mask
    length = attention_mask.shape[-1]
    positions = torch.arange(length, device=attention_mask.device).expand(attention_mask.shape[0], length)  # [B, L]
    allowed = attention_mask[:, 0] == 0  # [B, L, L]
    return model_attention_mask(allowed, positions, positions, layer_types=layer_types, sliding_window=window,
                                dtype=attention_mask.dtype, full=attention_mask)
