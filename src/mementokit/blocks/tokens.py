"""Marker token ids from a Hugging Face tokenizer, and adding the four block markers to one.

The state machine works on ids only; this is the one place that turns the configured marker strings into ids.
A marker that splits into several tokens would make the state machine blind to it, so that is an error here,
never a silent mismatch.
"""

from __future__ import annotations

from dataclasses import dataclass

from mementokit.blocks.config import BlockMaskingConfig
from mementokit.errors import ConfigError
from mementokit.format.markers import DEFAULT_MARKERS

THINK_END = DEFAULT_MARKERS.think_end
_BLOCK_MARKER_FIELDS = ("block_start_token", "block_end_token", "summary_start_token", "summary_end_token")


@dataclass(frozen=True)
class MarkerIds:
    """Token ids the block state machine reacts to. Gating is off when im_start or assistant is None."""

    block_start: int
    block_end: int
    summary_start: int
    summary_end: int
    think_end: int | None = None  # id of "</think>" when it is one token, else None
    im_start: int | None = None
    assistant: int | None = None

    @property
    def block_markers(self) -> tuple[int, int, int, int]:
        return (self.block_start, self.block_end, self.summary_start, self.summary_end)

    @property
    def can_gate(self) -> bool:
        """Whether the assistant-section gate can be detected with these ids."""
        return self.im_start is not None and self.assistant is not None


def _as_explicit_id(text: str) -> int | None:
    """A marker given as an integer in a string ("151669") is that token id."""
    # As the overlay reads it: whatever int() accepts. str.isdigit() is not enough ("²" is a digit to it, and
    # int("²") fails), so ask int() itself.
    try:
        return int(text)
    except ValueError:
        return None


def single_token_id(tokenizer, text: str) -> int | None:
    """The id of `text` when the tokenizer holds it as exactly one token (or `text` is an id), else None."""
    explicit = _as_explicit_id(text)
    if explicit is not None:
        return explicit
    ids = tokenizer.encode(text, add_special_tokens=False)
    if len(ids) == 1:
        return int(ids[0])
    # A vocabulary entry that encode() splits (normalisation, prefix spaces) still names one id.
    token_id = tokenizer.convert_tokens_to_ids(text)
    if (isinstance(token_id, int) and token_id != tokenizer.unk_token_id
            and tokenizer.convert_ids_to_tokens(token_id) == text):
        return token_id
    return None


def resolve_marker_ids(tokenizer, config: BlockMaskingConfig | None = None) -> MarkerIds:
    """Resolve the configured marker strings to ids. ConfigError when a block marker is not one token."""
    config = config or BlockMaskingConfig.vanilla()  # only its marker strings are read
    vocab_size = len(tokenizer)
    resolved: dict[str, int] = {}
    for field in _BLOCK_MARKER_FIELDS:
        text = getattr(config, field)
        token_id = single_token_id(tokenizer, text)
        if token_id is None:
            pieces = tokenizer.encode(text, add_special_tokens=False)
            raise ConfigError(
                f"block marker {text!r} ({field}) is not a single token in this tokenizer (it encodes to "
                f"{len(pieces)} tokens {pieces[:8]}); add the markers with "
                "mementokit.blocks.add_block_markers(tokenizer), or give the marker's id as a string"
            )
        if not 0 <= token_id < vocab_size:
            raise ConfigError(f"block marker id {token_id} ({field}) is outside this tokenizer's {vocab_size} ids")
        resolved[field.removesuffix("_token")] = token_id
    duplicates = {v for v in resolved.values() if list(resolved.values()).count(v) > 1}
    if duplicates:
        raise ConfigError(f"block markers must be four different tokens, got ids {resolved}")
    return MarkerIds(
        **resolved,
        think_end=single_token_id(tokenizer, THINK_END),
        im_start=single_token_id(tokenizer, config.im_start_token),
        assistant=single_token_id(tokenizer, config.assistant_token),
    )


def add_block_markers(tokenizer, config: BlockMaskingConfig | None = None) -> int:
    """Add the four block markers as special tokens (so they never split); returns how many ids were new.

    Markers given as ids are left alone. A model using this tokenizer needs resize_token_embeddings when > 0.
    """
    from tokenizers import AddedToken

    config = config or BlockMaskingConfig.vanilla()  # only its marker strings are read
    texts = [getattr(config, f) for f in _BLOCK_MARKER_FIELDS if _as_explicit_id(getattr(config, f)) is None]
    before = len(tokenizer)
    missing = [t for t in texts if len(tokenizer.encode(t, add_special_tokens=False)) != 1]
    if missing:
        tokenizer.add_tokens(
            [AddedToken(t, special=True, normalized=False, single_word=False) for t in missing],
            special_tokens=True,
        )
    return len(tokenizer) - before
