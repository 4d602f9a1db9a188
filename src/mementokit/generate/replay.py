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


def _trace_value(trace, name: str):
    """A field of a trace (any form TraceRecord.of takes), looking into its raw row too; None when absent."""
    from mementokit.records import TraceRecord

    value = TraceRecord.of(trace).get(name)
    return None if value is None else value if isinstance(value, (int, float)) else str(value)


def tokenize_traces(traces, tokenizer, block_masking=None, *,
                    with_prompt: bool = False) -> list[tuple[object, list[int], list[int]]]:
    """(trace, prompt ids, response ids) per trace, tokenized exactly as the KV simulator does (`memento kv`):
    the response alone, or with `with_prompt` the chat prompt (template, ChatML fallback) before it."""
    from mementokit.errors import InputError
    from mementokit.kv import KVSimulator

    simulator = KVSimulator(tokenizer, config=load_block_masking(block_masking), with_prompt=with_prompt,
                            add_markers=False)
    encoded = []
    for index, trace in enumerate(traces):
        response = _trace_value(trace, "response")
        if not response:
            raise InputError("trace has no response", line=index + 1, field="response")
        prompt_ids = (tokenizer([simulator.prompt_text(_trace_value(trace, "problem") or "")],
                                add_special_tokens=False)["input_ids"][0] if with_prompt else [])
        response_ids = tokenizer([response], add_special_tokens=False)["input_ids"][0]
        encoded.append((trace, list(prompt_ids), list(response_ids)))
    return encoded


def replay_traces(model, tokenizer, encoded, block_masking=None, *, with_prompt: bool = False,
                  keep_logits: bool = False, progress: Callable[[int | None, int], None] | None = None):
    """Replay tokenized traces (`tokenize_traces(...)`, so bad input fails before the model is even loaded)
    through the evicting cache; yield (row, ReplayResult) per trace.

    The row holds the cache MEASURED from the tensors (`memento`, `vanilla`: the keys of `memento kv --json`),
    the ratios, and the simulator's peak for the same ids beside it (`simulated_peak_tokens`,
    `matches_simulator`). progress(total, done): a trace's token count when it starts, then (None, tokens done).
    """
    import numpy as np

    from mementokit.kv import KVStats, simulate_token_ids

    config = load_block_masking(block_masking)
    markers = check_markers(model, tokenizer, config)
    for index, (trace, prompt_ids, response_ids) in enumerate(encoded):
        ids = prompt_ids + response_ids
        if progress is not None:
            progress(len(ids), 0)
        result = replay(model, ids, config, markers=markers, start_inside_assistant=not with_prompt,
                        keep_logits=keep_logits, progress=None if progress is None else lambda n: progress(None, n))
        stats = result.stats
        positions = np.asarray(stats.positions, dtype=np.int64)
        memento = KVStats.from_curves(np.asarray(stats.cache_tokens, dtype=np.int64),
                                      np.asarray(stats.cache_bytes, dtype=np.int64))
        vanilla = KVStats.from_curves(positions, positions * stats.bytes_per_token)
        simulated = (simulate_token_ids(ids, config, markers, start_inside_assistant=not with_prompt)
                     if markers is not None else None)
        yield {
            "index": index,
            "id": _trace_value(trace, "id") or _trace_value(trace, "task_id"),
            "domain": _trace_value(trace, "domain"),
            "tokens": len(ids),
            "prompt_tokens": len(prompt_ids),
            "peak_tokens": memento.peak_tokens,
            "peak_bytes": memento.peak_bytes,
            "bytes_per_token": stats.bytes_per_token,
            "evictions": len(stats.evictions),
            "evicted_tokens": stats.evicted_tokens,
            "memento": memento.to_dict(),
            "vanilla": vanilla.to_dict(),
            "peak_ratio": memento.peak_bytes / vanilla.peak_bytes if vanilla.peak_bytes else None,
            "auc_ratio": (memento.auc_gb_ktokens / vanilla.auc_gb_ktokens) if vanilla.auc_gb_ktokens else None,
            "simulated_peak_tokens": None if simulated is None else simulated.memento.peak_tokens,
            "matches_simulator": None if simulated is None else
                memento.peak_tokens == simulated.memento.peak_tokens
                and abs(memento.auc_token_ktokens - simulated.memento.auc_token_ktokens) < 1e-9,
        }, result
