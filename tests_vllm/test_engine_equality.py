"""vLLM + plugin == mementokit's own generator == the dense mask, token for token and logprob for logprob.

One engine for the module (float32, 32-token pages, a small KV space so that a batch of long requests is
preempted). Block-masking variants (keep_last_n_blocks 0 / 1, mask_delimiters false / true) are per-request
overrides (`extra_args`), so one engine serves them all; they run in one batch of requests of different lengths
that join and leave (max_num_seqs is smaller than the batch).
"""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from helpers_vllm import BASE, _force_processor_class, _recording_scheduler_class, hf_force, load_hf

from mementokit.blocks import BlockMaskingConfig, evictions_for_sequence, resolve_marker_ids
from mementokit.errors import ConfigError
from mementokit.generate import BlockMaskedGenerator, SamplingParams, dense_reference_logits
from mementokit.kv.simulator import occupancy_after_each_position

PAGE = 32
PAGES = 14  # 448 tokens of KV space: one long request fits, four at once do not
VARIANTS = {
    "keep0": {"keep_last_n_blocks": 0, "mask_delimiters": False},
    "keep1": {"keep_last_n_blocks": 1, "mask_delimiters": False},
    "keep0_delims": {"keep_last_n_blocks": 0, "mask_delimiters": True},
    "keep1_delims": {"keep_last_n_blocks": 1, "mask_delimiters": True},
}
FREE_TOKENS = 6  # greedy tokens after the forced part: generation, not only teacher forcing
LOGPROB_TOLERANCE = 2e-3


@pytest.fixture(scope="module")
def hf(model_dir):
    model, tokenizer = load_hf(model_dir)
    return model, tokenizer, resolve_marker_ids(tokenizer)


@pytest.fixture(scope="module")
def llm(model_dir):
    from vllm import LLM

    engine = LLM(model=str(model_dir), dtype="float32", enforce_eager=True, max_model_len=(PAGES - 1) * PAGE,
                 block_size=PAGE, num_gpu_blocks_override=PAGES, max_num_seqs=3, gpu_memory_utilization=0.2,
                 seed=0, logits_processors=[_force_processor_class()], scheduler_cls=_recording_scheduler_class(),
                 additional_config={"block_masking": BASE})
    yield engine
    del engine


def _sequence(rng, markers, ordinary, blocks, block_len=(4, 12), summary_len=(1, 4)) -> list[int]:
    out = []
    for _ in range(blocks):
        out += [markers.block_start] + rng.choices(ordinary, k=rng.randint(*block_len)) + [markers.block_end]
        out += [markers.summary_start] + rng.choices(ordinary, k=rng.randint(*summary_len)) + [markers.summary_end]
        out += rng.choices(ordinary, k=rng.randint(0, 3))
    return out


def _case(tokenizer, markers, seed: int, prompt_blocks: int, forced_blocks: int, nested: bool = False):
    rng = random.Random(seed)
    ordinary = list(range(40, 400))
    head = tokenizer.encode("<|im_start|>user\nSolve it.<|im_end|>\n<|im_start|>assistant\n<think>",
                            add_special_tokens=False)
    if nested:
        # A block inside a block, a stray marker, and a prompt that ends ON a summary end: one step evicts
        # several spans at once, and the last prompt token is itself an eviction point.
        inner = _sequence(rng, markers, ordinary, 1)
        outer = ([markers.block_start] + rng.choices(ordinary, k=5) + inner + rng.choices(ordinary, k=4)
                 + [markers.block_end, markers.summary_start] + rng.choices(ordinary, k=2) + [markers.summary_end])
        prompt = head + [markers.summary_end] + rng.choices(ordinary, k=2) + outer
        force = outer[:-1] + _sequence(rng, markers, ordinary, forced_blocks)[1:]
        return prompt, force
    prompt = head + _sequence(rng, markers, ordinary, prompt_blocks) + rng.choices(ordinary, k=3)
    force = _sequence(rng, markers, ordinary, forced_blocks)
    return prompt, force


