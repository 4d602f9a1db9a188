"""Token counting with any Hugging Face tokenizer, the block markers registered as special tokens.

Without the markers registered, "<|block_start|>" splits into several pieces and distorts every count
(formats.md). We tokenize each whole response once (as a model would see it) and attribute every token to
the segment its first character falls in, which costs one batched `tokenizers` call per chunk.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

from mementokit.errors import ConfigError
from mementokit.format.markers import DEFAULT_MARKERS, Markers

_SURROGATE = re.compile("[\ud800-\udfff]")


def load_counting_tokenizer(name_or_path: str, markers: Markers = DEFAULT_MARKERS):
    """A `tokenizers.Tokenizer` with the four block markers (and the think markers) as special tokens.

    Accepts a tokenizer.json file, a local directory, or a hub name (resolved by transformers; offline
    machines need it in the local cache).
    """
    from tokenizers import AddedToken, Tokenizer

    from mementokit.hf import load_hf_tokenizer

    path = Path(name_or_path)
    if path.is_file():
        try:
            tokenizer = Tokenizer.from_file(str(path))
        except Exception as exc:  # noqa: BLE001 - the Rust side raises a bare Exception
            raise ConfigError(f"cannot load tokenizer '{name_or_path}': {exc}") from None
    else:
        backend = getattr(load_hf_tokenizer(name_or_path), "backend_tokenizer", None)
        if backend is None:
            raise ConfigError(f"tokenizer '{name_or_path}' has no fast (Rust) version; mementokit needs one")
        tokenizer = Tokenizer.from_str(backend.to_str())  # our own copy: adding markers must not touch the original
    vocab = tokenizer.get_vocab(with_added_tokens=True)
    missing = [m for m in markers.all if m not in vocab]
    if missing:
        tokenizer.add_special_tokens([AddedToken(m, special=True, normalized=False) for m in missing])
    return tokenizer


def token_offsets_batch(tokenizer, texts: Sequence[str]) -> list[list[tuple[int, int]]]:
    """For each text, the (start, end) character offsets of its tokens (no special tokens added).

    Sorted by start, so `bisect_left(offsets, (position,))` counts the tokens that start before `position`.
    """
    texts = list(texts)
    try:
        encodings = tokenizer.encode_batch(texts, add_special_tokens=False)
    except TypeError:  # a lone surrogate (a JSON "\ud800") is no UTF-8: U+FFFD keeps every offset in place
        encodings = tokenizer.encode_batch([_SURROGATE.sub("\ufffd", t) for t in texts], add_special_tokens=False)
    return [enc.offsets for enc in encodings]
