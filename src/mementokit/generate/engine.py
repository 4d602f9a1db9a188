"""The evicting path shared by generation and replay: prefill, evict, step, restart-recompute.

Order of work for a token at position p (block-semantics.md): the state machine's step(p) reports the evictions
due at p; their keys leave the physical cache BEFORE p's query attends and before p's key/value is stored.
In restart mode an eviction also names `recompute_from`: the surviving keys/values of positions
recompute_from .. p-1 (the memento) are dropped and recomputed without the block, together with p itself.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from mementokit.blocks import BlockMaskingConfig, BlockStateMachine, Eviction, MarkerIds, resolve_marker_ids
from mementokit.errors import ConfigError, InputError
from mementokit.generate.attention import MaskPlan, forward, plan_masks
from mementokit.generate.cache import PhysicalKVCache
from mementokit.generate.stats import EvictionRecord


def load_block_masking(block_masking) -> BlockMaskingConfig:
    """A BlockMaskingConfig from a config, a dict, JSON text or a file path (None: vanilla, nothing evicted)."""
    if block_masking is None:
        return BlockMaskingConfig.vanilla()
    if isinstance(block_masking, BlockMaskingConfig):
        return block_masking
    return BlockMaskingConfig.load(block_masking)


def embedding_rows(model) -> int:
    """How many token ids the model can embed."""
    return model.get_input_embeddings().weight.shape[0]


def check_markers(model, tokenizer, config: BlockMaskingConfig, markers: MarkerIds | None = None) -> MarkerIds | None:
    """The marker ids for `config` (resolved from `tokenizer`, or the explicit `markers`), checked against the
    model's embeddings: ConfigError before any compute. None when block masking is off."""
    if not config.enable:
        return None
    if markers is None:
        if tokenizer is None:
            raise ConfigError("block masking needs the tokenizer (or explicit marker ids, markers=MarkerIds(...)) "
                              "to know the block markers")
        markers = resolve_marker_ids(tokenizer, config)
    elif not isinstance(markers, MarkerIds):
        raise ConfigError(f"markers must be a mementokit.blocks.MarkerIds, got {type(markers).__name__}")
    rows = embedding_rows(model)
    for name, token_id in zip(("block_start", "block_end", "summary_start", "summary_end"), markers.block_markers):
        if isinstance(token_id, bool) or not isinstance(token_id, int) or token_id < 0:
            raise ConfigError(f"block marker {name} must be a token id (an integer >= 0), got {token_id!r}")
        if token_id >= rows:
            raise ConfigError(
                f"block marker {name} has id {token_id} but the model embeds only {rows} ids; "
                "resize the model's token embeddings after adding the markers to the tokenizer"
            )
    if len(set(markers.block_markers)) != 4:
        raise ConfigError(f"block markers must be four different ids, got {markers.block_markers}")
    for name in ("think_end", "im_start", "assistant"):
        token_id = getattr(markers, name)
        if token_id is not None and (isinstance(token_id, bool) or not isinstance(token_id, int)
                                     or not 0 <= token_id < rows):
            raise ConfigError(f"marker {name} id {token_id!r} is outside the model's {rows} ids")
    return markers


def token_id_list(value, vocab: int, *, what: str = "prompt", line: int | None = None) -> list[int]:
    """Token ids of ONE sequence as a list of ints: a 1-D list/array/tensor (or a [1, n] tensor).

    InputError for anything else: several rows (use a batch call), float ids (never truncated silently),
    ids outside the model's vocabulary, an empty sequence.
    """
    import numpy as np

    if isinstance(value, torch.Tensor):
        if value.is_floating_point() or value.is_complex() or value.dtype == torch.bool:
            raise InputError(f"{what} token ids must be integers, got a {value.dtype} tensor", line=line)
        if value.dim() == 2 and value.shape[0] == 1:
            value = value[0]
        if value.dim() != 1:
            raise InputError(f"{what} must be one sequence of token ids (1-D), got a tensor of shape "
                             f"{tuple(value.shape)}; pass several prompts as a list (generate_batch)", line=line)
        ids = value.tolist()
    else:
        array = np.asarray(value) if not isinstance(value, (list, tuple)) else None
        if array is not None and array.ndim != 1:
            if array.ndim == 2 and array.shape[0] == 1:
                value = array[0]
            else:
                raise InputError(f"{what} must be one sequence of token ids (1-D), got shape {array.shape}; "
                                 "pass several prompts as a list (generate_batch)", line=line)
        ids = []
        for i in value:
            if isinstance(i, (bool, np.bool_)) or not isinstance(i, (int, np.integer)):
                raise InputError(f"{what} token ids must be integers, got {i!r}", line=line)
            ids.append(int(i))
    if not ids:
        raise InputError(f"empty {what}", line=line)
    bad = [i for i in ids if not 0 <= i < vocab]
    if bad:
        raise InputError(f"{what} holds token ids outside the model's {vocab} ids: {bad[:5]}", line=line)
    return ids


@dataclass
class PrefillResult:
    kv: PhysicalKVCache  # one row, evictions of the prompt already applied
    logits: torch.Tensor  # [n, V]: the last position's logits, or every position's (keep_all_logits)
    records: list[EvictionRecord]


