"""Stage 4: the segmentation is the exact optimum (equal to brute force) under every constraint."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import mementokit.pipeline.segment as seg_module
from mementokit.errors import InputError
from mementokit.pipeline.segment import optimal_segmentation, segment_brute_force, segmentation_objective


@st.composite
def problems(draw, max_n=11):
    n = draw(st.integers(1, max_n))
    tokens = draw(st.lists(st.sampled_from([0, 1, 5, 20, 50, 80, 120, 200, 350]), min_size=n, max_size=n))
    grid = st.sampled_from([0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0])
    scores = draw(st.lists(st.one_of(grid, st.floats(0, 3, allow_nan=False)), min_size=n - 1, max_size=n - 1))
    min_tokens = draw(st.sampled_from([0, 30, 100, 200]))
    max_tokens = draw(st.sampled_from([None, None, 250, 400]))
    lam = draw(st.sampled_from([0.0, 0.5, 1.0, 4.0]))
    return scores, tokens, min_tokens, max_tokens, lam


@settings(max_examples=400, deadline=None)
@given(problems())
def test_segmentation_equals_brute_force_on_small_cases(problem):
    scores, tokens, min_tokens, max_tokens, lam = problem
    kwargs = dict(min_block_tokens=min_tokens, max_block_tokens=max_tokens, variance_penalty=lam)
    best = segment_brute_force(scores, tokens, **kwargs)
    if sum(tokens) < min_tokens or len(tokens) == 1:
        assert optimal_segmentation(scores, tokens, **kwargs).blocks == [(0, len(tokens) - 1)]
        return
    if best is None:
        with pytest.raises(InputError):
            optimal_segmentation(scores, tokens, **kwargs)
        return
    found = optimal_segmentation(scores, tokens, **kwargs)
    assert found.objective == pytest.approx(best.objective, abs=1e-9)
    assert segmentation_objective(found.cuts, scores, tokens, lam) == pytest.approx(found.objective, abs=1e-12)
    sizes = found.block_tokens
    assert all(s >= min_tokens for s in sizes)
    if max_tokens is not None:
        assert all(s <= max_tokens or a == b for s, (a, b) in zip(sizes, found.blocks))
    assert found.blocks[0][0] == 0 and found.blocks[-1][1] == len(tokens) - 1
    assert all(b[0] == a[1] + 1 for a, b in zip(found.blocks, found.blocks[1:]))


def test_fast_monotone_rows_agree_with_the_exhaustive_layer_on_medium_traces(monkeypatch):
    rng = np.random.default_rng(7)
    for trial in range(12):
        n = int(rng.integers(60, 260))
        tokens = np.maximum(0, rng.lognormal(3, 1.1, n)).astype(int).tolist()
        scores = (
            rng.choice([0, 0, 1, 2, 3], size=(2, n - 1)).mean(0).tolist() if trial % 2 else rng.random(n - 1).tolist()
        )
        fast = optimal_segmentation(scores, tokens, min_block_tokens=150, variance_penalty=0.5)
        original_init = seg_module._Solver.__init__

        def exhaustive(self, *args, original_init=original_init):  # a max of "anything": the exhaustive path
            original_init(self, *args)
            self.has_max = True

        monkeypatch.setattr(seg_module._Solver, "__init__", exhaustive)
        slow = optimal_segmentation(scores, tokens, min_block_tokens=150, variance_penalty=0.5)
        monkeypatch.setattr(seg_module._Solver, "__init__", original_init)
        assert fast.objective == pytest.approx(slow.objective, abs=1e-9)


def test_objective_uses_population_std_and_one_block_scores_zero():
    tokens = [100, 100, 300]
    # cut after sentence 1: blocks 200 and 300; mean 250, population std 50
    assert segmentation_objective([1], [0.0, 2.0], tokens, 0.5) == pytest.approx(2.0 / 2 - 0.5 * 50 / 250)
    assert segmentation_objective([], [3.0, 3.0], tokens, 0.5) == 0.0


def test_every_block_respects_the_minimum_size():
    rng = np.random.default_rng(3)
    tokens = rng.integers(5, 60, 400).tolist()
    scores = rng.choice([0, 1, 2, 3], 399).astype(float).tolist()
    result = optimal_segmentation(scores, tokens, min_block_tokens=200)
    assert min(result.block_tokens) >= 200 and len(result.blocks) > 1


def test_a_trace_shorter_than_the_minimum_is_one_block():
    assert optimal_segmentation([3.0], [10, 10], min_block_tokens=200).blocks == [(0, 1)]


def test_an_impossible_maximum_is_an_input_error():
    with pytest.raises(InputError):
        optimal_segmentation([1.0, 1.0], [150, 150, 150], min_block_tokens=200, max_block_tokens=250)


def test_wrong_number_of_scores_is_an_input_error():
    with pytest.raises(InputError, match="boundary scores"):
        optimal_segmentation([1.0], [10, 10, 10])
