"""Model-runner patches (V1 runner: GPUModelRunner, and CPUModelRunner which inherits it).

No official hook keeps logical positions for RoPE while cache slots are compacted, so two methods are wrapped:

- `_update_states` (start of a step, before block tables grow): run the step's compaction copies, one indexed
  copy per layer for every request at once, then truncate the block tables of compacted requests (the
  scheduler has already freed those pages).
- `_prepare_inputs`: positions stay logical (RoPE); its one slot-mapping computation gets physical positions
  (minus the request's evicted tokens), and seq_lens are made physical afterwards. vLLM's own "discard the sample
  of a partial prefill" test is made on logical lengths, as it must be.

Both do nothing for a step whose SchedulerOutput carries no plan (block masking off, or another scheduler).
"""

from __future__ import annotations

import functools

import numpy as np
import torch

from mementokit.vllm_plugin import log

PLAN_ATTR = "memento_plan"  # same name as scheduler.PLAN_ATTR (not imported: the worker needs no scheduler)


def _kv_layers(runner) -> list[tuple[torch.Tensor, object]]:
    """(cache tensor, attention layer) for each distinct KV cache of group 0 (shared caches appear once)."""
    cached = getattr(runner, "_memento_kv", None)
    if cached is not None:
        return cached
    out, seen = [], set()
    context = runner.compilation_config.static_forward_context
    for layer_name in runner.kv_cache_config.kv_cache_groups[0].layer_names:
        layer = context.get(layer_name)
        kv = getattr(layer, "kv_cache", None) if layer is not None else None
        if isinstance(kv, (list, tuple)):
            kv = kv[0] if kv else None
        if isinstance(kv, torch.Tensor) and kv.data_ptr() not in seen:
            seen.add(kv.data_ptr())
            out.append((kv, layer))
    runner._memento_kv = out
    return out


def token_offsets(kv: torch.Tensor, layer) -> torch.Tensor | None:
    """[block_size, E]: the element offsets, within one (page, KV head) of `kv` viewed as [pages, heads, -1],
    that hold token t's key and value.

    Found by letting the backend's own cache writer store token t's key and value as the number t + 1 in a
    scratch page, so packed layouts (the CPU kernels block keys by ISA) are handled without knowing them.
    Backends without a writer hook are assumed to hold [pages, heads, block_size, 2 * head_size].
    """
    _, heads, block_size, width = kv.shape
    if not kv.is_contiguous():
        return None
    impl = getattr(layer, "impl", None)
    writer = getattr(impl, "do_kv_cache_update", None)
    if writer is None or block_size > 250:
        return (torch.arange(block_size, device=kv.device)[:, None] * width
                + torch.arange(width, device=kv.device)[None, :])
    scratch = torch.zeros((1, heads, block_size, width), dtype=kv.dtype, device=kv.device)
    head_size = impl.head_size
    marks = torch.arange(1, block_size + 1, device=kv.device, dtype=kv.dtype)[:, None, None]
    key = marks.expand(block_size, heads, head_size).contiguous()
    slots = torch.arange(block_size, device=kv.device, dtype=torch.int64)
    writer(layer, key, key.clone(), scratch, slots)
    page = scratch[0, 0].reshape(-1)
    rows = [torch.nonzero(page == t + 1).reshape(-1) for t in range(block_size)]
    sizes = {len(r) for r in rows}
    if len(sizes) != 1 or 0 in sizes:
        raise RuntimeError(f"memento: cannot locate tokens in the KV cache layout of {type(impl).__name__}")
    return torch.stack(rows)