class EvictingRunner:
    """A causal LM plus the block-masking rules: runs sequences through the evicting physical cache."""

    def __init__(self, model, config: BlockMaskingConfig, markers: MarkerIds | None, *, mask_mode: str = "auto"):
        if mask_mode not in ("auto", "explicit"):
            raise ConfigError(f"mask_mode must be 'auto' or 'explicit', got {mask_mode!r}")
        self.model = model
        self.config = config
        self.markers = markers
        self.plan: MaskPlan = plan_masks(model, force_explicit=mask_mode == "explicit")
        self.device = model.get_input_embeddings().weight.device

    # ----- state machine -----
    def new_machine(self, *, start_inside_assistant: bool = False) -> BlockStateMachine | None:
        if self.markers is None:
            return None
        return BlockStateMachine(self.config, self.markers, start_inside_assistant=start_inside_assistant)

    def must_close_block(self, machine: BlockStateMachine | None) -> bool:
        return machine is not None and machine.must_close_block()

    # ----- prefill -----
    @torch.no_grad()
    def prefill(self, token_ids: list[int], machine: BlockStateMachine | None, *, keep_all_logits: bool = False,
                chunk_size: int | None = None) -> PrefillResult:
        """Prefill a prompt with the dense mask, then evict its completed blocks.

        The state machine sees the whole prompt first, so every eviction in it is known: a chunk hides the keys
        of evictions whose trigger falls inside it (queries from the trigger on), and keys leave the tensors after
        the chunk that holds their reporting position. With restart evictions the trigger is the summary start,
        so the memento's keys/values come out computed without the block, as a recompute would give.
        """
        if not token_ids:
            raise ConfigError("a prompt needs at least one token")
        evictions = machine.feed(token_ids) if machine is not None else []
        length = len(token_ids)
        chunk_size = chunk_size or length
        kv = PhysicalKVCache()
        pending = sorted(evictions, key=lambda e: e.at)
        records: list[EvictionRecord] = []
        logits_parts = []
        for chunk_start in range(0, length, chunk_size):
            chunk_stop = min(chunk_start + chunk_size, length)
            # Evictions whose reporting position lies before this chunk: gone from the tensors already.
            due = [e for e in pending if e.at < chunk_start]
            records += self._remove(kv, 0, due)
            pending = [e for e in pending if e.at >= chunk_start]
            hides = [e for e in pending if e.trigger < chunk_stop]
            ids = torch.tensor([token_ids[chunk_start:chunk_stop]], dtype=torch.long, device=self.device)
            keep = chunk_stop - chunk_start if keep_all_logits else 1
            logits = forward(self.model, kv, self.plan, ids, [list(range(chunk_start, chunk_stop))],
                             hides=[hides], logits_to_keep=keep)
            logits_parts.append(logits[0])
        records += self._remove(kv, 0, pending)
        logits = torch.cat(logits_parts, dim=0) if keep_all_logits else logits_parts[-1]
        return PrefillResult(kv=kv, logits=logits, records=records)

    # ----- eviction -----
    def _remove(self, kv: PhysicalKVCache, row: int, evictions: list[Eviction]) -> list[EvictionRecord]:
        records = []
        for e in evictions:
            removed = kv.evict(row, e.key_start, e.key_stop)
            records.append(EvictionRecord(position=e.at, block_index=e.block_index, key_start=e.key_start,
                                          key_stop=e.key_stop, trigger=e.trigger, removed=removed,
                                          restart=e.restart))
        return records

    def evict(self, kv: PhysicalKVCache, row: int, evictions: list[Eviction]) -> tuple[list[EvictionRecord], bool]:
        """Remove the evicted keys of one row; returns the records, and whether a restart recompute is due instead
        (then nothing is removed yet: restart_step removes the keys after the recompute)."""
        if any(e.restart and e.recompute_from is not None for e in evictions):
            return [], True
        return self._remove(kv, row, evictions), False

    # ----- decoding -----
    @torch.no_grad()
    def step(self, kv: PhysicalKVCache, tokens: list[int], positions: list[int]) -> torch.Tensor:
        """Feed one token per row of `kv` at its logical position; returns next-token logits [B, V] (fp32)."""
        ids = torch.tensor(tokens, dtype=torch.long, device=self.device)[:, None]  # [B, 1]
        logits = forward(self.model, kv, self.plan, ids, [[p] for p in positions])
        return logits[:, -1]

    @torch.no_grad()
    def restart_step(self, kv: PhysicalKVCache, token_ids: list[int], evictions: list[Eviction], position: int
                     ) -> tuple[torch.Tensor, list[EvictionRecord]]:
        """Restart mode, one row: recompute the keys/values of recompute_from .. position-1 without the evicted
        block, feed `position` in the same chunk, then drop the evicted keys. Returns (logits after `position`
        [V], records).

        The chunk is masked like the dense mask: each evicted span is hidden from queries at or after its trigger
        (the summary start), and stays visible to the chunk's earlier queries, so nested blocks whose spans reach
        into the chunk come out exactly as in one dense forward pass.
        """
        recompute_from = min(e.recompute_from for e in evictions if e.restart and e.recompute_from is not None)
        chunk_positions = [p for p in kv.positions[0] if recompute_from <= p < position] + [position]
        kv.evict(0, recompute_from, position)
        ids = torch.tensor([[token_ids[p] for p in chunk_positions]], dtype=torch.long, device=self.device)
        logits = forward(self.model, kv, self.plan, ids, [chunk_positions], hides=[evictions])
        records = self._remove(kv, 0, evictions)
        if records:
            records[-1] = EvictionRecord(**{**records[-1].__dict__, "recomputed": len(chunk_positions) - 1})
        return logits[0, -1], records
