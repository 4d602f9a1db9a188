"""Block-masked generation with any transformers causal LM that uses the standard (dynamic) cache.

    generator = BlockMaskedGenerator(model, tokenizer, '{"enable": true, "keep_last_n_blocks": 0, "mask_delimiters": false}')
    result = generator.generate(chat_prompt(tokenizer, "What is 2 + 2?"), SamplingParams(max_new_tokens=512))
    result.text, result.stats.peak_tokens, result.stats.evictions

    for event in generator.stream(prompt, params):      # TokenEvent(token_id, text)
        print(event.text, end="")

    results = generator.generate_batch(prompts, params)  # rows evict independently; finished rows leave the batch

At every eviction point the block's keys and values are physically removed from every layer (cache.py); later
tokens keep their original positions (attention.py). A prompt holding completed blocks is prefilled with the
dense mask, then evicted (engine.py). Rows are prefilled one at a time, then decoded together in one padded batch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator, Sequence

import torch

from mementokit.blocks import BlockStateMachine, MarkerIds
from mementokit.errors import ConfigError
from mementokit.generate.cache import PhysicalKVCache
from mementokit.generate.engine import (
    EvictingRunner,
    check_markers,
    embedding_rows,
    load_block_masking,
    token_id_list,
)
from mementokit.generate.sampling import RowSampler, SamplingParams
from mementokit.generate.stats import CacheStats


class TokenEvent(tuple):
    """(token_id, text): one generated token and the text it adds (may be "" while a character is incomplete)."""

    __slots__ = ()

    def __new__(cls, token_id: int, text: str):
        return super().__new__(cls, (token_id, text))

    @property
    def token_id(self) -> int:
        return self[0]

    @property
    def text(self) -> str:
        return self[1]


@dataclass
class GenerationResult:
    prompt_token_ids: list[int]
    token_ids: list[int]  # generated tokens (special tokens included)
    text: str  # generated text with special tokens kept
    finish_reason: str  # "stop" (eos / stop id / stop string), "length", "cache_full"
    stats: CacheStats = field(default_factory=CacheStats)

    def summary(self) -> dict:
        return {"prompt_tokens": len(self.prompt_token_ids), "generated_tokens": len(self.token_ids),
                "finish_reason": self.finish_reason, **self.stats.summary()}


def chat_prompt(tokenizer, problem: str) -> list[int]:
    """The ids of a one-turn ChatML (or the tokenizer's own template) prompt ending with the assistant header."""
    if getattr(tokenizer, "chat_template", None):
        ids = tokenizer.apply_chat_template([{"role": "user", "content": problem}], add_generation_prompt=True,
                                            tokenize=True)
        if isinstance(ids, dict) or hasattr(ids, "keys"):
            ids = ids["input_ids"]
        return [int(i) for i in ids]
    text = f"<|im_start|>user\n{problem}<|im_end|>\n<|im_start|>assistant\n"
    return tokenizer.encode(text, add_special_tokens=False)


class IncrementalDecoder:
    """Text deltas of a growing id list, waiting while a multi-byte character is incomplete."""

    def __init__(self, tokenizer) -> None:
        self.tokenizer = tokenizer
        self.ids: list[int] = []
        self.prefix_offset = 0
        self.read_offset = 0

    def _decode(self, ids) -> str:
        if self.tokenizer is None:
            return ""
        return self.tokenizer.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)

    def push(self, token_id: int) -> str:
        self.ids.append(token_id)
        prefix = self._decode(self.ids[self.prefix_offset : self.read_offset])
        full = self._decode(self.ids[self.prefix_offset :])
        if len(full) > len(prefix) and not full.endswith("\ufffd"):
            self.prefix_offset, self.read_offset = self.read_offset, len(self.ids)
            return full[len(prefix) :]
        return ""


class _Row:
    """One sequence being generated."""

    def __init__(self, index: int, prompt_ids: list[int], machine: BlockStateMachine | None, sampler: RowSampler,
                 tokenizer) -> None:
        self.index = index
        self.prompt_ids = prompt_ids
        self.ids = list(prompt_ids)  # every token fed or about to be fed
        self.generated: list[int] = []
        self.machine = machine
        self.sampler = sampler
        self.decoder = IncrementalDecoder(tokenizer)
        self.text = ""
        self.stats = CacheStats()
        self.logits: torch.Tensor | None = None  # next-token logits [V]
        self.finish_reason: str | None = None

    @property
    def position(self) -> int:
        """Logical position of the next token."""
        return len(self.ids)