def _params(variant: str, force: list[int], *, logprobs: int = 3):
    from vllm import SamplingParams as VllmParams

    return VllmParams(max_tokens=len(force) + FREE_TOKENS, temperature=0.0, ignore_eos=True, logprobs=logprobs,
                      prompt_logprobs=1, extra_args={"force": force, "block_masking": VARIANTS[variant]})


@pytest.fixture(scope="module")
def batch(llm, hf):
    """Twelve requests (four variants x three cases of different lengths) in one generate call."""
    _, tokenizer, markers = hf
    cases = [_case(tokenizer, markers, seed=1, prompt_blocks=2, forced_blocks=2),
             _case(tokenizer, markers, seed=2, prompt_blocks=1, forced_blocks=3),
             _case(tokenizer, markers, seed=3, prompt_blocks=0, forced_blocks=2, nested=True)]
    requests, params, keys = [], [], []
    for variant in VARIANTS:
        for index, (prompt, force) in enumerate(cases):
            requests.append({"prompt_token_ids": prompt})
            params.append(_params(variant, force))
            keys.append((variant, index))
    outputs = llm.generate(requests, params, use_tqdm=False)
    return {key: (cases[key[1]], out) for key, out in zip(keys, outputs)}


def _config(variant: str) -> BlockMaskingConfig:
    return BlockMaskingConfig.from_dict({**BASE, **VARIANTS[variant]})


def _check_against_references(hf, prompt, force, output, config):
    model, tokenizer, markers = hf
    generated = list(output.outputs[0].token_ids)
    # 1. Tokens: mementokit's own block-masked generator with the same forcing.
    reference = BlockMaskedGenerator(model, tokenizer, config).generate(
        prompt, SamplingParams(max_new_tokens=len(force) + FREE_TOKENS, ignore_eos=True),
        logits_processors=[hf_force(force, len(prompt))])
    assert generated == reference.token_ids
    assert generated[:len(force)] == force
    # 2. Logprobs of every generated token (and vLLM's top 3) == the dense mask's, one forward pass.
    ids = prompt + generated
    dense = torch.log_softmax(dense_reference_logits(model, ids, config, markers=markers), dim=-1)
    worst = 0.0
    for i, entry in enumerate(output.outputs[0].logprobs):
        row = dense[len(prompt) + i - 1]
        for token_id, logprob in entry.items():
            worst = max(worst, abs(logprob.logprob - row[token_id].item()))
    # 3. Prompt logprobs: the prompt (blocks inside) is prefilled under exactly the dense mask.
    for p, entry in enumerate(output.prompt_logprobs[1:], start=1):
        worst = max(worst, abs(entry[prompt[p]].logprob - dense[p - 1, prompt[p]].item()))
    assert worst < LOGPROB_TOLERANCE, f"largest logprob difference {worst}"
    return ids


def _records(recorder, request_id: str):
    # The engine core's id is the front end's with a random suffix.
    (records,) = [r for key, r in recorder.records.items() if key.rsplit("-", 1)[0] == request_id]
    return records


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_tokens_and_logprobs_equal_mementokit_generator_and_dense_mask(batch, hf, variant):
    for index in (0, 1, 2):
        (prompt, force), output = batch[(variant, index)]
        _check_against_references(hf, prompt, force, output, _config(variant))


