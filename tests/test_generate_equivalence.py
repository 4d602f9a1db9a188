"""The evicting generator against the contract (block-semantics.md, invariants 1-5).

Teacher-forcing a token sequence one token at a time through the physically evicting cache must give, at every
position, the logits of ONE forward pass over the whole sequence with the dense mask (fp32, 1e-4). The cache
must hold, after every step and in every layer, exactly what the KV simulator says. Renumbered positions or an
eviction one token late must break the equivalence (negative controls).
"""

from __future__ import annotations

import random
import zlib

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from helpers_models import build_tiny_model, memento_token_sequence
from mementokit.blocks import BlockMaskingConfig, evictions_for_sequence
from mementokit.generate import dense_reference_logits, replay
from mementokit.generate.attention import forward, plan_masks
from mementokit.generate.cache import PhysicalKVCache
from mementokit.generate.engine import EvictingRunner
from mementokit.kv import simulate_token_ids

pytestmark = pytest.mark.usefixtures("one_thread")  # module-wide, from conftest

TOLERANCE = 1e-4
BASE = {"enable": True, "keep_last_n_blocks": 0, "mask_delimiters": False}
OPTIONS = {
    "keep0": {},
    "delimiters": {"mask_delimiters": True},
    "keep1": {"keep_last_n_blocks": 1},
    "keep2": {"keep_last_n_blocks": 2},
    "never": {"keep_last_n_blocks": -1},
    "no_compaction": {"compact_on_summary_end": False},
    "answer": {"keep_last_block_for_answer": True},
    "ungated": {"require_assistant_section": False},
    "restart": {"restart_mode": True},
    "restart_keep1": {"restart_mode": True, "keep_last_n_blocks": 1},
    "restart_answer": {"restart_mode": True, "keep_last_block_for_answer": True},
}


@pytest.fixture(scope="module")
def models(tokenizer):
    return {arch: build_tiny_model(arch, len(tokenizer), seed=i) for i, arch in enumerate(("qwen3", "llama"))}


def config_for(name: str) -> BlockMaskingConfig:
    return BlockMaskingConfig.load({**BASE, **OPTIONS[name]})


def sequence(markers, seed: int, **kwargs) -> list[int]:
    rng = random.Random(seed)
    return memento_token_sequence(rng, markers, list(range(5, 590)), **kwargs)


def recomputed_positions(ids, config, markers) -> set[int]:
    """Restart mode: positions recompute_from .. at-1 were produced while the block was still visible."""
    skip: set[int] = set()
    for e in evictions_for_sequence(ids, config, markers):
        if e.restart:
            skip |= set(range(e.recompute_from, e.at))
    return skip


def assert_matches_dense(model, ids, config, markers, *, prefill_tokens=0, mask_mode="auto"):
    dense = dense_reference_logits(model, ids, config, markers=markers)  # [L, V]
    result = replay(model, ids, config, markers=markers, keep_logits=True, prefill_tokens=prefill_tokens,
                    mask_mode=mask_mode)
    compare = [p for p in range(len(ids)) if p not in recomputed_positions(ids, config, markers)]
    difference = (result.logits[compare] - dense[compare]).abs().max().item()
    assert difference < TOLERANCE, f"evicting path differs from the dense mask by {difference:.3g}"
    return result


# ----- invariant 1: equivalence -------------------------------------------------------------------------------
@pytest.mark.parametrize("arch", ["qwen3", "llama"])
@pytest.mark.parametrize("option", sorted(OPTIONS))
def test_teacher_forced_logits_equal_one_dense_forward(models, markers, arch, option):
    ids = sequence(markers, seed=zlib.crc32(option.encode()) % 1000, blocks=5, nest_probability=0.4)
    result = assert_matches_dense(models[arch], ids, config_for(option), markers)
    if config_for(option).evicts:
        assert result.stats.evicted_tokens > 0  # the sequence really exercised eviction


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 10_000), option=st.sampled_from(sorted(OPTIONS)), strays=st.booleans(),
       open_tail=st.booleans())
