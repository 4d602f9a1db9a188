"""Bytes per cached token: the paper's presets exactly, and real transformers configs (sliding windows included)."""

from __future__ import annotations

import json

import pytest
from transformers import MistralConfig, Olmo3Config, Qwen2Config, Qwen3Config

from mementokit.errors import ConfigError
from mementokit.kv import PRESETS, kv_memory_from_config, preset


@pytest.mark.parametrize("name, expected", [("qwen3-8b", 147_456), ("qwen3-32b", 262_144), ("phi-4", 204_800)])
def test_presets_give_the_papers_bytes_per_token(name, expected):
    assert preset(name).bytes_per_token == expected
    assert PRESETS[name].sliding == ()


def test_preset_names_are_case_insensitive_and_unknown_ones_are_listed():
    assert preset("Qwen3-8B").bytes_per_token == 147_456
    with pytest.raises(ConfigError, match="qwen3-32b"):
        preset("llama-70b")


def test_qwen3_8b_config_json_matches_the_preset(tmp_path):
    config = Qwen3Config(num_hidden_layers=36, num_attention_heads=32, num_key_value_heads=8, head_dim=128,
                         hidden_size=4096, dtype="bfloat16")
    path = tmp_path / "qwen3-8b" / "config.json"
    path.parent.mkdir()
    path.write_text(json.dumps(config.to_dict()))
    for source in (path, path.parent):
        memory = kv_memory_from_config(source)
        assert memory.bytes_per_token == 147_456 and memory.sliding == ()


def test_phi4_style_config_without_head_dim_uses_hidden_over_heads():
    config = {"num_hidden_layers": 40, "num_attention_heads": 40, "num_key_value_heads": 10, "hidden_size": 5120,
              "torch_dtype": "bfloat16", "sliding_window": None}
    assert kv_memory_from_config(config).bytes_per_token == 204_800


def test_olmo3_hybrid_layers_are_split_into_full_and_sliding():
    layer_types = (["sliding_attention"] * 3 + ["full_attention"]) * 8  # 24 sliding of 32
    config = Olmo3Config(num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=32, hidden_size=4096,
                         sliding_window=4096, layer_types=layer_types).to_dict()
    memory = kv_memory_from_config(config)
    per_layer = 2 * 32 * 128 * 2
    assert memory.full_bytes_per_token == 8 * per_layer
    assert memory.sliding == ((4096, 24 * per_layer),)
    assert memory.bytes_per_token == 32 * per_layer


def test_qwen_config_with_an_unused_window_has_no_sliding_layers():
    config = Qwen2Config(sliding_window=4096, use_sliding_window=False, num_hidden_layers=4).to_dict()
    assert kv_memory_from_config(config).sliding == ()


def test_mistral_window_applies_to_every_layer():
    config = MistralConfig(sliding_window=4096, num_hidden_layers=4, num_attention_heads=8, num_key_value_heads=2,
                           hidden_size=512).to_dict()
    memory = kv_memory_from_config(config)
    assert memory.full_bytes_per_token == 0 and memory.sliding == ((4096, 4 * 2 * 2 * 64 * 2),)


def test_dtype_and_kv_dtype_override():
    config = {"num_hidden_layers": 2, "num_attention_heads": 4, "hidden_size": 64, "torch_dtype": "float32"}
    assert kv_memory_from_config(config).bytes_per_token == 2 * 2 * 4 * 16 * 4
    assert kv_memory_from_config(config, kv_dtype="fp8").bytes_per_token == 2 * 2 * 4 * 16 * 1


def test_multimodal_text_config_is_used():
    config = {"text_config": {"num_hidden_layers": 36, "num_attention_heads": 32, "num_key_value_heads": 8,
                              "head_dim": 128}, "torch_dtype": "bfloat16"}
    assert kv_memory_from_config(config).bytes_per_token == 147_456


def test_bad_model_configs_are_clear_errors(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        kv_memory_from_config(tmp_path / "nope.json")
    with pytest.raises(ConfigError, match="num_hidden_layers"):
        kv_memory_from_config({"hidden_size": 10})
    with pytest.raises(ConfigError, match="unknown dtype"):
        kv_memory_from_config({"num_hidden_layers": 1, "num_attention_heads": 1, "hidden_size": 8, "dtype": "int3"})
