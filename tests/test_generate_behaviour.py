"""Generation behaviour: the block cap, batches, sampling, stopping, streaming, limits and configuration errors."""

from __future__ import annotations

import json

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from helpers_models import MementoScript, build_tiny_model
from helpers_tokenizer import build_tiny_tokenizer
from mementokit.errors import ConfigError
from mementokit.generate import (
    BlockMaskedGenerator,
    SamplingParams,
    chat_prompt,
    dense_reference_logits,
    filter_logits,
    replay,
)
from mementokit.kv import simulate_token_ids

pytestmark = pytest.mark.usefixtures("one_thread")  # module-wide, from conftest

BASE = {"enable": True, "keep_last_n_blocks": 0, "mask_delimiters": False}


@pytest.fixture(scope="module")
def prompts(tokenizer):
    return [chat_prompt(tokenizer, text) for text in
            ("What is 2 + 2?", "Prove that there are infinitely many primes, in detail.", "hi", "Count to ten.")]


# ----- max_block_tokens ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("cap", [1, 3, 7])
def test_block_cap_forces_block_end_after_exactly_max_block_tokens_ordinary_tokens(model, tokenizer, markers,
                                                                                  prompts, cap):
    generator = BlockMaskedGenerator(model, tokenizer, {**BASE, "max_block_tokens": cap})
    script = MementoScript(markers, close_blocks=False)  # the model never closes a block by itself
    result = generator.generate(prompts[0], SamplingParams(max_new_tokens=60, ignore_eos=True),
                                logits_processors=[script])
    ids = result.token_ids
    starts = [i for i, t in enumerate(ids) if t == markers.block_start]
    assert len(starts) >= 2
    for start in starts:
        following = ids[start + 1:]
        if len(following) <= cap:
            continue  # generation ended inside the block
        assert all(t not in markers.block_markers for t in following[:cap])
        assert following[cap] == markers.block_end, "the cap must close the block after exactly `cap` tokens"


def test_block_cap_holds_under_sampling(model, tokenizer, markers, prompts):
    generator = BlockMaskedGenerator(model, tokenizer, {**BASE, "max_block_tokens": 4, "keep_last_n_blocks": -1})
    # Start a block right away; sampling at a high temperature would otherwise wander.
    prompt = prompts[1] + [markers.block_start]
    result = generator.generate(prompt, SamplingParams(max_new_tokens=12, temperature=5.0, seed=3, ignore_eos=True))
    ids = result.token_ids
    closing = next(i for i, t in enumerate(ids) if t == markers.block_end)
    assert closing <= 4
    assert sum(t not in markers.block_markers for t in ids[:closing]) <= 4


# ----- batches ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("options", [{}, {"keep_last_n_blocks": 1}, {"restart_mode": True},
                                     {"mask_delimiters": True, "keep_last_block_for_answer": True}])
def test_batched_greedy_equals_one_at_a_time(model, tokenizer, markers, prompts, options):
    generator = BlockMaskedGenerator(model, tokenizer, {**BASE, **options})
    params = SamplingParams(max_new_tokens=70, ignore_eos=True)
    script = [MementoScript(markers)]
    batch = generator.generate_batch(prompts, params, logits_processors=script)
    evictions = [len(r.stats.evictions) for r in batch]
    assert sum(evictions) >= len(prompts)  # every row evicted something, on its own schedule
    for prompt, batched in zip(prompts, batch):
        alone = generator.generate(prompt, params, logits_processors=script)
        assert batched.token_ids == alone.token_ids
        assert batched.stats.cache_tokens == alone.stats.cache_tokens
        assert [e.position for e in batched.stats.evictions] == [e.position for e in alone.stats.evictions]


def test_rows_leave_the_batch_when_finished_and_every_row_matches_the_simulator(model, tokenizer, markers, prompts):
    generator = BlockMaskedGenerator(model, tokenizer, BASE)
    budget = {tuple(p): n for p, n in zip(prompts, [15, 60, 35, 50])}
    eos = tokenizer.eos_token_id
    script = MementoScript(markers)

    def end_after_budget(ids, logits):
        # Each prompt gets its own length: rows finish (with EOS) at different steps and leave the batch.
        prompt = next(p for p in budget if tuple(ids[:len(p)]) == p)
        logits = script(ids, logits)
        if len(ids) - len(prompt) >= budget[prompt] - 1:
            logits[eos] = 1e5
        return logits

    params = SamplingParams(max_new_tokens=100)
    together = generator.generate_batch(prompts, params, logits_processors=[end_after_budget])
    for prompt, batched in zip(prompts, together):
        assert len(batched.token_ids) == budget[tuple(prompt)] and batched.finish_reason == "stop"
        alone = generator.generate(prompt, params, logits_processors=[end_after_budget])
        assert batched.token_ids == alone.token_ids
        full = batched.prompt_token_ids + batched.token_ids
        simulated = simulate_token_ids(full[:-1], generator.config, markers, keep_curves=True).curves.memento_tokens
        # After the prefill, then after every fed token (the last sampled token is never fed).
        expected = [int(simulated[len(prompt) - 1])] + simulated[len(prompt):].tolist()
        assert batched.stats.cache_tokens == expected


