"""Continuous batching over the evicting cache: sequences join and leave a decoding batch at any step.

    batch = DecodeBatch(runner, eos_ids=...)
    batch.admit(sequence)                  # prefill with the dense mask, evict the prompt's blocks, join the batch
    while batch.sequences:
        events = batch.choose()            # 1. every row's next token (block cap, processors, sampler)
        batch.evict()                      # 2. the state machine's evictions at that token, and the row cache cap
        batch.release_finished()           # 3. finished rows leave (their cache slots are freed at once)
        batch.forward()                    # 4. one batched forward pass (restart rows recompute on their own)

One method per phase; the cache (PhysicalKVCache, preallocated buffers) owns every row operation, so the batch
never reaches into its tensors. The generator (generator.py) and the server's engine (mementokit.serve) both
drive this same loop; they differ only in when sequences arrive.
"""

from __future__ import annotations

from collections.abc import Callable
from collections.abc import Sequence as SequenceType
from dataclasses import dataclass, field

import torch

from mementokit.blocks import BlockMaskingConfig, BlockStateMachine, MarkerIds
from mementokit.generate.cache import PhysicalKVCache
from mementokit.generate.engine import EvictingRunner
from mementokit.generate.sampling import RowSampler, SamplingParams
from mementokit.generate.stats import CacheStats

LogitsProcessor = Callable[[list[int], torch.Tensor], torch.Tensor]


class IncrementalDecoder:
    """Text deltas of a growing id list, waiting while a multi-byte character is incomplete."""

    def __init__(self, tokenizer, *, skip_special_tokens: bool = False) -> None:
        self.tokenizer = tokenizer
        self.skip_special_tokens = skip_special_tokens
        self.ids: list[int] = []
        self.prefix_offset = 0
        self.read_offset = 0

    def decode(self, ids) -> str:
        if self.tokenizer is None:
            return ""
        return self.tokenizer.decode(ids, skip_special_tokens=self.skip_special_tokens,
                                     clean_up_tokenization_spaces=False)

    def push(self, token_id: int) -> str:
        self.ids.append(token_id)
        prefix = self.decode(self.ids[self.prefix_offset : self.read_offset])
        full = self.decode(self.ids[self.prefix_offset :])
        if len(full) > len(prefix) and not full.endswith("\ufffd"):
            self.prefix_offset, self.read_offset = self.read_offset, len(self.ids)
            return full[len(prefix) :]
        return ""


@dataclass
class TokenLogprob:
    """The chosen token's log-probability under the model's raw distribution, its rank (1 = most likely) and the
    `top` most likely (id, logprob) pairs, best first."""

    logprob: float
    rank: int
    top: list[tuple[int, float]]


def logprob_rows(logits: torch.Tensor, chosen: torch.Tensor, top: int) -> list[TokenLogprob]:
    """logits [n, V] fp32, chosen [n] ids -> one TokenLogprob per row (raw distribution, before any filter)."""
    logprobs = torch.log_softmax(logits.float(), dim=-1)  # [n, V]
    picked = logprobs.gather(-1, chosen[:, None])  # [n, 1]
    ranks = (logprobs > picked).sum(-1) + 1  # [n]
    out = []
    if top > 0:
        values, ids = torch.topk(logprobs, min(top, logprobs.shape[-1]), dim=-1)
        values, ids = values.tolist(), ids.tolist()
    for i in range(logits.shape[0]):
        pairs = list(zip(ids[i], values[i])) if top > 0 else []
        out.append(TokenLogprob(float(picked[i, 0]), int(ranks[i]), pairs))
    return out


@dataclass
class DecodeSequence:
    """One sequence being generated: its ids, block state, sampler, text and statistics."""

    prompt_ids: list[int]
    params: SamplingParams
    index: int = 0  # row index within its request (seeds: RowSampler uses seed + index)
    start_inside_assistant: bool = False
    processors: SequenceType[LogitsProcessor] = ()
    logprobs: int | None = None  # record the chosen token's logprob and this many top alternatives
    skip_special_tokens: bool = False
    tokenizer: object = None
    tag: object = None  # the owner's handle (the server's request)
    block_masking: BlockMaskingConfig | None = None  # per-sequence override of the runner's config
    markers: MarkerIds | None = None  # marker ids for the override (required when it is enabled)
    # state
    ids: list[int] = field(default_factory=list)
    generated: list[int] = field(default_factory=list)
    token_logprobs: list[TokenLogprob] = field(default_factory=list)
    text: str = ""
    stats: CacheStats = field(default_factory=CacheStats)
    machine: BlockStateMachine | None = None
    logits: torch.Tensor | None = None  # next-token logits [V] (fp32)
    finish_reason: str | None = None  # "stop", "length", "cache_full", "abort"
    stop_reason: int | str | None = None  # the stop token id or stop string that ended it

    def __post_init__(self) -> None:
        self.ids = list(self.prompt_ids)
        self.sampler = RowSampler(self.params, self.index)
        self.decoder = IncrementalDecoder(self.tokenizer, skip_special_tokens=self.skip_special_tokens)

    @property
    def position(self) -> int:
        """Logical position of the next token to be fed."""
        return len(self.ids)

    def finish(self, reason: str, stop_reason=None) -> None:
        if self.finish_reason is None:
            self.finish_reason, self.stop_reason = reason, stop_reason


