"""Block-masked generation with any transformers causal LM that uses the standard (dynamic) cache.

    config = '{"enable": true, "keep_last_n_blocks": 0, "mask_delimiters": false}'
    generator = BlockMaskedGenerator(model, tokenizer, config)
    result = generator.generate(chat_prompt(tokenizer, "What is 2 + 2?"), SamplingParams(max_new_tokens=512))
    result.text, result.stats.peak_tokens, result.stats.evictions

    for event in generator.stream(prompt, params):      # TokenEvent(token_id, text)
        print(event.text, end="")

    results = generator.generate_batch(prompts, params)  # rows evict independently; finished rows leave the batch

At every eviction point the block's keys and values are physically removed from every layer (cache.py); later
tokens keep their original positions (attention.py). A prompt holding completed blocks is prefilled with the
dense mask, then evicted (engine.py). The decoding loop is batch.py's DecodeBatch (the server's engine drives the same
one): rows are prefilled one at a time, join one batch, and leave it as they finish.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

from mementokit.blocks import MarkerIds
from mementokit.errors import ConfigError
from mementokit.generate.batch import DecodeBatch, DecodeSequence
from mementokit.generate.engine import (
    EvictingRunner,
    check_markers,
    embedding_rows,
    load_block_masking,
    token_id_list,
)
from mementokit.generate.sampling import SamplingParams
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

    def stream(self, prompt, params: SamplingParams | None = None, **options) -> GenerationStream:
        """Iterate TokenEvent(token_id, text) for one prompt; `.results[0]` holds the final result afterwards."""
        return GenerationStream(self, [prompt], params or SamplingParams(), single=True, **options)

    def stream_batch(self, prompts: Sequence, params: SamplingParams | None = None, **options) -> GenerationStream:
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

    # ----- the loop: one DecodeBatch method per phase -----
    def _run(self) -> Iterator:
        gen = self.generator
        batch = DecodeBatch(gen.runner, eos_ids=gen.eos_ids, prefill_chunk_size=gen.prefill_chunk_size,
                            rows=len(self._prompt_ids))
        sequences = [DecodeSequence(ids, self.params, index=i, start_inside_assistant=self._start_inside_assistant,
                                    processors=self._processors, tokenizer=gen.tokenizer)
                     for i, ids in enumerate(self._prompt_ids)]
        for sequence in sequences:
            batch.prefill(sequence)
        while batch.sequences:
            for step in batch.choose():
                event = TokenEvent(step.token_id, step.text)
                yield event if self.single else (step.sequence.index, event)
            batch.evict()
            batch.release_finished()
            batch.forward()
        self.steps, self.peak_batch_bytes = batch.steps, batch.peak_bytes
        self.results = [GenerationResult(prompt_token_ids=s.prompt_ids, token_ids=s.generated,
                                         text=s.decoder.decode(s.generated), finish_reason=s.finish_reason or "length",
                                         stats=s.stats) for s in sequences]