@pytest.mark.parametrize("variant", ["keep0", "keep1_delims"])
def test_physical_cache_length_equals_simulator_occupancy_and_pages_are_freed(batch, hf, variant):
    _, _, markers = hf
    recorder = _recording_scheduler_class()
    for index in (0, 1, 2):
        (prompt, _force), output = batch[(variant, index)]
        ids = prompt + list(output.outputs[0].token_ids)
        occupancy = occupancy_after_each_position(evictions_for_sequence(ids, _config(variant), markers), len(ids))
        records = _records(recorder, output.request_id)
        assert len(records) > 3
        for logical, physical, pages in records:
            assert physical == occupancy[logical - 1], f"after {logical} tokens"
            assert pages == -(-physical // PAGE)
        assert records[-1][1] < records[-1][0]  # something was evicted for real


def test_dense_mask_differs_from_full_attention(batch, hf):
    """Negative control: the same tokens without eviction do not match the dense mask (the test can fail)."""
    model, _, markers = hf
    (prompt, _force), output = batch[("keep0", 0)]
    ids = prompt + list(output.outputs[0].token_ids)
    dense = dense_reference_logits(model, ids, _config("keep0"), markers=markers)
    full = dense_reference_logits(model, ids, BlockMaskingConfig.vanilla())
    assert (dense - full).abs().max().item() > 1e-2


def test_preempted_requests_still_match(llm, hf):
    """Four long requests in 448 tokens of KV space: the scheduler preempts; re-prefill replays the evictions."""
    _, tokenizer, markers = hf
    recorder = _recording_scheduler_class()
    recorder.preemptions.clear()
    cases = [_case(tokenizer, markers, seed=10 + i, prompt_blocks=3, forced_blocks=10) for i in range(4)]
    outputs = llm.generate([{"prompt_token_ids": p} for p, _ in cases],
                           [_params("keep1", f, logprobs=1) for _, f in cases], use_tqdm=False)
    assert recorder.preemptions, "the KV space was meant to be too small for four requests at once"
    for (prompt, force), output in zip(cases, outputs):
        _check_against_references(hf, prompt, force, output, _config("keep1"))
        records = _records(recorder, output.request_id)
        ids = prompt + list(output.outputs[0].token_ids)
        occupancy = occupancy_after_each_position(evictions_for_sequence(ids, _config("keep1"), markers), len(ids))
        assert all(physical == occupancy[logical - 1] for logical, physical, _ in records)


def test_prefix_caching_async_scheduling_and_speculative_decoding_are_refused(model_dir):
    from vllm.engine.arg_utils import EngineArgs

    speculative = {"method": "ngram", "num_speculative_tokens": 2, "prompt_lookup_max": 3}
    for flag in ({"enable_prefix_caching": True}, {"async_scheduling": True}, {"speculative_config": speculative}):
        args = EngineArgs(model=str(model_dir), dtype="float32", additional_config={"block_masking": BASE}, **flag)
        with pytest.raises(ConfigError, match="refuses"):
            args.create_engine_config()


def test_bad_per_request_config_is_a_clear_error(llm):
    from vllm import SamplingParams as VllmParams
    from vllm.exceptions import VLLMValidationError

    with pytest.raises(VLLMValidationError, match="unknown key"):
        llm.generate([{"prompt_token_ids": [1, 2, 3]}],
                     VllmParams(max_tokens=2, extra_args={"block_masking": {"keep_last": 2}}), use_tqdm=False)


def test_block_length_cap_forces_block_end(llm, hf):
    """max_block_tokens through the logits processor: vLLM and mementokit's generator close blocks alike."""
    model, tokenizer, markers = hf
    prompt, _ = _case(tokenizer, markers, seed=5, prompt_blocks=1, forced_blocks=0)
    force = [markers.block_start]  # open a block, then greedy: the cap must close it after 5 tokens
    from vllm import SamplingParams as VllmParams

    override = {**VARIANTS["keep0"], "max_block_tokens": 5}
    output = llm.generate([{"prompt_token_ids": prompt}],
                          VllmParams(max_tokens=12, temperature=0.0, ignore_eos=True,
                                     extra_args={"force": force, "block_masking": override}), use_tqdm=False)[0]
    generated = list(output.outputs[0].token_ids)
    assert generated[6] == markers.block_end and markers.block_end not in generated[1:6]
    reference = BlockMaskedGenerator(model, tokenizer, BlockMaskingConfig.from_dict({**BASE, **override})).generate(
        prompt, SamplingParams(max_new_tokens=12, ignore_eos=True), logits_processors=[hf_force(force, len(prompt))])
    assert generated == reference.token_ids
    assert np.all(np.asarray(generated) >= 0)