@dataclass
class TokenStep:
    """What one sequence produced in one step: the token, the text it added, its logprob (if asked)."""

    sequence: DecodeSequence
    token_id: int
    text: str
    logprob: TokenLogprob | None
    finish_reason: str | None = None  # set when this token ended the sequence (stop token, stop string, length)
    stop_reason: int | str | None = None


class DecodeBatch:
    """The rows decoded together and their physical cache; sequences join (admit) and leave at any step."""

    def __init__(self, runner: EvictingRunner, *, eos_ids=frozenset(), prefill_chunk_size: int = 4096,
                 rows: int = 8, columns: int = 1024) -> None:
        self.runner = runner
        self.eos_ids = frozenset(eos_ids)
        self.prefill_chunk_size = prefill_chunk_size
        self.kv = PhysicalKVCache(rows=rows, columns=columns)
        self.sequences: list[DecodeSequence] = []  # slot order: sequences[b] is row b of the cache
        self._restart: dict[int, list] = {}  # id(sequence) -> evictions its restart recompute applies
        self.steps = 0
        self.peak_bytes = 0
        self.evictions_applied = 0  # physical evictions (a block's keys leaving the cache), prefill included
        self.slots_evicted = 0  # key/value slots they removed

    # ----- joining -----
    def new_machine(self, sequence: DecodeSequence) -> BlockStateMachine | None:
        if sequence.block_masking is None:
            return self.runner.new_machine(start_inside_assistant=sequence.start_inside_assistant)
        if not sequence.block_masking.enable:
            return None
        return BlockStateMachine(sequence.block_masking, sequence.markers,
                                 start_inside_assistant=sequence.start_inside_assistant)

    def physical_need(self, ids: list[int], sequence: DecodeSequence) -> int:
        """Cache slots `ids` would hold after their evictions: what admission must count (not their length)."""
        machine = self.new_machine(sequence)
        if machine is None:
            return len(ids)
        machine.feed(ids)
        return machine.cache_tokens

    def prefill(self, sequence: DecodeSequence, *, keep_all_logits: bool = False) -> torch.Tensor | None:
        """Prefill the sequence's ids (prompt, plus what it generated before a preemption) with the dense mask,
        evict their completed blocks and join the batch. Returns every position's logits with keep_all_logits."""
        sequence.machine = self.new_machine(sequence)
        done = self.runner.prefill(sequence.ids, sequence.machine, keep_all_logits=keep_all_logits,
                                   chunk_size=self.prefill_chunk_size)
        sequence.logits = done.logits[-1]
        stats = sequence.stats
        stats.bytes_per_token = done.kv.bytes_per_token()
        self._count(done.records)
        stats.evictions.extend(done.records)
        stats.record(sequence.position, done.kv.row_length(0))
        params = sequence.params
        # The prompt's last logits exist already: one token can be sampled even when the cache is exactly full
        # (its own key/value is never stored). Only a prompt larger than the cap gives none.
        if params.max_cache_tokens is not None and done.kv.row_length(0) > params.max_cache_tokens:
            sequence.finish("cache_full")
        elif len(sequence.generated) >= params.max_new_tokens:
            sequence.finish("length")
        if sequence.finish_reason is None:
            self.kv.add_row(done.kv.take_row(0))
            self.sequences.append(sequence)
            self.peak_bytes = max(self.peak_bytes, self.kv.nbytes())
        return done.logits if keep_all_logits else None

    # ----- 1. choose -----
    def choose(self) -> list[TokenStep]:
        """Every row's next token: the block cap forces <|block_end|>, else processors then the sampler."""
        steps = []
        for sequence in self.sequences:
            raw = sequence.logits
            if self.runner.must_close_block(sequence.machine):
                token = sequence.machine.markers.block_end  # max_block_tokens: BE whatever the sampler says
            else:
                logits = raw
                for processor in sequence.processors:
                    logits = processor(sequence.ids, logits)
                token = sequence.sampler(logits)
            logprob = None
            if sequence.logprobs is not None:
                logprob = logprob_rows(raw[None], torch.tensor([token], device=raw.device), sequence.logprobs)[0]
                sequence.token_logprobs.append(logprob)
            sequence.generated.append(token)
            sequence.ids.append(token)
            delta = sequence.decoder.push(token)
            sequence.text += delta
            self._check_stop(sequence, token, delta)
            steps.append(TokenStep(sequence, token, delta, logprob, sequence.finish_reason, sequence.stop_reason))
        return steps

    def _check_stop(self, sequence: DecodeSequence, token: int, delta: str) -> None:
        params = sequence.params
        if token in params.stop_token_ids or token in params.extra_eos_ids:
            sequence.finish("stop", token)
        elif not params.ignore_eos and token in self.eos_ids:
            sequence.finish("stop", None)
        elif params.stop and delta:
            tail = sequence.text[-(max(map(len, params.stop)) + len(delta)) :]
            hit = next((s for s in params.stop if s in tail), None)
            if hit is not None:
                sequence.finish("stop", hit)
        if sequence.finish_reason is None and len(sequence.generated) >= params.max_new_tokens:
            sequence.finish("length")

    # ----- 2. evict -----
    def evict(self) -> int:
        """Apply the evictions due at each running row's new token, and each row's physical cap; returns the
        number of slots removed now (restart rows remove theirs in forward)."""
        removed = 0
        self._restart = {}
        for b, sequence in enumerate(self.sequences):
            if sequence.finish_reason is not None:
                continue
            machine = sequence.machine
            evictions = machine.step(sequence.ids[-1]) if machine is not None else []
            leaving = 0
            if evictions:
                records, needs_restart = self.runner.evict(self.kv, b, evictions)
                sequence.stats.evictions.extend(records)
                removed += self._count(records)
                if needs_restart:
                    self._restart[id(sequence)] = evictions
                    # A restart row still holds its block (removed after the recompute): count it as gone.
                    leaving = sum(self.kv.count_in(b, e.key_start, e.key_stop) for e in evictions)
            cap = sequence.params.max_cache_tokens
            if cap is not None and self.kv.row_length(b) - leaving + 1 > cap:
                sequence.finish("cache_full")
        return removed

    # ----- 3. leave -----
    def remove(self, sequence: DecodeSequence) -> None:
        """Take one sequence out of the batch now (finished, aborted or preempted); its slots are freed."""
        b = next(i for i, s in enumerate(self.sequences) if s is sequence)
        self.kv.remove_row(b)
        last = self.sequences.pop()
        if b < len(self.sequences):
            self.sequences[b] = last
        self._restart.pop(id(sequence), None)

    def release_finished(self) -> list[DecodeSequence]:
        finished = [s for s in self.sequences if s.finish_reason is not None]
        for sequence in finished:
            self.remove(sequence)
        return finished

    # ----- 4. forward -----
    def forward(self) -> None:
        """Feed every row's new token. Restart rows recompute their memento alone; the others step together."""
        if not self.sequences:
            return
        restarting = [s for s in self.sequences if id(s) in self._restart]
        taken = []
        for sequence in restarting:  # out of the batch while the others step
            b = self.sequences.index(sequence)
            taken.append((sequence, self.kv.take_row(b), self._restart[id(sequence)]))
            self.remove(sequence)
        if self.sequences:
            logits = self.runner.step(self.kv, [s.ids[-1] for s in self.sequences],
                                      [s.position - 1 for s in self.sequences])
            for b, sequence in enumerate(self.sequences):
                sequence.logits = logits[b]
        for sequence, row, evictions in taken:
            single = PhysicalKVCache.single(row)
            sequence.logits, records = self.runner.restart_step(single, sequence.ids, evictions,
                                                                sequence.position - 1)
            sequence.stats.evictions.extend(records)
            self._count(records)
            self.kv.add_row(single.take_row(0))
            self.sequences.append(sequence)
        self._restart = {}
        for b, sequence in enumerate(self.sequences):
            sequence.stats.record(sequence.position, self.kv.row_length(b))
        self.steps += 1
        self.peak_bytes = max(self.peak_bytes, self.kv.nbytes())

    # ----- figures -----
    def _count(self, records) -> int:
        removed = sum(r.removed for r in records)
        self.evictions_applied += len(records)
        self.slots_evicted += removed
        return removed

    def physical_tokens(self) -> int:
        return self.kv.total_tokens()

    def logical_tokens(self) -> int:
        return sum(s.position for s in self.sequences)

