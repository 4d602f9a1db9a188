"""Property tests on random marker sequences against a brute-force reading of block-semantics.md.

The reference below is written independently of mementokit.blocks.state: it finds the gate by scanning, keeps
blocks as plain dicts, picks "the most recently opened closed block without a summary" by searching all blocks,
computes K_b and T_b per option from the completion order, and evaluates the rule cell by cell:

    q sees k  iff  k <= q  and no completed block b has k in K_b and q >= T_b
"""

from __future__ import annotations

import math

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from mementokit.blocks import (
    BlockMaskingConfig,
    BlockStateMachine,
    MarkerIds,
    additive_mask,
    allowed_from_evictions,
    dense_allowed,
    evictions_for_sequence,
    visible_key_counts,
)
from mementokit.kv import occupancy_after_each_position

BS, BE, SS, SE, THINK_END, IM, AS = 1, 2, 3, 4, 5, 6, 7
MARKERS = MarkerIds(BS, BE, SS, SE, think_end=THINK_END, im_start=IM, assistant=AS)
INF = math.inf

any_token = st.sampled_from([BS, BE, SS, SE, THINK_END, IM, AS, 0, 8, 9])
ordinary = st.lists(st.sampled_from([0, 8, 9]), max_size=3)


def _flatten(pieces: list[list[int]]) -> list[int]:
    return [token for piece in pieces for token in piece]


# Well-formed blocks (possibly nested, possibly missing their summary) mixed with stray tokens of every kind and
# assistant headers, so that most examples complete several blocks and hit the stray-marker rows as well.
block_piece = st.recursive(
    st.builds(lambda body, summary: [BS, *body, BE, SS, *summary, SE], ordinary, ordinary),
    lambda inner: st.builds(
        lambda before, nested, after, summary, with_summary: [BS, *before, *_flatten(nested), *after, BE]
        + ([SS, *summary, SE] if with_summary else []),
        ordinary, st.lists(inner, max_size=2), ordinary, ordinary, st.booleans()),
    max_leaves=4,
)
unsummarised = st.builds(lambda body: [BS, *body, BE], ordinary)
piece = st.one_of(block_piece, block_piece, unsummarised, any_token.map(lambda t: [t]), ordinary, st.just([IM, AS]),
                  st.just([IM, 0, AS]))
tokens = st.lists(piece, max_size=8).map(_flatten).map(lambda seq: seq[:64])
configs = st.builds(
    BlockMaskingConfig,
    enable=st.sampled_from([True, True, True, False]),
    keep_last_n_blocks=st.integers(-1, 3),
    mask_delimiters=st.booleans(),
    compact_on_summary_end=st.booleans(),
    require_assistant_section=st.booleans(),
    restart_mode=st.booleans(),
    keep_last_block_for_answer=st.booleans(),
)


# ---- the independent reference ------------------------------------------------------------------------------
def reference_blocks(seq: list[int], config: BlockMaskingConfig, inside: bool) -> list[dict]:
    """Completed blocks, in completion order, as dicts with start, end, ss, se."""
    if not config.enable:
        return []
    first_tracked = 0
    if config.require_assistant_section and not inside:
        first_tracked = len(seq)  # never, unless a header is found
        for j, token in enumerate(seq):
            if token == AS and IM in seq[max(0, j - 2):j]:
                first_tracked = j + 1
                break
    blocks: list[dict] = []
    completed: list[dict] = []
    summarising = None
    for p in range(first_tracked, len(seq)):
        token = seq[p]
        if token == BS:
            blocks.append({"start": p, "end": None, "ss": None, "se": None})
        elif token == BE:
            open_blocks = [b for b in blocks if b["end"] is None]
            if open_blocks:
                max(open_blocks, key=lambda b: b["start"])["end"] = p  # innermost = latest opened still open
        elif token == SS:
            waiting = [b for b in blocks if b["end"] is not None and b["ss"] is None]
            if waiting:
                summarising = max(waiting, key=lambda b: b["start"])  # most recently opened
                summarising["ss"] = p
        elif token == SE and summarising is not None:
            summarising["se"] = p
            completed.append(summarising)
            summarising = None
    return completed


def reference_keys_and_times(seq, config, inside):
    """For each completed block: (set of keys K_b, trigger T_b, physical eviction position)."""
    completed = reference_blocks(seq, config, inside)
    times = [(INF, INF)] * len(completed)
    if config.enable and config.keep_last_block_for_answer and config.keep_last_n_blocks == 0:
        # Each block start (after the block's SE) evicts the oldest waiting block: one per block start, and
        # whether or not compact_on_summary_end is set. Block starts that come later than every SE are tracked.
        pending = list(range(len(completed)))  # completion order: the oldest first
        for p in range(len(seq)):
            ready = [i for i in pending if completed[i]["se"] < p]
            if seq[p] == BS and ready:
                pending.remove(ready[0])
                times[ready[0]] = (completed[ready[0]]["ss"] if config.restart_mode else p, p)
    elif config.enable and config.compact_on_summary_end and config.keep_last_n_blocks >= 0:
        for i in range(len(completed)):
            if i + config.keep_last_n_blocks < len(completed):
                evictor = completed[i + config.keep_last_n_blocks]
                times[i] = (evictor["ss"] if config.restart_mode else evictor["se"], evictor["se"])
    out = []
    for block, (trigger, at) in zip(completed, times):
        whole = config.mask_delimiters or config.restart_mode
        keys = set(range(block["start"], block["end"] + 1)) if whole else set(range(block["start"] + 1, block["end"]))
        out.append((keys, trigger, at))
    return out


