"""Bad input to generation and replay fails up front with a clear error (issue 9), and the limits that were off
by one or by type are right: stop strings, the physical cache cap, prompt tensors, explicit marker ids."""

from __future__ import annotations

import warnings

import pytest
import torch

from mementokit.blocks import BlockMaskingConfig, MarkerIds, resolve_marker_ids
from mementokit.errors import ConfigError, InputError
from mementokit.generate import BlockMaskedGenerator, SamplingParams, chat_prompt, dense_reference_logits, replay

BASE = {"enable": True, "keep_last_n_blocks": 0, "mask_delimiters": False}


@pytest.fixture(scope="module")
def prompt(tokenizer):
    return chat_prompt(tokenizer, "What is 2 + 2?")


# ----- SamplingParams ----------------------------------------------------------------------------------------
def test_one_stop_string_is_one_stop_string_not_one_per_character(model, tokenizer, prompt):
    assert SamplingParams(stop="never-seen").stop == ("never-seen",)
    assert SamplingParams(stop=["a", "b"]).stop == ("a", "b")
    result = BlockMaskedGenerator(model, tokenizer, BASE).generate(
        prompt, SamplingParams(max_new_tokens=8, ignore_eos=True, stop="never-seen"))
    assert len(result.token_ids) == 8 and result.finish_reason == "length"


@pytest.mark.parametrize("bad", [
    {"max_new_tokens": None}, {"max_new_tokens": 2.5}, {"top_k": 1.5}, {"top_k": True}, {"temperature": "hot"},
    {"seed": 1.5}, {"max_cache_tokens": 10.0}, {"stop": ["ok", 3]}, {"stop": [""]}, {"stop_token_ids": [1.5]},
])
def test_sampling_parameters_of_the_wrong_type_are_config_errors(bad):
    with pytest.raises(ConfigError, match=next(iter(bad))):
        SamplingParams(**bad)


def test_prefill_chunk_size_must_be_positive(model, tokenizer):
    for bad in (-1, 0, 2.5):
        with pytest.raises(ConfigError, match="prefill_chunk_size"):
            BlockMaskedGenerator(model, tokenizer, BASE, prefill_chunk_size=bad)


# ----- the physical cache cap --------------------------------------------------------------------------------
def test_a_cache_exactly_full_after_the_prompt_still_gives_the_token_its_logits_allow(model, tokenizer, prompt):
    generator = BlockMaskedGenerator(model, tokenizer, None)
    n = len(prompt)
    # The cache holds positions 0..cap-1; the logits after the last stored token give one more token, never stored.
    for cap, expected in ((n - 1, 0), (n, 1), (n + 1, 2), (n + 3, 4)):
        result = generator.generate(prompt, SamplingParams(max_new_tokens=50, ignore_eos=True, max_cache_tokens=cap))
        assert (len(result.token_ids), result.finish_reason) == (expected, "cache_full"), cap
        assert result.stats.peak_tokens <= max(cap, n)


# ----- prompts and sequences ---------------------------------------------------------------------------------
def test_prompt_tensors_one_row_only_and_integer_ids_only(model, tokenizer, prompt):
    generator = BlockMaskedGenerator(model, tokenizer, BASE)
    params = SamplingParams(max_new_tokens=3, ignore_eos=True)
    flat = generator.generate(torch.tensor(prompt), params).token_ids
    assert generator.generate(torch.tensor([prompt]), params).token_ids == flat  # [1, n]: one prompt
    with pytest.raises(InputError, match="one sequence"):
        generator.generate(torch.tensor([prompt, prompt]), params)  # never flattened into one prompt
    with pytest.raises(InputError, match="integers"):
        generator.generate(torch.tensor(prompt, dtype=torch.float32), params)
    with pytest.raises(InputError, match="integers"):
        generator.generate([float(i) + 0.7 for i in prompt], params)  # never truncated
    with pytest.raises(InputError, match="outside"):
        generator.generate(prompt + [len(tokenizer) + 5], params)


@pytest.mark.parametrize("bad_id", [-1, 10_000])
def test_replay_and_dense_reference_refuse_ids_outside_the_vocabulary(model, tokenizer, prompt, bad_id):
    ids = prompt + [bad_id]
    with pytest.raises(InputError, match="outside"):
        replay(model, ids, BASE, tokenizer=tokenizer)
    with pytest.raises(InputError, match="outside"):
        dense_reference_logits(model, ids, BASE, tokenizer=tokenizer)


def test_dense_reference_without_tokenizer_or_markers_is_a_config_error(model, prompt):
    with pytest.raises(ConfigError, match="tokenizer"):
        dense_reference_logits(model, prompt, BASE)


def test_explicit_marker_ids_outside_the_vocabulary_are_refused(model, tokenizer, prompt):
    real = resolve_marker_ids(tokenizer, BlockMaskingConfig.load(BASE))
    rows = model.get_input_embeddings().weight.shape[0]
    beyond = MarkerIds(rows + 1, real.block_end, real.summary_start, real.summary_end)
    negative = MarkerIds(real.block_start, -2, real.summary_start, real.summary_end)
    for markers in (beyond, negative):
        with pytest.raises(ConfigError, match="block marker"):
            BlockMaskedGenerator(model, None, BASE, markers=markers)
        with pytest.raises(ConfigError, match="block marker"):
            replay(model, prompt, BASE, markers=markers)
        with pytest.raises(ConfigError, match="block marker"):
            dense_reference_logits(model, prompt, BASE, markers=markers)
    # The right ids are accepted and mean the same as the tokenizer's.
    by_ids = BlockMaskedGenerator(model, None, BASE, markers=real).generate(prompt, SamplingParams(max_new_tokens=3))
    by_tok = BlockMaskedGenerator(model, tokenizer, BASE).generate(prompt, SamplingParams(max_new_tokens=3))
    assert by_ids.token_ids == by_tok.token_ids


# ----- transformers' cache argument --------------------------------------------------------------------------
def test_forward_uses_the_supported_cache_argument_without_deprecation_warnings(model, prompt):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        replay(model, prompt[:6], None)
    assert not [w for w in caught if "past_key_values" in str(w.message)]
