"""Hand-worked sequences for every row of block-semantics.md: the state machine, one behaviour per test.

Sequences are written with symbolic tokens; the position of each token is its index in the list. Expected
evictions are (key_start, key_stop, trigger) with half-open key spans, worked out by hand from the contract.
"""

from __future__ import annotations

import numpy as np
import pytest

from mementokit.blocks import BlockMaskingConfig, BlockStateMachine, MarkerIds, dense_allowed, evictions_for_sequence

MARKERS = MarkerIds(block_start=1, block_end=2, summary_start=3, summary_end=4, think_end=5, im_start=6, assistant=7)
IDS = {"BS": 1, "BE": 2, "SS": 3, "SE": 4, "/think": 5, "IM": 6, "AS": 7}
KEEP0 = BlockMaskingConfig(enable=True, keep_last_n_blocks=0, mask_delimiters=False)


def ids(text: str) -> list[int]:
    """'BS a b BE SS s SE' -> token ids; any word that is not a marker is an ordinary token (id 9)."""
    return [IDS.get(word, 9) for word in text.split()]


def spans(text: str, inside: bool = True, **options) -> list[tuple[int, int, int]]:
    config = BlockMaskingConfig(**{**KEEP0.to_dict(), **options})
    return [(e.key_start, e.key_stop, e.trigger)
            for e in evictions_for_sequence(ids(text), config, MARKERS, start_inside_assistant=inside)]


def machine(inside: bool = True, **options) -> BlockStateMachine:
    return BlockStateMachine(BlockMaskingConfig(**{**KEEP0.to_dict(), **options}), MARKERS,
                             start_inside_assistant=inside)


#                  0  1 2 3  4  5 6  7
ONE_BLOCK = "BS a b BE SS s SE x"
#                  0  1 2  3  4 5  6  7 8  9  10 11 12 13 14 15 16 17 18
THREE_BLOCKS = "BS a BE SS s SE BS b BE SS t SE BS c BE SS u SE x"


# ---- the basic rule -----------------------------------------------------------------------------------------
def test_completed_block_loses_its_content_at_its_own_summary_end():
    assert spans(ONE_BLOCK) == [(1, 3, 6)]


def test_summary_end_query_already_does_not_see_the_block():
    allowed = dense_allowed(ids(ONE_BLOCK), KEEP0, MARKERS, start_inside_assistant=True)
    assert allowed[5, 1] and allowed[5, 2]  # the last summary token still sees the block
    assert not allowed[6, 1] and not allowed[6, 2]  # SE's own query does not
    assert allowed[6].tolist() == [True, False, False, True, True, True, True, False]


def test_delimiters_and_summary_stay_visible_without_mask_delimiters():
    allowed = dense_allowed(ids(ONE_BLOCK), KEEP0, MARKERS, start_inside_assistant=True)
    assert allowed[7, 0] and allowed[7, 3]  # BS, BE
    assert allowed[7, 4:8].all()  # SS s SE x


def test_mask_delimiters_hides_block_start_and_end_too():
    assert spans(ONE_BLOCK, mask_delimiters=True) == [(0, 4, 6)]


def test_empty_block_content_evicts_nothing():
    assert spans("BS BE SS s SE x") == []
    assert spans("BS BE SS s SE x", mask_delimiters=True) == [(0, 2, 4)]


# ---- keep_last_n_blocks -------------------------------------------------------------------------------------
def test_keep_minus_one_never_evicts():
    assert spans(THREE_BLOCKS, keep_last_n_blocks=-1) == []


def test_keep_one_evicts_block_i_at_the_summary_end_of_block_i_plus_1():
    assert spans(THREE_BLOCKS, keep_last_n_blocks=1) == [(1, 2, 11), (7, 8, 17)]


def test_keep_two_evicts_block_0_at_the_summary_end_of_block_2():
    assert spans(THREE_BLOCKS, keep_last_n_blocks=2) == [(1, 2, 17)]


def test_keep_zero_evicts_each_block_at_its_own_summary_end():
    assert spans(THREE_BLOCKS) == [(1, 2, 5), (7, 8, 11), (13, 14, 17)]


def test_compact_on_summary_end_false_never_evicts():
    assert spans(THREE_BLOCKS, compact_on_summary_end=False) == []


def test_disabled_masking_never_evicts():
    assert spans(THREE_BLOCKS, enable=False) == []
    assert evictions_for_sequence(ids(THREE_BLOCKS), BlockMaskingConfig.vanilla(), MARKERS) == []