def reference_mask(seq, config, inside) -> np.ndarray:
    length = len(seq)
    rules = reference_keys_and_times(seq, config, inside)
    allowed = np.zeros((length, length), dtype=bool)
    for q in range(length):
        for k in range(q + 1):
            allowed[q, k] = not any(k in keys and q >= trigger for keys, trigger, _ in rules)
    return allowed


def reference_physical_occupancy(seq, config, inside) -> list[int]:
    rules = reference_keys_and_times(seq, config, inside)
    dropped = {}
    for keys, _, at in rules:
        for k in keys:
            dropped[k] = min(dropped.get(k, INF), at)
    return [t + 1 - sum(1 for k, when in dropped.items() if when <= t) for t in range(len(seq))]


# ---- properties ---------------------------------------------------------------------------------------------
@settings(max_examples=400, deadline=None)
@given(seq=tokens, config=configs, inside=st.booleans())
def test_dense_mask_equals_the_brute_force_rule(seq, config, inside):
    got = dense_allowed(seq, config, MARKERS, start_inside_assistant=inside)
    assert np.array_equal(got, reference_mask(seq, config, inside))


@settings(max_examples=300, deadline=None)
@given(seq=tokens, config=configs, inside=st.booleans())
def test_occupancy_after_t_equals_visible_keys_of_row_t(seq, config, inside):
    evictions = evictions_for_sequence(seq, config, MARKERS, start_inside_assistant=inside)
    rows = reference_mask(seq, config, inside).sum(axis=1)
    assert visible_key_counts(evictions, len(seq)).tolist() == rows.tolist()
    physical = occupancy_after_each_position(evictions, len(seq))
    assert physical.tolist() == reference_physical_occupancy(seq, config, inside)
    if not config.restart_mode:
        # The physical cache and the mask agree token for token; in restart mode they differ only while a
        # summary is being written (the block leaves the cache at SE, the recomputed summary never saw it).
        assert physical.tolist() == rows.tolist()


@settings(max_examples=300, deadline=None)
@given(seq=tokens, config=configs, inside=st.booleans(), cuts=st.lists(st.integers(0, 48), max_size=4))
def test_incremental_and_whole_sequence_use_agree(seq, config, inside, cuts):
    stepped = BlockStateMachine(config, MARKERS, start_inside_assistant=inside)
    step_events, cache_lengths = [], []
    for token in seq:
        step_events.extend(stepped.step(token))
        cache_lengths.append(stepped.cache_tokens)
    whole = BlockStateMachine(config, MARKERS, start_inside_assistant=inside)
    assert whole.feed(np.asarray(seq, dtype=np.int64)) == step_events
    assert (whole.position, whole.evicted_tokens, whole.completed_blocks) == \
        (stepped.position, stepped.evicted_tokens, stepped.completed_blocks)
    assert whole.block_tokens_since_open() == stepped.block_tokens_since_open()
    chunked = BlockStateMachine(config, MARKERS, start_inside_assistant=inside)
    events, start = [], 0
    for cut in sorted(set(cuts)) + [len(seq)]:
        events.extend(chunked.feed(seq[start:max(start, cut)]))
        start = max(start, cut)
    assert events == step_events
    assert cache_lengths == occupancy_after_each_position(step_events, len(seq)).tolist()


@settings(max_examples=200, deadline=None)
@given(seq=tokens, config=configs, inside=st.booleans())
def test_no_key_is_reported_twice_and_every_key_precedes_its_trigger(seq, config, inside):
    events = evictions_for_sequence(seq, config, MARKERS, start_inside_assistant=inside)
    keys = [k for e in events for k in e.keys]
    assert len(keys) == len(set(keys))
    assert all(e.key_stop <= e.trigger <= e.at for e in events)
    assert all((e.recompute_from is not None) == e.restart == config.restart_mode for e in events)


@settings(max_examples=100, deadline=None)
@given(seq=tokens.filter(lambda s: len(s) > 2), config=configs, start=st.integers(0, 10))
def test_row_band_equals_the_slice_of_the_square(seq, config, start):
    events = evictions_for_sequence(seq, config, MARKERS, start_inside_assistant=True)
    start = min(start, len(seq) - 1)
    square = allowed_from_evictions(events, len(seq))
    band = allowed_from_evictions(events, len(seq), query_start=start, query_stop=len(seq))
    assert np.array_equal(band, square[start:])


@settings(max_examples=50, deadline=None)
@given(seq=tokens.filter(bool), config=configs)
def test_additive_mask_is_zero_where_allowed_and_minus_inf_elsewhere(seq, config):
    import torch

    allowed = dense_allowed(seq, config, MARKERS, start_inside_assistant=True)
    mask = additive_mask(seq, config, MARKERS, start_inside_assistant=True)
    assert mask.shape == (1, 1, len(seq), len(seq)) and mask.dtype == torch.float32
    assert torch.equal(mask[0, 0] == 0, torch.from_numpy(allowed))
    assert torch.isneginf(mask[0, 0][torch.from_numpy(~allowed)]).all()
