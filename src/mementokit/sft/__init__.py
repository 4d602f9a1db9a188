"""SFT data and two-stage training for Memento models.

    examples = iter_chat_examples("traces.jsonl")                     # {"messages": [user, assistant]}
    sft = SFTTokenizer(tokenizer, stage=2, max_length=8192,
                       block_masking=BlockMaskingConfig(keep_last_n_blocks=0, mask_delimiters=False))
    export_sft_dataset(sft.tokenize(examples), "sft-out/", metadata=sft.metadata(), stats=sft.stats,
                       tokenizer=tokenizer)                            # Arrow + Parquet + card + JSONL
    train(TrainConfig(model="./base", data="sft-out/", out="run/", stage=2, max_steps=1000))

Stage 1 trains with full causal attention; stage 2 with memento attention: once a memento is finished, later
tokens cannot see its block. The stage-2 mask is the block state machine's (mementokit.blocks), stored per
example as (key_start, key_stop, trigger) triples and expanded by MementoCollator.
"""

from mementokit.sft.chat import ChatExample, ChatRenderer, chat_messages, iter_chat_examples
from mementokit.sft.collator import (
    MementoCollator,
    additive_from_allowed,
    attention_mask_for_model,
    padded_allowed,
)
from mementokit.sft.export import (
    ExportResult,
    dataset_card,
    export_sft_dataset,
    load_sft_dataset,
    load_sft_metadata,
)
from mementokit.sft.init_tokens import (
    DEFAULT_INIT_WORDS,
    InitReport,
    add_memento_tokens,
    init_token_embeddings,
    related_token_ids,
)
from mementokit.sft.tokenize import IGNORE_INDEX, SFTExample, SFTTokenizer, TokenizeStats
from mementokit.sft.train import TrainConfig, TrainResult, latest_checkpoint, train

__all__ = [
    "DEFAULT_INIT_WORDS",
    "IGNORE_INDEX",
    "ChatExample",
    "ChatRenderer",
    "ExportResult",
    "InitReport",
    "MementoCollator",
    "SFTExample",
    "SFTTokenizer",
    "TokenizeStats",
    "TrainConfig",
    "TrainResult",
    "add_memento_tokens",
    "additive_from_allowed",
    "attention_mask_for_model",
    "chat_messages",
    "dataset_card",
    "export_sft_dataset",
    "init_token_embeddings",
    "iter_chat_examples",
    "latest_checkpoint",
    "load_sft_dataset",
    "load_sft_metadata",
    "padded_allowed",
    "related_token_ids",
    "train",
]