class BlockMaskedGenerator:
    """Generates with block masking: finished blocks leave the KV cache physically, positions stay original."""

    def __init__(self, model, tokenizer, block_masking=None, *, markers: MarkerIds | None = None,
                 mask_mode: str = "auto", prefill_chunk_size: int = 4096) -> None:
        """tokenizer may be None when prompts are ids and `markers` are given (no text is produced then).
        Prompts are prefilled in chunks of `prefill_chunk_size` tokens (bounds the size of an explicit mask)."""
        # Everything that can be wrong with the configuration fails here, before any compute.
        self.config = load_block_masking(block_masking)
        if isinstance(prefill_chunk_size, bool) or not isinstance(prefill_chunk_size, int) or prefill_chunk_size < 1:
            raise ConfigError(f"prefill_chunk_size must be a positive number of tokens, got {prefill_chunk_size!r}")
        self.markers = check_markers(model, tokenizer, self.config, markers)
        self.model = model
        self.tokenizer = tokenizer
        self.runner = EvictingRunner(model, self.config, self.markers, mask_mode=mask_mode)
        self.eos_ids = self._eos_ids()
        self.prefill_chunk_size = prefill_chunk_size

    def _eos_ids(self) -> frozenset[int]:
        ids: set[int] = set()
        for source in (getattr(self.tokenizer, "eos_token_id", None),
                       getattr(getattr(self.model, "generation_config", None), "eos_token_id", None)):
            if source is None:
                continue
            ids.update([source] if isinstance(source, int) else source)
        return frozenset(int(i) for i in ids)

    # ----- public API -----
    def generate(self, prompt, params: SamplingParams | None = None, **options) -> GenerationResult:
        """Generate one continuation of `prompt` (text, taken as is, or token ids).

        options: start_inside_assistant (track blocks from the first token, for prompts without a ChatML
        assistant header), logits_processors (callables (token_ids_so_far, logits [V]) -> logits, applied
        before the block cap and sampling).
        """
        return self.generate_batch([prompt], params, **options)[0]

    def generate_batch(self, prompts: Sequence, params: SamplingParams | None = None, **options
                       ) -> list[GenerationResult]:
        """Generate for several prompts at once; each row evicts on its own schedule."""
        stream = self.stream_batch(prompts, params, **options)
        for _ in stream:
            pass
        return stream.results

    def stream(self, prompt, params: SamplingParams | None = None, **options) -> "GenerationStream":
        """Iterate TokenEvent(token_id, text) for one prompt; `.results[0]` holds the final result afterwards."""
        return GenerationStream(self, [prompt], params or SamplingParams(), single=True, **options)

    def stream_batch(self, prompts: Sequence, params: SamplingParams | None = None, **options) -> "GenerationStream":
        """Iterate (row, TokenEvent) for several prompts; `.results` holds the final results afterwards."""
        return GenerationStream(self, list(prompts), params or SamplingParams(), single=False, **options)

    # ----- helpers -----
    def encode_prompt(self, prompt, index: int = 0) -> list[int]:
        if isinstance(prompt, str):
            if self.tokenizer is None:
                raise ConfigError("text prompts need a tokenizer; give token ids")
            prompt = self.tokenizer.encode(prompt, add_special_tokens=False)
        return token_id_list(prompt, embedding_rows(self.model), what="prompt", line=index + 1)