def test_seeded_sampling_is_reproducible_and_batch_independent(model, tokenizer, prompts):
    generator = BlockMaskedGenerator(model, tokenizer, BASE)
    params = SamplingParams(max_new_tokens=20, temperature=0.9, top_p=0.95, top_k=50, min_p=0.01, seed=42,
                            ignore_eos=True)
    first = generator.generate_batch(prompts[:3], params)
    again = generator.generate_batch(prompts[:3], params)
    assert [r.token_ids for r in first] == [r.token_ids for r in again]
    # Row i samples with seed + i, whether it runs in a batch or alone.
    alone = generator.generate(prompts[0], params)
    assert alone.token_ids == first[0].token_ids
    other = generator.generate(prompts[0], SamplingParams(**{**params.__dict__, "seed": 7}))
    assert other.token_ids != first[0].token_ids


def test_generation_logits_follow_the_dense_mask(model, tokenizer, markers, prompts):
    """The logits behind every generated token equal a dense-mask forward over prompt + generated tokens."""
    generator = BlockMaskedGenerator(model, tokenizer, BASE)
    seen = []

    def record(ids, logits):
        seen.append(logits.clone())
        return MementoScript(markers)(ids, logits)

    result = generator.generate(prompts[1], SamplingParams(max_new_tokens=50, ignore_eos=True),
                                logits_processors=[record])
    assert result.stats.evictions
    full = result.prompt_token_ids + result.token_ids
    dense = dense_reference_logits(model, full, BASE, markers=markers)
    start = len(result.prompt_token_ids) - 1
    produced = torch.stack(seen)  # logits after positions start .. len(full) - 2
    assert (produced - dense[start:len(full) - 1]).abs().max().item() < 1e-4


# ----- sampling filters ---------------------------------------------------------------------------------------
@settings(max_examples=40, deadline=None)
@given(values=st.lists(st.floats(-20, 20), min_size=2, max_size=40), top_k=st.integers(0, 10),
       top_p=st.floats(0.05, 1.0), min_p=st.floats(0.0, 0.9), temperature=st.floats(0.1, 3.0))
def test_filters_keep_the_most_likely_token_and_only_drop_what_they_should(values, top_k, top_p, min_p, temperature):
    logits = torch.tensor(values)
    values = logits.tolist()  # the reference reads the values as the filter sees them (float32: 1e-190 is 0)
    params = SamplingParams(temperature=temperature, top_k=top_k, top_p=top_p, min_p=min_p)
    kept = torch.isfinite(filter_logits(logits, params))
    assert kept[logits == logits.max()].any()  # a most likely token always survives (ties: any of them)
    if 0 < top_k < len(values):
        kth = sorted(values, reverse=True)[top_k - 1]
        assert int(kept.sum()) <= sum(v >= kth for v in values)  # ties with the k-th value may stay
    probs = torch.softmax(logits / temperature, dim=-1)
    if min_p == 0 and top_k == 0:
        # top-p keeps the smallest prefix (by probability) whose mass reaches top_p
        assert float(probs[kept].sum()) >= min(top_p, 1.0) - 1e-5


def test_greedy_is_argmax(model, tokenizer, prompts):
    generator = BlockMaskedGenerator(model, tokenizer, BASE)
    result = generator.generate(prompts[2], SamplingParams(max_new_tokens=5, ignore_eos=True))
    measured = replay(model, result.prompt_token_ids + result.token_ids, BASE, tokenizer=tokenizer, keep_logits=True)
    start = len(result.prompt_token_ids) - 1
    assert result.token_ids == measured.logits[start:start + 5].argmax(-1).tolist()


# ----- stopping, streaming, limits ----------------------------------------------------------------------------
def test_stop_token_ids_and_eos_end_a_row(model, tokenizer, prompts):
    generator = BlockMaskedGenerator(model, tokenizer, BASE)
    free = generator.generate(prompts[0], SamplingParams(max_new_tokens=10, ignore_eos=True))
    stop_id = free.token_ids[3]
    stopped = generator.generate(prompts[0], SamplingParams(max_new_tokens=10, ignore_eos=True,
                                                            stop_token_ids=(stop_id,)))
    assert stopped.finish_reason == "stop"
    assert stopped.token_ids == free.token_ids[:free.token_ids.index(stop_id) + 1]
    eos = tokenizer.eos_token_id

    def force_eos(ids, logits):
        logits = logits.clone()
        logits[eos] = 1e4
        return logits

    ended = generator.generate(prompts[0], SamplingParams(max_new_tokens=10), logits_processors=[force_eos])
    assert ended.token_ids == [eos] and ended.finish_reason == "stop"


