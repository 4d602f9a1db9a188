"""Add the four block markers to a model and its tokenizer, and give their embeddings a sensible start.

    report = add_memento_tokens(model, tokenizer)          # adds missing markers, resizes, initialises new rows
    report.initialised   # {"<|block_start|>": {"id": 605, "source_ids": [...], "words": [...]}, ...}

A new row starts as the mean of the rows of related existing tokens plus Gaussian noise (the paper, appendix
A.2.1: sigma 0.01), in the input embeddings and, when they are not tied to them, in the output embeddings
(each from its own matrix). The word lists are configurable. A word may be several tokens; every token of the
word, written with and without a leading space (the two forms a BPE vocabulary holds), counts once.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from mementokit.blocks import BlockMaskingConfig, add_block_markers, single_token_id
from mementokit.errors import ConfigError
from mementokit.format.markers import DEFAULT_MARKERS

DEFAULT_INIT_WORDS: dict[str, tuple[str, ...]] = {
    DEFAULT_MARKERS.block_start: ("block", "start", "begin", "section", "step"),
    DEFAULT_MARKERS.block_end: ("block", "end", "finish", "section", "done"),
    DEFAULT_MARKERS.summary_start: ("summary", "summarize", "brief", "recap", "overview"),
    DEFAULT_MARKERS.summary_end: ("summary", "end", "finish", "done", "complete"),
}
DEFAULT_SIGMA = 0.01


@dataclass
class InitReport:
    markers_added: int
    resized_from: int | None  # embedding rows before resizing; None when no resize was needed
    embedding_rows: int
    tied: bool
    initialised: dict[str, dict[str, Any]] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"markers_added": self.markers_added, "resized_from": self.resized_from,
                "embedding_rows": self.embedding_rows, "tied": self.tied, "initialised": self.initialised}


def related_token_ids(tokenizer, words: Sequence[str], *, exclude: set[int] = frozenset()) -> list[int]:
    """Ids of every token of each word (with and without a leading space), deduplicated, in first-seen order."""
    seen: dict[int, None] = {}
    for word in words:
        for form in (word, " " + word):
            for token_id in tokenizer.encode(form, add_special_tokens=False):
                if int(token_id) not in exclude:
                    seen.setdefault(int(token_id), None)
    return list(seen)


def embeddings_are_tied(model) -> bool:
    output = model.get_output_embeddings()
    return output is not None and output.weight is model.get_input_embeddings().weight


@torch.no_grad()
def init_token_embeddings(model, tokenizer, words_by_token: Mapping[str, Sequence[str]], *,
                          sigma: float = DEFAULT_SIGMA, seed: int = 0) -> dict[str, dict[str, Any]]:
    """Set the rows of the given tokens to mean(rows of related tokens) + N(0, sigma^2), input and output.

    Tied embeddings are set once (the output matrix is the same tensor). Returns, per token, its id and the
    ids averaged. Rows of every other token are left exactly as they were.
    """
    if sigma < 0:
        raise ConfigError(f"sigma must be >= 0, got {sigma}")
    generator = torch.Generator().manual_seed(seed)
    input_weight = model.get_input_embeddings().weight  # [V, H]
    output = model.get_output_embeddings()
    matrices = [input_weight]
    if output is not None and not embeddings_are_tied(model):
        matrices.append(output.weight)  # [V, H] (lm_head)
    targets = {}
    for token in words_by_token:
        token_id = single_token_id(tokenizer, token)
        if token_id is None:
            raise ConfigError(f"{token!r} is not one token of this tokenizer: add it before initialising it")
        targets[token] = token_id
    new_ids = set(targets.values())
    report: dict[str, dict[str, Any]] = {}
    for token, words in words_by_token.items():
        token_id = targets[token]
        source_ids = related_token_ids(tokenizer, words, exclude=new_ids)
        if not source_ids:
            raise ConfigError(f"none of the words {list(words)} for {token!r} gives a token to average")
        for weight in matrices:
            if token_id >= weight.shape[0] or max(source_ids) >= weight.shape[0]:
                raise ConfigError(f"token id {token_id} or a related id is outside the {weight.shape[0]} embedding "
                                  "rows: resize the model's embeddings first")
            mean = weight[source_ids].float().mean(dim=0)  # [H]
            noise = torch.randn(mean.shape, generator=generator) * sigma  # [H]
            weight[token_id] = (mean + noise).to(weight.dtype)
        report[token] = {"id": token_id, "source_ids": source_ids, "words": list(words)}
    return report


def add_memento_tokens(model, tokenizer, *, words_by_token: Mapping[str, Sequence[str]] | None = None,
                       sigma: float = DEFAULT_SIGMA, seed: int = 0, config: BlockMaskingConfig | None = None,
                       initialise: str = "new") -> InitReport:
    """Add the missing block markers to `tokenizer`, grow the model's embeddings if needed, initialise rows.

    initialise: "new": only the rows the resize created (a marker whose id already had a row, as in Qwen's
    padded vocabulary, keeps that row; "markers" initialises all four markers' rows); "none": none.
    Embedding tying survives the resize (transformers re-ties after resize_token_embeddings).
    """
    if initialise not in ("new", "markers", "none"):
        raise ConfigError(f"initialise must be 'new', 'markers' or 'none', got {initialise!r}")
    config = config or BlockMaskingConfig(mask_delimiters=False)
    words_by_token = dict(words_by_token or DEFAULT_INIT_WORDS)
    added = add_block_markers(tokenizer, config)
    rows_before = model.get_input_embeddings().weight.shape[0]
    resized_from = None
    if len(tokenizer) > rows_before:
        # Only grow: a vocabulary padded beyond the tokenizer (Qwen: 151,936 rows for 151,669 tokens) already
        # has rows for the new ids, and shrinking would drop rows the checkpoint owns.
        model.resize_token_embeddings(len(tokenizer), mean_resizing=False)
        resized_from = rows_before
    marker_strings = [getattr(config, name) for name in
                      ("block_start_token", "block_end_token", "summary_start_token", "summary_end_token")]
    if initialise == "none":
        chosen: list[str] = []
    elif initialise == "markers":
        chosen = marker_strings
    else:
        chosen = [m for m in marker_strings if (single_token_id(tokenizer, m) or 0) >= rows_before]
    missing_words = [m for m in chosen if m not in words_by_token]
    if missing_words:
        raise ConfigError(f"no word list for {missing_words}; give words_by_token for every marker")
    report = init_token_embeddings(model, tokenizer, {m: words_by_token[m] for m in chosen}, sigma=sigma, seed=seed)
    return InitReport(markers_added=added, resized_from=resized_from,
                      embedding_rows=model.get_input_embeddings().weight.shape[0],
                      tied=embeddings_are_tied(model), initialised=report)
