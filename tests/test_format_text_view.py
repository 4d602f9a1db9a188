"""The text view evicts exactly the characters whose tokens the token machine evicts, and pairs blocks with
mementos as it does, on random malformed marker strings (block-semantics.md, "Text level").

Two token views of each string: the tiny byte-level BPE tokenizer's ids (markers are special tokens, offsets map
tokens back to characters), and one token per character with each marker string one token. Both run
mementokit.blocks.BlockStateMachine; the text view (parse_response pairing, compress_trace) runs the machine over
marker occurrences.
"""

from __future__ import annotations

import random

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mementokit.blocks import BlockMaskingConfig, BlockStateMachine, MarkerIds, resolve_marker_ids
from mementokit.format import DEFAULT_MARKERS, compress_trace, parse_response

M = DEFAULT_MARKERS
MARKER_STRINGS = M.all
WORDS = ("a", "bb", " ", "\n", "x y", "é", "²", "Let r=2.", "  \t")


def token_config(keep_last: int, keep_delimiters: bool) -> BlockMaskingConfig:
    return BlockMaskingConfig(enable=True, keep_last_n_blocks=keep_last, mask_delimiters=not keep_delimiters,
                              require_assistant_section=False)


def random_response(rng: random.Random, size: int) -> str:
    pieces = []
    for _ in range(size):
        pieces.append(rng.choice(MARKER_STRINGS) if rng.random() < 0.5 else rng.choice(WORDS))
    return "".join(pieces)


def token_view(token_spans: list[tuple[int, int]], ids, markers: MarkerIds, keep_last: int, keep_delimiters: bool
               ) -> tuple[set[int], set[tuple[int, int]]]:
    machine = BlockStateMachine(token_config(keep_last, keep_delimiters), markers, start_inside_assistant=True,
                                record=True)
    machine.feed(ids)
    evicted = {c for start, stop in machine.evicted_spans for t in range(start, stop)
               for c in range(*token_spans[t])}
    pairs = {(token_spans[b.start][0], token_spans[b.summary_start][0]) for b in machine.blocks
             if b.summary_start >= 0}
    return evicted, pairs


def evicted_chars_of(response: str, keep_last: int, keep_delimiters: bool) -> set[int]:
    from mementokit.format.textview import MarkerRun, TextRules

    run = MarkerRun(response, M, TextRules(keep_last_n_blocks=keep_last, mask_delimiters=not keep_delimiters))
    return {c for a, b in run.evicted_char_spans() for c in range(a, b)}


def check(response, token_spans, ids, markers, keep_last, keep_delimiters):
    evicted_tokens, token_pairs = token_view(token_spans, ids, markers, keep_last, keep_delimiters)
    evicted_text = evicted_chars_of(response, keep_last, keep_delimiters)
    assert evicted_text == evicted_tokens, (response, keep_last, keep_delimiters)
    kept = compress_trace(parse_response(response), keep_last, keep_delimiters=keep_delimiters)
    assert kept == "".join(ch for c, ch in enumerate(response) if c not in evicted_tokens)
    trace = parse_response(response)
    assert {(b.start, m.start) for b, m in trace.pairs()} == token_pairs, response
    assert trace.render() == response
    assert parse_response(response, _general=True).pairs() == trace.pairs() or not trace.is_valid


# ---- one token per character, each marker one token: 20,000 strings ----------------------------------------
CHAR_MARKERS = MarkerIds(block_start=-1, block_end=-2, summary_start=-3, summary_end=-4)
MARKER_ID = {M.block_start: -1, M.block_end: -2, M.summary_start: -3, M.summary_end: -4, M.think_start: -5,
             M.think_end: -6}


def char_tokens(response: str) -> tuple[list[int], list[tuple[int, int]]]:
    ids, spans, i = [], [], 0
    pattern = M.pattern
    while i < len(response):
        match = pattern.match(response, i)
        if match:
            ids.append(MARKER_ID[match.group()])
            spans.append(match.span())
            i = match.end()
        else:
            ids.append(ord(response[i]))
            spans.append((i, i + 1))
            i += 1
    return ids, spans


def test_text_view_equals_the_token_machine_on_20000_malformed_strings():
    rng = random.Random(9)
    for n in range(20_000):
        response = random_response(rng, rng.randint(0, 14))
        ids, spans = char_tokens(response)
        check(response, spans, ids, CHAR_MARKERS, n % 3, n % 2 == 0)


# ---- the real tokenizer's tokens -----------------------------------------------------------------------------
pieces = st.lists(st.one_of(st.sampled_from(MARKER_STRINGS), st.sampled_from(WORDS)), max_size=16).map("".join)


@settings(max_examples=300, deadline=None)
@given(response=pieces, keep_last=st.integers(0, 2), keep_delimiters=st.booleans())
def test_text_view_equals_the_token_machine_over_real_token_ids(tokenizer, response, keep_last, keep_delimiters):
    encoded = tokenizer(response, add_special_tokens=False, return_offsets_mapping=True)
    ids = np.asarray(encoded["input_ids"], dtype=np.int64)
    markers = resolve_marker_ids(tokenizer, BlockMaskingConfig(mask_delimiters=False))
    check(response, [tuple(o) for o in encoded["offset_mapping"]], ids, markers, keep_last, keep_delimiters)


NESTED = f"{M.block_start}{M.block_start}a{M.block_end}{M.block_end}{M.summary_start}s{M.summary_end}"
INSIDE = f"{M.block_start}a{M.summary_start}s{M.summary_end}b{M.block_end}{M.summary_start}t{M.summary_end}"


@pytest.mark.parametrize("response, pairs", [
    # Nesting: the memento claims the inner block (most recently opened), not the outer one (closed last).
    (NESTED, [(len(M.block_start), NESTED.index(M.summary_start))]),
    # A memento inside an open block is ignored by the machine; the block's own memento comes after it.
    (INSIDE, [(0, INSIDE.rindex(M.summary_start))]),
])
def test_pairing_follows_the_machine_on_malformed_responses(response, pairs):
    trace = parse_response(response)
    assert [(b.start, m.start) for b, m in trace.pairs()] == pairs
    assert trace.render() == response