def test_equivalence_holds_on_random_structures(models, markers, seed, option, strays, open_tail):
    ids = sequence(markers, seed, blocks=3, nest_probability=0.5, stray_markers=strays, open_tail=open_tail)
    assert_matches_dense(models["qwen3"], ids, config_for(option), markers)


@pytest.mark.parametrize("option", ["keep0", "keep1", "restart", "answer", "delimiters"])
def test_prompt_holding_completed_blocks_is_prefilled_with_the_dense_mask_then_evicted(models, markers, option):
    ids = sequence(markers, seed=7, blocks=5)
    config = config_for(option)
    evictions = evictions_for_sequence(ids, config, markers)
    prompt_length = evictions[len(evictions) // 2].at + 2  # several completed blocks inside the prompt
    result = assert_matches_dense(models["llama"], ids, config, markers, prefill_tokens=prompt_length)
    simulated = simulate_token_ids(ids, config, markers, keep_curves=True).curves.memento_tokens
    assert result.stats.cache_tokens[0] == simulated[prompt_length - 1]  # the prompt's blocks left the cache


def test_prefill_in_chunks_equals_one_chunk(models, markers):
    ids = sequence(markers, seed=11, blocks=4)
    config = config_for("restart_keep1")
    runner = EvictingRunner(models["qwen3"], config, markers)
    whole = runner.prefill(ids, runner.new_machine(), keep_all_logits=True)
    chunked = runner.prefill(ids, runner.new_machine(), keep_all_logits=True, chunk_size=7)
    assert (whole.logits - chunked.logits).abs().max().item() < TOLERANCE
    assert whole.kv.positions == chunked.kv.positions


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
@pytest.mark.parametrize("arch", ["phi3", "olmo2", "qwen2"])
def test_other_architectures_and_attention_implementations(tokenizer, markers, arch, attn):
    model = build_tiny_model(arch, len(tokenizer), attn_implementation=attn)
    ids = sequence(markers, seed=3, blocks=3)
    assert_matches_dense(model, ids, config_for("keep1"), markers)


@pytest.mark.parametrize("arch", ["mistral", "olmo3"])
def test_sliding_window_layers_use_logical_positions(tokenizer, markers, arch):
    # A window of 12 tokens: evicted slots must not count against the window (it is measured in positions).
    model = build_tiny_model(arch, len(tokenizer), sliding_window=12)
    assert plan_masks(model).explicit
    ids = sequence(markers, seed=5, blocks=4)
    assert_matches_dense(model, ids, config_for("keep0"), markers)


def test_explicit_masks_agree_with_the_implicit_path(models, markers):
    ids = sequence(markers, seed=9, blocks=4)
    assert_matches_dense(models["qwen3"], ids, config_for("keep1"), markers, mask_mode="explicit")


def test_restart_mode_equals_dense_mask_with_trigger_at_summary_start_from_the_summary_end_on(models, markers):
    ids = sequence(markers, seed=13, blocks=4)
    config = config_for("restart")
    evictions = evictions_for_sequence(ids, config, markers)
    assert evictions and all(e.trigger == e.summary_start and e.at == e.summary_end for e in evictions)
    dense = dense_reference_logits(models["qwen3"], ids, config, markers=markers)
    result = replay(models["qwen3"], ids, config, markers=markers, keep_logits=True)
    first = evictions[0]
    # From each summary end on, the logits are the dense mask's with T_b = SS; only the memento tokens of a later
    # block (its SS .. SE-1, produced while that block was still visible) are outside the statement.
    after = [p for p in range(first.at, len(ids)) if p not in recomputed_positions(ids, config, markers)]
    assert set(e.at for e in evictions) <= set(after)
    assert (result.logits[after] - dense[after]).abs().max().item() < TOLERANCE
    # Without the recompute the memento's keys would still carry the block: the logits after SE would differ.
    plain = replay(models["qwen3"], ids, BlockMaskingConfig.load({**BASE, "mask_delimiters": True}),
                   markers=markers, keep_logits=True)
    assert (plain.logits[first.at] - dense[first.at]).abs().max().item() > 1e-3
    assert sum(e.recomputed for e in result.stats.evictions) > 0


# ----- invariants 2 and 3: cache length in every layer == the simulator ---------------------------------------
@pytest.mark.parametrize("option", ["keep0", "keep2", "answer", "restart", "delimiters", "never"])
def test_cache_length_in_every_layer_equals_simulator_occupancy(models, markers, option):
    ids = sequence(markers, seed=17, blocks=5, nest_probability=0.5)
    config = config_for(option)
    simulated = simulate_token_ids(ids, config, markers, keep_curves=True).curves.memento_tokens
    per_layer: list[list[int]] = []

    def inspect(position, kv):
        per_layer.append([layer.keys.shape[-2] for layer in kv.cache.layers]
                         + [layer.values.shape[-2] for layer in kv.cache.layers])

    result = replay(models["qwen3"], ids, config, markers=markers, on_step=inspect)
    assert len(per_layer) == len(ids)
    for position, lengths in enumerate(per_layer):
        assert set(lengths) == {simulated[position]}, f"position {position}: layers hold {lengths}"
    assert result.stats.cache_tokens == simulated.tolist()
    # Bytes are read from the tensors: 2 (K, V) x layers x KV heads x head dim x 4 bytes (fp32).
    config_ = models["qwen3"].config
    per_token = 2 * config_.num_hidden_layers * config_.num_key_value_heads * config_.head_dim * 4
    assert result.stats.cache_bytes == [t * per_token for t in simulated.tolist()]


def test_response_alone_starts_inside_the_assistant_section(models, markers):
    ids = sequence(markers, seed=19, chat_prefix=False, blocks=3)
    config = config_for("keep0")
    gated = replay(models["qwen3"], ids, config, markers=markers)
    assert gated.stats.evicted_tokens == 0  # no assistant header: the gate never opens
    inside = replay(models["qwen3"], ids, config, markers=markers, start_inside_assistant=True)
    simulated = simulate_token_ids(ids, config, markers, start_inside_assistant=True, keep_curves=True)
    assert inside.stats.cache_tokens == simulated.curves.memento_tokens.tolist()


# ----- invariant 4: negative controls -------------------------------------------------------------------------
def _evicting_loop(model, ids, config, markers, *, renumber: bool = False, late: bool = False) -> torch.Tensor:
    """The evicting path with one deliberate bug: renumbered positions, or evictions applied one token late."""
    runner = EvictingRunner(model, config, markers)
    machine = runner.new_machine()
    kv = PhysicalKVCache()
    plan = plan_masks(model)
    logits, carried = [], []
    for position, token in enumerate(ids):
        evictions = machine.step(token)
        if not late:
            runner.evict(kv, 0, evictions)
        given = kv.row_length(0) if (renumber and kv.batch_size) else position
        out = forward(model, kv, plan, torch.tensor([[token]]), [[given if renumber else position]])
        if renumber:
            kv.pos[0, kv.hi - 1] = position  # keep the bookkeeping in logical terms; only rotary saw the lie
        logits.append(out[0, -1])
        if late:
            runner.evict(kv, 0, carried)
            carried = evictions
    return torch.stack(logits)


@pytest.mark.parametrize("bug", ["renumber", "late"])
def test_negative_controls_break_equivalence(models, markers, bug):
    ids = sequence(markers, seed=23, blocks=4)
    config = config_for("keep0")
    dense = dense_reference_logits(models["qwen3"], ids, config, markers=markers)
    correct = _evicting_loop(models["qwen3"], ids, config, markers)
    assert (correct - dense).abs().max().item() < TOLERANCE  # the harness itself is right
    broken = _evicting_loop(models["qwen3"], ids, config, markers, **{bug: True})
    first_trigger = evictions_for_sequence(ids, config, markers)[0].trigger
    assert (broken - dense).abs().max().item() > 1e-2
    # Both bugs are invisible before the first eviction and visible at (late) or after (renumber) it.
    assert (broken[:first_trigger] - dense[:first_trigger]).abs().max().item() < TOLERANCE
    if bug == "late":
        assert (broken[first_trigger] - dense[first_trigger]).abs().max().item() > 1e-3
