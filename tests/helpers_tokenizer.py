"""A tiny real tokenizer built locally (no hub): byte-level BPE trained on the fixtures in tests/data.

    tokenizer = build_tiny_tokenizer(tmp_path)   # PreTrainedTokenizerFast, saved under tmp_path/"tiny-tokenizer"

Built with mementokit.demo.train_tokenizer (the same builder `memento demo-model` uses): <|im_start|>, <|im_end|>,
<|endoftext|>, <think>, </think> and (by default) the four block markers as special tokens, and `assistant` as one
ordinary token, so ChatML prompts gate exactly as with Qwen3. Byte-level, so any text round-trips through decode.
"""

from __future__ import annotations

import json
from pathlib import Path

from transformers import PreTrainedTokenizerFast

from mementokit.demo import BLOCK_MARKERS, CHAT_SPECIALS, CHATML_TEMPLATE, texts_of, train_tokenizer

DATA_DIR = Path(__file__).parent / "data"
__all__ = ["BLOCK_MARKERS", "CHAT_SPECIALS", "CHATML_TEMPLATE", "DATA_DIR", "build_tiny_tokenizer", "fixture_texts"]


def fixture_texts() -> list[str]:
    """Every string found in the JSON / JSONL fixtures (problems, chains of thought, blocks, summaries)."""
    texts: list[str] = []
    for path in sorted(DATA_DIR.glob("*.json*")):
        text = path.read_text(encoding="utf-8")
        values = [json.loads(line) for line in text.splitlines() if line.strip()] if path.suffix == ".jsonl" else [
            json.loads(text)]
        for value in values:
            texts += texts_of(value)
    return texts


def build_tiny_tokenizer(tmp_path, *, with_markers: bool = True, chat_template: bool = True,
                         vocab_size: int = 600) -> PreTrainedTokenizerFast:
    """Train (cached), save under tmp_path/"tiny-tokenizer" and load back a PreTrainedTokenizerFast (plain ChatML
    template, system turns included, unless chat_template=False)."""
    tokenizer = train_tokenizer(fixture_texts(), vocab_size=vocab_size, with_markers=with_markers,
                                chat_template=CHATML_TEMPLATE if chat_template else None)
    out = Path(tmp_path) / "tiny-tokenizer"
    tokenizer.save_pretrained(out)
    return PreTrainedTokenizerFast.from_pretrained(out)
