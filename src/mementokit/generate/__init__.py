"""Block-masked generation and replay on Hugging Face transformers models.

    from mementokit.generate import BlockMaskedGenerator, SamplingParams, chat_prompt, replay

    config = '{"enable": true, "keep_last_n_blocks": 0, "mask_delimiters": false}'
    generator = BlockMaskedGenerator(model, tokenizer, config)
    result = generator.generate(chat_prompt(tokenizer, "Prove that ..."), SamplingParams(max_new_tokens=4096))
    result.text, result.stats.peak_tokens, result.stats.peak_bytes, result.stats.evictions

    measured = replay(model, token_ids, config, tokenizer=tokenizer, start_inside_assistant=True, keep_logits=True)

Finished blocks leave every layer's key and value tensors for real at their eviction point; later tokens keep
their original positions. Sliding-window models get explicit masks over logical positions.
"""

from mementokit.format.chat import chat_prompt_ids as chat_prompt  # the one prompt builder, re-exported
from mementokit.generate.batch import DecodeBatch, DecodeSequence, IncrementalDecoder, TokenLogprob, TokenStep
from mementokit.generate.cache import PhysicalKVCache, RowKV
from mementokit.generate.engine import EvictingRunner, check_markers, load_block_masking
from mementokit.generate.generator import (
    BlockMaskedGenerator,
    GenerationResult,
    GenerationStream,
    TokenEvent,
)
from mementokit.generate.replay import ReplayResult, dense_reference_logits, replay, replay_traces, tokenize_traces
from mementokit.generate.sampling import RowSampler, SamplingParams, filter_logits
from mementokit.generate.stats import CacheStats, EvictionRecord

__all__ = [
    "BlockMaskedGenerator",
    "CacheStats",
    "DecodeBatch",
    "DecodeSequence",
    "EvictingRunner",
    "EvictionRecord",
    "GenerationResult",
    "GenerationStream",
    "IncrementalDecoder",
    "PhysicalKVCache",
    "ReplayResult",
    "RowKV",
    "RowSampler",
    "SamplingParams",
    "TokenEvent",
    "TokenLogprob",
    "TokenStep",
    "chat_prompt",
    "check_markers",
    "dense_reference_logits",
    "filter_logits",
    "load_block_masking",
    "replay",
    "replay_traces",
    "tokenize_traces",
]
