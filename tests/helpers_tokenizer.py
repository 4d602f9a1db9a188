"""A tiny real tokenizer built locally (no hub): byte-level BPE trained on the fixtures in tests/data.

    tokenizer = build_tiny_tokenizer(tmp_path)   # PreTrainedTokenizerFast, saved under tmp_path/"tiny-tokenizer"

It holds <|im_start|>, <|im_end|>, <|endoftext|>, <think>, </think> and (by default) the four block markers as
special tokens, and `assistant` as one ordinary token, so ChatML prompts gate exactly as with Qwen3. Byte-level,
so any text round-trips through decode. Other test files (the generator's too) reuse it.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

DATA_DIR = Path(__file__).parent / "data"
BLOCK_MARKERS = ("<|block_start|>", "<|block_end|>", "<|summary_start|>", "<|summary_end|>")
CHAT_SPECIALS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<think>", "</think>")
CHATML_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + "
    "'<|im_end|>' + '\\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


def fixture_texts() -> list[str]:
    """Every string found in the JSON / JSONL fixtures (problems, chains of thought, blocks, summaries)."""
    texts: list[str] = []

    def collect(value) -> None:
        if isinstance(value, str):
            texts.append(value)
        elif isinstance(value, dict):
            for item in value.values():
                collect(item)
        elif isinstance(value, list):
            for item in value:
                collect(item)

    for path in sorted(DATA_DIR.glob("*.json*")):
        text = path.read_text(encoding="utf-8")
        if path.suffix == ".jsonl":
            for line in text.splitlines():
                if line.strip():
                    collect(json.loads(line))
        else:
            collect(json.loads(text))
    return texts


@lru_cache(maxsize=4)
def _trained_json(vocab_size: int) -> str:
    # Training is deterministic and takes a fraction of a second; cache it for the whole test session anyway.
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(CHAT_SPECIALS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(fixture_texts(), trainer=trainer)
    return tokenizer.to_str()


def build_tiny_tokenizer(tmp_path, *, with_markers: bool = True, chat_template: bool = True,
                         vocab_size: int = 600) -> PreTrainedTokenizerFast:
    """Train (cached), wrap, save under tmp_path/"tiny-tokenizer" and load back a PreTrainedTokenizerFast."""
    backend = Tokenizer.from_str(_trained_json(vocab_size))
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        unk_token=None,
    )
    tokenizer.add_tokens([AddedToken(t, special=True, normalized=False) for t in CHAT_SPECIALS],
                         special_tokens=True)
    tokenizer.add_tokens([AddedToken("assistant", special=False, normalized=False)])
    if with_markers:
        tokenizer.add_tokens([AddedToken(t, special=True, normalized=False) for t in BLOCK_MARKERS],
                             special_tokens=True)
    if chat_template:
        tokenizer.chat_template = CHATML_TEMPLATE
    out = Path(tmp_path) / "tiny-tokenizer"
    tokenizer.save_pretrained(out)
    return PreTrainedTokenizerFast.from_pretrained(out)
