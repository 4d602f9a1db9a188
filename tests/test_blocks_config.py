"""The block-masking config (the reference overlay's JSON, read strictly) and marker ids from real tokenizers."""

from __future__ import annotations

import json

import pytest

from helpers_tokenizer import build_tiny_tokenizer
from mementokit.blocks import (
    BlockMaskingConfig,
    MarkerIds,
    add_block_markers,
    dense_allowed,
    resolve_marker_ids,
    single_token_id,
)
from mementokit.errors import ConfigError

# A config as written for the reference vLLM overlay (its README / --block-masking-config), every key present.
REFERENCE_OVERLAY_JSON = """{
  "enable": true,
  "keep_last_n_blocks": 0,
  "mask_delimiters": false,
  "compact_on_summary_end": true,
  "require_assistant_section": true,
  "restart_mode": false,
  "keep_last_block_for_answer": false,
  "max_block_tokens": 2048,
  "debug": false,
  "block_start_token": "<|block_start|>",
  "block_end_token": "<|block_end|>",
  "summary_start_token": "<|summary_start|>",
  "summary_end_token": "<|summary_end|>",
  "im_start_token": "<|im_start|>",
  "assistant_token": "assistant"
}"""


# ---- config -------------------------------------------------------------------------------------------------
def test_reference_overlay_json_is_accepted_unchanged():
    config = BlockMaskingConfig.load(REFERENCE_OVERLAY_JSON)
    assert config.enable and config.keep_last_n_blocks == 0 and config.max_block_tokens == 2048
    assert config.to_dict() == json.loads(REFERENCE_OVERLAY_JSON)


def test_config_loads_from_a_file(tmp_path):
    path = tmp_path / "bm.json"
    path.write_text('{"enable": true, "keep_last_n_blocks": 2, "mask_delimiters": true}')
    config = BlockMaskingConfig.load(path)
    assert (config.keep_last_n_blocks, config.mask_delimiters) == (2, True)


def test_to_dict_round_trips():
    config = BlockMaskingConfig(enable=True, keep_last_n_blocks=3, mask_delimiters=True, restart_mode=True)
    assert BlockMaskingConfig.from_dict(config.to_dict()) == config


def test_unknown_keys_are_rejected_by_name():
    with pytest.raises(ConfigError, match="unknown key.*'keep_last_blocks'"):
        BlockMaskingConfig.load('{"enable": true, "mask_delimiters": false, "keep_last_blocks": 1}')


def test_missing_mask_delimiters_is_rejected_when_enabled():
    with pytest.raises(ConfigError, match="'mask_delimiters' is required"):
        BlockMaskingConfig.load('{"enable": true, "keep_last_n_blocks": 0}')
    with pytest.raises(ConfigError, match="'mask_delimiters' is required"):
        BlockMaskingConfig.load('{"enable": true, "mask_delimiters": null}')


def test_python_constructor_and_from_dict_follow_one_rule_for_mask_delimiters():
    # Issue 9: BlockMaskingConfig(...) silently defaulted to false while from_dict refused a missing value.
    with pytest.raises(ConfigError, match="'mask_delimiters' is required"):
        BlockMaskingConfig()
    with pytest.raises(ConfigError, match="'mask_delimiters' is required"):
        BlockMaskingConfig(enable=True, keep_last_n_blocks=2)
    with pytest.raises(ConfigError, match="'mask_delimiters' is required"):
        BlockMaskingConfig.from_dict({"enable": True, "keep_last_n_blocks": 2})
    # Disabled: nothing is evicted, so both read a missing value as false.
    assert BlockMaskingConfig(enable=False).mask_delimiters is False
    assert BlockMaskingConfig.from_dict({"enable": False}).mask_delimiters is False
    assert BlockMaskingConfig.vanilla().to_dict() == BlockMaskingConfig.from_dict({"enable": False}).to_dict()


def test_integer_marker_strings_are_read_as_int_reads_them(tokenizer):
    # "²" is a digit to str.isdigit() but int() refuses it: it is a marker string (one token in this tokenizer),
    # and "²²" (two tokens) is the usual clear error, not a raw ValueError.
    (squared,) = tokenizer.encode("²", add_special_tokens=False)
    assert single_token_id(tokenizer, "²") == squared
    config = BlockMaskingConfig(mask_delimiters=False, block_end_token="²")
    assert resolve_marker_ids(tokenizer, config).block_end == squared
    with pytest.raises(ConfigError, match="not a single token"):
        resolve_marker_ids(tokenizer, BlockMaskingConfig(mask_delimiters=False, block_end_token="²²"))
    real = resolve_marker_ids(tokenizer)
    spaced = BlockMaskingConfig(mask_delimiters=False, block_end_token=f" {real.block_end} ")
    assert resolve_marker_ids(tokenizer, spaced).block_end == real.block_end
    with pytest.raises(ConfigError, match="outside"):
        resolve_marker_ids(tokenizer, BlockMaskingConfig(mask_delimiters=False, block_end_token="-3"))


