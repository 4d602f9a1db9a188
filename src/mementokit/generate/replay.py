"""Replay: teacher-force a token sequence through the evicting path and measure the real cache after every step.

This is how a user checks real memory on real traces (and how we check the KV simulator): the figures are read
from the key/value tensors themselves, not computed from the eviction schedule.

    result = replay(model, token_ids, '{"enable": true, "keep_last_n_blocks": 0, "mask_delimiters": false}',
                    tokenizer=tokenizer, start_inside_assistant=True, keep_logits=True)
    result.stats.peak_tokens, result.stats.peak_bytes, result.logits  # logits: [positions, vocab] float32
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from mementokit.blocks import MarkerIds, dense_allowed, model_attention_mask, model_mask_layout
from mementokit.errors import ConfigError
from mementokit.generate.cache import PhysicalKVCache
from mementokit.generate.engine import (
    EvictingRunner,
    check_markers,
    embedding_rows,
    load_block_masking,
    token_id_list,
)
from mementokit.generate.stats import CacheStats


@dataclass
class ReplayResult:
    token_ids: list[int]
    stats: CacheStats  # one step per token (the prompt prefill, when asked for, is one step)
    logits: torch.Tensor | None  # [positions, V] float32 when keep_logits, else None

    def summary(self) -> dict:
        return {"tokens": len(self.token_ids), **self.stats.summary()}


def measured_cache_tokens(kv: PhysicalKVCache) -> list[int]:
    """Sequence length of the key tensor in every layer (one row, no padding), read from the tensors."""
    lengths = []
    for layer in kv.cache.layers:
        if getattr(layer, "is_initialized", False):
            lengths.append(layer.keys.shape[-2])
            if layer.values.shape[-2] != layer.keys.shape[-2]:
                raise RuntimeError("keys and values of one layer disagree on the cache length")
    return lengths


def replay(
    model,
    token_ids,
    block_masking=None,
    *,
    tokenizer=None,
    markers: MarkerIds | None = None,
    prefill_tokens: int = 0,
    start_inside_assistant: bool = False,
    keep_logits: bool = False,
    mask_mode: str = "auto",
    on_step: Callable[[int, PhysicalKVCache], None] | None = None,
    progress: Callable[[int], None] | None = None,
) -> ReplayResult:
    """Feed `token_ids` one token at a time through the evicting cache (after an optional dense-mask prefill of
    the first `prefill_tokens`), measuring the cache after every step.

    Give `tokenizer` (markers are resolved and checked) or `markers` directly. `on_step(position, kv)` is called
    after each step with the physical cache, for inspection.
    """
    config = load_block_masking(block_masking)
    markers = check_markers(model, tokenizer, config, markers)
    ids = token_id_list(token_ids, embedding_rows(model), what="replayed sequence")
    if not 0 <= prefill_tokens <= len(ids):
        raise ConfigError(f"prefill_tokens must be in [0, {len(ids)}], got {prefill_tokens}")
    runner = EvictingRunner(model, config, markers, mask_mode=mask_mode)
    machine = runner.new_machine(start_inside_assistant=start_inside_assistant)
    stats = CacheStats()
    all_logits = None

    if prefill_tokens:
        done = runner.prefill(ids[:prefill_tokens], machine, keep_all_logits=keep_logits)
        kv = done.kv
        stats.evictions.extend(done.records)
        if keep_logits:
            all_logits = torch.empty(len(ids), done.logits.shape[-1], dtype=torch.float32)
            all_logits[:prefill_tokens] = done.logits.cpu()
        _measure(stats, kv, prefill_tokens)
        if on_step is not None:
            on_step(prefill_tokens - 1, kv)
        if progress is not None:
            progress(prefill_tokens)
    else:
        kv = PhysicalKVCache()

    for position in range(prefill_tokens, len(ids)):
        token = ids[position]
        evictions = machine.step(token) if machine is not None else []
        records, restart = runner.evict(kv, 0, evictions) if evictions else ([], False)
        if restart:
            logits, records = runner.restart_step(kv, ids, evictions, position)
        else:
            logits = runner.step(kv, [token], [position])[0]
        stats.evictions.extend(records)
        if keep_logits:
            if all_logits is None:
                all_logits = torch.empty(len(ids), logits.shape[-1], dtype=torch.float32)
            all_logits[position] = logits.cpu()
        _measure(stats, kv, position + 1)
        if on_step is not None:
            on_step(position, kv)
        if progress is not None:
            progress(1)
    return ReplayResult(token_ids=ids, stats=stats, logits=all_logits)


def _measure(stats: CacheStats, kv: PhysicalKVCache, logical: int) -> None:
    lengths = measured_cache_tokens(kv)
    if len(set(lengths)) > 1:
        raise RuntimeError(f"layers disagree on the cache length: {lengths}")
    if not stats.bytes_per_token:
        stats.bytes_per_token = kv.bytes_per_token()
    stats.record(logical, lengths[0] if lengths else 0, kv.nbytes())


@torch.no_grad()
def dense_reference_logits(model, token_ids, block_masking=None, *, tokenizer=None, markers: MarkerIds | None = None,
                           start_inside_assistant: bool = False) -> torch.Tensor:
    """ONE forward pass over the whole sequence with the contract's dense mask: logits [L, V] float32.

    The reference the evicting path must equal (contract invariant 1). Models with sliding-window layers get the
    window on top of the block mask.
    """
    config = load_block_masking(block_masking)
    markers = check_markers(model, tokenizer, config, markers)
    token_ids = token_id_list(token_ids, embedding_rows(model), what="sequence")
    ids = torch.tensor([token_ids], dtype=torch.long, device=model.get_input_embeddings().weight.device)
    length = ids.shape[1]
    dtype = model.get_input_embeddings().weight.dtype
    if config.enable:
        dense = dense_allowed(token_ids, config, markers, start_inside_assistant=start_inside_assistant)  # [L, L]
        allowed = torch.from_numpy(dense).to(ids.device)[None]  # [1, L, L]
    else:
        allowed = torch.ones(length, length, dtype=torch.bool, device=ids.device).tril()[None]
    positions = torch.arange(length, device=ids.device)[None]  # [1, L]
    layer_types, window = model_mask_layout(model)
    attention_mask = model_attention_mask(allowed, positions, positions, layer_types=layer_types,
                                          sliding_window=window, dtype=dtype)
    out = model(input_ids=ids, position_ids=positions, attention_mask=attention_mask, use_cache=False)
    return out.logits[0].float()
