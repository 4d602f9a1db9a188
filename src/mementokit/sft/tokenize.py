"""Conversations to training examples: input ids, labels, and (stage 2) the compact memento-attention mask.

    sft = SFTTokenizer(tokenizer, max_length=8192, stage=2,
                       block_masking=BlockMaskingConfig(keep_last_n_blocks=0, mask_delimiters=False))
    for example in sft.tokenize(iter_chat_examples("traces.jsonl")):
        example.input_ids, example.labels, example.mask_spans
    sft.stats.as_dict()        # counts, truncation, token statistics

Prompt and completion are tokenized separately and concatenated, as at inference (the prompt is encoded alone,
then the model produces the completion token by token), in batched `tokenizers` calls. Labels are -100 on the
prompt and the token id on every completion token, special tokens included (the model must learn to emit the
block markers and the end of turn).

The stage-2 mask is stored as the block state machine's evictions, (key_start, key_stop, trigger) triples:
keys key_start..key_stop-1 are hidden from queries >= trigger (mementokit.blocks.compact_mask). O(#blocks) per
example whatever the length; the collator expands it. Truncation happens before the mask is derived, so the
mask is that of the ids actually trained on, and an example cut inside a block is counted, never silent.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mementokit.blocks import (
    BlockMaskingConfig,
    BlockStateMachine,
    add_block_markers,
    compact_spans,
    resolve_marker_ids,
    visible_key_counts,
)
from mementokit.errors import ConfigError
from mementokit.sft.chat import ChatExample, ChatRenderer

IGNORE_INDEX = -100
OVERFLOW_MODES = ("truncate", "drop")
STAGES = (1, 2)


@dataclass(slots=True)
class SFTExample:
    """One tokenized conversation. mask_spans is None for stage 1 (plain causal attention)."""

    input_ids: list[int]
    labels: list[int]
    prompt_tokens: int
    truncated_tokens: int  # completion tokens cut off by max_length
    ends_inside_block: bool  # the (possibly truncated) ids end with a block or a memento still open
    blocks_completed: int
    mask_spans: list[tuple[int, ...]] | None  # (key_start, key_stop, trigger[, at]): blocks.compact_spans
    domain: str = "unknown"
    source: str | None = None
    index: int = 0
    messages: list[dict[str, str]] = field(default_factory=list, repr=False)

    @property
    def num_tokens(self) -> int:
        return len(self.input_ids)

    def to_row(self) -> dict[str, Any]:
        """The dataset row (Arrow / Parquet): ids, labels, the compact mask and what the card counts."""
        row = {
            "input_ids": self.input_ids,
            "labels": self.labels,
            "num_tokens": self.num_tokens,
            "prompt_tokens": self.prompt_tokens,
            "truncated_tokens": self.truncated_tokens,
            "ends_inside_block": self.ends_inside_block,
            "blocks_completed": self.blocks_completed,
            "domain": self.domain,
            "source": self.source,
            "index": self.index,
        }
        if self.mask_spans is not None:
            row["mask_spans"] = [list(span) for span in self.mask_spans]
        return row


@dataclass
class TokenizeStats:
    """What went in, what came out, and what was cut: everything the dataset card reports."""

    examples_in: int = 0
    examples_out: int = 0
    dropped_overflow: int = 0  # over max_length with overflow="drop"
    dropped_prompt_too_long: int = 0  # the prompt alone fills max_length: nothing left to learn
    truncated_examples: int = 0
    truncated_tokens: int = 0
    truncated_inside_block: int = 0
    label_tokens: int = 0
    prompt_tokens: int = 0
    blocks_completed: int = 0
    hidden_pairs: int = 0  # (query, key) pairs the stage-2 mask removes from the causal triangle
    causal_pairs: int = 0
    domains: Counter = field(default_factory=Counter)
    lengths: list[int] = field(default_factory=list, repr=False)

    def add(self, example: SFTExample, hidden_pairs: int) -> None:
        n = example.num_tokens
        self.examples_out += 1
        self.lengths.append(n)
        self.prompt_tokens += example.prompt_tokens
        self.label_tokens += n - example.prompt_tokens
        self.blocks_completed += example.blocks_completed
        self.hidden_pairs += hidden_pairs
        self.causal_pairs += n * (n + 1) // 2
        self.domains[example.domain] += 1
        if example.truncated_tokens:
            self.truncated_examples += 1
            self.truncated_tokens += example.truncated_tokens
            self.truncated_inside_block += int(example.ends_inside_block)

    def as_dict(self) -> dict[str, Any]:
        lengths = np.asarray(self.lengths, dtype=np.int64)

        def pct(q: float) -> float | None:
            return float(np.percentile(lengths, q)) if lengths.size else None

        return {
            "examples_in": self.examples_in,
            "examples": self.examples_out,
            "dropped_overflow": self.dropped_overflow,
            "dropped_prompt_too_long": self.dropped_prompt_too_long,
            "truncated_examples": self.truncated_examples,
            "truncated_tokens": self.truncated_tokens,
            "truncated_inside_block": self.truncated_inside_block,
            "tokens": int(lengths.sum()),
            "prompt_tokens": self.prompt_tokens,
            "label_tokens": self.label_tokens,
            "tokens_per_example": {
                "mean": float(lengths.mean()) if lengths.size else None,
                "median": pct(50),
                "p90": pct(90),
                "max": int(lengths.max()) if lengths.size else None,
                "min": int(lengths.min()) if lengths.size else None,
            },
            "blocks_completed": self.blocks_completed,
            "hidden_attention_fraction": self.hidden_pairs / self.causal_pairs if self.causal_pairs else 0.0,
            "domains": dict(sorted(self.domains.items())),
        }


class SFTTokenizer:
    """Tokenize conversations for stage 1 (full attention) or stage 2 (memento attention).

    The four block markers are added to `tokenizer` as special tokens when missing (`markers_added` says how
    many; a model trained on these ids then needs its embeddings resized, see mementokit.sft.init_tokens).
    `block_masking` is required for stage 2 (it decides keep_last_n_blocks and mask_delimiters, which must
    match how the model will be served); for stage 1 it only names the markers for the statistics.
    """

    def __init__(
        self,
        tokenizer,
        *,
        stage: int = 1,
        block_masking: BlockMaskingConfig | None = None,
        max_length: int | None = None,
        overflow: str = "truncate",
        render_mode: str = "verbatim",
        add_markers: bool = True,
    ):
        if stage not in STAGES:
            raise ConfigError(f"stage must be 1 (full attention) or 2 (memento attention), got {stage!r}")
        if overflow not in OVERFLOW_MODES:
            raise ConfigError(f"overflow must be one of {OVERFLOW_MODES}, got {overflow!r}")
        if max_length is not None and max_length < 2:
            raise ConfigError(f"max_length must be at least 2 tokens, got {max_length}")
        if stage == 2:
            if block_masking is None:
                raise ConfigError(
                    "stage 2 needs a block-masking config (keep_last_n_blocks and mask_delimiters "
                    "must match how the model will be served)"
                )
            if not block_masking.evicts:
                raise ConfigError(
                    "stage 2 with a block-masking config that never evicts is stage 1: set enable, "
                    "compact_on_summary_end and keep_last_n_blocks >= 0"
                )
        self.tokenizer = tokenizer
        self.stage = stage
        self.block_masking = block_masking or BlockMaskingConfig(mask_delimiters=False)
        self.max_length = max_length
        self.overflow = overflow
        self.markers_added = add_block_markers(tokenizer, self.block_masking) if add_markers else 0
        self.markers = resolve_marker_ids(tokenizer, self.block_masking)
        self.renderer = ChatRenderer(tokenizer, mode=render_mode)
        self.stats = TokenizeStats()
        backend = getattr(tokenizer, "backend_tokenizer", None)
        # The Rust tokenizer's batch call without offsets is the fastest path; slow tokenizers use __call__.
        self._encode_batch = getattr(backend, "encode_batch_fast", None) or getattr(backend, "encode_batch", None)

    @property
    def assistant_gating(self) -> bool:
        """Whether blocks are tracked only inside the assistant section (the prompt's markers are inert)."""
        return self.block_masking.require_assistant_section and self.markers.can_gate

    def encode_texts(self, texts: list[str]) -> list[list[int]]:
        """Ids of each text, no special tokens added (one batched call)."""
        if not texts:
            return []
        if self._encode_batch is not None:
            return [encoding.ids for encoding in self._encode_batch(texts, add_special_tokens=False)]
        return [list(ids) for ids in self.tokenizer(texts, add_special_tokens=False)["input_ids"]]

    def tokenize(self, examples: Iterable[ChatExample], *, batch_size: int = 64) -> Iterator[SFTExample]:
        """Tokenize lazily, `batch_size` conversations per tokenizer call. Dropped examples are only counted."""
        batch: list[ChatExample] = []
        for example in examples:
            batch.append(example)
            if len(batch) >= batch_size:
                yield from self.tokenize_batch(batch)
                batch = []
        if batch:
            yield from self.tokenize_batch(batch)

    def tokenize_batch(self, examples: list[ChatExample]) -> list[SFTExample]:
        rendered = [self.renderer.render(example.messages) for example in examples]
        prompts = self.encode_texts([prompt for prompt, _ in rendered])
        completions = self.encode_texts([completion for _, completion in rendered])
        out: list[SFTExample] = []
        for example, prompt_ids, completion_ids in zip(examples, prompts, completions):
            self.stats.examples_in += 1
            made = self._example(example, prompt_ids, completion_ids)
            if made is not None:
                out.append(made)
        return out

    def _example(self, example: ChatExample, prompt_ids: list[int], completion_ids: list[int]) -> SFTExample | None:
        total = len(prompt_ids) + len(completion_ids)
        limit = self.max_length if self.max_length is not None else total
        if len(prompt_ids) >= limit and total > limit:
            self.stats.dropped_prompt_too_long += 1
            return None
        if total > limit and self.overflow == "drop":
            self.stats.dropped_overflow += 1
            return None
        kept_completion = completion_ids[: max(limit - len(prompt_ids), 0)]
        input_ids = prompt_ids + kept_completion
        labels = [IGNORE_INDEX] * len(prompt_ids) + kept_completion
        # The block state machine over the ids trained on; its evictions are exactly compact_mask's triples.
        machine = BlockStateMachine(self.block_masking, self.markers)
        evictions = machine.feed(np.asarray(input_ids, dtype=np.int64))
        spans = compact_spans(evictions)
        made = SFTExample(
            input_ids=input_ids,
            labels=labels,
            prompt_tokens=len(prompt_ids),
            truncated_tokens=len(completion_ids) - len(kept_completion),
            ends_inside_block=machine.open_blocks > 0 or machine.summary_open,
            blocks_completed=machine.completed_blocks,
            mask_spans=spans if self.stage == 2 else None,
            domain=example.domain,
            source=example.source,
            index=example.index,
            messages=example.messages,
        )
        hidden = 0
        if self.stage == 2 and spans:
            n = len(input_ids)
            hidden = int(n * (n + 1) // 2 - visible_key_counts(spans, n).sum())
        self.stats.add(made, hidden)
        return made

    def metadata(self) -> dict[str, Any]:
        """The options that produced the examples (recorded in the dataset so training and serving can check)."""
        return {
            "stage": self.stage,
            "block_masking": self.block_masking.to_dict() if self.stage == 2 else None,
            "mask_delimiters": self.block_masking.mask_delimiters if self.stage == 2 else None,
            "keep_last_n_blocks": self.block_masking.keep_last_n_blocks if self.stage == 2 else None,
            "max_length": self.max_length,
            "overflow": self.overflow,
            "render_mode": self.renderer.mode,
            "chat_template": "tokenizer" if self.renderer.uses_template else "chatml",
            "assistant_gating": self.assistant_gating,
            "markers_added": self.markers_added,
            "marker_ids": {
                "block_start": self.markers.block_start,
                "block_end": self.markers.block_end,
                "summary_start": self.markers.summary_start,
                "summary_end": self.markers.summary_end,
            },
            "vocab_size": len(self.tokenizer),
            "ignore_index": IGNORE_INDEX,
        }
