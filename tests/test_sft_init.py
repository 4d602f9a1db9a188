"""Special-token initialisation: new marker rows = mean of related tokens' rows + N(0, sigma^2); old rows untouched."""

from __future__ import annotations

import pytest
import torch

from helpers_models import build_tiny_model
from helpers_tokenizer import build_tiny_tokenizer
from mementokit.errors import ConfigError
from mementokit.sft import DEFAULT_INIT_WORDS, add_memento_tokens, init_token_embeddings, related_token_ids

MARKERS = ("<|block_start|>", "<|block_end|>", "<|summary_start|>", "<|summary_end|>")


@pytest.fixture
def bare_tokenizer(tmp_path):
    return build_tiny_tokenizer(tmp_path, with_markers=False)


def model_for(tokenizer, *, tied: bool, extra_rows: int = 0):
    return build_tiny_model("qwen3", len(tokenizer) + extra_rows, tie_word_embeddings=tied)


@pytest.mark.parametrize("tied", [False, True])
def test_new_rows_are_the_mean_of_the_listed_tokens_and_old_rows_are_untouched(bare_tokenizer, tied):
    model = model_for(bare_tokenizer, tied=tied)
    old_rows = len(bare_tokenizer)
    old_input = model.get_input_embeddings().weight.detach().clone()
    old_output = model.get_output_embeddings().weight.detach().clone()
    report = add_memento_tokens(model, bare_tokenizer, sigma=0.0)
    assert report.markers_added == 4 and report.resized_from == old_rows and report.tied == tied
    input_weight = model.get_input_embeddings().weight
    output_weight = model.get_output_embeddings().weight
    assert input_weight.shape[0] == old_rows + 4 and output_weight.shape[0] == old_rows + 4
    assert torch.equal(input_weight[:old_rows], old_input) and torch.equal(output_weight[:old_rows], old_output)
    for marker in MARKERS:
        entry = report.initialised[marker]
        sources = related_token_ids(bare_tokenizer, DEFAULT_INIT_WORDS[marker])
        assert entry["source_ids"] == sources and entry["id"] >= old_rows
        torch.testing.assert_close(input_weight[entry["id"]], old_input[sources].mean(0), rtol=0, atol=1e-6)
        # Output rows come from the output matrix (the same tensor when tied).
        torch.testing.assert_close(output_weight[entry["id"]], old_output[sources].mean(0), rtol=0, atol=1e-6)
    assert (output_weight is input_weight) == tied


@pytest.mark.parametrize("tied", [False, True])
def test_the_noise_has_the_requested_size_and_is_seeded(tmp_path, tied):
    sigma = 0.01
    residuals = []
    for seed in (0, 0, 1):
        tokenizer = build_tiny_tokenizer(tmp_path / str(len(residuals)), with_markers=False)
        model = model_for(tokenizer, tied=tied)
        means = {}
        for marker in MARKERS:
            sources = related_token_ids(tokenizer, DEFAULT_INIT_WORDS[marker])
            means[marker] = (
                model.get_input_embeddings().weight[sources].mean(0).detach(),
                model.get_output_embeddings().weight[sources].mean(0).detach(),
            )
        report = add_memento_tokens(model, tokenizer, sigma=sigma, seed=seed)
        noise = []
        for marker in MARKERS:
            token_id = report.initialised[marker]["id"]
            noise.append(model.get_input_embeddings().weight[token_id].detach() - means[marker][0])
            if not tied:
                noise.append(model.get_output_embeddings().weight[token_id].detach() - means[marker][1])
        residuals.append(torch.cat(noise))
    noise = residuals[0]  # 4 markers x 64 (x 2 when untied) draws
    assert abs(noise.std().item() - sigma) < 0.2 * sigma
    assert abs(noise.mean().item()) < 4 * sigma / noise.numel() ** 0.5
    assert torch.equal(residuals[0], residuals[1]) and not torch.equal(residuals[0], residuals[2])


def test_a_padded_vocabulary_is_not_resized_and_keeps_its_rows_unless_asked(bare_tokenizer, tmp_path):
    model = model_for(bare_tokenizer, tied=False, extra_rows=32)  # like Qwen: more rows than tokens
    before = model.get_input_embeddings().weight.detach().clone()
    report = add_memento_tokens(model, bare_tokenizer, sigma=0.0)
    assert report.resized_from is None and report.initialised == {}
    assert torch.equal(model.get_input_embeddings().weight, before)
    other = build_tiny_tokenizer(tmp_path / "again", with_markers=False)
    report = add_memento_tokens(model_for(other, tied=False, extra_rows=32), other, initialise="markers")
    assert sorted(report.initialised) == sorted(MARKERS)


def test_custom_word_lists_are_used_and_unusable_ones_are_errors(bare_tokenizer):
    model = model_for(bare_tokenizer, tied=False)
    add_memento_tokens(model, bare_tokenizer, initialise="none")
    weight = model.get_input_embeddings().weight
    report = init_token_embeddings(model, bare_tokenizer, {"<|block_start|>": ["the"]}, sigma=0.0)
    sources = related_token_ids(bare_tokenizer, ["the"])
    assert report["<|block_start|>"]["source_ids"] == sources
    torch.testing.assert_close(weight[report["<|block_start|>"]["id"]], weight[sources].mean(0))
    with pytest.raises(ConfigError, match="gives a token"):
        init_token_embeddings(model, bare_tokenizer, {"<|block_end|>": []})
    with pytest.raises(ConfigError, match="not one token"):
        init_token_embeddings(model, bare_tokenizer, {"<|not a marker|>": ["the"]})


def test_related_tokens_include_both_spellings_of_a_word(bare_tokenizer):
    ids = related_token_ids(bare_tokenizer, ["summary"])
    spelled = set(bare_tokenizer.encode("summary", add_special_tokens=False))
    spaced = set(bare_tokenizer.encode(" summary", add_special_tokens=False))
    assert set(ids) == spelled | spaced and len(ids) == len(set(ids))