# ---- keep_last_block_for_answer -----------------------------------------------------------------------------
def test_answer_mode_evicts_the_deferred_block_at_the_next_block_start():
    #              0  1 2  3  4 5  6  7 8  9  10 11 12     13
    text = "BS a BE SS s SE BS b BE SS t SE /think ans"
    assert spans(text, keep_last_block_for_answer=True) == [(1, 2, 6)]  # block 1 stays for the answer


def test_answer_mode_block_start_after_think_end_still_evicts():
    text = "BS a BE SS s SE /think BS b"
    assert spans(text, keep_last_block_for_answer=True) == [(1, 2, 7)]


def test_answer_mode_is_ignored_with_keep_one_as_in_the_overlay():
    assert spans(THREE_BLOCKS, keep_last_n_blocks=1, keep_last_block_for_answer=True) == \
        spans(THREE_BLOCKS, keep_last_n_blocks=1)


def test_answer_mode_flushes_at_block_start_even_when_compaction_is_off():
    # As the overlay does: compact_on_summary_end only stops evictions AT a summary end.
    assert spans(THREE_BLOCKS, keep_last_block_for_answer=True, compact_on_summary_end=False) == \
        [(1, 2, 6), (7, 8, 12)] == spans(THREE_BLOCKS, keep_last_block_for_answer=True)


def test_answer_mode_block_start_evicts_at_most_one_queued_block():
    #              0  1 2  3  4 5  6  7 8  9  10 11 12 13 14
    text = "BS a BE SS s SE BS b BE SS t SE BS BS c"
    # Without compaction at SE, nothing is evicted at 6 before block 0 is queued... then one per block start.
    assert spans(text, keep_last_block_for_answer=True, compact_on_summary_end=False) == [(1, 2, 6), (7, 8, 12)]
    #              0  1 2  3  4 5  6  7  8  9 10 11 12 13 14 15 16
    text = "BS BS a BE SS s SE BE SS t SE BS x BS y BS z"
    # Two blocks queued (inner then outer) when the first BS comes: it evicts only the oldest (the inner one).
    assert spans(text, keep_last_block_for_answer=True) == [(2, 3, 11), (1, 2, 13), (3, 7, 13)]


# ---- restart_mode -------------------------------------------------------------------------------------------
def test_restart_evicts_the_whole_block_from_its_summary_start():
    m = machine(restart_mode=True)
    reported = [m.step(t) for t in ids(ONE_BLOCK)]
    assert [len(r) for r in reported] == [0, 0, 0, 0, 0, 0, 1, 0]  # reported at SE ...
    (e,) = reported[6]
    assert (e.key_start, e.key_stop) == (0, 4)  # ... block with both delimiters, whatever mask_delimiters says
    assert e.trigger == e.recompute_from == 4 and e.at == 6 and e.restart  # ... invisible from SS on


def test_restart_dense_mask_hides_the_block_from_summary_tokens():
    config = BlockMaskingConfig(enable=True, keep_last_n_blocks=0, mask_delimiters=False, restart_mode=True)
    allowed = dense_allowed(ids(ONE_BLOCK), config, MARKERS, start_inside_assistant=True)
    assert allowed[3, :4].all()  # BE still sees the block
    assert not allowed[4, :4].any() and not allowed[5, :4].any()  # summary tokens are recomputed without it
    assert allowed[5, 4:6].all()


def test_restart_with_answer_mode_recomputes_from_the_deferred_summary():
    text = "BS a BE SS s SE x BS b"
    m = machine(restart_mode=True, keep_last_block_for_answer=True)
    events = m.feed(ids(text))
    assert [(e.key_start, e.key_stop, e.trigger, e.at, e.recompute_from) for e in events] == [(0, 3, 3, 7, 3)]


def test_restart_with_keep_one_recomputes_the_summary_that_just_ended():
    events = evictions_for_sequence(ids(THREE_BLOCKS), BlockMaskingConfig(
        enable=True, keep_last_n_blocks=1, mask_delimiters=False, restart_mode=True), MARKERS,
        start_inside_assistant=True)
    assert [(e.key_start, e.key_stop, e.trigger, e.at) for e in events] == [(0, 3, 9, 11), (6, 9, 15, 17)]


# ---- nesting and merged spans -------------------------------------------------------------------------------
def test_nested_blocks_evict_inner_then_outer_without_reporting_a_key_twice():
    #              0  1  2 3  4  5 6  7 8  9  10 11 12
    text = "BS BS a BE SS s SE b BE SS t SE x"
    assert spans(text) == [(2, 3, 6), (1, 2, 11), (3, 8, 11)]  # outer takes the inner summary with it


