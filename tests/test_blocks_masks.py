"""blocks.masks is the one owner of "evictions -> mask": its numpy and torch front ends agree, every additive
mask uses the one masked value, and the window and the occupancy curves come from the same rule."""

from __future__ import annotations

import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mementokit.blocks import (
    MASKED,
    BlockMaskingConfig,
    MarkerIds,
    additive_from_allowed,
    additive_mask,
    allowed_from_evictions,
    allowed_tensor,
    evictions_for_sequence,
    model_attention_mask,
    occupancy_after_each_position,
    padded_allowed,
    visible_key_counts,
)

BS, BE, SS, SE = 1, 2, 3, 4
MARKERS = MarkerIds(BS, BE, SS, SE)
sequences = st.lists(st.sampled_from([BS, BE, SS, SE, 0, 0, 5]), min_size=1, max_size=40)
configs = st.builds(
    lambda keep, delimiters, restart, answer: BlockMaskingConfig(
        keep_last_n_blocks=keep, mask_delimiters=delimiters, restart_mode=restart, keep_last_block_for_answer=answer),
    st.integers(-1, 2), st.booleans(), st.booleans(), st.booleans())


@settings(max_examples=150, deadline=None)
@given(seq=sequences, config=configs, data=st.data())
def test_torch_front_end_equals_numpy_on_the_surviving_slots(seq, config, data):
    events = evictions_for_sequence(seq, config, MARKERS)
    length = len(seq)
    square = allowed_from_evictions(events, length)  # [L, L]
    positions = torch.arange(length)[None]
    assert np.array_equal(allowed_tensor(positions, positions, None, [events])[0].numpy(), square)
    # A physical cache holds only some slots (in logical order); the queries are a chunk at the end.
    kept = sorted(data.draw(st.sets(st.integers(0, length - 1))))
    start = data.draw(st.integers(0, length - 1))
    keys = torch.tensor([sorted(set(kept) | set(range(start, length)))])  # [1, K]: surviving slots, then the chunk
    queries = torch.arange(start, length)[None]
    got = allowed_tensor(queries, keys, torch.ones_like(keys, dtype=torch.bool), [events])[0].numpy()
    assert np.array_equal(got, square[start:][:, keys[0].numpy()])


@settings(max_examples=60, deadline=None)
@given(seq=sequences, config=configs)
def test_every_additive_mask_uses_the_one_masked_value(seq, config):
    allowed = allowed_from_evictions(evictions_for_sequence(seq, config, MARKERS), len(seq))
    for mask in (additive_mask(seq, config, MARKERS), additive_from_allowed(allowed),
                 additive_from_allowed(torch.from_numpy(allowed)[None], torch.bfloat16)):
        values = set(mask.float().unique().tolist())
        assert values <= {0.0, MASKED}
        assert torch.equal(mask[0, 0] == 0, torch.from_numpy(allowed))
    assert visible_key_counts(evictions_for_sequence(seq, config, MARKERS), len(seq)).tolist() == \
        allowed.sum(axis=1).tolist()


def test_window_and_layer_types_from_one_builder():
    length, window = 7, 3
    positions = torch.arange(length)[None]
    allowed = torch.ones(1, length, length, dtype=torch.bool).tril()
    masks = model_attention_mask(allowed, positions, positions, layer_types=("sliding_attention", "full_attention"),
                                 sliding_window=window, dtype=torch.float32)
    q, k = np.indices((length, length))
    assert np.array_equal((masks["sliding_attention"][0, 0] == 0).numpy(), (k <= q) & (q - k < window))
    assert np.array_equal((masks["full_attention"][0, 0] == 0).numpy(), k <= q)
    single = model_attention_mask(allowed, positions, positions, layer_types=None, sliding_window=window,
                                  dtype=torch.float32)
    assert torch.equal(single, masks["sliding_attention"])


def test_padded_batch_and_occupancy_come_from_the_same_evictions():
    seq = [BS, 0, BE, SS, 0, SE, 0]
    config = BlockMaskingConfig(keep_last_n_blocks=0, mask_delimiters=False)
    events = evictions_for_sequence(seq, config, MARKERS)
    batch = padded_allowed([events, None], [7, 3], 8)
    assert np.array_equal(batch[0, :7, :7], allowed_from_evictions(events, 7))
    assert np.array_equal(batch[1, :3, :3], np.tri(3, dtype=bool)) and batch[1, 5, 5] and not batch[1, 5, :5].any()
    assert occupancy_after_each_position(events, 7).tolist() == [1, 2, 3, 4, 5, 5, 6]