def test_missing_mask_delimiters_is_fine_when_disabled():
    assert not BlockMaskingConfig.load('{"enable": false}').enable


def test_missing_enable_means_disabled_like_the_overlay_with_a_warning():
    with pytest.warns(UserWarning, match="no 'enable' key"):
        config = BlockMaskingConfig.load('{"keep_last_n_blocks": 1}')
    assert not config.enable


def test_bad_values_are_rejected_with_their_name():
    with pytest.raises(ConfigError, match="keep_last_n_blocks"):
        BlockMaskingConfig.load('{"enable": true, "mask_delimiters": false, "keep_last_n_blocks": -2}')
    with pytest.raises(ConfigError, match="'mask_delimiters' must be true or false"):
        BlockMaskingConfig.load('{"enable": true, "mask_delimiters": "no"}')
    with pytest.raises(ConfigError, match="max_block_tokens"):
        BlockMaskingConfig.load('{"enable": true, "mask_delimiters": false, "max_block_tokens": 1.5}')


def test_invalid_json_and_missing_file_give_clear_errors(tmp_path):
    with pytest.raises(ConfigError, match="invalid JSON at line 1"):
        BlockMaskingConfig.load('{"enable": true,')
    with pytest.raises(ConfigError, match="neither a JSON object nor an existing file"):
        BlockMaskingConfig.load(str(tmp_path / "missing.json"))
    with pytest.raises(ConfigError, match="must be a JSON object"):
        BlockMaskingConfig.from_dict([1, 2])


def test_vanilla_config_never_evicts():
    assert not BlockMaskingConfig.vanilla().evicts


# ---- marker ids ---------------------------------------------------------------------------------------------
def test_marker_ids_resolve_from_a_tokenizer(tokenizer):
    markers = resolve_marker_ids(tokenizer, BlockMaskingConfig(mask_delimiters=False))
    assert tokenizer.convert_ids_to_tokens(list(markers.block_markers)) == [
        "<|block_start|>", "<|block_end|>", "<|summary_start|>", "<|summary_end|>"]
    assert tokenizer.convert_ids_to_tokens([markers.im_start, markers.assistant, markers.think_end]) == [
        "<|im_start|>", "assistant", "</think>"]


def test_marker_given_as_an_integer_string_is_that_id(tokenizer):
    real = resolve_marker_ids(tokenizer)
    config = BlockMaskingConfig(mask_delimiters=False, block_start_token=str(real.block_start),
                                summary_end_token=str(real.summary_end))
    assert resolve_marker_ids(tokenizer, config) == real


def test_marker_that_is_several_tokens_is_a_clear_error(tmp_path):
    bare = build_tiny_tokenizer(tmp_path, with_markers=False)
    with pytest.raises(ConfigError, match=r"'<\|block_start\|>' \(block_start_token\) is not a single token"):
        resolve_marker_ids(bare)


def test_integer_marker_outside_the_vocabulary_is_an_error(tokenizer):
    with pytest.raises(ConfigError, match="outside"):
        resolve_marker_ids(tokenizer, BlockMaskingConfig(mask_delimiters=False, block_end_token="999999"))


def test_add_block_markers_adds_four_special_tokens_once(tmp_path):
    bare = build_tiny_tokenizer(tmp_path, with_markers=False)
    size = len(bare)
    assert add_block_markers(bare) == 4 and len(bare) == size + 4
    assert add_block_markers(bare) == 0
    text = "<think><|block_start|>a b<|block_end|><|summary_start|>s<|summary_end|></think>"
    ids = bare.encode(text, add_special_tokens=False)
    markers = resolve_marker_ids(bare)
    assert [t for t in ids if t in markers.block_markers] == list(markers.block_markers)
    assert bare.decode(ids) == text


def test_gating_is_off_when_assistant_is_not_one_token(tokenizer):
    config = BlockMaskingConfig(mask_delimiters=False, assistant_token="assistant turn")
    markers = resolve_marker_ids(tokenizer, config)
    assert markers.assistant is None and not markers.can_gate


def test_chat_prompt_from_the_tokenizer_gates_exactly_at_the_assistant_header(tokenizer):
    config = BlockMaskingConfig(mask_delimiters=False)
    markers = resolve_marker_ids(tokenizer, config)
    block = "<|block_start|>some reasoning<|block_end|><|summary_start|>short<|summary_end|>"
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": "quoted: " + block}],
                                           add_generation_prompt=True, tokenize=False)
    ids = tokenizer.encode(prompt + block + " answer", add_special_tokens=False)
    allowed = dense_allowed(ids, config, markers)
    prompt_len = len(tokenizer.encode(prompt, add_special_tokens=False))
    hidden = [(q, k) for q in range(len(ids)) for k in range(q + 1) if not allowed[q, k]]
    assert hidden and all(k >= prompt_len for _, k in hidden)  # the quoted block in the user turn stays visible


def test_marker_ids_dataclass_lists_block_markers():
    assert MarkerIds(10, 11, 12, 13).block_markers == (10, 11, 12, 13)