def test_nested_outer_eviction_pieces_share_the_block_index():
    text = "BS BS a BE SS s SE b BE SS t SE x"
    events = evictions_for_sequence(ids(text), KEEP0, MARKERS, start_inside_assistant=True)
    assert [e.block_index for e in events] == [0, 1, 1]
    assert sum(e.size for e in events) == len(range(1, 8))


def test_summary_attaches_to_the_most_recently_opened_closed_block_not_the_last_closed():
    #              0  1  2 3  4  5  6 7  8  9  10 11
    text = "BS BS a BE BE SS s SE SS t SE x"
    # SS(5) attaches to the inner block (opened at 1), although the outer one (opened at 0) closed last;
    # the second summary completes the outer block, which takes what is left of its span.
    assert spans(text) == [(2, 3, 7), (1, 2, 10), (3, 4, 10)]


def test_nested_blocks_with_mask_delimiters_merge_spans():
    text = "BS BS a BE SS s SE b BE SS t SE x"
    assert spans(text, mask_delimiters=True) == [(1, 4, 6), (0, 1, 11), (4, 9, 11)]


# ---- stray markers ------------------------------------------------------------------------------------------
def test_block_end_without_open_block_is_ignored():
    assert spans("BE x " + ONE_BLOCK) == [(3, 5, 8)]


def test_summary_start_without_closed_block_is_ignored():
    assert spans("SS x SE " + ONE_BLOCK) == [(4, 6, 9)]


def test_summary_end_without_open_summary_is_ignored():
    assert spans("SE " + ONE_BLOCK + " SE") == [(2, 4, 7)]


def test_summary_start_inside_an_open_block_with_nothing_closed_is_ignored():
    assert spans("BS a SS s SE b") == []


def test_unclosed_block_is_never_evicted():
    assert spans("BS a b x x x") == []


def test_block_without_summary_is_never_evicted():
    assert spans("BS a BE x x BS b BE SS") == []


def test_two_blocks_closed_before_a_summary_attach_most_recent_first():
    #              0  1 2  3  4 5  6  7 8  9 10 11 12
    text = "BS a BE BS b BE SS s SE x SS t SE"
    events = evictions_for_sequence(ids(text), KEEP0, MARKERS, start_inside_assistant=True)
    assert [(e.key_start, e.key_stop, e.trigger, e.block_index) for e in events] == [(4, 5, 8, 0), (1, 2, 12, 1)]


def test_second_summary_start_while_one_is_open_moves_to_the_older_block():
    #              0  1 2  3  4 5  6  7 8  9 10
    text = "BS a BE BS b BE SS s SS t SE"
    # The first summary (for block 1) is abandoned: block 1 never completes; block 0 completes at 10.
    assert spans(text) == [(1, 2, 10)]


def test_think_end_and_ordinary_tokens_have_no_effect():
    assert spans("/think " + ONE_BLOCK + " /think") == [(2, 4, 7)]


# ---- assistant gating ---------------------------------------------------------------------------------------
def test_markers_before_the_assistant_section_are_not_tracked():
    #              0  1 2  3  4 5  6  7  8 9  10 11 12 13 14
    text = "BS a BE SS s SE IM AS x BS a BE SS s SE"
    assert spans(text, inside=False) == [(10, 11, 14)]


def test_gating_off_tracks_every_token():
    text = "BS a BE SS s SE IM AS x BS a BE SS s SE"
    assert spans(text, inside=False, require_assistant_section=False) == [(1, 2, 5), (10, 11, 14)]


def test_gating_off_when_the_tokenizer_has_no_single_assistant_token():
    no_gate = MarkerIds(1, 2, 3, 4, think_end=None, im_start=6, assistant=None)
    events = evictions_for_sequence(ids("BS a BE SS s SE"), KEEP0, no_gate)
    assert [(e.key_start, e.key_stop, e.trigger) for e in events] == [(1, 2, 5)]


def test_assistant_two_positions_after_im_start_opens_the_gate():
    assert spans("IM nl AS " + ONE_BLOCK, inside=False) == [(4, 6, 9)]


def test_assistant_three_positions_after_im_start_does_not_open_the_gate():
    assert spans("IM u v AS " + ONE_BLOCK, inside=False) == []


