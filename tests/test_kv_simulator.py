"""The KV simulator: occupancy curves from the state machine, byte curves, per-trace stats, aggregates, plots."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from helpers_tokenizer import DATA_DIR, build_tiny_tokenizer
from mementokit.blocks import BlockMaskingConfig, BlockStateMachine, MarkerIds, evictions_for_sequence
from mementokit.kv import (
    KVMemoryModel,
    KVSimulator,
    aggregate,
    occupancy_after_each_position,
    plot_kv_curve,
    plot_kv_distributions,
    preset,
    simulate_token_ids,
    window_occupancy_after_each_position,
)

BS, BE, SS, SE = 1, 2, 3, 4
MARKERS = MarkerIds(BS, BE, SS, SE, think_end=5, im_start=6, assistant=7)
KEEP0 = BlockMaskingConfig(enable=True, keep_last_n_blocks=0, mask_delimiters=False)


def memento_response(trace: dict, keep_blocks: int | None = None) -> str:
    """The fixture's segments as one response string (blocks, then their summaries, then the answer)."""
    parts, blocks = ["<think>"], 0
    for segment in trace["segments"]:
        if segment["type"] == "block":
            blocks += 1
            if keep_blocks is not None and blocks > keep_blocks:
                break
            parts.append(f"<|block_start|>{segment['text']}<|block_end|>\n")
        elif segment["type"] == "summary":
            parts.append(f"<|summary_start|>{segment['text']}<|summary_end|>\n")
        else:
            parts.append(f"</think>\n{segment['text']}")
    return "".join(parts)


@pytest.fixture(scope="module")
def fixture_trace() -> dict:
    trace = json.loads((DATA_DIR / "memento_trace_aime2025_p5.json").read_text())
    return {"problem": trace["problem"], "response": memento_response(trace), "domain": "math", "id": "aime-p5"}


# ---- curves ---------------------------------------------------------------------------------------------------
def random_structured(rng: np.random.Generator, blocks: int) -> list[int]:
    seq = []
    for _ in range(blocks):
        seq += [BS] + [9] * int(rng.integers(0, 30)) + [BE, SS] + [9] * int(rng.integers(0, 6)) + [SE]
        seq += [9] * int(rng.integers(0, 3))
    return seq


@pytest.mark.parametrize("keep", [-1, 0, 1, 3])
def test_occupancy_curve_equals_the_machine_cache_length_after_every_step(keep):
    seq = random_structured(np.random.default_rng(keep + 5), 12)
    config = BlockMaskingConfig(enable=True, keep_last_n_blocks=keep, mask_delimiters=False)
    machine = BlockStateMachine(config, MARKERS, start_inside_assistant=True)
    stepped = []
    for token in seq:
        machine.step(token)
        stepped.append(machine.cache_tokens)
    result = simulate_token_ids(seq, config, MARKERS, start_inside_assistant=True, keep_curves=True)
    assert result.curves.memento_tokens.tolist() == stepped
    assert result.curves.vanilla_tokens.tolist() == list(range(1, len(seq) + 1))


def test_stats_of_a_hand_worked_sequence():
    #      0  1 2 3  4  5  6 7  (eviction of 2 keys at 6)
    seq = [BS, 9, 9, BE, SS, 9, SE, 9]
    memory = KVMemoryModel("toy", 1, 10)
    result = simulate_token_ids(seq, KEEP0, MARKERS, memory, start_inside_assistant=True)
    # memento occupancy: 1 2 3 4 5 6 5 6 (sum 32); vanilla: 1..8 (sum 36)
    assert (result.memento.peak_tokens, result.memento.final_tokens) == (6, 6)
    assert result.memento.mean_tokens == pytest.approx(32 / 8)
    assert result.memento.auc_token_ktokens == pytest.approx(32 / 1000)
    assert result.vanilla.auc_token_ktokens == pytest.approx(36 / 1000)
    assert (result.memento.peak_bytes, result.vanilla.peak_bytes) == (60, 80)
    assert result.memento.auc_gb_ktokens == pytest.approx(320 / 2**30 / 1000)
    assert result.peak_ratio == pytest.approx(6 / 8) and result.auc_ratio == pytest.approx(32 / 36)
    assert (result.blocks_completed, result.blocks_evicted, result.evicted_tokens) == (1, 1, 2)


def test_empty_trace_has_zero_stats_and_no_ratio():
    result = simulate_token_ids([], KEEP0, MARKERS, preset("qwen3-8b"))
    assert result.tokens == 0 and result.memento.peak_tokens == 0 and result.peak_ratio is None


@settings(max_examples=150, deadline=None)
@given(seed=st.integers(0, 10_000), window=st.integers(1, 40), keep=st.integers(0, 2), restart=st.booleans())
def test_window_occupancy_equals_a_brute_force_count(seed, window, keep, restart):
    seq = random_structured(np.random.default_rng(seed), 4)
    config = BlockMaskingConfig(enable=True, keep_last_n_blocks=keep, mask_delimiters=False, restart_mode=restart)
    evictions = evictions_for_sequence(seq, config, MARKERS, start_inside_assistant=True)
    dropped = {k: e.at for e in evictions for k in e.keys}
    expected = [sum(1 for k in range(max(0, t - window + 1), t + 1) if dropped.get(k, len(seq)) > t)
                for t in range(len(seq))]
    assert window_occupancy_after_each_position(evictions, len(seq), window).tolist() == expected