class GenerationStream:
    """The decoding loop as an iterator; results appear in `.results` once it is exhausted."""

    def __init__(self, generator: BlockMaskedGenerator, prompts: list, params: SamplingParams, *, single: bool,
                 start_inside_assistant: bool = False, logits_processors: Sequence = ()) -> None:
        self.generator = generator
        self.params = params
        self.single = single
        self.results: list[GenerationResult] = []
        self.peak_batch_bytes = 0  # largest key/value tensor footprint of the whole batch (padding included)
        self.steps = 0  # batched decoding steps
        # Tokenize everything first: bad input fails before any compute.
        self._prompt_ids = [generator.encode_prompt(p, i) for i, p in enumerate(prompts)]
        self._start_inside_assistant = start_inside_assistant
        self._processors = tuple(logits_processors or ())
        self._iterator = self._run()

    def __iter__(self):
        return self

    def __next__(self):
        return next(self._iterator)

    # ----- the loop -----
    def _run(self) -> Iterator:
        gen, params = self.generator, self.params
        runner, tokenizer = gen.runner, gen.tokenizer
        stop_ids = set(params.stop_token_ids) | set(params.extra_eos_ids)
        if not params.ignore_eos:
            stop_ids |= gen.eos_ids
        block_end = gen.markers.block_end if gen.markers is not None else None
        rows: list[_Row] = []
        kv_rows = []
        for index, prompt_ids in enumerate(self._prompt_ids):
            machine = runner.new_machine(start_inside_assistant=self._start_inside_assistant)
            row = _Row(index, prompt_ids, machine, RowSampler(params, index), tokenizer)
            done = runner.prefill(prompt_ids, machine, chunk_size=gen.prefill_chunk_size)
            row.logits = done.logits[-1]
            row.stats.bytes_per_token = done.kv.bytes_per_token()
            row.stats.evictions.extend(done.records)
            row.stats.record(len(prompt_ids), done.kv.row_length(0))
            # The prompt's last logits are computed already: one token can be sampled even when the cache is
            # exactly full (its own key/value is never stored). Only a prompt larger than the cap gives none.
            if params.max_cache_tokens is not None and done.kv.row_length(0) > params.max_cache_tokens:
                row.finish_reason = "cache_full"
            elif params.max_new_tokens == 0:
                row.finish_reason = "length"
            rows.append(row)
            kv_rows.append(done.kv.take_row(0))
        active = [r for r in rows if r.finish_reason is None]
        kv = PhysicalKVCache.from_rows([kv_rows[r.index] for r in active])
        del kv_rows
        self.peak_batch_bytes = kv.nbytes()

        while active:
            # 1. choose every row's next token (the block cap forces <|block_end|>)
            for row in active:
                if runner.must_close_block(row.machine):
                    token = block_end  # max_block_tokens: every other logit is -inf, whatever the sampler
                else:
                    logits = row.logits
                    for processor in self._processors:
                        logits = processor(row.ids, logits)
                    token = row.sampler(logits)
                row.generated.append(token)
                row.ids.append(token)
                delta = row.decoder.push(token)
                row.text += delta
                yield TokenEvent(token, delta) if self.single else (row.index, TokenEvent(token, delta))
                if token in stop_ids:
                    row.finish_reason = "stop"
                elif params.stop and delta and any(s in row.text[-(len(s) + len(delta)) :] for s in params.stop):
                    row.finish_reason = "stop"
                elif len(row.generated) >= params.max_new_tokens:
                    row.finish_reason = "length"
            # 2. evictions due at each row's new position, and the physical cap
            restart: dict[int, list] = {}  # batch row -> the evictions its restart recompute applies
            for b, row in enumerate(active):
                if row.finish_reason is not None:
                    continue
                position = row.position - 1
                evictions = row.machine.step(row.ids[position]) if row.machine is not None else []
                if evictions:
                    records, needs_restart = runner.evict(kv, b, evictions)
                    row.stats.evictions.extend(records)
                    if needs_restart:
                        restart[b] = evictions
                # A restart row still holds its block (removed after the recompute): count it as gone.
                leaving = sum(kv.count_in(b, e.key_start, e.key_stop) for e in restart.get(b, ()))
                if params.max_cache_tokens is not None and kv.row_length(b) - leaving + 1 > params.max_cache_tokens:
                    row.finish_reason = "cache_full"
            # 3. finished rows leave the batch
            staying = [b for b, row in enumerate(active) if row.finish_reason is None]
            if len(staying) < len(active):
                kv.keep_rows(staying)
                restart = {staying.index(b): v for b, v in restart.items() if b in staying}
                active = [active[b] for b in staying]
            if not active:
                break
            # 4. forward: restart rows recompute alone, the others in one batched step
            if restart:
                self._step_with_restarts(kv, active, restart)
            else:
                logits = runner.step(kv, [r.ids[-1] for r in active], [r.position - 1 for r in active])
                for b, row in enumerate(active):
                    row.logits = logits[b]
            for b, row in enumerate(active):
                row.stats.record(row.position, kv.row_length(b))
            self.steps += 1
            self.peak_batch_bytes = max(self.peak_batch_bytes, kv.nbytes())

        for row in rows:
            text = row.decoder._decode(row.generated)
            self.results.append(GenerationResult(prompt_token_ids=row.prompt_ids, token_ids=row.generated,
                                                 text=text, finish_reason=row.finish_reason or "length",
                                                 stats=row.stats))

    def _step_with_restarts(self, kv: PhysicalKVCache, active: list[_Row], restart: dict[int, list]) -> None:
        """Rows that recompute a memento run alone (a chunk of several tokens); the rest step together."""
        runner = self.generator.runner
        taken = {b: kv.take_row(b) for b in restart}
        others = [b for b in range(len(active)) if b not in restart]
        kv.keep_rows(others) if others else None
        if others:
            logits = runner.step(kv, [active[b].ids[-1] for b in others], [active[b].position - 1 for b in others])
            for i, b in enumerate(others):
                active[b].logits = logits[i]
        rebuilt_rows = {i: kv.take_row(i) for i in range(len(others))} if others else {}
        single_rows = {}
        for b, evictions in restart.items():
            row = active[b]
            single = PhysicalKVCache.single(taken[b])
            row.logits, records = runner.restart_step(single, row.ids, evictions, row.position - 1)
            row.stats.evictions.extend(records)
            single_rows[b] = single.take_row(0)
        order = []
        for b in range(len(active)):
            order.append(single_rows[b] if b in single_rows else rebuilt_rows[others.index(b)])
        merged = PhysicalKVCache.from_rows(order)
        kv.cache, kv.positions, kv.pad = merged.cache, merged.positions, merged.pad