def copy_slots(kv: torch.Tensor, offsets: torch.Tensor | None, src: torch.Tensor, dst: torch.Tensor) -> None:
    """kv[dst slots] = kv[src slots] in one layer, keys and values of every head: one gather, one scatter.

    offsets None (a cache whose memory is not in logical order, as some GPU layouts are): copy token rows of the
    logical [pages, heads, block_size, key | value] tensor.
    """
    pages, heads, block_size, _ = kv.shape
    if offsets is None:
        sb, st, db, dt = src // block_size, src % block_size, dst // block_size, dst % block_size
        kv[db, :, dt] = kv[sb, :, st]
        return
    flat = kv.view(pages, heads, -1)
    sb, st = (src // block_size)[:, None], src % block_size
    db, dt = (dst // block_size)[:, None], dst % block_size
    flat[db, :, offsets[dt]] = flat[sb, :, offsets[st]]


def _apply_plan(runner, plan) -> None:
    src, dst = plan.copies()
    if len(src):
        src_t = torch.from_numpy(src).to(runner.device)
        dst_t = torch.from_numpy(dst).to(runner.device)
        offsets = getattr(runner, "_memento_offsets", None)
        layers = _kv_layers(runner)
        if offsets is None:
            offsets = runner._memento_offsets = [token_offsets(kv, layer) for kv, layer in layers]
        for (kv, _), layer_offsets in zip(layers, offsets):
            copy_slots(kv, layer_offsets, src_t, dst_t)
    for req_id, pages in plan.truncate.items():
        state = runner.requests.get(req_id)
        if state is not None:
            del state.block_ids[0][pages:]
        row = runner.input_batch.req_id_to_index.get(req_id)
        if row is not None:
            table = runner.input_batch.block_table[0]
            table.num_blocks_per_row[row] = min(int(table.num_blocks_per_row[row]), pages)


def _evicted_per_row(runner, plan, num_scheduled_tokens: np.ndarray) -> np.ndarray | None:
    """Evicted tokens (logical - physical length) of each row of the persistent batch, or None when all are 0."""
    if plan is None or not plan.evicted:
        return None
    num_reqs = runner.input_batch.num_reqs
    evicted = np.fromiter((plan.evicted.get(r, 0) for r in runner.input_batch.req_ids[:num_reqs]),
                          dtype=np.int64, count=num_reqs)
    return evicted if evicted.any() else None


def _prepare_physical(runner, prepare, scheduler_output, num_scheduled_tokens, evicted, *args, **kwargs):
    """Run vLLM's _prepare_inputs with its ONE slot-mapping computation fed physical positions; then make
    seq_lens physical. Positions (RoPE) stay logical."""
    num_reqs = len(evicted)
    per_token = torch.from_numpy(np.repeat(evicted, num_scheduled_tokens[:num_reqs])).to(runner.device)
    table = runner.input_batch.block_table
    compute = type(table).compute_slot_mapping

    def compute_slot_mapping(n, query_start_loc, positions):
        return compute(table, n, query_start_loc, positions - per_token[: positions.shape[0]])

    table.compute_slot_mapping = compute_slot_mapping  # this call only (an instance attribute)
    try:
        result = prepare(runner, scheduler_output, num_scheduled_tokens, *args, **kwargs)
    finally:
        del table.compute_slot_mapping
    runner.seq_lens[:num_reqs] -= torch.from_numpy(evicted).to(runner.device, runner.seq_lens.dtype)
    return result


def install() -> None:
    from vllm.v1.worker.gpu_model_runner import GPUModelRunner

    if getattr(GPUModelRunner._update_states, "_memento", False):
        return
    update_states = GPUModelRunner._update_states
    prepare_inputs = GPUModelRunner._prepare_inputs

    @functools.wraps(update_states)
    def _update_states(self, scheduler_output, *args, **kwargs):
        plan = getattr(scheduler_output, PLAN_ATTR, None)
        if plan is not None and (plan.src_slots or plan.truncate):
            _apply_plan(self, plan)
        return update_states(self, scheduler_output, *args, **kwargs)

    @functools.wraps(prepare_inputs)
    def _prepare_inputs(self, scheduler_output, num_scheduled_tokens, *args, **kwargs):
        evicted = _evicted_per_row(self, getattr(scheduler_output, PLAN_ATTR, None), num_scheduled_tokens)
        if evicted is None:
            return prepare_inputs(self, scheduler_output, num_scheduled_tokens, *args, **kwargs)
        return _prepare_physical(self, prepare_inputs, scheduler_output, num_scheduled_tokens, evicted,
                                 *args, **kwargs)

    _update_states._memento = True
    GPUModelRunner._update_states = _update_states
    GPUModelRunner._prepare_inputs = _prepare_inputs
    log.debug("memento: V1 model runner patched")