def test_sliding_window_layers_cap_bytes():
    seq = random_structured(np.random.default_rng(1), 10)
    memory = KVMemoryModel("hybrid", 4, full_bytes_per_token=100, sliding=((8, 300),))
    result = simulate_token_ids(seq, KEEP0, MARKERS, memory, start_inside_assistant=True, keep_curves=True)
    evictions = evictions_for_sequence(seq, KEEP0, MARKERS, start_inside_assistant=True)
    expected = 100 * occupancy_after_each_position(evictions, len(seq)) + \
        300 * window_occupancy_after_each_position(evictions, len(seq), 8)
    assert result.curves.memento_bytes.tolist() == expected.tolist()
    assert result.curves.vanilla_bytes.tolist() == [100 * (t + 1) + 300 * min(t + 1, 8) for t in range(len(seq))]
    assert result.peak_ratio > result.peak_token_ratio  # windows already bound part of the vanilla cache


# ---- tokenized traces -------------------------------------------------------------------------------------------
def test_real_trace_saves_memory_like_the_paper(tokenizer, fixture_trace):
    simulator = KVSimulator(tokenizer, memory=preset("qwen3-8b"))
    result = simulator.simulate_trace(fixture_trace)
    assert result.blocks_completed == 5 and result.blocks_evicted == 5
    assert 0.2 < result.peak_ratio < 0.8 and 0.2 < result.auc_ratio < 0.8
    assert result.vanilla.peak_bytes == result.tokens * 147_456
    assert result.trace_id == "aime-p5" and result.domain == "math"


def test_response_replay_equals_the_machine_on_its_token_ids(tokenizer, fixture_trace):
    simulator = KVSimulator(tokenizer)
    ids = tokenizer.encode(fixture_trace["response"], add_special_tokens=False)
    machine = BlockStateMachine(simulator.config, simulator.markers, start_inside_assistant=True)
    for token in ids:
        machine.step(token)
    result = simulator.simulate_trace(fixture_trace, keep_curves=True)
    assert result.tokens == len(ids) and result.memento.final_tokens == machine.cache_tokens


def test_with_prompt_shifts_the_curve_by_the_prompt_length(tokenizer, fixture_trace):
    alone = KVSimulator(tokenizer).simulate_trace(fixture_trace)
    prompted_sim = KVSimulator(tokenizer, with_prompt=True)
    prompted = prompted_sim.simulate_trace(fixture_trace)
    assert prompted_sim.assistant_gating and prompted.prompt_tokens > 0
    assert prompted.tokens == alone.tokens + prompted.prompt_tokens
    assert prompted.evicted_tokens == alone.evicted_tokens
    assert prompted.memento.peak_tokens == alone.memento.peak_tokens + prompted.prompt_tokens


def test_chatml_fallback_without_a_chat_template(tmp_path, fixture_trace):
    bare = build_tiny_tokenizer(tmp_path, chat_template=False)
    simulator = KVSimulator(bare, with_prompt=True)
    assert simulator.prompt_text("Q?") == "<|im_start|>user\nQ?<|im_end|>\n<|im_start|>assistant\n"
    assert simulator.simulate_trace(fixture_trace).blocks_evicted == 5


def test_markers_are_added_to_a_tokenizer_that_lacks_them(tmp_path, fixture_trace):
    bare = build_tiny_tokenizer(tmp_path, with_markers=False)
    simulator = KVSimulator(bare)
    assert simulator.markers_added == 4
    assert simulator.simulate_trace(fixture_trace).blocks_evicted == 5


def test_keep_minus_one_equals_vanilla(tokenizer, fixture_trace):
    config = BlockMaskingConfig(enable=True, keep_last_n_blocks=-1, mask_delimiters=False)
    result = KVSimulator(tokenizer, config=config).simulate_trace(fixture_trace)
    assert result.memento == result.vanilla and result.peak_ratio == 1.0


def test_dataset_through_the_readers_and_aggregates_by_domain(tokenizer, fixture_trace, tmp_path):
    from mementokit.io import iter_traces

    trace = json.loads((DATA_DIR / "memento_trace_aime2025_p5.json").read_text())
    rows = [
        {"problem": "p", "response": memento_response(trace, keep_blocks=k), "domain": domain, "task_id": f"t{k}"}
        for k, domain in [(5, "math"), (3, "math"), (4, "code"), (2, "code"), (1, "science")]
    ]
    path = tmp_path / "traces.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    results = list(KVSimulator(tokenizer, memory=preset("phi-4")).simulate_traces(iter_traces(str(path)),
                                                                                  batch_size=2))
    assert [r.index for r in results] == [0, 1, 2, 3, 4]
    assert [r.trace_id for r in results] == ["t5", "t3", "t4", "t2", "t1"]
    summary = aggregate(results)
    assert summary["all"]["traces"] == 5 and set(summary["by_domain"]) == {"math", "code", "science"}
    math_ratios = [r.peak_ratio for r in results if r.domain == "math"]
    assert summary["by_domain"]["math"]["peak_ratio"]["median"] == pytest.approx(np.median(math_ratios))
    all_auc = [r.auc_ratio for r in results]
    assert summary["all"]["auc_ratio"]["p90"] == pytest.approx(np.percentile(all_auc, 90))


# ---- plots ----------------------------------------------------------------------------------------------------
def _is_png(path: Path) -> bool:
    return path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_curve_and_distribution_plots_are_written(tokenizer, fixture_trace, tmp_path):
    simulator = KVSimulator(tokenizer, memory=preset("qwen3-8b"))
    one = simulator.simulate_trace(fixture_trace, keep_curves=True)
    assert _is_png(plot_kv_curve(one, tmp_path / "curve.png"))
    many = list(simulator.simulate_traces([fixture_trace, {**fixture_trace, "domain": "code"}]))
    assert _is_png(plot_kv_distributions(many, tmp_path / "dist.png"))