def test_user_turn_then_assistant_turn_opens_at_the_assistant_header():
    #              0  1 2  3  4 5 6  7  8  9  10 11 12 13 14 15
    text = "IM user BS a BE SS s SE IM AS BS b BE SS t SE"
    assert spans(text, inside=False) == [(11, 12, 15)]


def test_the_gate_never_closes_again():
    text = "IM AS BS a BE IM user SS s SE"
    assert spans(text, inside=False) == [(3, 4, 9)]


def test_start_inside_assistant_tracks_from_position_zero():
    assert spans(ONE_BLOCK, inside=True) == [(1, 3, 6)]
    assert spans(ONE_BLOCK, inside=False) == []  # gating on, no header: nothing is tracked


# ---- incremental use ----------------------------------------------------------------------------------------
def test_step_reports_each_eviction_at_its_position_and_tracks_cache_length():
    m = machine()
    lengths, reported = [], []
    for token in ids(THREE_BLOCKS):
        reported.append([(e.key_start, e.key_stop) for e in m.step(token)])
        lengths.append(m.cache_tokens)
    assert reported[5] == [(1, 2)] and reported[11] == [(7, 8)] and reported[17] == [(13, 14)]
    assert sum(map(len, reported)) == 3
    assert lengths == [1, 2, 3, 4, 5, 5, 6, 7, 8, 9, 10, 10, 11, 12, 13, 14, 15, 15, 16]
    assert m.position == 19 and m.evicted_tokens == 3 and m.completed_blocks == 3


def test_step_accepts_numpy_integers():
    m = machine()
    events = [e for t in np.asarray(ids(ONE_BLOCK)) for e in m.step(t)]
    assert [(e.key_start, e.key_stop) for e in events] == [(1, 3)]


def test_feed_in_chunks_equals_one_feed():
    whole = machine().feed(ids(THREE_BLOCKS))
    m = machine()
    tokens = ids(THREE_BLOCKS)
    chunked = m.feed(tokens[:4]) + m.feed(np.asarray(tokens[4:13])) + m.feed(tokens[13:])
    assert chunked == whole and m.position == len(tokens)


def test_evicted_spans_are_merged():
    m = machine()
    m.feed(ids("BS BS a BE SS s SE b BE SS t SE x"))
    assert m.evicted_spans == [(1, 8)]


# ---- block length cap ---------------------------------------------------------------------------------------
def test_block_token_count_skips_markers_and_resets_at_block_start_and_end():
    m = machine(max_block_tokens=3)
    counts = []
    for token in ids("x BS a b SS c BS d BE e BE f"):
        m.step(token)
        counts.append(m.block_tokens_since_open())
    # One in-block flag, as the overlay's cap: the inner BE clears it although the outer block is still open.
    #               x  BS a  b  SS c  BS d  BE e  BE f
    assert counts == [0, 0, 1, 2, 2, 3, 0, 1, 0, 0, 0, 0]


def test_must_close_block_when_the_cap_is_reached():
    m = machine(max_block_tokens=2)
    flags = []
    for token in ids("BS a b BE x"):
        m.step(token)
        flags.append(m.must_close_block())
    assert flags == [False, False, True, False, False]
    assert not machine().feed(ids("BS a b c")) and not machine().must_close_block()  # cap 0 = off


def test_block_token_count_after_feed_matches_step():
    text = ids("BS a b SS c BS d e BE f g")
    stepped = machine()
    for token in text:
        stepped.step(token)
    fed = machine()
    fed.feed(text)
    assert fed.block_tokens_since_open() == stepped.block_tokens_since_open() == 0  # the BE cleared the flag
    stepped.step(IDS["BS"])
    stepped.step(9)
    fed.feed([IDS["BS"], 9])
    assert fed.block_tokens_since_open() == stepped.block_tokens_since_open() == 1


def test_cap_is_not_gated_and_counts_prompt_tokens():
    # A block opened in the prompt, before any assistant header, is counted as the overlay's cap counts it.
    m = machine(inside=False, max_block_tokens=3)
    m.feed(ids("BS a b IM AS c"))
    # a, b, the header's two tokens and c: every token but the four markers counts.
    assert m.in_assistant_section and m.block_tokens_since_open() == 5 and m.must_close_block()


@pytest.mark.parametrize("keep", [-1, 0, 1, 2])
def test_cache_tokens_equals_positions_minus_evicted(keep):
    m = machine(keep_last_n_blocks=keep)
    for token in ids(THREE_BLOCKS):
        m.step(token)
        assert m.cache_tokens == m.position - sum(b - a for a, b in m.evicted_spans)