def test_stop_strings_end_a_row_and_text_keeps_special_tokens(model, tokenizer, markers, prompts):
    generator = BlockMaskedGenerator(model, tokenizer, BASE)
    free = generator.generate(prompts[1], SamplingParams(max_new_tokens=30, ignore_eos=True),
                              logits_processors=[MementoScript(markers)])
    assert "<|block_start|>" in free.text and "<|summary_end|>" in free.text
    assert free.text == tokenizer.decode(free.token_ids, skip_special_tokens=False)
    stopped = generator.generate(prompts[1], SamplingParams(max_new_tokens=30, ignore_eos=True,
                                                            stop=("<|summary_start|>",)),
                                 logits_processors=[MementoScript(markers)])
    assert stopped.finish_reason == "stop" and stopped.text.endswith("<|summary_start|>")
    assert free.text.startswith(stopped.text)


def test_streaming_events_add_up_to_the_final_result(model, tokenizer, markers, prompts):
    generator = BlockMaskedGenerator(model, tokenizer, BASE)
    stream = generator.stream(prompts[3], SamplingParams(max_new_tokens=25, ignore_eos=True),
                              logits_processors=[MementoScript(markers)])
    events = list(stream)
    result = stream.results[0]
    assert [token for token, _ in events] == result.token_ids
    assert "".join(text for _, text in events) == result.text
    assert len(result.stats.cache_tokens) == len(events)  # prefill, then every fed token


def test_physical_cache_cap_is_separate_from_the_generated_length(model, tokenizer, markers, prompts):
    masked = BlockMaskedGenerator(model, tokenizer, BASE)
    vanilla = BlockMaskedGenerator(model, tokenizer, None)
    params = SamplingParams(max_new_tokens=200, ignore_eos=True, max_cache_tokens=60)
    script = [MementoScript(markers)]
    memento = masked.generate(prompts[1], params, logits_processors=script)
    control = vanilla.generate(prompts[1], params, logits_processors=script)
    assert control.finish_reason == "cache_full" and memento.stats.peak_tokens <= 60
    assert control.stats.peak_tokens <= 60
    # Block masking reasons longer within the same physical cache.
    assert len(memento.token_ids) > len(control.token_ids)


def test_summary_reports_peak_auc_and_evictions(model, tokenizer, markers, prompts):
    generator = BlockMaskedGenerator(model, tokenizer, BASE)
    result = generator.generate(prompts[0], SamplingParams(max_new_tokens=40, ignore_eos=True),
                                logits_processors=[MementoScript(markers)])
    summary = result.summary()
    assert summary["peak_tokens"] == max(result.stats.cache_tokens)
    assert summary["auc_tokens"] == sum(result.stats.cache_tokens)
    assert summary["peak_bytes"] == summary["peak_tokens"] * result.stats.bytes_per_token
    for record in result.stats.evictions:
        assert record.key_start < record.key_stop <= record.position and record.removed > 0
    json.dumps(result.stats.to_dict())


# ----- configuration errors: before any compute ---------------------------------------------------------------
class CountForwards:
    def __init__(self, model):
        self.calls = 0
        self.handle = model.register_forward_pre_hook(self)

    def __call__(self, module, args):
        self.calls += 1


@pytest.mark.parametrize("config, message", [
    ({**BASE, "keep_last_blocks": 1}, "unknown key"),
    ({"enable": True, "keep_last_n_blocks": 0}, "mask_delimiters"),
    ({**BASE, "summary_end_token": "<|memento_end|>"}, "not a single token"),
    ('{"enable": true,', "invalid JSON"),
])
def test_bad_config_fails_with_a_clear_message_before_any_compute(model, tokenizer, prompts, config, message):
    counter = CountForwards(model)
    try:
        with pytest.raises(ConfigError, match=message):
            BlockMaskedGenerator(model, tokenizer, config).generate(prompts[0], SamplingParams(max_new_tokens=3))
        with pytest.raises(ConfigError, match=message):
            replay(model, prompts[0], config, tokenizer=tokenizer)
    finally:
        counter.handle.remove()
    assert counter.calls == 0


def test_markers_missing_from_the_vocabulary_fail_before_any_compute(tmp_path, model):
    plain = build_tiny_tokenizer(tmp_path, with_markers=False)
    counter = CountForwards(model)
    try:
        with pytest.raises(ConfigError, match="block_start"):
            BlockMaskedGenerator(model, plain, BASE)
    finally:
        counter.handle.remove()
    assert counter.calls == 0


def test_marker_ids_beyond_the_model_embeddings_fail(tokenizer):
    small = build_tiny_model("llama", len(tokenizer) - 4)  # tokenizer got the markers, the model did not
    with pytest.raises(ConfigError, match="resize"):
        BlockMaskedGenerator(small, tokenizer, BASE)


def test_bad_sampling_parameters_are_config_errors():
    for bad in ({"top_p": 0.0}, {"temperature": -1}, {"top_k": -2}, {"min_p": 1.5}, {"max_cache_tokens": 0}):
        with pytest.raises(ConfigError):
            SamplingParams(**bad)
